"""The differ: checkpoints + what the API shows -> typed changes, rendered into events with
stable ids. Pure, no loop."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from duvo_monitor.differ import (
    Checkpoint,
    MessageDiff,
    StatusDiff,
    diff_messages,
    diff_status,
    message_digest,
    page_request,
    start_final_verify,
)
from duvo_monitor.events import Change, Event, event_id, render
from duvo_monitor.models import Message, MessagePage, RunSnapshot

RUN = "11111111-1111-4111-8111-111111111111"
AGENT = "22222222-2222-4222-8222-222222222222"
REQ = "33333333-3333-4333-8333-333333333333"
EP = "test"


def events(diff: StatusDiff | MessageDiff) -> list[Event]:
    """The events of a diff's changes, as the poller renders them."""
    return [render(change) for change in diff.changes]


def run(status: str, **extra: Any) -> dict[str, Any]:
    base = {
        "id": RUN,
        "agent_id": AGENT,
        "build_id": AGENT,
        "status": status,
        "source": "api",
        "sandbox_id": None,
        "started_at": "2026-01-01T00:00:01.000Z",
        "completed_at": None,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:05.000Z",
        "human_in_the_loop_enabled": True,
    }
    base.update(extra)
    return base


def snap(status: str, pending: dict[str, Any] | None = None, **extra: Any) -> RunSnapshot:
    return RunSnapshot.from_api(
        {"run": run(status, **extra), "pending_human_request": pending}, endpoint=EP
    )


def msg(i: int, text: str | None = None, **extra: Any) -> Message:
    data = {
        "id": f"m{i}",
        "type": "text",
        "role": "assistant",
        "timestamp": f"2026-01-01T00:00:{i % 60:02d}.000Z",
        "text_content": text if text is not None else f"hello {i}",
    }
    data.update(extra)
    return Message.from_api(data, endpoint=EP)


def page(messages: list[Message], total: int, offset: int, limit: int = 50) -> MessagePage:
    return MessagePage(messages=tuple(messages), total=total, limit=limit, offset=offset)


def read_all(
    cp: Checkpoint, history: list[Message], known: dict[str, str] | None = None
) -> tuple[Checkpoint, list[str], int]:
    """Drive one poll's pages like the poller does; returns types of events and page count."""
    known = dict(known or {})
    offset, limit = page_request(cp, 50)
    first = True
    types: list[str] = []
    pages = 0
    while True:
        pages += 1
        chunk = history[offset : offset + limit]
        ids = {m.id for m in chunk}
        d = diff_messages(
            cp,
            page(chunk, len(history), offset, limit),
            offset=offset,
            first_page=first,
            known={k: v for k, v in known.items() if k in ids},
            seen_at=1e9,
            tail_window=5,
            page_size=50,
        )
        cp = d.checkpoint
        types.extend(e.type for e in events(d))
        known.update(dict(d.seen))
        if d.next_offset is None:
            return cp, types, pages
        offset = d.next_offset
        first = d.resync


def test_first_observation_emits_status_with_null_from() -> None:
    """The first look at a run is a status event from null."""
    d = diff_status(Checkpoint(run_id=RUN), snap("running"), seen_at=1e9)
    assert [e.type for e in events(d)] == ["ai.duvo.run.running"]
    assert events(d)[0].data["from"] is None
    assert d.checkpoint.status == "running"
    assert d.checkpoint.agent_id == AGENT


def test_same_status_emits_nothing() -> None:
    """An unchanged snapshot is no news."""
    cp = diff_status(Checkpoint(run_id=RUN), snap("running"), seen_at=1e9).checkpoint
    assert diff_status(cp, snap("running"), seen_at=1e9 + 5).changes == []


def test_terminal_status_carries_duration() -> None:
    """completed carries duration_seconds from started_at to completed_at."""
    cp = diff_status(Checkpoint(run_id=RUN), snap("running"), seen_at=1e9).checkpoint
    d = diff_status(cp, snap("completed", completed_at="2026-01-01T00:01:01.000Z"), seen_at=2e9)
    assert events(d)[0].type == "ai.duvo.run.completed"
    assert events(d)[0].data["duration_seconds"] == 60.0


def test_resume_and_finish_again_gets_new_ids() -> None:
    """completed -> running -> completed: two completed events with different ids."""
    cp = Checkpoint(run_id=RUN)
    ids = []
    for status in ("running", "completed", "running", "completed"):
        d = diff_status(cp, snap(status), seen_at=1e9)
        cp = d.checkpoint
        ids.append(events(d)[0].id)
    assert len(set(ids)) == 4


def test_resumed_and_ended_again_between_two_looks_is_reported() -> None:
    """completed, then completed with a later completed_at (resumed from outside and ended
    between two looks): a second completed event, from completed, with its own id; the run's
    transcript must be drained and verified again. The same completed_at again is no news."""
    first = snap("completed", completed_at="2026-01-01T00:01:00.000Z")
    d0 = diff_status(Checkpoint(run_id=RUN), first, seen_at=2e9)
    cp = replace(d0.checkpoint, verified=True)
    assert diff_status(cp, first, seen_at=2e9 + 5).changes == []
    again = snap("completed", completed_at="2026-01-01T00:02:00.000Z")
    d = diff_status(cp, again, seen_at=2e9 + 10)
    [e] = events(d)
    assert e.type == "ai.duvo.run.completed"
    assert (e.data["from"], e.data["to"]) == ("completed", "completed")
    assert e.id != events(d0)[0].id
    assert d.changed and not d.checkpoint.verified
    assert d.checkpoint.completed_at == "2026-01-01T00:02:00.000Z"
    assert diff_status(d.checkpoint, again, seen_at=2e9 + 15).changes == []


def test_completed_at_not_evidence_unless_both_read() -> None:
    """A checkpoint without completed_at (written before the field, or null from the API), an
    unreadable time or an earlier one: no event."""
    cp = diff_status(Checkpoint(run_id=RUN), snap("completed"), seen_at=2e9).checkpoint
    assert cp.completed_at is None
    later = snap("completed", completed_at="2026-01-01T00:02:00.000Z")
    assert diff_status(cp, later, seen_at=2e9 + 5).changes == []
    cp = diff_status(cp, later, seen_at=2e9 + 5).checkpoint
    for text in ("not a time", "2026-01-01T00:01:00.000Z"):
        assert diff_status(cp, snap("completed", completed_at=text), seen_at=2e9 + 9).changes == []
    assert Checkpoint.from_json(cp.to_json()).completed_at == "2026-01-01T00:02:00.000Z"


def test_same_change_same_id_across_restart() -> None:
    """Replaying from the same checkpoint (a crash before commit) reproduces the same ids."""
    cp = diff_status(Checkpoint(run_id=RUN), snap("running"), seen_at=1e9).checkpoint
    restored = Checkpoint.from_json(cp.to_json())
    a = events(diff_status(cp, snap("failed"), seen_at=1e9 + 1))
    b = events(diff_status(restored, snap("failed"), seen_at=1e9 + 99))
    assert [e.id for e in a] == [e.id for e in b]


def test_unknown_status_passes_through() -> None:
    """A status we have never heard of becomes its own event type."""
    d = diff_status(Checkpoint(run_id=RUN), snap("paused_for_Maintenance"), seen_at=1e9)
    assert events(d)[0].type == "ai.duvo.run.paused_for_maintenance"
    assert events(d)[0].data["to"] == "paused_for_Maintenance"


def test_lost_once() -> None:
    """404 or run:null gives one run.lost, not one per poll."""
    cp = diff_status(Checkpoint(run_id=RUN), snap("running"), seen_at=1e9).checkpoint
    d = diff_status(cp, None, seen_at=1e9)
    assert [e.type for e in events(d)] == ["ai.duvo.run.lost"]
    assert events(d)[0].data["reason"] == "not_found"
    assert diff_status(d.checkpoint, None, seen_at=1e9).changes == []
    null = RunSnapshot.from_api({"run": None, "pending_human_request": None}, endpoint=EP)
    assert events(diff_status(cp, null, seen_at=1e9))[0].data["reason"] == "run_null"


def test_human_request_opened_then_resolved_in_order() -> None:
    """waiting + request: status then opened; back to running: resolved then status."""
    pending = {
        "id": REQ,
        "title": "Approve?",
        "description": None,
        "created_at": "2026-01-01T00:00:10.000Z",
        "type": "approval",
    }
    cp = diff_status(Checkpoint(run_id=RUN), snap("running"), seen_at=1e9).checkpoint
    d = diff_status(cp, snap("waiting", pending), seen_at=1e9)
    assert [e.type for e in events(d)] == ["ai.duvo.run.waiting", "ai.duvo.human_request.opened"]
    d2 = diff_status(d.checkpoint, snap("running"), seen_at=events(d)[1].change_time + 30)
    assert [e.type for e in events(d2)] == ["ai.duvo.human_request.resolved", "ai.duvo.run.running"]
    assert events(d2)[0].data["waited_seconds"] == 30.0


def test_catch_up_5000_messages_in_the_page_floor() -> None:
    """A 5000-message history takes exactly ceil(5000/50) pages and emits each message once."""
    history = [msg(i) for i in range(5000)]
    cp, types, pages = read_all(Checkpoint(run_id=RUN), history)
    assert pages == 100
    assert types == ["ai.duvo.message.created"] * 5000
    assert cp.next_index == 5000
    assert len(cp.tail) == 5


def test_page_edges() -> None:
    """0, 49, 50 and 51 messages: each emitted once; a second poll finds nothing new."""
    for n in (0, 49, 50, 51):
        history = [msg(i) for i in range(n)]
        cp, types, _ = read_all(Checkpoint(run_id=RUN), history)
        assert len(types) == n
        cp2, types2, _ = read_all(cp, history)
        assert types2 == []
        assert cp2.next_index == n


def test_new_messages_after_cursor() -> None:
    """Appended messages are emitted once, reading from just before the cursor."""
    history = [msg(i) for i in range(12)]
    cp, _, _ = read_all(Checkpoint(run_id=RUN), history)
    assert page_request(cp, 50) == (7, 50)
    history += [msg(i) for i in range(12, 15)]
    cp, types, _ = read_all(cp, history)
    assert types == ["ai.duvo.message.created"] * 3


def test_edit_in_tail_window_is_an_update() -> None:
    """A message edited in place within the tail window becomes message.updated, once."""
    history = [msg(i) for i in range(10)]
    cp, _, _ = read_all(Checkpoint(run_id=RUN), history)
    history[8] = msg(8, "edited text")
    cp, types, _ = read_all(cp, history)
    assert types == ["ai.duvo.message.updated"]
    _, types, _ = read_all(cp, history)
    assert types == []


def test_history_change_resyncs_without_reemitting_seen_ids() -> None:
    """A message removed under us triggers a resync that emits only never-seen ids."""
    history = [msg(i) for i in range(20)]
    cp, _, _ = read_all(Checkpoint(run_id=RUN), history)
    known = {m.id: message_digest(m) for m in history}
    del history[17]
    history.append(msg(99))
    cp, types, _ = read_all(cp, history, known)
    assert types == ["ai.duvo.message.created"]
    assert cp.scan_from is None and cp.next_index == 20


def test_final_verify_sees_edit_anywhere() -> None:
    """After a run ends, the full re-read finds an edit far outside the tail window."""
    history = [msg(i) for i in range(120)]
    cp, _, _ = read_all(Checkpoint(run_id=RUN), history)
    known = {m.id: message_digest(m) for m in history}
    history[3] = msg(3, "changed long ago")
    cp = replace(cp, status="completed")
    cp, types, pages = read_all(start_final_verify(cp), history, known)
    assert types == ["ai.duvo.message.updated"]
    assert cp.verified and pages == 3


def test_tool_result_carries_name_and_duration() -> None:
    """A tool result names its tool and how long the call took when the call was seen."""
    call = msg(1, tool_call={"id": "c1", "name": "search", "arguments": {"q": "x"}})
    result = msg(4, tool_result={"tool_call_id": "c1", "result": {"ok": True}}, type="tool_result")
    _, _, _ = read_all(Checkpoint(run_id=RUN), [call, result])
    d = diff_messages(
        Checkpoint(run_id=RUN),
        page([call, result], 2, 0),
        offset=0,
        first_page=True,
        known={},
        seen_at=1e9,
        tail_window=5,
        page_size=50,
    )
    tool_result = events(d)[1].data["message"]["tool_result"]
    assert tool_result["name"] == "search"
    assert tool_result["duration_seconds"] == 3.0
    assert d.checkpoint.open_calls == ()


def test_checkpoint_roundtrip_and_constant_size() -> None:
    """A checkpoint survives JSON and does not grow with the transcript."""
    small, _, _ = read_all(Checkpoint(run_id=RUN), [msg(i) for i in range(10)])
    big, _, _ = read_all(Checkpoint(run_id=RUN), [msg(i) for i in range(3000)])
    assert Checkpoint.from_json(big.to_json()) == big
    assert abs(len(big.to_json()) - len(small.to_json())) < 40


def test_message_event_ids_stable() -> None:
    """message.created ids depend on the run and the message id only."""
    history = [msg(i) for i in range(3)]
    a = diff_messages(
        Checkpoint(run_id=RUN),
        page(history, 3, 0),
        offset=0,
        first_page=True,
        known={},
        seen_at=1.0,
        tail_window=5,
        page_size=50,
    )
    b = diff_messages(
        Checkpoint(run_id=RUN),
        page(history, 3, 0),
        offset=0,
        first_page=True,
        known={},
        seen_at=999.0,
        tail_window=5,
        page_size=50,
    )
    assert [e.id for e in events(a)] == [e.id for e in events(b)]
    assert len({e.id for e in events(a)}) == 3


def test_never_seen_404_gets_a_grace_period() -> None:
    """A run that 404s before it was ever seen is asked again; lost only after the grace."""
    from duvo_monitor.differ import NOT_FOUND_GRACE

    first = diff_status(Checkpoint(run_id=RUN), None, seen_at=1000.0)
    assert first.not_yet and events(first) == []
    later = diff_status(first.checkpoint, None, seen_at=1000.0 + NOT_FOUND_GRACE / 2)
    assert later.not_yet
    found = diff_status(later.checkpoint, snap("running"), seen_at=1001.0 + NOT_FOUND_GRACE / 2)
    assert [e.type for e in events(found)] == ["ai.duvo.run.running"]
    assert found.checkpoint.missing_since is None
    gone = diff_status(later.checkpoint, None, seen_at=1000.0 + NOT_FOUND_GRACE)
    assert [e.type for e in events(gone)] == ["ai.duvo.run.lost"]


def test_lost_run_that_comes_back_is_followed_again() -> None:
    """A run lost and then shown again gets a status event from its last status."""
    cp = diff_status(Checkpoint(run_id=RUN), snap("running"), seen_at=1e9).checkpoint
    lost = diff_status(cp, None, seen_at=1e9).checkpoint
    back = diff_status(lost, snap("completed"), seen_at=1e9 + 1)
    assert [e.type for e in events(back)] == ["ai.duvo.run.completed"]
    assert events(back)[0].data["from"] == "running"
    assert not back.checkpoint.lost


def test_every_event_carries_its_typed_change_and_the_id_it_always_had() -> None:
    """Status, request and message events name what happened as a ``Change`` (consumers never
    read the type string), and their ids are the ones earlier versions wrote (state files and
    sinks downstream depend on them)."""
    pending = {
        "id": REQ,
        "title": "Approve?",
        "description": None,
        "created_at": "2026-01-01T00:00:10.000Z",
        "type": "approval",
    }
    first = diff_status(Checkpoint(run_id=RUN), snap("waiting", pending), seen_at=1e9)
    assert [e.change for e in events(first)] == [Change.STATUS, Change.REQUEST_OPENED]
    again = diff_status(first.checkpoint, snap("running"), seen_at=1e9)
    assert [e.change for e in events(again)] == [Change.REQUEST_RESOLVED, Change.STATUS]
    messages = diff_messages(
        Checkpoint(run_id=RUN),
        page([msg(0)], 1, 0),
        offset=0,
        first_page=True,
        known={},
        seen_at=1.0,
        tail_window=5,
        page_size=50,
    )
    assert [e.change for e in events(messages)] == [Change.MESSAGE_CREATED]
    assert events(first)[0].id == event_id(RUN, "status", "1")
    assert events(first)[1].id == event_id(RUN, "human_request.opened", REQ)
    assert events(again)[0].id == event_id(RUN, "human_request.resolved", REQ)
    assert events(again)[1].id == event_id(RUN, "status", "2")
    assert events(messages)[0].id == event_id(RUN, "message", msg(0).id)
    # The namespace and the id layout, pinned to values written by earlier versions.
    assert event_id("r1", "message", "m1") == "11b52b92-4641-51b8-8654-da0b38b63004"
    assert event_id("r1", "status", "1") == "1c228eb2-da3d-5fbf-b50b-3389d85c242f"
    assert event_id("r1", "human_request.opened", "q1") == "0f8e9168-c0c6-5ba9-9911-3027a329af16"
