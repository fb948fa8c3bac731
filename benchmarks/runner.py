"""The world a benchmark runs in: the simulator and the real daemon in one task group, over real
HTTP on 127.0.0.1, time compressed, with the package's in-memory sink (:class:`MemorySink`),
which records what arrived and when.

The same approach as the integration tests' harness, written again here because benchmarks do
not import from ``tests/``. What differs: the daemon learns run ids the way issue 7 says it
must in production (from outside, the moment a run is created, as ``duvo-monitor start`` tells
a running daemon), so that no policy pays for discovery and every policy learns of a run at the
same moment; and a trial reports its requests by endpoint and the machine it ran on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from duvo_monitor.clock import Clock
from duvo_monitor.config import parse_config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.demo import follow_world, running
from duvo_monitor.logs import configure_logging
from duvo_monitor.simulator import DEFAULT_API_KEY, Scenario, Simulator, TruthEntry
from duvo_monitor.sinks.memory import MemorySink

RESULTS = Path(__file__).resolve().parent / "results"
FOLLOW_STEP = 0.1  # simulated seconds between looks for newly created runs


def endpoint_of(path: str) -> str:
    """A request path as a bounded endpoint name: ``run``, ``messages``, ``list``, ``teams``."""
    parts = path.strip("/").split("/")
    if parts[-1] == "messages":
        return "messages"
    if parts[-1] == "teams":
        return "teams"
    if len(parts) >= 3 and parts[-1] == "runs" and parts[-3] == "teams":
        return "list"
    if len(parts) >= 2 and parts[-2] == "runs":
        return "run"
    return "other"


@dataclass(slots=True, kw_only=True)
class Trial:
    """One daemon run against one simulator, and what came of it."""

    sim: Simulator
    monitor: Monitor
    sink: MemorySink
    started_at: float  # simulated unix time the daemon started
    ended_at: float
    wall_seconds: float
    settled: bool

    def requests(self, until: float | None = None) -> Counter[str]:
        """Requests that reached the simulator (up to ``until``), by endpoint, plus ``total``
        and ``429``."""
        counts: Counter[str] = Counter()
        for r in self.sim.requests:
            if until is not None and r.time > until:
                continue
            counts[endpoint_of(r.path)] += 1
            counts["total"] += 1
            if r.status == 429:
                counts["429"] += 1
        return counts

    def max_per_window(self, window: float = 60.0) -> int:
        """The most requests the simulator saw in any ``window`` seconds (a sliding check)."""
        times = sorted(r.time for r in self.sim.requests)
        best = 0
        lo = 0
        for hi, t in enumerate(times):
            while times[lo] <= t - window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


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
    clock = Clock.scaled(speed)
    sim = Simulator(scenario, clock=clock, rate_limit=rate_limit)
    sink = MemorySink(clock)
    settled = False
    async with anyio.create_task_group() as tg:
        bound = await tg.start(sim.serve, "127.0.0.1", 0)
        sim.world.advance(clock.time())
        existing = [run.id for run in sim.world.runs()]
        raw: dict[str, Any] = {
            "api": {"base_url": bound.url, "version": "v2", "team_id": scenario.team.id},
            "watch": {"runs": existing},
            "state": {"path": str(state_dir / "state.db")},
            "polling": dict(polling or {}),
        }
        raw.update(extra_config or {})
        monitor = Monitor(
            parse_config(raw, source="benchmark"),
            api_key=Secret(DEFAULT_API_KEY),
            environ={},
            clock=clock,
            sinks=[sink],
            handle_signals=False,
            control_token=None if control_token is None else Secret(control_token),
        )
        wall_start = time.perf_counter()
        started_at = clock.time()
        async with running(monitor):
            with anyio.move_on_after(wall_timeout):
                settled = await follow_world(monitor, sim, step=FOLLOW_STEP, follow_new=follow_new)
            ended_at = clock.time()
        wall = time.perf_counter() - wall_start
        tg.cancel_scope.cancel()
    return Trial(
        sim=sim,
        monitor=monitor,
        sink=sink,
        started_at=started_at,
        ended_at=ended_at,
        wall_seconds=wall,
        settled=settled,
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
