"""Discovery on a busy team does not grow the daemon without bound: runs that finished and
retired are forgotten ``polling.forget_after`` later, in memory and in the state file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import CollectSink
from simfixtures import PLAIN_AGENT, scenario, wait_until

from duvo_monitor.clock import Clock
from duvo_monitor.config import parse_config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.demo import running
from duvo_monitor.simulator import DEFAULT_API_KEY, Simulator

RUNS = 1000
SPEED = 20.0


def failed_run(n: int) -> dict[str, Any]:
    return {
        "id": f"c0000000-0000-4000-8000-{n:012d}",
        "agent": "Plain",
        "start": "-30s",
        "timeline": [{"at": "1s", "status": "running"}, {"at": "2s", "status": "failed"}],
    }


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        count = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return int(count)


@pytest.mark.anyio
async def test_a_thousand_discovered_runs_that_retire_leave_memory_and_state_bounded(
    tmp_path: Path,
) -> None:
    """1,000 runs are discovered, polled to their end and retired; ``forget_after`` later the
    daemon holds none of them (tracks, sweep memory, outcome) and the state file keeps no row
    of them, while every run's end was delivered exactly once."""
    clock = Clock.scaled(SPEED)
    sim = Simulator(scenario([failed_run(n) for n in range(RUNS)]), clock=clock, rate_limit=None)
    sink = CollectSink(clock)
    state = tmp_path / "state.db"
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            bound = await tg.start(sim.serve, "127.0.0.1", 0)
            config = parse_config(
                {
                    "api": {"base_url": bound.url, "version": "v2", "requests_per_minute": 6000},
                    "state": {"path": str(state)},
                    "watch": {
                        "discover": {"since": "1m", "interval": "1s", "agents": [PLAIN_AGENT]}
                    },
                    "polling": {"final_verify": "tail", "forget_after": "10s"},
                }
            )
            monitor = Monitor(
                config,
                api_key=Secret(DEFAULT_API_KEY),
                environ={},
                clock=clock,
                sinks=[sink],
                handle_signals=False,
            )
            async with running(monitor):
                await wait_until(
                    lambda: len({e["subject"] for e in sink.envelopes()}) >= RUNS, within=100
                )
                # Past forget_after and past the discovery horizon (the runs are a minute old).
                await clock.sleep(60)
                await wait_until(lambda: not monitor.scheduler.tracks, within=30)
                assert not monitor.outcome.statuses
                await wait_until(lambda: not monitor.watchlist.forgotten, within=30)
            tg.cancel_scope.cancel()
    ends = [e for e in sink.envelopes() if e["type"] == "ai.duvo.run.failed"]
    assert len(ends) == RUNS
    assert len({e["id"] for e in ends}) == RUNS
    assert rows(state, "runs") == 0
    assert rows(state, "seen") == 0
