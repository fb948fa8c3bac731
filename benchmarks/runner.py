"""What the benchmarks share: the in-process world runner with the benchmarks' defaults, and
saving results with the machine and the code they were measured on.

The runner is :func:`duvo_monitor.simulator.trial.run_trial`, the same as the integration tests'
(issue 12: one world runner). What the benchmarks' defaults add: the daemon watches the runs
that exist at its start from its config, and learns of later runs the way issue 7 says it must
in production (from outside, the moment a run is created, as ``duvo-monitor start`` tells a
running daemon), so that no policy pays for discovery and every policy learns of a run at the
same moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from duvo_monitor.logs import configure_logging
from duvo_monitor.simulator import Scenario, TruthEntry, trial
from duvo_monitor.simulator.trial import Trial, endpoint_of

__all__ = ["Trial", "endpoint_of", "fmt", "free_port", "observable", "quiet_logs", "run_trial"]

RESULTS = Path(__file__).resolve().parent / "results"
FOLLOW_STEP = 0.1  # simulated seconds between looks for newly created runs


async def run_trial(
    scenario: Scenario,
    *,
    state_dir: Path,
    speed: float,
    polling: Mapping[str, Any] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    rate_limit: int = 300,
    wall_timeout: float = 300.0,
    follow_new: bool = True,
    control_token: str | None = None,
) -> Trial:
    """Serve ``scenario``, run the daemon on it until it has seen everything, then stop both.

    The daemon watches every run that exists when it starts (from its config) and, with
    ``follow_new``, every run created later from the moment it is created. It stops when the
    world has nothing more to play and the daemon has caught up, or after ``wall_timeout``.
    """
    raw: dict[str, Any] = {
        "api": {"version": "v2", "team_id": scenario.team.id},
        "polling": dict(polling or {}),
    }
    raw.update(extra_config or {})
    return await trial.run_trial(
        scenario,
        state_dir=state_dir,
        speed=speed,
        config=raw,
        rate_limit=rate_limit,
        wall_timeout=wall_timeout,
        step=FOLLOW_STEP,
        follow_new=follow_new,
        watch_existing=True,
        control_token=control_token,
    )


def observable(truth: Sequence[TruthEntry], since: float) -> list[TruthEntry]:
    """The changes a daemon started at ``since`` could have seen.

    Dropped: the messages and statuses of runs deleted before ``since`` (the API shows nothing of
    them but their loss, which stays), and human requests opened *and* resolved before ``since``
    (a request is only visible while pending; its message stays and is scored).
    """
    gone = {t.run_id for t in truth if t.kind == "run_lost" and t.time < since}
    resolved = {
        t.request_id for t in truth if t.kind == "human_request_resolved" and t.time < since
    }
    return [
        t
        for t in truth
        if not (t.run_id in gone and t.kind != "run_lost")
        and not (t.kind.startswith("human_request") and t.request_id in resolved)
    ]


def free_port() -> int:
    """A loopback port nobody listens on now (for a listener whose URL must be known before it
    starts, such as the daemon's webhook receiver that the scenario's runs post to)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_bytes() -> int:
    """This process's resident set size now (VmRSS), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def machine() -> dict[str, Any]:
    """What the numbers were measured on: the code as it was when this process started (the
    package may be edited while a long benchmark runs), the load as it is now."""
    return {**_CODE_AT_START, "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def _machine_at_start() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_package_changes": bool(_git("status", "--porcelain", "duvo_monitor")),
        "package_digest": package_digest(),
    }


def package_digest() -> str:
    """A short hash of the package's sources: which code the figures were measured on, even
    when it was not committed yet."""
    digest = hashlib.sha256()
    package = RESULTS.parent.parent / "duvo_monitor"
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=RESULTS.parent.parent, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def quiet_logs() -> None:
    """Errors only, on stderr: a benchmark's output is its table (the fixed-interval policy's
    429s would otherwise print a warning each)."""
    configure_logging("error", json=False, stream=sys.stderr)


def save(name: str, data: Mapping[str, Any], markdown: str) -> Path:
    """Write ``results/<name>.json`` (raw) and ``results/<name>.md`` (the table). ``--quick``
    runs save under ``<name>-quick``, so that a smoke run never replaces a measurement."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    return RESULTS / f"{name}.json"


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


_CODE_AT_START = _machine_at_start()
