"""One world run in one process: the simulator and the real daemon in one task group, over real
HTTP on 127.0.0.1, time compressed, with the package's in-memory sink (which records what
arrived and when, on the simulated clock). The one world runner of the integration tests
(``tests/harness.py``) and the in-process benchmarks (``benchmarks/runner.py``); the
multi-process benchmark (``benchmarks/worlds.py``) runs its contenders as processes instead.

Not imported by the package's ``__init__``: it needs the daemon, which the simulator does not.
"""

from __future__ import annotations

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
from duvo_monitor.simulator.faults import Faults
from duvo_monitor.simulator.scenario import Scenario
from duvo_monitor.simulator.server import DEFAULT_API_KEY, Simulator
from duvo_monitor.sinks.memory import MemorySink


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
    config: Mapping[str, Any],
    rate_limit: int | None = 300,
    faults: Faults | Sequence[Faults] | None = None,
    wall_timeout: float = 60.0,
    step: float = 0.1,
    follow_new: bool = True,
    watch_existing: bool = False,
    control_token: str | None = None,
) -> Trial:
    """Serve ``scenario``, run the daemon on it until it has seen everything, then stop both.

    ``config`` is the daemon's configuration less ``api.base_url`` and ``state.path``, which are
    filled in. With ``watch_existing`` the runs that exist when the daemon starts are in its
    ``watch.runs``; with ``follow_new`` every run is told to the daemon
    (``Monitor.watchlist.add_runs``, as ``duvo-monitor start`` or the control API would) from
    the first ``step`` (simulated seconds) at which it exists. It stops when the world has
    nothing more to play and the daemon has caught up (``settled``), or after ``wall_timeout``
    wall seconds.
    """
    clock = Clock.scaled(speed)
    sim = Simulator(scenario, clock=clock, rate_limit=rate_limit, faults=faults)
    sink = MemorySink(clock)
    settled = False
    async with anyio.create_task_group() as tg:
        bound = await tg.start(sim.serve, "127.0.0.1", 0)
        raw: dict[str, Any] = {
            k: dict(v) if isinstance(v, Mapping) else v for k, v in config.items()
        }
        raw["api"] = {**raw.get("api", {}), "base_url": bound.url}
        raw["state"] = {**raw.get("state", {}), "path": str(state_dir / "state.db")}
        if watch_existing:
            sim.world.advance(clock.time())
            existing = [run.id for run in sim.world.runs()]
            raw["watch"] = {**raw.get("watch", {}), "runs": existing}
        monitor = Monitor(
            parse_config(raw, source="trial"),
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
                settled = await follow_world(monitor, sim, step=step, follow_new=follow_new)
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
