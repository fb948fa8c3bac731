"""``duvo-monitor demo``: the embedded simulator with a lively scenario, and the real daemon
watching it over HTTP on 127.0.0.1, time compressed, printing events until the story ends."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus

from duvo_monitor.board import BoardSink
from duvo_monitor.clock import Clock
from duvo_monitor.config import parse_config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.simulator import DEFAULT_API_KEY, Scenario, Simulator
from duvo_monitor.sinks.base import Sink

log = structlog.get_logger("duvo_monitor.demo")

MAX_DEMO_SECONDS = 900.0


def caught_up(monitor: Monitor, sim: Simulator) -> bool:
    """The daemon has seen everything the simulator will ever show."""
    for run in sim.world.runs():
        track = monitor.scheduler.tracks.get(run.id)
        if track is None and run.deleted:
            continue  # deleted before anyone could see it
        if track is None or track.inflight:
            return False
        cp = track.cp
        if run.deleted:
            if not cp.lost:
                return False
        elif (
            cp.status != run.status
            or cp.next_index < len(run.messages)
            or (cp.terminal and not cp.verified)
        ):
            return False
    return True


@asynccontextmanager
async def running(monitor: Monitor) -> AsyncIterator[Monitor]:
    """The daemon runs (started, ready) for the body of the ``async with``; on the way out it is
    stopped and its drain awaited (``Monitor.run`` bounds the drain by its own grace)."""
    finished = anyio.Event()

    async def follow(*, task_status: TaskStatus[Monitor]) -> None:
        try:
            await monitor.run(task_status=task_status)
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        await tg.start(follow)
        try:
            yield monitor
        finally:
            monitor.stop(0)
            with anyio.CancelScope(shield=True):
                await finished.wait()


async def follow_world(
    monitor: Monitor, sim: Simulator, *, step: float, follow_new: bool = False
) -> bool:
    """Play the world until it has nothing more to show and the daemon has seen all of it
    (True), or until the daemon stops (False); callers bound it with a timeout.

    Every ``step`` simulated seconds the world advances and, with ``follow_new``, the daemon is
    told of each run the moment it exists, as ``duvo-monitor start`` or the control API would.
    """
    clock = monitor.clock
    known = -1
    while not monitor.stopping.is_set():
        await clock.sleep(step)
        sim.world.advance(clock.time())
        if follow_new:
            runs = sim.world.runs()
            if len(runs) != known:
                known = len(runs)
                fresh = [r.id for r in runs if r.id not in monitor.scheduler.tracks]
                if fresh:
                    await monitor.watchlist.add_runs(fresh, source="api")
        if sim.world.next_event_time() is None and caught_up(monitor, sim):
            return True
    return False


def run_demo(
    *,
    speed: float = 6.0,
    scenario: str | None = None,
    seed: int = 7,
    sinks_factory: Callable[[], Sequence[Sink]] | None = None,
    board: BoardSink | None = None,
) -> int:
    """Play the story; ``board`` (the live board on a terminal) replaces the JSON-lines sink,
    and shows the requests spent of the daemon's budget."""
    story = Scenario.load(scenario) if scenario else Scenario.builtin("demo")
    clock = Clock.scaled(speed)

    async def main() -> int:
        with tempfile.TemporaryDirectory(prefix="duvo-monitor-demo-") as tmp:
            sim = Simulator(story, clock=clock, seed=seed)
            async with anyio.create_task_group() as tg:
                bound = await tg.start(sim.serve, "127.0.0.1", 0)
                print(
                    f"duvo-monitor demo: simulator at {bound.url}, {len(story.runs)} runs, "
                    f"time x{speed:g}; the daemon discovers and follows them. Ctrl-C stops.",
                    file=sys.stderr,
                )
                config = parse_config(
                    {
                        "api": {"base_url": bound.url, "version": "v2"},
                        "watch": {"discover": {"since": "1h", "interval": "5s"}},
                        "state": {"path": str(Path(tmp) / "demo.db")},
                        "polling": {"min_interval": "500ms"},
                    },
                    source="demo",
                )
                sinks: Sequence[Sink] | None = [board] if board is not None else None
                if board is None and sinks_factory is not None:
                    sinks = sinks_factory()
                monitor = Monitor(
                    config,
                    api_key=Secret(DEFAULT_API_KEY),
                    environ={},
                    clock=clock,
                    sinks=sinks,
                )
                if board is not None:
                    board.clock = clock
                    board.budget = monitor.budget.snapshot
                    board.model.respond_prefix = ("--base-url", bound.url)
                async with running(monitor):
                    with anyio.move_on_after(clock.wall(MAX_DEMO_SECONDS)):
                        await follow_world(monitor, sim, step=1.0)
                tg.cancel_scope.cancel()
            print(
                f"duvo-monitor demo: done; {len(sim.requests)} API requests for "
                f"{len(sim.truth)} changes.",
                file=sys.stderr,
            )
            return 0

    try:
        return anyio.run(main)
    except KeyboardInterrupt:
        return 130
