"""The daemon against the simulator over real HTTP: every change exactly once, in budget."""

from __future__ import annotations

import json
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from harness import run_world

from duvo_monitor.simulator import Faults, Scenario, generate_scenario


@pytest.mark.anyio
async def test_demo_scenario_every_change_once(tmp_path: Path) -> None:
    """The demo story: every message once, every lasting status, requests, lost run, in budget."""
    result = await run_world(Scenario.builtin("demo"), tmp_path, speed=25)
    assert result.settled
    s = result.score(transient=3.0)
    assert s.perfect_messages, s.summary()
    assert not s.duplicate_event_ids
    assert not s.status_missed and not s.status_invented and not s.final_mismatch, s.summary()
    assert not s.requests_missed and not s.lost_missed, s.summary()


TEAM = {
    "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "name": "Test team",
    "organization_id": None,
}
AGENT = {"id": "a0000000-0000-4000-8000-00000000000a", "name": "Agent", "human_in_the_loop": True}


def event_schema() -> Any:
    ref = resources.files("duvo_monitor").joinpath("schemas", "event.schema.json")
    return json.loads(ref.read_text())


def assert_valid_events(envelopes: list[dict[str, Any]]) -> None:
    validator = jsonschema.Draft202012Validator(
        event_schema(), format_checker=jsonschema.FormatChecker()
    )
    for envelope in envelopes:
        errors = sorted(validator.iter_errors(envelope), key=str)
        assert not errors, (envelope["type"], [e.message for e in errors[:3]])


def assert_within_budget(requests: list[Any], limit: int, window: float = 60.0) -> int:
    """No window of ``window`` simulated seconds holds more than ``limit`` requests."""
    times = sorted(r.time for r in requests)
    recent: deque[float] = deque()
    worst = 0
    for t in times:
        recent.append(t)
        while recent[0] <= t - window:
            recent.popleft()
        worst = max(worst, len(recent))
    assert worst <= limit, f"{worst} requests in one {window:g} s window (budget {limit})"
    return worst


def history_run(n: int, index: int, status: str = "completed") -> dict[str, Any]:
    return {
        "id": f"e0000000-0000-4000-8000-{index:012d}",
        "agent": "Agent",
        "start": "-1m",
        "title": f"{n} messages",
        "history": n,
        "timeline": [{"at": "1s", "status": "running"}, {"at": "2s", "status": status}],
    }


@pytest.mark.anyio
async def test_demo_events_match_the_schema(tmp_path: Path) -> None:
    """Every emitted event validates against the shipped CloudEvents JSON Schema."""
    result = await run_world(Scenario.builtin("demo"), tmp_path, speed=60)
    assert result.settled
    envelopes = result.sink.envelopes()
    assert {e["type"].split(".")[2] for e in envelopes} >= {"run", "message", "human_request"}
    assert_valid_events(envelopes)


@pytest.mark.anyio
async def test_many_runs_in_budget(tmp_path: Path) -> None:
    """60 runs, 10 active: every message exactly once, and never over the budget."""
    scenario = generate_scenario(seed=3, runs=60, active=10, duration=120, message_rate=0.4)
    result = await run_world(scenario, tmp_path, speed=30, rate_limit=300, wall_timeout=90)
    assert result.settled
    s = result.score()
    assert s.perfect_messages, s.summary()
    assert not s.duplicate_event_ids and not s.status_invented and not s.final_mismatch
    assert_within_budget(result.sim.requests, 300)
    assert not [r for r in result.sim.requests if r.status == 429]


@pytest.mark.anyio
async def test_v1_api(tmp_path: Path) -> None:
    """The v1 paths: runs registered from outside, every message once, lost on 404."""
    scenario = generate_scenario(seed=5, runs=8, duration=60, message_rate=0.5)
    result = await run_world(
        scenario, tmp_path, speed=30, version="v1", polling={"linger_interval": "20s"}
    )
    assert result.settled
    assert all(r.path.startswith("/v1/") for r in result.sim.requests)
    s = result.score()
    assert s.perfect_messages and not s.final_mismatch, s.summary()


@pytest.mark.anyio
async def test_page_edges_and_a_5000_message_history(tmp_path: Path) -> None:
    """0, 49, 50, 51 and 5000 messages: each once; the 5000 take ceil(5000/50) + little."""
    sizes = [0, 49, 50, 51, 5000]
    scenario = Scenario.from_dict(
        {
            "version": 1,
            "team": TEAM,
            "agents": [AGENT],
            "runs": [history_run(n, i) for i, n in enumerate(sizes)],
        }
    )
    result = await run_world(
        scenario, tmp_path, speed=20, polling={"final_verify": "tail"}, wall_timeout=90
    )
    assert result.settled
    s = result.score()
    assert s.perfect_messages, s.summary()
    big = "e0000000-0000-4000-8000-000000000004"
    pages = [r for r in result.sim.requests if r.path.endswith(f"{big}/messages")]
    assert len(pages) <= 100 + 3, len(pages)


@pytest.mark.anyio
async def test_faults_lose_nothing(tmp_path: Path) -> None:
    """500s, 502/503 pages, HTML, truncated and malformed JSON, drops, slow answers, extra
    fields: retried with backoff, and still every message once, no invented status."""
    faults = Faults(
        error_500=0.04,
        error_502=0.03,
        error_503=0.03,
        html=0.03,
        truncate=0.03,
        malformed=0.03,
        drop=0.03,
        slow=0.03,
        slow_delay=1.0,
        extra_fields=0.2,
    )
    scenario = generate_scenario(seed=11, runs=12, duration=60, message_rate=0.5)
    result = await run_world(scenario, tmp_path, speed=30, faults=faults, wall_timeout=90)
    assert result.settled
    s = result.score()
    assert s.perfect_messages, result.explain_missed(s)
    assert not s.duplicate_event_ids and not s.status_invented and not s.final_mismatch
    assert sum(1 for r in result.sim.requests if r.status >= 500 or r.status == 0) > 5


@pytest.mark.anyio
async def test_unknown_statuses_types_and_edits(tmp_path: Path) -> None:
    """Made-up statuses and message types pass through; edits in place become updates."""
    faults = Faults(unknown_status=0.02, unknown_message_type=0.05, edit_message=0.05)
    scenario = generate_scenario(seed=13, runs=8, duration=60, message_rate=0.6)
    result = await run_world(scenario, tmp_path, speed=30, faults=faults, wall_timeout=90)
    assert result.settled
    s = result.score()
    assert s.perfect_messages, s.summary()
    truth_types = {t.kind for t in result.sim.truth}
    assert "message_updated" in truth_types
    assert s.edits_seen >= 1, s.summary()
    assert_valid_events(result.sink.envelopes())


def emitted_at(result: Any, event_type: str, subject: str) -> list[float]:
    return [
        e.at
        for e in result.sink.received
        if e.envelope["type"] == event_type and e.envelope["subject"] == subject
    ]


@pytest.mark.anyio
async def test_a_finished_run_deleted_later_is_lost_at_the_next_sweep(tmp_path: Path) -> None:
    """A completed run lingers (it may be resumed) with a status probe every linger_interval
    (5 min); sweeps show it meanwhile. Deleted, it drops out of the list: the first sweep that
    misses it asks for it, so run.lost comes within seconds, not minutes."""
    runs = [{**history_run(3, i), "start": "0s"} for i in range(4)]
    gone = runs[0]["id"]
    runs[0]["timeline"] = [*runs[0]["timeline"], {"at": "40s", "delete": True}]
    scenario = Scenario.from_dict({"version": 1, "team": TEAM, "agents": [AGENT], "runs": runs})
    result = await run_world(scenario, tmp_path, speed=20, wall_timeout=60)
    assert result.settled
    deleted = [t.time for t in result.sim.truth if t.kind == "run_lost" and t.run_id == gone]
    lost = emitted_at(result, "ai.duvo.run.lost", gone)
    assert len(deleted) == 1 and len(lost) == 1
    assert lost[0] - deleted[0] < 15.0, lost[0] - deleted[0]


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_a_run_deleted_before_the_start_is_reported_lost(
    tmp_path: Path, version: str
) -> None:
    """A watched run that was deleted before the daemon first looked answers 404 from the
    start: it is reported lost (never seen, so `last_status` null) once `polling.appear_timeout`
    is over, not minutes later, while a live run next to it is followed to its end."""
    gone = {**history_run(3, 1), "start": "-5m"}
    gone["timeline"] = [*gone["timeline"], {"at": "10s", "delete": True}]
    live = {**history_run(2, 2), "start": "-1s"}
    live["timeline"] = [{"at": "2s", "status": "running"}, {"at": "12s", "status": "completed"}]
    scenario = Scenario.from_dict(
        {"version": 1, "team": TEAM, "agents": [AGENT], "runs": [gone, live]}
    )
    result = await run_world(
        scenario,
        tmp_path,
        speed=20,
        version=version,
        discover=False,
        polling={"appear_timeout": "10s"},
    )
    assert result.settled
    s = result.score(runs={str(live["id"])})
    assert s.perfect_messages and not s.final_mismatch, s.summary()
    lost = [
        e.envelope
        for e in result.sink.received
        if e.envelope["type"] == "ai.duvo.run.lost" and e.envelope["subject"] == gone["id"]
    ]
    assert len(lost) == 1
    assert lost[0]["data"]["last_status"] is None
    # Reported after the grace (10 s of the daemon's clock), well within two of them.
    when = emitted_at(result, "ai.duvo.run.lost", str(gone["id"]))[0]
    assert 10.0 <= when - result.sim.started_at < 40.0, when - result.sim.started_at


@pytest.mark.anyio
async def test_trusted_rounds_under_saturation(tmp_path: Path) -> None:
    """More busy runs than the budget can poll: once sweeps are trusted, each sweep and the polls
    it sets off are one round, paced on what the budget has left. Nothing is missed or repeated,
    the budget holds, most message polls are the hinted ones, and an operator can see it. (How
    far rounds stretch, and what it buys, is measured in benchmarks/, not asserted here.)"""
    scenario = generate_scenario(
        seed=5, runs=16, duration=120, message_rate=0.8, human_request_rate=0.0
    )
    result = await run_world(scenario, tmp_path, speed=20, rate_limit=300, wall_timeout=120)
    assert result.settled
    s = result.score()
    assert s.perfect_messages and not s.duplicate_event_ids, result.explain_missed(s)
    assert_within_budget(result.sim.requests, 300)
    monitor = result.monitor
    assert monitor.scheduler.trust.trusted
    assert monitor.budget.sent["hinted"] > monitor.budget.sent["routine"]
    # What an operator sees of it.
    sample = monitor.registry.get_sample_value
    assert sample("duvo_monitor_sweeps_trusted") == 1
    assert (sample("duvo_monitor_sweep_interval_seconds") or 0) > 0
    hinted = sample("duvo_monitor_api_requests_sent_total", {"purpose": "hinted"}) or 0
    routine = sample("duvo_monitor_api_requests_sent_total", {"purpose": "routine"}) or 0
    assert hinted > routine > 0
