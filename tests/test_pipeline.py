"""The poll pipeline's stages hand values on through bounded streams: while the sinks take
nothing, the polling stops at the streams' bound instead of spending the budget; once they take
events again, every message arrives once and every run is back with the scheduler. The real
daemon against the simulator over HTTP, time compressed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from simfixtures import run_id, scenario, wait_until

from duvo_monitor.clock import Clock
from duvo_monitor.config import Config, parse_config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.demo import running
from duvo_monitor.events import Event
from duvo_monitor.pipeline import HANDOFF
from duvo_monitor.simulator import DEFAULT_API_KEY, Simulator
from duvo_monitor.simulator.scoring import Score, score
from duvo_monitor.sinks.memory import MemorySink

SPEED = 20.0
WORKERS = 4
RUNS = WORKERS + 2 * HANDOFF + 10


def chatty_run(n: int) -> dict[str, Any]:
    """A run that says something every simulated second for 20 s, then completes."""
    timeline: list[dict[str, Any]] = [{"at": "1s", "status": "running"}]
    timeline += [{"at": f"{i + 2}s", "say": f"step {i}"} for i in range(19)]
    timeline.append({"at": "25s", "status": "completed"})
    return {"id": run_id(n), "agent": "Plain", "start": "-1s", "timeline": timeline}


class GatedSink(MemorySink):
    """Takes nothing until ``release`` is set; ``taking`` is set once a batch waits for it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, name="gated")
        self.release = anyio.Event()
        self.taking = anyio.Event()

    async def deliver(self, batch: Sequence[Event]) -> None:
        self.taking.set()
        await self.release.wait()
        await super().deliver(batch)


def config(url: str, tmp_path: Path) -> Config:
    raw: dict[str, Any] = {
        "api": {"base_url": url, "version": "v2"},
        "state": {"path": str(tmp_path / "state.db")},
        "watch": {"runs": [run_id(n) for n in range(RUNS)]},
        "polling": {"policy": "fixed", "fixed_interval": "500ms", "workers": WORKERS},
    }
    return parse_config(raw)


@pytest.mark.anyio
async def test_a_sink_that_takes_nothing_stops_the_polling_at_the_streams_bound(
    tmp_path: Path,
) -> None:
    clock = Clock.scaled(SPEED)
    runs = [chatty_run(n) for n in range(RUNS)]
    sim = Simulator(scenario(runs), clock=clock, rate_limit=None)
    sink = GatedSink(clock)
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            bound = await tg.start(sim.serve, "127.0.0.1", 0)
            monitor = Monitor(
                config(bound.url, tmp_path),
                api_key=Secret(DEFAULT_API_KEY),
                environ={},
                clock=clock,
                sinks=[sink],
                handle_signals=False,
            )
            async with running(monitor):
                pipeline = monitor.pipeline
                tracks = monitor.scheduler.tracks
                await sink.taking.wait()
                limit = WORKERS + 2 * HANDOFF + 3
                # Every stream fills, then the workers wait to hand on and the dispatcher has
                # no worker to give a run to: the polling stops.
                stalled = -1
                while stalled != len(sim.requests):
                    stalled = len(sim.requests)
                    await clock.sleep(2.0)  # four fixed intervals: any idle worker would poll
                assert 0 < pipeline.held <= limit
                assert pipeline.held < RUNS  # the bound stopped it, not a lack of runs to poll
                await clock.sleep(5.0)
                assert len(sim.requests) == stalled
                # No run is held twice: every held run is one the scheduler counts in flight.
                assert sum(t.inflight for t in tracks.values()) == pipeline.held
                sink.release.set()

                def scored() -> Score:
                    return score(sim.truth, sink.received, runs=set(tracks))

                # Taken again: the polling resumes and every run is caught up with, to its end.
                await wait_until(
                    lambda: (
                        not scored().messages_missed
                        and all(t.cp.status == "completed" for t in tracks.values())
                    ),
                    within=30,
                )
                monitor.stop()
            tg.cancel_scope.cancel()
    result = scored()
    assert result.messages_expected == RUNS * 19
    assert not result.messages_duplicated
    assert not result.duplicate_event_ids
    assert not result.status_missed
