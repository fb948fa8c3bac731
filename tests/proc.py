"""The real processes, for the process-level tests: ``duvo-monitor simulate`` and ``duvo-monitor
run`` started as subprocesses on loopback, the way an operator runs them.

:class:`Processes` owns every child of one test and kills what is still running when the test
ends (``with Processes(tmp_path) as procs``), and it holds the test's time budget: every wait
here is capped by what is left of it, so a wedged daemon fails the test instead of hanging it.
Output goes to files, never to pipes nobody reads (a full pipe would stall the child).

The two processes share a compressed clock: the simulator prints ``DUVO_MONITOR_CLOCK=...`` and
the daemon is started with that value, so both read the same simulated time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from duvo_monitor.simulator.cli import load_scenario
from duvo_monitor.simulator.model import TruthEntry
from duvo_monitor.simulator.scenario import HumanRequestStep, Scenario
from duvo_monitor.simulator.scoring import Emitted

PYTHON = sys.executable
TEST_BUDGET = 38.0
"""Wall seconds one test may take, start-up of its processes included."""
EVENT_PREFIX = "ai.duvo."


class BudgetExceeded(AssertionError):
    """The test used up :data:`TEST_BUDGET`."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_environ(**extra: str) -> dict[str, str]:
    """The environment of a child: ours without anything systemd or the monitor would read."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DUVO_", "NOTIFY_", "WATCHDOG_", "CREDENTIALS_", "LISTEN_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["DUVO_MONITOR_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


@dataclass
class Child:
    """One subprocess with its output files."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path | None
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        if self.stdout_path is None:
            return ""
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr (other lines, such as a traceback, are skipped)."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def events_logged(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.logs() if r.get("event") == event]


class Sim:
    """A running simulator: its URL, its clock, and the test-only ``/_sim`` endpoints."""

    def __init__(self, child: Child, url: str, clock_env: str, spec: str, seed: int) -> None:
        self.child = child
        self.url = url
        self.clock_env = clock_env
        self.spec = spec
        self.seed = seed
        fields = dict(part.split("=", 1) for part in clock_env.split(","))
        self.speed = float(fields["speed"])
        self.origin = float(fields["origin"])
        self.http = httpx.Client(base_url=url, timeout=5.0)
        self._info: dict[str, Any] | None = None

    def now(self) -> float:
        """The simulated time, as both processes read it."""
        return self.origin + (time.time() - self.origin) * self.speed

    def wall(self, simulated_seconds: float) -> float:
        return simulated_seconds / self.speed

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.get("/_sim/info")
        return self._info

    def truth(self) -> list[TruthEntry]:
        return [TruthEntry(**d) for d in self.get("/_sim/truth")]

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.get("/_sim/runs")
        return runs

    def requests(self) -> list[dict[str, Any]]:
        requests: list[dict[str, Any]] = self.get("/_sim/requests")
        return requests

    def scenario(self) -> Scenario:
        """The scenario the simulator plays (generated ones are deterministic)."""
        return load_scenario(self.spec, self.seed)

    def run_ids(self) -> list[str]:
        """Every run of the scenario, created or not yet, in order of creation."""
        return [run.id for run in sorted(self.scenario().runs, key=lambda r: r.start)]

    def quiet_at(self) -> float:
        """A simulated time after which the generated world changes no more.

        Each run's last step, plus every human request's answer delay (a request pauses the
        timeline), from the run's creation; read from the same scenario the simulator loaded.
        """
        scenario = self.scenario()
        start = float(self.info()["started_at"])
        end = start
        for run in scenario.runs:
            if not run.timeline:
                continue
            waits = sum(
                s.answer_after or 0.0 for s in run.timeline if isinstance(s, HumanRequestStep)
            )
            end = max(end, start + run.start + run.timeline[-1].at + waits)
        return end

    def close(self) -> None:
        self.http.close()


class Processes:
    """Every child of one test, and the test's time budget."""

    def __init__(self, tmp: Path, budget: float = TEST_BUDGET) -> None:
        self.tmp = tmp
        self.deadline = time.monotonic() + budget
        self.children: list[Child] = []
        self._sims: list[Sim] = []
        self._files: list[IO[bytes]] = []
        self.tickers: list[Callable[[], object]] = []
        """Called every few tens of milliseconds while a test waits (e.g. :meth:`Tail.poll`)."""
        self._fds: list[int] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for child in self.children:
            child.kill()
        for sim in self._sims:
            sim.close()
        for f in self._files:
            f.close()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def pipe(self, size: int | None = None) -> tuple[int, int]:
        """A pipe (read fd, write fd), closed at the end of the test; ``size``: its capacity."""
        r, w = os.pipe()
        self._fds += [r, w]
        if size is not None:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
        return r, w

    def close_fd(self, fd: int) -> None:
        self._fds.remove(fd)
        os.close(fd)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # -- starting --------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        stdout: int | IO[bytes] | None = None,
    ) -> Child:
        """Start ``argv``; stderr (and stdout unless given: a descriptor) goes to a file."""
        n = sum(1 for c in self.children if c.name == name)
        stem = f"{name}-{n}"
        stderr_path = self.tmp / f"{stem}.stderr"
        err = open(stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self._files.append(err)
        stdout_path = None
        out = stdout
        if out is None:
            stdout_path = self.tmp / f"{stem}.stdout"
            out_file = open(stdout_path, "wb")  # noqa: SIM115 - closed in close()
            self._files.append(out_file)
            out = out_file
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env)
        )
        child = Child(name, proc, stdout_path, stderr_path)
        self.children.append(child)
        return child

    def simulator(
        self,
        scenario: str,
        *,
        speed: float = 10.0,
        seed: int = 1,
        api_key: str = "sim-key",
        rate_limit: int | None = None,
    ) -> Sim:
        argv = [
            PYTHON, "-m", "duvo_monitor", "simulate", "--listen", "127.0.0.1:0",
            "--scenario", scenario, "--speed", str(speed), "--seed", str(seed),
            "--api-key", api_key,
        ]  # fmt: skip
        if rate_limit is not None:
            argv += ["--rate-limit", str(rate_limit)]
        child = self.spawn("simulate", argv, base_environ())
        found: dict[str, str] = {}

        def started() -> bool:
            if not child.running():
                raise AssertionError(f"the simulator exited:\n{child.stderr()}")
            text = child.stderr()
            url = re.search(r"^\s+url:\s+(\S+)", text, re.M)
            clock = re.search(r"DUVO_MONITOR_CLOCK=(\S+)", text)
            if url and clock:
                found.update(url=url.group(1), clock=clock.group(1))
                return True
            return False

        self.wait_until(started, 10, "the simulator to print its URL and clock")
        sim = Sim(child, found["url"], found["clock"], scenario, seed)
        self._sims.append(sim)
        return sim

    def daemon(
        self,
        config: Path,
        sim: Sim | None,
        *,
        env: Mapping[str, str] | None = None,
        stdout: int | IO[bytes] | None = None,
        api_key: str = "sim-key",
    ) -> Child:
        extra = {"DUVO_API_KEY": api_key}
        if sim is not None:
            extra["DUVO_MONITOR_CLOCK"] = sim.clock_env
        extra.update(env or {})
        argv = [PYTHON, "-m", "duvo_monitor", "run", "--config", str(config)]
        return self.spawn("daemon", argv, base_environ(**extra), stdout=stdout)

    # -- waiting ---------------------------------------------------------------------------

    def wait_until(
        self,
        predicate: Callable[[], Any],
        timeout: float,
        what: str,
        interval: float = 0.05,
        why: Callable[[], object] | None = None,
    ) -> Any:
        """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds
        (or when the test's budget is spent), with ``why()`` in the message."""
        end = min(time.monotonic() + timeout, self.deadline)
        while True:
            self.tick()
            value = predicate()
            if value:
                return value
            if time.monotonic() >= end:
                detail = f"\n{why()}" if why is not None else ""
                if end >= self.deadline:
                    raise BudgetExceeded(f"test budget spent waiting for: {what}{detail}")
                raise AssertionError(f"timed out after {timeout:g} s waiting for: {what}{detail}")
            time.sleep(interval)

    def wait_watching(self, daemon: Child, timeout: float = 10) -> None:
        """Until the daemon has loaded its state and starts polling ("watching" logged)."""

        def watching() -> bool:
            assert daemon.running(), f"the daemon exited:\n{daemon.stderr()[-3000:]}"
            return bool(daemon.events_logged("watching"))

        self.wait_until(watching, timeout, "the daemon to start watching")

    def wait_exit(self, child: Child, timeout: float) -> int:
        """The exit code of ``child``, which must exit within ``timeout`` seconds."""
        try:
            return child.proc.wait(min(timeout, max(0.1, self.remaining())))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{child.name} (pid {child.pid}) did not exit within {timeout:g} s;\n"
                f"stderr tail:\n{child.stderr()[-3000:]}"
            ) from None

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (wall), running the tickers meanwhile."""
        if seconds > self.remaining():
            raise BudgetExceeded("test time budget would be spent sleeping")
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.tick()
            time.sleep(min(0.05, max(0.0, left)))

    def tick(self) -> None:
        for ticker in self.tickers:
            ticker()


# -- config ---------------------------------------------------------------------------------


def daemon_config(
    tmp: Path,
    sim: Sim | None,
    *,
    sinks: Iterable[Mapping[str, Any]],
    discover: bool = True,
    **sections: Any,
) -> dict[str, Any]:
    """A config for a daemon watching ``sim``; ``sections`` replace or add top-level keys."""
    raw: dict[str, Any] = {
        "api": {"base_url": sim.url if sim else "http://127.0.0.1:9", "version": "v2"},
        "state": {"path": str(tmp / "state.db")},
        # A finished run is re-checked (resumed? deleted?) every linger_interval; the default
        # 5 min would be half a minute of a test's wall time at speed 10.
        "polling": {"min_interval": "500ms", "linger_interval": "10s"},
        "logging": {"level": "info", "format": "json"},
        "sinks": [dict(s) for s in sinks],
    }
    if discover:
        raw["watch"] = {"discover": {"since": "30d", "interval": "2s"}}
    raw.update(sections)
    return raw


def write_config(path: Path, raw: Mapping[str, Any]) -> Path:
    """Write ``raw`` as YAML atomically (a reload must never read half a file)."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(yaml.safe_dump(dict(raw), sort_keys=False), encoding="utf-8")
    partial.replace(path)
    return path


# -- reading what was emitted ----------------------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in a JSON-lines file; fails on a line that is not one whole JSON object."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if not data:
        return []
    assert data.endswith(b"\n"), f"{path} ends in a partial line: {data[-200:]!r}"
    out = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            envelope = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path}:{number} is not a JSON line: {line[:300]!r}") from None
        assert isinstance(envelope, dict) and str(envelope.get("type", "")).startswith(
            EVENT_PREFIX
        ), f"{path}:{number} is not an event: {line[:300]!r}"
        out.append(envelope)
    return out


class Tail:
    """Follows a JSON-lines file as a reader would, stamping each whole line with the
    simulated time it was first seen (what :func:`~duvo_monitor.simulator.scoring.score` needs).

    A fragment without its newline is never taken as an event; when the file shrinks under it
    (the sink cutting a crashed write's fragment off at start) the fragment is forgotten.
    """

    def __init__(self, path: Path, now: Callable[[], float]) -> None:
        self.path = path
        self.now = now
        self.consumed = 0
        self.fragment = b""
        self.received: list[Emitted] = []
        self.fragments_seen = 0

    def poll(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        assert size >= self.consumed, (
            f"{self.path} shrank below its whole lines ({size} < {self.consumed}): "
            "a line a reader had already taken as an event was removed"
        )
        if size < self.consumed + len(self.fragment):
            self.fragment = self.fragment[: size - self.consumed]
        with open(self.path, "rb") as f:
            f.seek(self.consumed + len(self.fragment))
            data = f.read()
        if not data:
            return
        now = self.now()
        lines = (self.fragment + data).split(b"\n")
        self.fragment = lines.pop()
        for i, line in enumerate(lines):
            at = now + i * 1e-6  # read together, yet in file order for whoever sorts by time
            self.consumed += len(line) + 1
            try:
                envelope = json.loads(line)
            except ValueError:
                raise AssertionError(f"{self.path}: not a JSON line: {line[:300]!r}") from None
            self.received.append(Emitted(envelope=envelope, at=at))
        if self.fragment:
            self.fragments_seen += 1

    def envelopes(self) -> list[dict[str, Any]]:
        return [dict(e.envelope) for e in self.received]


def behind(runs: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]) -> list[str]:
    """How the events fall short of the runs as the simulator has them (empty: caught up)."""
    status: dict[str, str] = {}
    messages: dict[str, set[str]] = {}
    lost: set[str] = set()
    for e in events:
        run_id = str(e["subject"])
        kind = str(e["type"]).removeprefix(EVENT_PREFIX)
        if kind == "message.created":
            messages.setdefault(run_id, set()).add(e["data"]["message"]["id"])
        elif kind == "run.lost":
            lost.add(run_id)
        elif kind.startswith("run.") and "to" in e["data"]:
            status[run_id] = e["data"]["to"]
    out = []
    for run in runs:
        run_id = run["id"]
        if run["deleted"]:
            if run_id in status and run_id not in lost:
                out.append(f"{run_id}: deleted, no run.lost")
            continue
        if status.get(run_id) != run["status"]:
            out.append(f"{run_id}: status {run['status']}, last event {status.get(run_id)}")
        got = len(messages.get(run_id, ()))
        if got < run["messages"]:
            out.append(f"{run_id}: {run['messages']} messages, {got} events")
    return out


def caught_up(runs: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]) -> bool:
    """The events show every run as the simulator has it: status, messages, loss."""
    return not behind(runs, events)


def tracebacks(text: str) -> list[str]:
    """Tracebacks in a process's output, JSON-escaped ones inside log lines included."""
    return [line for line in text.splitlines() if "Traceback" in line]


def integrity_check(path: Path) -> str:
    """SQLite's own verdict on a state file ("ok" when whole)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("PRAGMA integrity_check").fetchone()
        return str(row[0])
    finally:
        conn.close()
