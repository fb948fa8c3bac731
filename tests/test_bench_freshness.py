"""The benchmarks' freshness scoring (duvo_monitor.simulator.freshness), on hand-made truth and
deliveries: a delivery before its change raises, misses are counted by kind, and the budget's
use while news waits, first looks and the report unit are computed as documented."""

from __future__ import annotations

from typing import Any

import pytest

from duvo_monitor.simulator.freshness import Contest, ScoringError, freshness
from duvo_monitor.simulator.model import RequestLogEntry, TruthEntry
from duvo_monitor.simulator.scoring import Emitted

RUN = "d0000000-0000-4000-8000-000000000001"
OTHER = "d0000000-0000-4000-8000-000000000002"
T0 = 1000.0


def change(at: float, kind: Any, run: str = RUN, **kw: Any) -> TruthEntry:
    return TruthEntry(time=T0 + at, run_id=run, kind=kind, agent_id="a", **kw)


def event(at: float, kind: str, run: str = RUN, **data: Any) -> Emitted:
    envelope = {"id": f"{kind}-{at}", "type": f"ai.duvo.{kind}", "subject": run, "data": data}
    return Emitted(envelope=envelope, at=T0 + at)


def request(at: float, path: str, status: int = 200) -> RequestLogEntry:
    return RequestLogEntry(
        time=T0 + at, method="GET", path=path, query="", status=status, api_key_ok=True
    )


def contest(**kw: Any) -> Contest:
    kw.setdefault("added", {RUN: T0})
    return Contest(start=T0, end=T0 + kw.pop("end", 10.0), budget=kw.pop("budget", 60), **kw)


TRUTH = [
    change(0, "status", status_to="running"),
    change(1, "message_created", message_id="m1", index=0),
    change(2, "message_created", message_id="m2", index=1),
    change(3, "human_request_opened", request_id="h1"),
    change(5, "human_request_resolved", request_id="h1"),
    change(6, "status", status_from="running", status_to="completed"),
    change(8, "run_lost"),
]


def test_a_delivery_before_its_change_is_an_error() -> None:
    """A message that reached the contender before it was created raises, never counts as 0."""
    emitted = [event(0.5, "message.created", message={"id": "m1"})]
    with pytest.raises(ScoringError, match="before it happened"):
        freshness(TRUTH, emitted, [], contest())


def test_misses_are_counted_by_kind_in_one_total() -> None:
    """Each undelivered change counts once under its kind; the total adds every kind."""
    emitted = [
        event(0.2, "run.running", to="running"),
        event(1.5, "message.created", message={"id": "m1"}),
    ]
    score = freshness(TRUTH, emitted, [], contest())
    assert score.misses == {
        "messages": 1,
        "statuses": 1,
        "human_requests": 1,
        "resolved": 1,
        "lost": 1,
    }
    assert score.missed == 5
    assert score.message_latency == [0.5]
    assert score.summary()["misses"] == 5


def test_a_transient_status_is_not_a_miss_and_latency_is_in_report_seconds() -> None:
    """A status superseded within two report seconds may be missed; with ``scale=4`` (the world
    four times faster than the contender's clock) latencies are divided by four."""
    truth = [
        change(0, "status", status_to="running"),
        change(4, "status", status_from="running", status_to="waiting"),
        change(10, "status", status_from="waiting", status_to="running"),
        change(12, "message_created", message_id="m1", index=0),
    ]
    emitted = [
        event(2, "run.running", to="running"),
        event(12, "run.running", to="running"),
        event(16, "message.created", message={"id": "m1"}),
    ]
    score = freshness(truth, emitted, [], contest(end=40.0, scale=4.0))
    assert score.missed == 0  # waiting lasted 6 s of the world = 1.5 report seconds
    assert score.message_latency == [1.0]
    # the first running lasted 1 report second (transient, not scored); the event at 12 is
    # matched to the change it saw, the running at 10, not to the first one
    assert score.status_latency == [0.5]


def test_utilization_counts_the_seconds_news_waited() -> None:
    """Requests in the seconds when some change was undelivered, over the budget in them."""
    truth = [
        change(0, "status", status_to="running"),
        change(2, "message_created", message_id="m1", index=0),
    ]
    emitted = [
        event(0.5, "run.running", to="running"),
        event(5.0, "message.created", message={"id": "m1"}),
    ]
    path = f"/v1/runs/{RUN}/messages"
    requests = [request(t, path) for t in (0.2, 2.5, 3.1, 3.6, 4.9, 7.0, 8.0)]
    score = freshness(truth, emitted, requests, contest(budget=120))  # 2 a second
    assert score.due_seconds == 4  # second 0 (the status), seconds 2, 3 and 4 (the message)
    assert score.requests_while_due == 5
    assert score.utilization_while_due == pytest.approx(5 / 8)
    assert score.requests == 7
    assert score.max_in_60s == 7


def test_first_look_and_its_bound() -> None:
    """First look: until both the status and the messages were read; the bound is
    ceil(2 x runs added together / budget a second) + 1 s."""
    truth = [
        change(0, "status", status_to="running"),
        change(0, "status", OTHER, status_to="running"),
    ]
    requests = [
        request(0.5, f"/v1/runs/{RUN}"),
        request(1.5, f"/v1/runs/{RUN}/messages"),
        request(2.0, f"/v1/runs/{OTHER}/messages"),
    ]
    score = freshness(truth, [], requests, contest(added={RUN: T0, OTHER: T0}, budget=120))
    assert score.first_look == {RUN: 1.5, OTHER: None}
    assert score.first_look_bound == {RUN: 3, OTHER: 3}  # ceil(4 / 2) + 1
    assert score.first_look_late == [OTHER]


def test_the_first_look_at_a_deleted_run_is_its_first_answer_after_the_deletion() -> None:
    """A run deleted before it could be looked at has nothing to read but its absence: its
    first 404 (v1) or ``run: null`` (v2, a 200) after the deletion is the whole first look. A
    404 for a run that still exists is not a look."""
    truth = [
        change(-30, "status", status_to="completed"),
        change(-20, "run_lost"),
        change(0, "status", OTHER, status_to="running"),
    ]
    requests = [
        request(0.5, f"/v1/runs/{OTHER}", status=404),  # e.g. a stale replica: not a look
        request(0.7, f"/v1/runs/{RUN}", status=404),
        request(1.0, f"/v1/runs/{OTHER}"),
    ]
    score = freshness(truth, [], requests, contest(added={RUN: T0, OTHER: T0}, budget=120))
    assert score.first_look == {RUN: pytest.approx(0.7), OTHER: None}
    on_v2 = [request(0.9, f"/v2/runs/{RUN}")]  # 200 {"run": null}
    score = freshness(truth, [], on_v2, contest(added={RUN: T0}, budget=120))
    assert score.first_look == {RUN: pytest.approx(0.9)}


def test_resume_deletion_and_discovery_latency() -> None:
    """A finished run resumed (terminal -> active) is detected by the first delivery of what
    changed then; a deletion by its run.lost; a run created during the run by its first event."""
    truth = [
        change(-50, "status", status_to="completed"),
        change(2, "message_created", message_id="u1", index=0),
        change(2, "status", status_from="completed", status_to="running"),
        change(4, "status", status_from="running", status_to="completed"),
        change(6, "run_lost"),
        change(3, "status", OTHER, status_to="pending"),
    ]
    truth.sort(key=lambda t: t.time)
    emitted = [
        event(0.1, "run.completed", to="completed"),
        event(2.7, "message.created", message={"id": "u1"}),
        event(3.0, "run.running", to="running"),
        event(4.5, "run.completed", to="completed"),
        event(7.0, "run.lost"),
        event(3.4, "run.pending", OTHER, to="pending"),
    ]
    added = {RUN: T0, OTHER: T0 + 3}
    score = freshness(truth, emitted, [], contest(added=added))
    assert score.resume_latency == [pytest.approx(0.7)]
    assert score.deletion_latency == [pytest.approx(1.0)]
    assert score.discovery_latency == [pytest.approx(0.4)]
    assert score.missed == 0
