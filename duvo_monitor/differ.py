"""Turns what the API shows of a run into changes, and changes into events. Pure.

A :class:`Checkpoint` is everything the differ remembers of a run between polls, and the only
thing persisted per run: the last status and its transition number, the message cursor with the
ids and content digests of the last few messages (the *tail*), the open human request, and the
tool calls still waiting for their result. It never holds a message body, so a run's memory is
the same at 5 messages and at 50,000.

Message pages are read in two modes:

* **follow** (normal): the first page of a poll starts ``len(tail)`` messages *before* the
  cursor. Those overlapping messages must still have the ids we remember; their digests are
  compared, so an edit in place within the tail window becomes ``message.updated``.
* **scan** (``scan_from`` set): a sequential read from an offset, used when the overlap check
  fails (history changed under us: a clean resync) and for the final verification of a run
  that ended. Every message on the page is looked up by id among the messages already emitted
  (``known``: id -> digest, loaded from the state store by the caller), so a resync never emits
  a seen id twice and an edit anywhere in the history is seen.

Event ids come from :mod:`duvo_monitor.events`, so a change re-emitted after a crash keeps its id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from duvo_monitor.events import TYPE_PREFIX, Change, Event, status_type
from duvo_monitor.models import (
    TERMINAL_STATUSES,
    HumanRequest,
    Message,
    MessagePage,
    Run,
    RunSnapshot,
    format_time,
    parse_time,
)

OPEN_CALLS_CAP = 256
LIFECYCLE_TYPES = frozenset(
    {"session_started", "session_completed", "session_interrupted", "session_error"}
)


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


NOT_FOUND_GRACE = 120.0
"""A run never seen that answers 404 is given this long to appear (a typo'd id stays lost; an id
registered right after start, on an API a moment behind, does not)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusDiff:
    checkpoint: Checkpoint
    events: list[Event]
    changed: bool
    lost: bool = False
    not_yet: bool = False
    """404 for a run never seen, within its grace period: ask again later."""


def diff_status(
    cp: Checkpoint,
    snapshot: RunSnapshot | None,
    *,
    seen_at: float,
    reason: str = "not_found",
    not_found_grace: float = NOT_FOUND_GRACE,
) -> StatusDiff:
    """Compare a GET run answer (None: 404) with the checkpoint; a run never seen is lost only
    once it has answered 404 for ``not_found_grace`` seconds."""
    events: list[Event] = []
    run = None if snapshot is None else snapshot.run
    if run is None:
        if cp.lost:
            return StatusDiff(checkpoint=cp, events=[], changed=False, lost=True)
        if cp.status is None:
            since = cp.missing_since if cp.missing_since is not None else seen_at
            if seen_at - since < not_found_grace:
                return StatusDiff(
                    checkpoint=replace(cp, missing_since=since),
                    events=[],
                    changed=False,
                    not_yet=True,
                )
        seq = cp.status_seq + 1
        events.append(
            Event.build(
                kind=Change.LOST,
                key=str(seq),
                type=f"{TYPE_PREFIX}run.lost",
                run_id=cp.run_id,
                agent_id=cp.agent_id,
                time=format_time(seen_at),
                change_time=seen_at,
                data={
                    "run_id": cp.run_id,
                    "agent_id": cp.agent_id,
                    "last_status": cp.status,
                    "reason": "run_null" if snapshot is not None else reason,
                },
            )
        )
        return StatusDiff(
            checkpoint=replace(cp, lost=True, status_seq=seq, pending=None),
            events=events,
            changed=True,
            lost=True,
        )

    assert snapshot is not None
    agent_id = run.agent_id
    new = replace(
        cp,
        agent_id=agent_id,
        lost=False,
        missing_since=None,
        updated_at=run.updated_at,
        created_at=run.created_at,
    )
    request = snapshot.pending_human_request

    if new.pending is not None and (request is None or request.id != new.pending.id):
        events.append(_resolved(new, new.pending, seen_at))
        new = replace(new, pending=None)

    changed = run.status != new.status
    if changed:
        seq = new.status_seq + 1
        when = _status_time(run, new, seen_at)
        data: dict[str, Any] = {
            "run_id": run.id,
            "agent_id": agent_id,
            "from": new.status,
            "to": run.status,
            "run": run.to_dict(),
        }
        if run.status in TERMINAL_STATUSES:
            data["duration_seconds"] = _duration(run)
        events.append(
            Event.build(
                kind=Change.STATUS,
                key=str(seq),
                type=status_type(run.status),
                run_id=run.id,
                agent_id=agent_id,
                time=format_time(when),
                change_time=when,
                data=data,
            )
        )
        verified = new.verified and run.status in TERMINAL_STATUSES
        new = replace(new, status=run.status, status_seq=seq, status_time=when, verified=verified)

    if request is not None and new.pending is None:
        events.append(_opened(new, request, seen_at))
        new = replace(
            new,
            pending=PendingRequest(
                id=request.id, title=request.title, type=request.type, created_at=request.created_at
            ),
        )
    return StatusDiff(checkpoint=new, events=events, changed=changed or bool(events))


def _status_time(run: Run, cp: Checkpoint, seen_at: float) -> float:
    """When the change happened, as far as the API tells; else when it was seen."""
    candidates: list[str | None]
    if cp.status is None and run.status == "pending":
        candidates = [run.created_at]
    elif run.status in TERMINAL_STATUSES:
        candidates = [run.completed_at, run.updated_at]
    elif run.status in ("running", "starting") and cp.status in (None, "pending", "starting"):
        candidates = [run.started_at, run.updated_at]
    else:
        candidates = [run.updated_at]
    for text in candidates:
        when = parse_time(text)
        if when is not None and when <= seen_at + 5.0:
            return when
    return seen_at


def _duration(run: Run) -> float | None:
    end = parse_time(run.completed_at) or parse_time(run.updated_at)
    start = parse_time(run.started_at) or parse_time(run.created_at)
    if end is None or start is None:
        return None
    return round(max(0.0, end - start), 3)


def _opened(cp: Checkpoint, request: HumanRequest, seen_at: float) -> Event:
    when = parse_time(request.created_at) or seen_at
    return Event.build(
        kind=Change.REQUEST_OPENED,
        key=request.id,
        type=f"{TYPE_PREFIX}human_request.opened",
        run_id=cp.run_id,
        agent_id=cp.agent_id,
        time=format_time(when),
        change_time=when,
        data={"run_id": cp.run_id, "agent_id": cp.agent_id, "request": request.to_dict()},
    )


def _resolved(cp: Checkpoint, pending: PendingRequest, seen_at: float) -> Event:
    opened = parse_time(pending.created_at)
    waited = None if opened is None else round(max(0.0, seen_at - opened), 3)
    return Event.build(
        kind=Change.REQUEST_RESOLVED,
        key=pending.id,
        type=f"{TYPE_PREFIX}human_request.resolved",
        run_id=cp.run_id,
        agent_id=cp.agent_id,
        time=format_time(seen_at),
        change_time=seen_at,
        data={
            "run_id": cp.run_id,
            "agent_id": cp.agent_id,
            "request_id": pending.id,
            "request": {"id": pending.id, "title": pending.title, "type": pending.type},
            "waited_seconds": waited,
        },
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDiff:
    checkpoint: Checkpoint
    events: list[Event]
    next_offset: int | None
    """Offset of the next page to read in this poll, or None when caught up."""
    resync: bool = False
    seen: list[tuple[str, str]] = field(default_factory=list)
    """(message id, digest) of every message created or updated by this page."""
    hint_status: bool = False
    """A message that suggests the status changed too (lifecycle, human request, user input)."""
    new_messages: int = 0


def page_request(cp: Checkpoint, page_size: int) -> tuple[int, int]:
    """(offset, limit) of the first page of a poll."""
    if cp.scan_from is not None:
        return cp.scan_from, page_size
    return max(0, cp.next_index - len(cp.tail)), page_size


@dataclass(slots=True)
class _Walk:
    cp: Checkpoint
    seen_at: float
    known: Mapping[str, str]
    tail_window: int
    events: list[Event] = field(default_factory=list)
    tail: list[tuple[str, str]] = field(default_factory=list)
    calls: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    hint_status: bool = False
    new_messages: int = 0
    seen: list[tuple[str, str]] = field(default_factory=list)

    def created(self, index: int, message: Message, digest: str) -> None:
        data: dict[str, Any] = {
            "run_id": self.cp.run_id,
            "agent_id": self.cp.agent_id,
            "index": index,
            "message": self._message_data(message),
        }
        self.new_messages += 1
        self.seen.append((message.id, digest))
        if message.tool_call is not None:
            self.calls[message.tool_call.id] = (
                message.tool_call.name,
                parse_time(message.timestamp),
            )
            while len(self.calls) > OPEN_CALLS_CAP:
                self.calls.pop(next(iter(self.calls)))
        if message.type in LIFECYCLE_TYPES or message.type == "human_request":
            self.hint_status = True
        if message.role == "user":
            self.hint_status = True
        when = parse_time(message.timestamp)
        self.events.append(
            Event.build(
                kind=Change.MESSAGE_CREATED,
                key=message.id,
                type=f"{TYPE_PREFIX}message.created",
                run_id=self.cp.run_id,
                agent_id=self.cp.agent_id,
                time=message.timestamp if when is not None else format_time(self.seen_at),
                change_time=when if when is not None else self.seen_at,
                data=data,
            )
        )

    def updated(self, index: int, message: Message, digest: str, previous: str) -> None:
        self.seen.append((message.id, digest))
        self.events.append(
            Event.build(
                kind=Change.MESSAGE_UPDATED,
                key=f"{message.id}:{digest}",
                type=f"{TYPE_PREFIX}message.updated",
                run_id=self.cp.run_id,
                agent_id=self.cp.agent_id,
                time=format_time(self.seen_at),
                change_time=self.seen_at,
                data={
                    "run_id": self.cp.run_id,
                    "agent_id": self.cp.agent_id,
                    "index": index,
                    "message": self._message_data(message, lookup_only=True),
                    "previous_digest": previous,
                    "digest": digest,
                },
            )
        )

    def _message_data(self, message: Message, lookup_only: bool = False) -> dict[str, Any]:
        data = message.to_dict()
        result = message.tool_result
        if result is not None and data["tool_result"] is not None:
            call = self.calls.get(result.tool_call_id)
            if call is not None:
                name, started = call
                data["tool_result"]["name"] = name
                ended = parse_time(message.timestamp)
                if started is not None and ended is not None:
                    data["tool_result"]["duration_seconds"] = round(max(0.0, ended - started), 3)
                if not lookup_only:
                    self.calls.pop(result.tool_call_id, None)
        return data

    def remember(self, message_id: str, digest: str) -> None:
        self.tail.append((message_id, digest))
        if len(self.tail) > self.tail_window:
            del self.tail[0]


def diff_messages(
    cp: Checkpoint,
    page: MessagePage,
    *,
    offset: int,
    first_page: bool,
    known: Mapping[str, str],
    seen_at: float,
    tail_window: int,
    page_size: int,
) -> MessageDiff:
    """Fold one page of messages (read at ``offset``) into the checkpoint.

    ``known`` maps the ids on this page that were emitted before to their digests.
    """
    walk = _Walk(
        cp=cp,
        seen_at=seen_at,
        known=known,
        tail_window=tail_window,
        tail=[] if scanning_from_start(cp, offset) else list(cp.tail),
        calls={c: (n, t) for c, n, t in cp.open_calls},
    )
    messages: Sequence[Message] = page.messages
    scanning = cp.scan_from is not None

    if not scanning and first_page and cp.tail:
        # The overlap must still be what we saw: same ids at the same places.
        overlap = len(cp.tail)
        expected = cp.tail
        got = [(m.id) for m in messages[:overlap]]
        if offset != cp.next_index - overlap or got != [i for i, _ in expected]:
            resynced = replace(cp, scan_from=0)
            return MessageDiff(checkpoint=resynced, events=[], next_offset=0, resync=True)
        for position, (message, (_, old_digest)) in enumerate(
            zip(messages[:overlap], expected, strict=True)
        ):
            digest = message_digest(message)
            if digest != old_digest:
                walk.updated(offset + position, message, digest, old_digest)
        walk.tail = [(m.id, message_digest(m)) for m in messages[:overlap]]
        fresh = list(enumerate(messages[overlap:], start=offset + overlap))
    else:
        fresh = list(enumerate(messages, start=offset))

    next_index = cp.next_index
    for index, message in fresh:
        digest = message_digest(message)
        previous = known.get(message.id)
        if previous is None:
            previous = next((h for i, h in walk.tail if i == message.id), None)
        if previous is None:
            walk.created(index, message, digest)
        elif previous != digest:
            walk.updated(index, message, digest, previous)
        walk.remember(message.id, digest)
        next_index = max(next_index, index + 1)

    end = offset + len(messages)
    more = len(messages) > 0 and end < page.total
    scan_from: int | None = None
    verified = cp.verified
    if scanning:
        if more:
            scan_from = end
            next_index = end
        else:
            # The scan reached the end: follow from here on.
            next_index = end if messages else min(offset, page.total)
            verified = verified or cp.terminal
    new = replace(
        cp,
        next_index=next_index,
        tail=tuple(walk.tail[-tail_window:]) if tail_window else (),
        scan_from=scan_from,
        verified=verified,
        open_calls=tuple((c, n, t) for c, (n, t) in walk.calls.items()),
    )
    return MessageDiff(
        checkpoint=new,
        events=walk.events,
        next_offset=end if more else None,
        seen=walk.seen,
        hint_status=walk.hint_status,
        new_messages=walk.new_messages,
    )


def scanning_from_start(cp: Checkpoint, offset: int) -> bool:
    return cp.scan_from is not None and offset == 0


def start_final_verify(cp: Checkpoint) -> Checkpoint:
    """After a run ends: re-read its whole history once, to see edits made anywhere in it."""
    return replace(cp, scan_from=0)
