"""The world the integration tests run in: the simulator and the real daemon in one task group,
over real HTTP on 127.0.0.1, time compressed, with an in-memory sink that records what arrived
and when (on the simulated clock). Fakes, not mocks: the sink implements the Sink protocol.

The runner itself is :func:`duvo_monitor.simulator.trial.run_trial`, shared with the
benchmarks; this module keeps the tests' defaults and their helpers for reading the outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duvo_monitor.daemon import Monitor
from duvo_monitor.simulator import Faults, Scenario, Simulator
from duvo_monitor.simulator.scoring import Score, score
from duvo_monitor.simulator.trial import run_trial
from duvo_monitor.sinks.memory import MemorySink

CollectSink = MemorySink


@dataclass(slots=True)
class WorldResult:
    sim: Simulator
    monitor: Monitor
    sink: CollectSink
    settled: bool
    requests: list[Any] = field(default_factory=list)

    def score(self, **kw: Any) -> Score:
        first = min((r.time for r in self.sim.requests), default=self.monitor.started_at)
        kw.setdefault("start", first)
        watched = set(self.monitor.scheduler.tracks)
        kw.setdefault("runs", watched | {r.id for r in self.sim.world.runs() if not r.deleted})
        return score(self.sim.truth, self.sink.received, **kw)

    def explain_missed(self, score: Score) -> str:
        """For a failing assertion: where the missed messages were, and what the daemon did."""
        missed = set(score.messages_missed)
        t0 = self.sim.started_at
        lines = []
        for run in self.sim.world.runs():
            hit = [i for i, m in enumerate(run.messages) if m.id in missed]
            if not hit:
                continue
            track = self.monitor.scheduler.tracks.get(run.id)
            lines.append(f"run {run.id} {run.status} {len(run.messages)} messages, missed {hit}")
            lines.append(f"  checkpoint {track.cp if track else None}")
            created = [
                (round(t.time - t0, 2), t.index)
                for t in self.sim.truth
                if t.run_id == run.id and t.kind == "message_created" and t.index in hit
            ]
            lines.append(f"  created (s, index) {created}")
            emitted = [
                (
                    round(e.at - t0, 2),
                    e.envelope["type"].rsplit(".", 2)[-2:],
                    e.envelope["data"].get("index"),
                )
                for e in self.sink.received
                if e.envelope["subject"] == run.id
            ]
            lines.append(f"  emitted {emitted}")
            asked = [
                (round(r.time - t0, 2), r.path.rsplit("/", 1)[-1], r.query, r.status)
                for r in self.sim.requests
                if run.id in r.path
            ]
            lines.append(f"  requests {asked}")
        return "\n".join(lines)

    def types(self) -> list[str]:
        return [str(e.envelope["type"]) for e in self.sink.received]


async def run_world(
    scenario: Scenario,
    tmp_path: Path,
    *,
    speed: float = 40.0,
    version: str = "v2",
    discover: bool | None = None,
    polling: Mapping[str, Any] | None = None,
    api: Mapping[str, Any] | None = None,
    faults: Faults | Sequence[Faults] | None = None,
    rate_limit: int = 300,
    wall_timeout: float = 60.0,
    extra_config: Mapping[str, Any] | None = None,
) -> WorldResult:
    """Run until the daemon has seen everything the world will show (or ``wall_timeout``)."""
    discover = version == "v2" if discover is None else discover
    raw: dict[str, Any] = {
        "api": {"version": version, **(api or {})},
        "polling": {"min_interval": "500ms", **(polling or {})},
    }
    if discover:
        raw["watch"] = {"discover": {"since": "30d", "interval": "2s"}}
    raw.update(extra_config or {})
    trial = await run_trial(
        scenario,
        state_dir=tmp_path,
        speed=speed,
        config=raw,
        rate_limit=rate_limit,
        faults=faults,
        wall_timeout=wall_timeout,
        # Every 50 ms of wall time; runs created later are told to the daemon at once unless it
        # discovers them itself.
        step=0.05 * speed,
        follow_new=not discover,
    )
    return WorldResult(sim=trial.sim, monitor=trial.monitor, sink=trial.sink, settled=trial.settled)
