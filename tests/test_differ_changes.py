"""The differ reports typed changes and builds no event; rendering them gives the exact bytes
earlier versions wrote. Pure, no loop."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from test_differ import AGENT, REQ, RUN, msg, snap  # the same run, messages and ids

from duvo_monitor import message_walk, status_diff
from duvo_monitor.changes import (
    MessageCreated,
    MessageUpdated,
    RequestOpened,
    RequestResolved,
    RunLost,
    StatusChanged,
)
from duvo_monitor.differ import Checkpoint, diff_messages, diff_status, page_request
from duvo_monitor.events import Change, Event, render
from duvo_monitor.models import MessagePage

# sha256 of every line the scenario below produced with the differ as it was before it returned
# changes (main at 8d047c7, where it built each Event itself); 12 events.
GOLDEN_COUNT = 12
GOLDEN_SHA256 = "bfcfd41bfa7d658969e55ad4dd168cffe17dfe387edb30b10dfd0efb85f20cd1"


def scenario(
    status: Callable[..., Any], messages: Callable[..., Any], out: Callable[[Any], Sequence[Event]]
) -> list[Event]:
    """One run's life through the differ: a human request opened and answered, tool calls, an
    edit in place, the end, and the loss; ``out`` gives the events of one diff."""
    pending = {
        "id": REQ,
        "title": "Approve?",
        "description": None,
        "created_at": "2026-01-01T00:00:10.000Z",
        "type": "approval",
    }
    events: list[Event] = []
    cp = Checkpoint(run_id=RUN)
    for shown, seen_at in (
        (snap("pending"), 1e9),
        (snap("waiting", pending), 1e9 + 1),
        (snap("running", updated_at="2026-01-01T00:00:20.000Z"), 1e9 + 30),
    ):
        d = status(cp, shown, seen_at=seen_at)
        events.extend(out(d))
        cp = d.checkpoint
    history = [
        msg(0),
        msg(1, tool_call={"id": "c1", "name": "search", "arguments": {"q": "x"}}),
        msg(4, tool_result={"tool_call_id": "c1", "result": {"ok": True}}, type="tool_result"),
        msg(5, role="user"),
    ]
    for _ in range(2):
        offset, limit = page_request(cp, 50)
        chunk = history[offset : offset + limit]
        d = messages(
            cp,
            MessagePage(messages=tuple(chunk), total=len(history), limit=limit, offset=offset),
            offset=offset,
            first_page=True,
            known={},
            seen_at=1e9 + 40,
            tail_window=5,
            page_size=50,
        )
        events.extend(out(d))
        cp = d.checkpoint
        history[0] = msg(0, "edited in place")
    end = snap("completed", completed_at="2026-01-01T00:01:00.000Z")
    for shown, seen_at in ((end, 1e9 + 60), (None, 1e9 + 90)):
        d = status(cp, shown, seen_at=seen_at)
        events.extend(out(d))
        cp = d.checkpoint
    return events


def rendered(diff: status_diff.StatusDiff | message_walk.MessageDiff) -> list[Event]:
    return [render(change) for change in diff.changes]


def test_the_differ_returns_typed_changes_and_builds_no_event() -> None:
    """Each kind of change comes back as its own frozen value, carrying what its event needs;
    the differ's modules never build an Event (only :func:`render` does)."""
    seen: list[object] = []

    def keep(diff: status_diff.StatusDiff | message_walk.MessageDiff) -> list[Event]:
        seen.extend(diff.changes)
        return []

    scenario(diff_status, diff_messages, keep)
    assert [type(c) for c in seen] == [
        StatusChanged,
        StatusChanged,
        RequestOpened,
        RequestResolved,
        StatusChanged,
        MessageCreated,
        MessageCreated,
        MessageCreated,
        MessageCreated,
        MessageUpdated,
        StatusChanged,
        RunLost,
    ]
    assert not any(isinstance(c, Event) for c in seen)
    done = seen[10]
    assert isinstance(done, StatusChanged)
    assert (done.previous, done.status, done.key) == ("running", "completed", "4")
    assert done.run_id == RUN and done.agent_id == AGENT
    assert not hasattr(status_diff, "Event") and not hasattr(message_walk, "Event")


def test_rendered_changes_are_byte_identical_to_the_events_of_earlier_versions() -> None:
    """Ids, envelopes and bytes of every event are what the differ wrote before it returned
    changes, so a state file, outbox or spool written before still matches."""
    events = scenario(diff_status, diff_messages, rendered)
    assert len(events) == GOLDEN_COUNT
    assert hashlib.sha256(b"".join(e.line for e in events)).hexdigest() == GOLDEN_SHA256


def test_each_event_carries_the_change_it_was_rendered_from() -> None:
    """Consumers read what happened from the event's typed change, not from its type string."""
    events = scenario(diff_status, diff_messages, rendered)
    assert all(e.cause is not None and e.cause.kind is e.change for e in events)
    assert [e.change for e in events][-2:] == [Change.STATUS, Change.LOST]
    lost = events[-1].cause
    assert isinstance(lost, RunLost) and lost.data["last_status"] == "completed"
