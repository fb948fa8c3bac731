"""A reload (SIGHUP) applies each part of the new config live, in-process, against the simulator
over HTTP: discovery, the polling policy's budget gate, the worker count, the log level."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import yaml
from harness import CollectSink
from simfixtures import PLAIN_AGENT, scenario, wait_until

from duvo_monitor.clock import Clock
from duvo_monitor.config import load_config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.demo import running
from duvo_monitor.logs import configure_logging
from duvo_monitor.simulator import DEFAULT_API_KEY, Simulator

SPEED = 20.0


def rid(n: int) -> str:
    return f"f0000000-0000-4000-8000-{n:012d}"


def long_run(n: int) -> dict[str, Any]:
    """A run that keeps talking for an hour of simulated time."""
    timeline: list[dict[str, Any]] = [{"at": "1s", "status": "running"}]
    timeline += [{"at": f"{2 * i + 2}s", "say": f"step {i}"} for i in range(200)]
    timeline.append({"at": "1h", "status": "completed"})
    return {"id": rid(n), "agent": "Plain", "start": "-5s", "timeline": timeline}


@dataclass(slots=True)
class Reloading:
    monitor: Monitor
    sim: Simulator
    path: Path
    raw: dict[str, Any]

    def write(self, **sections: Any) -> None:
        raw = {**self.raw, **sections}
        self.path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


@asynccontextmanager
async def daemon(
    tmp_path: Path, runs: int, *, sinks: list[dict[str, Any]] | None = None, **sections: Any
) -> AsyncIterator[Reloading]:
    clock = Clock.scaled(SPEED)
    sim = Simulator(scenario([long_run(n) for n in range(runs)]), clock=clock, rate_limit=None)
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            bound = await tg.start(sim.serve, "127.0.0.1", 0)
            raw: dict[str, Any] = {
                "api": {"base_url": bound.url, "version": "v2"},
                "state": {"path": str(tmp_path / "state.db")},
                **sections,
            }
            if sinks is not None:
                raw["sinks"] = sinks
            reloading = Reloading(
                monitor=None,  # type: ignore[arg-type]
                sim=sim,
                path=tmp_path / "config.yaml",
                raw=raw,
            )
            reloading.write()
            monitor = Monitor(
                load_config(reloading.path),
                api_key=Secret(DEFAULT_API_KEY),
                environ={},
                clock=clock,
                sinks=None if sinks is not None else [CollectSink(clock)],
                config_path=str(reloading.path),
                handle_signals=False,
            )
            reloading.monitor = monitor
            async with running(monitor):
                yield reloading
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_reload_enables_discovery(tmp_path: Path) -> None:
    """A daemon started without ``watch.discover`` discovers the runs once a reload turns it on."""
    async with daemon(tmp_path, 3) as d:
        await d.monitor.clock.sleep(5)
        assert not d.monitor.scheduler.tracks
        d.write(watch={"discover": {"since": "1h", "interval": "1s", "agents": [PLAIN_AGENT]}})
        assert await d.monitor.reload()
        await wait_until(lambda: {rid(n) for n in range(3)} <= set(d.monitor.scheduler.tracks))


@pytest.mark.anyio
async def test_reload_from_fixed_to_adaptive_installs_the_budget_gate(tmp_path: Path) -> None:
    """``polling.policy: fixed`` sends without the budget's gate; reloaded to ``adaptive``, every
    request goes through the gate (and is counted by it)."""
    runs = {"runs": [rid(0), rid(1)]}
    async with daemon(
        tmp_path, 2, watch=runs, polling={"policy": "fixed", "fixed_interval": "2s"}
    ) as d:
        await wait_until(lambda: len(d.sim.requests) >= 4)
        assert sum(d.monitor.budget.sent.values()) == 0
        d.write(watch=runs, polling={"policy": "adaptive", "min_interval": "500ms"})
        assert await d.monitor.reload()
        before = len(d.sim.requests)
        await wait_until(lambda: len(d.sim.requests) >= before + 4)
        assert sum(d.monitor.budget.sent.values()) >= 3


@pytest.mark.anyio
async def test_reload_changes_the_worker_count(tmp_path: Path) -> None:
    """One worker polls one run at a time; reloaded to four, more polls are in flight at once."""
    runs = {"runs": [rid(n) for n in range(12)]}
    fixed = {"policy": "fixed", "fixed_interval": "500ms"}
    async with daemon(tmp_path, 12, watch=runs, polling={**fixed, "workers": 1}) as d:
        pipeline = d.monitor.pipeline

        def inflight() -> int:
            return pipeline.polling

        seen = 0
        with anyio.move_on_after(1.0):
            while True:
                seen = max(seen, inflight())
                await anyio.sleep(0.002)
        assert seen == 1
        d.write(watch=runs, polling={**fixed, "workers": 4})
        assert await d.monitor.reload()
        await wait_until(lambda: inflight() >= 3)


@pytest.mark.anyio
async def test_a_refused_reload_keeps_the_log_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reload whose sinks cannot be built is refused whole: the log level it asked for (debug)
    is not left behind either."""
    configure_logging("info", json=True, stream=sys.stderr)
    sink = {"name": "out", "type": "file", "path": str(tmp_path / "events.jsonl")}
    async with daemon(tmp_path, 1, sinks=[sink], logging={"level": "info"}) as d:
        bad = {
            "name": "hook",
            "type": "webhook",
            "url": "http://127.0.0.1:9/hook",
            "secret_file": str(tmp_path / "no-such-secret"),
        }
        d.write(sinks=[sink, bad], logging={"level": "debug"})
        assert not await d.monitor.reload()
        structlog.get_logger("test").debug("a debug line after the refusal")
        assert "a debug line after the refusal" not in capsys.readouterr().err
