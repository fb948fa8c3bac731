"""The shipped systemd units: `systemd-analyze verify` clean, security rating at most 2.0.

systemd-analyze runs offline against copies of the units in a temporary directory, so no
service manager is needed (CI containers have none). `verify` exits 0 even for an unknown key,
so every line it prints about our unit counts as a failure; lines about other units of the
host are environmental and ignored.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from duvo_monitor import credentials

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0

# (file in systemd/, unit name to check): the template is checked as an instance.
UNITS = [
    ("duvo-monitor.service", "duvo-monitor.service"),
    ("duvo-monitor@.service", "duvo-monitor@team-a.service"),
]

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (Debian package systemd)"
)


def stage(source: Path, directory: Path) -> None:
    """Copy a unit into ``directory`` with commands that exist on this machine.

    ``verify`` checks that ExecStart's binary is executable; the test machine has no
    /usr/bin/duvo-monitor, so the interpreter running the tests stands in for it.
    """
    text = source.read_text()
    text, count = re.subn(
        r"^ExecStart=/usr/bin/duvo-monitor ", f"ExecStart={sys.executable} ", text, flags=re.M
    )
    assert count == 1, "ExecStart= is no longer /usr/bin/duvo-monitor: update this test"
    if not os.access("/bin/kill", os.X_OK):
        text = text.replace("ExecReload=/bin/kill ", f"ExecReload={sys.executable} ")
    (directory / source.name).write_text(text)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    # SYSTEMD_LOG_COLOR/PAGER: plain text, and never wait on a pager in CI.
    env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def complaints(output: str, directory: Path, unit: str) -> list[str]:
    """Lines about our unit (by name or by path); anything else concerns the host, not us."""
    stem = unit.split("@")[0].removesuffix(".service")
    return [line for line in output.splitlines() if stem in line or str(directory) in line]


@needs_analyze
@pytest.mark.parametrize(("source", "unit"), UNITS, ids=[u for _, u in UNITS])
def test_systemd_analyze_verify_is_clean(tmp_path: Path, source: str, unit: str) -> None:
    """`systemd-analyze verify` exits 0 and prints nothing about the unit."""
    stage(SYSTEMD_DIR / source, tmp_path)
    result = analyze("verify", str(tmp_path / unit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints(result.stdout + result.stderr, tmp_path, unit) == []


@needs_analyze
def test_verify_complaints_are_caught(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key exits 0 but its warning is reported."""
    stage(SYSTEMD_DIR / "duvo-monitor.service", tmp_path)
    unit = tmp_path / "duvo-monitor.service"
    unit.write_text(unit.read_text().replace("ProtectClock=", "ProtectClok="))
    result = analyze("verify", str(unit))
    found = complaints(result.stdout + result.stderr, tmp_path, "duvo-monitor.service")
    assert any("Unknown key 'ProtectClok'" in line for line in found), found


@needs_analyze
@pytest.mark.parametrize(("source", "unit"), UNITS, ids=[u for _, u in UNITS])
def test_security_exposure_is_at_most_2_0(tmp_path: Path, source: str, unit: str) -> None:
    """`systemd-analyze security --offline=true --threshold=20` passes (exposure <= 2.0)."""
    stage(SYSTEMD_DIR / source, tmp_path)
    result = analyze("security", "--offline=true", "--threshold=20", str(tmp_path / unit))
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match is not None, result.stdout
    assert float(match[1]) <= MAX_EXPOSURE
    # The report names the unit on stdout; warnings about it would come on stderr.
    assert complaints(result.stderr, tmp_path, unit) == []


def directives(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def test_units_load_the_credentials_the_code_reads() -> None:
    """LoadCredential= ids are exactly the names duvo_monitor.credentials looks up."""
    expected = {credentials.API_KEY, credentials.WEBHOOK_SECRET, credentials.CONTROL_TOKEN}
    for source, _ in UNITS:
        loaded = {
            v.split(":")[0] for k, v in directives(SYSTEMD_DIR / source) if k == "LoadCredential"
        }
        assert loaded == expected, source


def test_the_template_differs_from_the_unit_only_per_instance() -> None:
    """Sandboxing cannot drift between the two units: only instance-specific lines differ."""
    single = directives(SYSTEMD_DIR / "duvo-monitor.service")
    template = directives(SYSTEMD_DIR / "duvo-monitor@.service")
    per_instance = {
        "Description",
        "ExecStart",
        "StateDirectory",
        "LogsDirectory",
        "WorkingDirectory",
        "LoadCredential",
    }
    assert [d for d in single if d[0] not in per_instance] == [
        d for d in template if d[0] not in per_instance
    ]
    assert all("%i" in v for k, v in template if k in per_instance)


MDWE_WORKLOAD = textwrap.dedent(
    """
    import ctypes, errno, mmap, sys

    # systemd's MemoryDenyWriteExecute= on x86_64, as seccomp rules: no mmap() that is both
    # writable and executable, no mprotect()/pkey_mprotect() adding PROT_EXEC, no shmat(SHM_EXEC).
    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Insn))]
    LD, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06
    ALLOW, DENY, PROT = 0x7FFF0000, 0x00050000 | errno.EPERM, 16 + 8 * 2
    rules = [(9, 6, 6), (10, 4, 4), (329, 4, 4), (30, 0o100000, 0o100000)]
    prog = [Insn(LD, 0, 0, 0)]
    for nr, mask, bad in rules:  # if nr matches: load arg 2, mask, deny when it equals bad
        prog += [Insn(JEQ, 0, 4, nr), Insn(LD, 0, 0, PROT), Insn(AND, 0, 0, mask),
                 Insn(JEQ, 0, 1, bad), Insn(RET, 0, 0, DENY), Insn(LD, 0, 0, 0)]
    prog.append(Insn(RET, 0, 0, ALLOW))
    libc = ctypes.CDLL(None, use_errno=True)
    fprog = Prog(len(prog), (Insn * len(prog))(*prog))
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
        sys.exit(77)  # no seccomp here
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("the filter does not bite")
    except PermissionError:
        pass

    import sqlite3, ssl
    import anyio, h11, httpx, orjson, prometheus_client, structlog, yaml
    ssl.create_default_context()
    sqlite3.connect(":memory:").execute("select 1")
    prometheus_client.generate_latest(prometheus_client.CollectorRegistry())
    structlog.get_logger().info("hello", x=orjson.dumps(yaml.safe_load("a: 1")).decode())

    async def main():
        async def echo(stream):
            async with stream:
                await stream.send(await stream.receive())
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, echo)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"ping")
                assert await client.receive() == b"ping"
            await anyio.to_thread.run_sync(h11.Connection, h11.CLIENT)
            tg.cancel_scope.cancel()

    anyio.run(main)
    print("ok")
    """
)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the seccomp emulation of MemoryDenyWriteExecute= is written for x86_64 Linux",
)
def test_the_runtime_works_under_memory_deny_write_execute() -> None:
    """CPython and the daemon's dependencies never need writable+executable memory."""
    result = subprocess.run(
        [sys.executable, "-c", MDWE_WORKLOAD],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode == 77:
        pytest.skip("seccomp filters are not available in this environment")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
