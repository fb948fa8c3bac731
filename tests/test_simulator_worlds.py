"""The benchmarks' family of generated worlds (``generate_world``), played on the pure world:
each is what its name promises and the same seed gives the same world."""

from __future__ import annotations

from collections import Counter

import pytest

from duvo_monitor.simulator import ScenarioError, World
from duvo_monitor.simulator.generator import WORLDS, generate_world
from duvo_monitor.simulator.model import TERMINAL

T0 = 1_800_000_000.0


def played(name: str, seed: int = 1) -> tuple[World, int]:
    """The world after its whole duration, and how many runs existed at the start."""
    spec = generate_world(name, seed=seed)
    world = World(spec.scenario, start=T0, seed=seed)
    world.advance(T0)
    at_start = len(world.runs())
    world.advance(T0 + spec.duration)
    assert world.next_event_time() is None, "everything is played within the duration"
    return world, at_start


def test_every_world_is_deterministic_and_unknown_names_are_refused() -> None:
    """The same name and seed give the same scenario; another seed another one."""
    for name in WORLDS:
        assert generate_world(name, seed=3) == generate_world(name, seed=3)
        assert generate_world(name, seed=3).scenario != generate_world(name, seed=4).scenario
    with pytest.raises(ScenarioError, match="unknown world"):
        generate_world("nowhere", seed=1)


def test_wakeup_world_pending_runs_start_within_twenty_seconds() -> None:
    """50 runs all there at the start: 30% finished, the rest pending, all started by +25 s."""
    spec = generate_world("wakeup", seed=2)
    world = World(spec.scenario, start=T0, seed=2)
    world.advance(T0)
    statuses = Counter(r.status for r in world.runs())
    assert statuses == {"completed": 15, "pending": 35}
    world.advance(T0 + 25)
    assert not [r for r in world.runs() if r.status == "pending"]
    world.advance(T0 + spec.duration)
    kinds = Counter(t.kind for t in world.truth if t.time > T0)
    assert kinds["human_request_resolved"] == kinds["human_request_opened"] > 0
    assert spec.budget == 600


def test_resume_world_resumes_deletes_and_answers_from_outside() -> None:
    """Finished runs resumed (terminal -> running) and deleted after the start; every human
    request answered."""
    world, at_start = played("resume")
    after = [t for t in world.truth if t.time > T0]
    resumed = [t for t in after if t.kind == "status" and t.status_from in TERMINAL]
    assert at_start == 12 and len(world.runs()) == 20
    assert len(resumed) == 4 and all(t.status_to == "running" for t in resumed)
    assert sum(1 for t in after if t.kind == "run_lost") == 4
    opened = sum(1 for t in after if t.kind == "human_request_opened")
    assert opened == 8 == sum(1 for t in after if t.kind == "human_request_resolved")


def test_discovery_and_quiet_worlds() -> None:
    """Discovery: v2 only, runs created during the run. Quiet: 3 live runs among 60 finished."""
    world, at_start = played("discovery")
    assert generate_world("discovery", seed=1).versions == ("v2",)
    assert at_start == 30 and len(world.runs()) == 45
    world, at_start = played("quiet")
    assert at_start == 60 and len(world.runs()) == 63
    world, at_start = played("reference")
    assert at_start == 80 and len(world.runs()) == 100
