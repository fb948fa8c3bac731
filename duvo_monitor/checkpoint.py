"""The checkpoint: everything the monitor remembers of one run between polls. Pure.

A :class:`Checkpoint` is the only thing persisted per run: the last status and its transition
number, the message cursor with the ids and content digests of the last few messages (the
*tail*), the open human request, and the tool calls still waiting for their result. It never
holds a message body, so a run's memory is the same at 5 messages and at 50,000. Its JSON form
(:meth:`Checkpoint.to_json`) is the state file's row format, so it must keep reading rows written
by earlier versions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from duvo_monitor.models import TERMINAL_STATUSES, Message


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRequest:
    id: str
    title: str
    type: str
    created_at: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """What we know of one run; persisted after every acknowledged batch."""

    run_id: str
    agent_id: str | None = None
    status: str | None = None
    status_seq: int = 0
    status_time: float | None = None
    updated_at: str | None = None
    created_at: str | None = None
    completed_at: str | None = None
    next_index: int = 0
    tail: tuple[tuple[str, str], ...] = ()
    scan_from: int | None = None
    verified: bool = False
    pending: PendingRequest | None = None
    open_calls: tuple[tuple[str, str, float | None], ...] = ()
    lost: bool = False
    missing_since: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "run_id": self.run_id,
                "agent_id": self.agent_id,
                "status": self.status,
                "status_seq": self.status_seq,
                "status_time": self.status_time,
                "updated_at": self.updated_at,
                "created_at": self.created_at,
                "completed_at": self.completed_at,
                "next_index": self.next_index,
                "tail": [list(t) for t in self.tail],
                "scan_from": self.scan_from,
                "verified": self.verified,
                "pending": None
                if self.pending is None
                else {
                    "id": self.pending.id,
                    "title": self.pending.title,
                    "type": self.pending.type,
                    "created_at": self.pending.created_at,
                },
                "open_calls": [list(c) for c in self.open_calls],
                "lost": self.lost,
                "missing_since": self.missing_since,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Checkpoint:
        """Inverse of :meth:`to_json`; raises ValueError on anything that is not one."""
        try:
            d = orjson.loads(raw)
            pending = d.get("pending")
            return cls(
                run_id=str(d["run_id"]),
                agent_id=d.get("agent_id"),
                status=d.get("status"),
                status_seq=int(d.get("status_seq", 0)),
                status_time=d.get("status_time"),
                updated_at=d.get("updated_at"),
                created_at=d.get("created_at"),
                completed_at=d.get("completed_at"),
                next_index=int(d.get("next_index", 0)),
                tail=tuple((str(i), str(h)) for i, h in d.get("tail", [])),
                scan_from=d.get("scan_from"),
                verified=bool(d.get("verified", False)),
                pending=None
                if pending is None
                else PendingRequest(
                    id=pending["id"],
                    title=pending["title"],
                    type=pending["type"],
                    created_at=pending.get("created_at"),
                ),
                open_calls=tuple(
                    (str(c), str(n), None if t is None else float(t))
                    for c, n, t in d.get("open_calls", [])
                ),
                lost=bool(d.get("lost", False)),
                missing_since=d.get("missing_since"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a checkpoint: {exc}") from exc


def message_digest(message: Message) -> str:
    """A short digest of what a message says (not its position), to notice edits in place."""
    body = orjson.dumps(message.to_dict(), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=8).hexdigest()
