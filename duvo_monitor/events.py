"""Changes become CloudEvents 1.0 (structured JSON mode), one JSON line each.

The id of an event is a UUID derived from what the change *is* (run, kind, key), never from when
it was seen, so the same change gets the same id across polls, resyncs and restarts:

* ``ai.duvo.run.<status>``        key: the run's transition sequence number (persisted)
* ``ai.duvo.run.lost``            key: the transition sequence number
* ``ai.duvo.message.created``     key: the message id
* ``ai.duvo.message.updated``     key: message id + digest of the new content
* ``ai.duvo.human_request.*``     key: the human request id

The differ reports typed changes (:mod:`duvo_monitor.changes`) and :func:`render` turns each into
its event here. Each event carries its :class:`Change`, the typed kind of what happened, and the
change it was rendered from (``cause``), so that consumers (the metrics, the sweep-trust
weighing) never switch on a type string; the kind is also the id's namespace, so ids stay what
they always were. Each event is encoded once (orjson) and the same
bytes go to every sink. Pure.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from duvo_monitor.changes import RunChange

SPECVERSION = "1.0"
SOURCE = "duvo-monitor"
TYPE_PREFIX = "ai.duvo."
_NAMESPACE = uuid.UUID("6f1c5b8e-6a55-4d0e-9a0b-6d75766f6d6e")
_STATUS_TOKEN = re.compile(r"[^a-z0-9_]+")


class Change(Enum):
    """What an event says happened; the value is the kind that namespaces the event's id."""

    STATUS = "status"
    LOST = "lost"
    MESSAGE_CREATED = "message"
    MESSAGE_UPDATED = "message.updated"
    REQUEST_OPENED = "human_request.opened"
    REQUEST_RESOLVED = "human_request.resolved"


def event_id(run_id: str, kind: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}\x1f{kind}\x1f{key}"))


def status_type(status: str) -> str:
    """``ai.duvo.run.<status>``; unknown statuses pass through, made safe for a type name."""
    token = _STATUS_TOKEN.sub("_", status.strip().lower()).strip("_") or "unknown"
    return f"{TYPE_PREFIX}run.{token}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One CloudEvent, with its encoded line and what sinks and metrics need to route it."""

    id: str
    type: str
    subject: str
    time: str
    data: Mapping[str, Any]
    agent_id: str | None
    change_time: float | None
    line: bytes
    change: Change | None = None
    """None for an event read back from its line (redelivered after a crash)."""
    cause: RunChange | None = None
    """The typed change this event was rendered from; None for an event read back from its line."""

    @classmethod
    def build(
        cls,
        *,
        kind: Change,
        key: str,
        type: str,
        run_id: str,
        agent_id: str | None,
        time: str,
        change_time: float | None,
        data: Mapping[str, Any],
        cause: RunChange | None = None,
    ) -> Event:
        eid = event_id(run_id, kind.value, key)
        envelope = {
            "specversion": SPECVERSION,
            "id": eid,
            "source": SOURCE,
            "type": type,
            "subject": run_id,
            "time": time,
            "datacontenttype": "application/json",
            "data": data,
        }
        line = orjson.dumps(envelope, option=orjson.OPT_APPEND_NEWLINE)
        return cls(
            id=eid,
            type=type,
            subject=run_id,
            time=time,
            data=data,
            agent_id=agent_id,
            change_time=change_time,
            line=line,
            change=kind,
            cause=cause,
        )

    @classmethod
    def from_line(cls, line: bytes) -> Event:
        """An event back from its encoded line (the outbox keeps lines, not objects)."""
        envelope = orjson.loads(line)
        data = envelope["data"]
        return cls(
            id=envelope["id"],
            type=envelope["type"],
            subject=envelope["subject"],
            time=envelope["time"],
            data=data,
            agent_id=data.get("agent_id"),
            change_time=None,
            line=line if line.endswith(b"\n") else line + b"\n",
        )

    def envelope(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.line)
        return value


def render(change: RunChange) -> Event:
    """The CloudEvent of one change: its id from (run, kind, key), its bytes encoded once."""
    return Event.build(
        kind=change.kind,
        key=change.key,
        type=change.type,
        run_id=change.run_id,
        agent_id=change.agent_id,
        time=change.time,
        change_time=change.change_time,
        data=change.data,
        cause=change,
    )
