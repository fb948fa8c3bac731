"""The simulator's pure parts: scenario format, world behaviour, generator, rate limits, faults.

No event loop and no sockets: every test drives time with explicit ``now`` values.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from simfixtures import AGENT, ASKING, PLAIN_AGENT, QUIET_AGENT, TEAM, run_id, scenario

from duvo_monitor.simulator import Faults, Scenario, ScenarioError, World, generate_scenario
from duvo_monitor.simulator.faults import Window, add_extra_fields, malform, roll
from duvo_monitor.simulator.model import TERMINAL, iso
from duvo_monitor.simulator.ratelimit import RateLimiter
from duvo_monitor.simulator.scenario import parse_duration
from duvo_monitor.simulator.world import Conflict, NotFound, RunQuery

T = 1_000_000.0


def statuses(world: World, rid: str) -> list[tuple[float, str | None, str | None]]:
    return [
        (e.time - T, e.status_from, e.status_to)
        for e in world.truth
        if e.run_id == rid and e.kind == "status"
    ]


def kinds(world: World, rid: str) -> list[str]:
    return [e.kind for e in world.truth if e.run_id == rid]


def one_run(timeline: list[dict[str, Any]], **spec: Any) -> World:
    sc = scenario([{"id": run_id(1), "agent": AGENT, "start": 0, "timeline": timeline, **spec}])
    return World(sc, start=T)


# -- the scenario format -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("10s", 10), ("2m", 120), ("1h", 3600), ("1m30s", 90), (5, 5), (1.5, 1.5)],
)
def test_durations_accept_units_and_numbers(text: object, seconds: float) -> None:
    """Durations read 250ms / 10s / 2m / 1h (and combinations) or plain seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten", "5x", "", True, None, [1]])
def test_durations_refuse_nonsense(text: object) -> None:
    """Anything else is a ValueError that says how to write one."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["runs"][0]["timeline"][1].update(at="soon"),
            r"runs\[0\]\.timeline\[1\]\.at: not a duration",
        ),
        (
            lambda d: d["runs"][0].update(agent="nobody"),
            r"runs\[0\]\.agent: unknown agent 'nobody'",
        ),
        (lambda d: d["runs"][0].update(colour="red"), r"runs\[0\]\.colour: unknown key"),
        (
            lambda d: d["runs"][0]["timeline"][0].update(at="9s"),
            r"runs\[0\]\.timeline\[1\]\.at: earlier",
        ),
        (
            lambda d: d["runs"][0]["timeline"].append({"at": "9s", "tool_result": {}}),
            r"timeline\[2\]\.tool_result: no earlier tool_call",
        ),
        (
            lambda d: d["runs"][0]["timeline"].append({"at": "9s", "status": "done"}),
            r"timeline\[2\]\.status: unknown status 'done'",
        ),
        (
            lambda d: d["runs"][0]["timeline"].append({"at": "9s"}),
            r"timeline\[2\]: needs exactly one action",
        ),
        (
            lambda d: d["runs"][0]["timeline"].append({"at": "9s", "after": "1s", "say": "x"}),
            r"timeline\[2\]: needs exactly one of 'at'",
        ),
        (
            lambda d: d["runs"][0]["timeline"].append(
                {"at": "9s", "human_request": {"type": "question"}}
            ),
            r"human_request\.questions: a question request needs questions",
        ),
        (lambda d: d["runs"][0].update(id="not-a-uuid"), r"runs\[0\]\.id: not a UUID"),
        (lambda d: d["runs"].append(dict(d["runs"][0])), r"runs\[1\]\.id: duplicate id"),
        (lambda d: d.update(faults={"error_500": 2}), r"faults\.error_500: expected a probability"),
        (
            lambda d: d.update(faults=[{"drop": 0.1, "window": {"start": "20s", "end": "10s"}}]),
            r"faults\[0\]\.window\.end: the window ends before",
        ),
        (lambda d: d.update(version=2), r"version: unsupported scenario version"),
        (lambda d: d.update(agents=[]), r"agents: at least one agent"),
        (lambda d: d.update(list_stopped_as="gone"), r"list_stopped_as: not a list status"),
    ],
)
def test_scenario_errors_name_their_path(mutate: Any, message: str) -> None:
    """Every problem in a scenario document is reported with its path in the document."""
    from simfixtures import scenario_dict

    doc = scenario_dict(
        [
            {
                "id": run_id(1),
                "agent": AGENT,
                "timeline": [{"at": "1s", "status": "running"}, {"at": "5s", "say": "hi"}],
            }
        ]
    )
    mutate(doc)
    with pytest.raises(ScenarioError, match=message):
        Scenario.from_dict(doc)


def test_scenario_loads_yaml_and_json_files(tmp_path: Any) -> None:
    """Scenario.load reads YAML and JSON alike; a broken file is a ScenarioError, not a crash."""
    from simfixtures import scenario_dict

    doc = scenario_dict([{"id": run_id(1), "agent": "Asker", "timeline": ASKING}])
    (tmp_path / "s.json").write_text(json.dumps(doc))
    (tmp_path / "s.yaml").write_text(json.dumps(doc))  # JSON is YAML
    (tmp_path / "bad.yaml").write_text("runs: [unclosed")
    assert Scenario.load(tmp_path / "s.json") == Scenario.load(tmp_path / "s.yaml")
    assert Scenario.load(tmp_path / "s.json").runs[0].agent_id == AGENT
    with pytest.raises(ScenarioError, match="not valid YAML"):
        Scenario.load(tmp_path / "bad.yaml")
    with pytest.raises(ScenarioError, match="cannot read"):
        Scenario.load(tmp_path / "missing.yaml")


def test_demo_scenario_plays_every_outcome() -> None:
    """The packaged demo has ~12 runs over two minutes with every outcome and a lost run."""
    demo = Scenario.builtin("demo")
    world = World(demo, start=T)
    world.advance(T + 200)
    runs = world.runs()
    assert len(runs) == 12
    shown = {r.status for r in runs}
    assert {"completed", "failed", "stopped", "interrupted", "waiting"} <= shown
    assert any(r.deleted for r in runs)
    truth_kinds = {e.kind for e in world.truth}
    assert truth_kinds == {
        "status",
        "message_created",
        "human_request_opened",
        "human_request_resolved",
        "run_lost",
    }
    times = [e.time for e in world.truth]
    assert times == sorted(times)


# -- the world -----------------------------------------------------------------------------------


def test_runs_appear_at_their_start_and_follow_their_timeline() -> None:
    """A run exists from its start on; each status step happens at start + at."""
    sc = scenario(
        [
            {
                "id": run_id(1),
                "agent": PLAIN_AGENT,
                "start": "10s",
                "timeline": [
                    {"at": "1s", "status": "starting"},
                    {"at": "2s", "status": "running"},
                    {"at": "4s", "say": "hello"},
                    {"at": "5s", "status": "completed"},
                ],
            }
        ]
    )
    world = World(sc, start=T)
    world.advance(T + 9.999)
    assert world.get_run(run_id(1)) is None
    world.advance(T + 13)
    run = world.live_run(run_id(1))
    assert run.status == "running"
    assert run.started_at == T + 12
    world.advance(T + 20)
    assert statuses(world, run.id) == [
        (10, None, "pending"),
        (11, "pending", "starting"),
        (12, "starting", "running"),
        (15, "running", "completed"),
    ]
    assert run.completed_at == T + 15
    assert run.updated_at == T + 15
    assert run.messages[0].text_content == "hello"
    assert iso(run.messages[0].timestamp) == iso(T + 14)


def test_iso_timestamps_are_utc_with_milliseconds() -> None:
    """Timestamps are ISO 8601, UTC, milliseconds, 'Z'."""
    assert iso(0.1234) == "1970-01-01T00:00:00.123Z"
    assert iso(1_764_000_000.9996) == "2025-11-24T16:00:01.000Z"


def test_tool_result_refers_to_its_call() -> None:
    """A tool_result message carries the id of the tool_call message before it."""
    world = one_run(
        [
            {"at": "1s", "tool_call": {"name": "search", "arguments": {"q": "x"}}},
            {"at": "2s", "tool_result": {"error": "boom"}},
        ]
    )
    world.advance(T + 3)
    call, result = world.live_run(run_id(1)).messages
    assert call.to_api()["tool_call"]["name"] == "search"
    assert result.to_api()["tool_result"] == {"tool_call_id": call.tool_call["id"], "error": "boom"}  # type: ignore[index]
    assert "text_content" not in result.to_api()


def test_human_request_pauses_the_timeline_until_answered_outside() -> None:
    """A request puts the run in waiting; the answer after answer_after resumes it, shifted."""
    world = one_run(
        [
            {"at": "1s", "status": "running"},
            {
                "at": "2s",
                "human_request": {"type": "approval", "title": "OK?", "answer_after": "10s"},
            },
            {"after": "1s", "say": "thanks"},
            {"after": "1s", "status": "completed"},
        ],
        webhook_url="http://receiver/hook",
    )
    world.advance(T + 5)
    run = world.live_run(run_id(1))
    assert run.status == "waiting"
    assert run.pending is not None
    assert run.pending.to_pending_api()["type"] == "approval"
    assert "questions" not in run.pending.to_pending_api()
    world.advance(T + 11.9)
    assert run.status == "waiting"
    world.advance(T + 30)
    assert run.status == "completed"
    assert statuses(world, run.id)[-3:] == [
        (2, "running", "waiting"),
        (12, "waiting", "running"),
        (14, "running", "completed"),
    ]
    request = next(iter(run.requests.values()))
    assert request.response == "approved"
    assert request.responded_at == T + 12
    assert [m.type for m in run.messages] == ["human_request", "text", "text"]
    assert run.messages[1].role == "user"
    assert [e.event for e in world.drain_webhooks()] == ["human_request", "run_completed"]
    assert world.drain_webhooks() == []


def test_respond_checks_the_answer_form_and_resumes() -> None:
    """respond needs approved for approvals and answers for questions; then the run resumes."""
    world = one_run(
        [
            {
                "at": "1s",
                "human_request": {
                    "type": "question",
                    "title": "Which?",
                    "questions": [
                        {"question": "Colour?", "options": [{"label": "red"}, {"label": "blue"}]}
                    ],
                },
            },
            {"after": "2s", "status": "completed"},
        ]
    )
    world.advance(T + 2)
    run = world.live_run(run_id(1))
    request = run.pending
    assert request is not None
    assert request.to_pending_api()["questions"][0]["options"][1] == {"label": "blue"}
    with pytest.raises(Conflict, match="answers"):
        world.respond(run.id, request.id, now=T + 3, approved=True)
    with pytest.raises(NotFound, match="human request"):
        world.respond(run.id, run_id(99), now=T + 3, answers={})
    answered = world.respond(run.id, request.id.upper(), now=T + 4, answers={"Colour?": "blue"})
    assert json.loads(answered.response or "") == {"Colour?": "blue"}
    assert run.status == "running"
    with pytest.raises(Conflict, match="not pending"):
        world.respond(run.id, request.id, now=T + 5, answers={"Colour?": "red"})
    world.advance(T + 6.5)
    assert run.status == "completed"


def test_posting_resumes_a_completed_run_with_a_short_continuation() -> None:
    """POST message on a completed run: running, two assistant messages, completed again."""
    world = one_run([{"at": "1s", "status": "running"}, {"at": "2s", "status": "completed"}])
    world.advance(T + 10)
    run = world.live_run(run_id(1))
    message = world.post_message(run.id, "and another thing", T + 10)
    assert message.role == "user"
    assert message.text_content == "and another thing"
    assert run.status == "running"
    assert run.completed_at is None
    assert run.submitted_prompt_count == 1
    world.advance(T + 30)
    assert run.status == "completed"
    assert run.completed_at == T + 14.5
    assert [m.role for m in run.messages] == ["user", "assistant", "assistant"]
    assert statuses(world, run.id)[-2:] == [
        (10, "completed", "running"),
        (14.5, "running", "completed"),
    ]


@pytest.mark.parametrize("final", ["failed", "stopped"])
def test_posting_to_a_failed_or_stopped_run_only_persists_the_message(final: str) -> None:
    """Failed and stopped runs are not resumable: the message is kept, the status is not."""
    world = one_run([{"at": "1s", "status": final}])
    world.advance(T + 2)
    world.post_message(run_id(1), "hello?", T + 3)
    world.advance(T + 30)
    run = world.live_run(run_id(1))
    assert run.status == final
    assert len(run.messages) == 1


def test_posting_to_a_waiting_run_answers_its_request() -> None:
    """A message to a waiting run resolves the pending request with its text and resumes."""
    world = one_run(ASKING)
    world.advance(T + 3.5)
    run = world.live_run(run_id(1))
    request = run.pending
    assert request is not None
    world.post_message(run.id, "yes, go", T + 5)
    assert request.response == "yes, go"
    assert run.pending is None
    assert run.status == "running"
    world.advance(T + 8)
    assert run.status == "completed"


def test_stop_ends_an_active_run_and_is_a_noop_otherwise() -> None:
    """Stop: waiting -> stopped (request cancelled, agent steps dropped, outside steps kept)."""
    world = one_run([*ASKING, {"at": "60s", "delete": True}])
    world.advance(T + 4)
    run = world.live_run(run_id(1))
    request = run.pending
    assert world.stop(run.id, T + 5) == (True, "Run stopped")
    assert run.status == "stopped"
    assert run.pending is None
    assert request is not None
    assert not request.pending
    assert kinds(world, run.id)[-2:] == ["human_request_resolved", "status"]
    changed, message = world.stop(run.id, T + 6)
    assert not changed
    assert "not running" in message
    world.advance(T + 30)
    assert run.status == "stopped"
    assert len(run.messages) == 2
    with pytest.raises(Conflict):
        world.respond(run.id, request.id, now=T + 31, approved=True)
    world.advance(T + 61.9)
    assert not run.deleted  # 60 s of run time, shifted by the 2 s spent waiting
    world.advance(T + 62)
    assert run.deleted  # the outside step survived the stop


def test_runs_without_human_in_the_loop_never_ask() -> None:
    """human_in_the_loop_enabled false: the request step is skipped, no waiting."""
    sc = scenario([{"id": run_id(1), "agent": QUIET_AGENT, "timeline": ASKING}])
    world = World(sc, start=T)
    world.advance(T + 60)
    run = world.live_run(run_id(1))
    assert not run.human_in_the_loop_enabled
    assert run.status == "completed"
    assert "waiting" not in [s for _, _, s in statuses(world, run.id)]
    assert run.requests == {}


def test_deleted_runs_are_lost() -> None:
    """A deleted run leaves the list, refuses everything, and is 'run_lost' in the truth."""
    world = one_run([{"at": "1s", "status": "running"}, {"at": "5s", "delete": True}])
    world.advance(T + 10)
    run = world.get_run(run_id(1))
    assert run is not None
    assert run.deleted
    assert kinds(world, run_id(1))[-1] == "run_lost"
    with pytest.raises(NotFound):
        world.live_run(run_id(1))
    with pytest.raises(NotFound):
        world.post_message(run_id(1), "hi", T + 11)
    assert world.query_runs(RunQuery(team_id=TEAM)) == ([], 0)
    assert world.delete_run(run_id(1), T + 12) is False


def test_updated_at_moves_with_every_visible_change() -> None:
    """updated_at is the time of the latest status change, message, or request change."""
    world = one_run(ASKING)
    seen = []
    for t in (1, 2, 3, 3.5, 10):
        world.advance(T + t)
        seen.append(world.live_run(run_id(1)).updated_at - T)
    assert seen == [1, 2, 3, 3, 3]
    world.answer_outside(run_id(1), T + 20)
    world.advance(T + 20)
    assert world.live_run(run_id(1)).updated_at == T + 20


def test_api_started_runs_follow_their_agents_script() -> None:
    """start_run: pending at once, then the agent's default script, ids unique per run."""
    world = World(scenario(), start=T)
    agent = world.scenario.agent(PLAIN_AGENT)
    assert agent is not None
    a = world.start_run(agent=agent, now=T, message="Do the thing\nplease")
    b = world.start_run(agent=agent, now=T)
    assert a.status == "pending"
    assert a.title == "Do the thing"
    assert a.submitted_prompt_count == 1
    assert a.run_number == 1
    assert b.run_number == 2
    assert a.id != b.id
    world.advance(T + 60)
    assert a.status == b.status == "completed"
    calls = {m.tool_call["id"] for r in (a, b) for m in r.messages if m.tool_call}
    assert len(calls) == 2


def test_unknown_status_mask_shows_then_reverts() -> None:
    """unknown_status: a made-up status for a while, both changes in the truth log."""
    world = one_run([{"at": "1s", "status": "running"}, {"at": "20s", "status": "completed"}])
    world.advance(T + 2)
    assert world.mask_status(run_id(1), "paused", T + 2, 5)
    run = world.live_run(run_id(1))
    assert run.to_api()["status"] == "paused"
    assert run.status == "running"
    world.advance(T + 8)
    assert run.to_api()["status"] == "running"
    assert statuses(world, run.id)[-2:] == [(2, "running", "paused"), (7, "paused", "running")]
    assert world.mask_status(run_id(1), "paused", T + 18, 5)
    world.advance(T + 30)  # the real change ends the mask
    assert statuses(world, run.id)[-2:] == [(18, "running", "paused"), (20, "paused", "completed")]


def test_edited_and_unknown_messages_are_in_the_truth() -> None:
    """edit_message changes text in place (same id); unknown types are new messages."""
    world = one_run([{"at": "1s", "say": "first"}])
    world.advance(T + 2)
    edited = world.edit_message(run_id(1), T + 3)
    assert edited is not None
    assert edited.text_content == "first (edited)"
    entry = world.truth[-1]
    assert (entry.kind, entry.message_id, entry.index) == ("message_updated", edited.id, 0)
    new = world.add_unknown_message(run_id(1), T + 4)
    assert new is not None
    assert new.type not in ("text", "tool_call", "tool_result")
    assert world.truth[-1].kind == "message_created"
    assert world.truth[-1].index == 1


def test_list_query_filters_sorts_and_pages() -> None:
    """v2 list semantics: created_at order both ways, offset/limit, filters, total."""
    runs = [
        {
            "id": run_id(i),
            "agent": AGENT if i % 2 else PLAIN_AGENT,
            "start": i,
            "title": f"Run {i}",
            "source": "schedule" if i == 3 else "api",
            "timeline": [{"at": 0, "status": "failed" if i == 4 else "running"}],
        }
        for i in range(1, 7)
    ]
    world = World(scenario(runs), start=T)
    world.advance(T + 10)
    page, total = world.query_runs(RunQuery(team_id=TEAM, limit=2))
    assert total == 6
    assert [r.id for r in page] == [run_id(6), run_id(5)]
    page, _ = world.query_runs(RunQuery(team_id=TEAM, limit=2, offset=5))
    assert [r.id for r in page] == [run_id(1)]
    page, _ = world.query_runs(RunQuery(team_id=TEAM, descending=False, offset=1, limit=2))
    assert [r.id for r in page] == [run_id(2), run_id(3)]
    assert world.query_runs(RunQuery(team_id=TEAM, status="failed"))[1] == 1
    assert world.query_runs(RunQuery(team_id=TEAM, agent_id=AGENT))[1] == 3
    assert world.query_runs(RunQuery(team_id=TEAM, source="schedule"))[0][0].id == run_id(3)
    assert world.query_runs(RunQuery(team_id=TEAM, search="RUN 5"))[1] == 1
    assert world.query_runs(RunQuery(team_id=TEAM, since=T + 4))[1] == 3
    assert world.query_runs(RunQuery(team_id=TEAM, has_issues=True))[1] == 0
    assert world.query_runs(RunQuery(team_id=run_id(77))) == ([], 0)


# -- the generator -------------------------------------------------------------------------------


def test_generator_is_deterministic() -> None:
    """The same arguments give the same scenario (ids included); another seed another one."""
    a = generate_scenario(seed=3, runs=30, human_request_rate=0.5)
    b = generate_scenario(seed=3, runs=30, human_request_rate=0.5)
    c = generate_scenario(seed=4, runs=30, human_request_rate=0.5)
    assert a == b
    assert a != c
    world_a, world_b = World(a, start=T, seed=1), World(b, start=T, seed=1)
    world_a.advance(T + 600)
    world_b.advance(T + 600)
    assert world_a.truth == world_b.truth


def test_generator_honours_outcomes_and_activity() -> None:
    """Outcome weights, historic vs active runs and long histories come out as asked."""
    sc = generate_scenario(seed=1, runs=40, active=10, outcomes={"failed": 1.0}, long_history=300)
    assert sum(1 for r in sc.runs if r.start < 0) == 30
    assert [r.history for r in sc.runs if r.history] == [300]
    world = World(sc, start=T)
    world.advance(T + 1000)
    assert {r.status for r in world.runs()} == {"failed"}
    with pytest.raises(ScenarioError, match="outcomes"):
        generate_scenario(outcomes={"exploded": 1.0})


@pytest.mark.parametrize("seed", [3, 8])
def test_generated_runs_all_come_to_rest(seed: int) -> None:
    """Once quiet, every generated run is terminal or waits on a pending request (none hangs)."""
    sc = generate_scenario(seed=seed, runs=80, active=20, human_request_rate=0.5)
    world = World(sc, start=T)
    world.advance(T + 10_000)
    assert world.next_event_time() is None
    for run in world.runs():
        assert run.deleted or run.status in TERMINAL or run.pending is not None, run.id


def test_ten_thousand_runs_fit() -> None:
    """10,000 runs generate, play and list quickly (the heap, not a scan per step)."""
    started = time.perf_counter()
    sc = generate_scenario(seed=5, runs=10_000, active=100, message_rate=0.05)
    world = World(sc, start=T)
    world.advance(T)
    page, total = world.query_runs(RunQuery(team_id=sc.team.id, limit=100))
    assert total >= 9_500
    assert len(page) == 100
    world.advance(T + 300)
    assert time.perf_counter() - started < 20


# -- rate limits and faults ----------------------------------------------------------------------


def test_rate_limit_uses_fixed_windows_per_key() -> None:
    """N per window per key; reset at the window's end; retry-after whole seconds >= 1."""
    limiter = RateLimiter(limit=2)
    first = limiter.hit("a", 120.5)
    assert (first.allowed, first.remaining, first.reset) == (True, 1, 180)
    assert limiter.hit("a", 130).allowed
    third = limiter.hit("a", 179.7)
    assert not third.allowed
    assert third.retry_after == 1
    assert third.remaining == 0
    assert ("retry-after", "1") in third.headers()
    assert limiter.hit("b", 131).allowed  # another key, another budget
    assert limiter.hit("a", 180).allowed  # a new window


def test_fault_rolls_respect_probability_and_window() -> None:
    """Probability 1 always hits, 0 never; outside the window nothing hits."""
    rng = random.Random(0)
    plan = Faults(error_503=1.0, slow=1.0, slow_delay=0.5, window=Window(start=10, end=20))
    assert roll([plan], 5, rng).kinds == frozenset()
    hit = roll([plan], 15, rng)
    assert hit.wire == "error_503"
    assert "slow" in hit
    assert hit.slow_delay == 0.5
    assert roll([Faults()], 15, rng).kinds == frozenset()
    assert roll([Faults(drop=1.0, error_500=1.0)], 0, rng).wire == "drop"
    with pytest.raises(ValueError, match="probability"):
        Faults(drop=1.5)


def test_answer_fault_helpers_damage_json() -> None:
    """extra_fields adds unknown keys to every object; malform leaves no parsable JSON."""
    assert add_extra_fields({"a": [{"b": 1}]})["a"][0]["x_sim_extra"] == "unknown field"
    rng = random.Random(1)
    for _ in range(50):
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
            json.loads(malform(b'{"run":{"id":"abc","status":"running"}}', rng))
