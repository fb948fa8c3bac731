"""The message half of the differ: one page of a run's messages against the checkpoint. Pure.

Message pages are read in two modes:

* **follow** (normal): the first page of a poll starts ``len(tail)`` messages *before* the
  cursor. Those overlapping messages must still have the ids we remember; their digests are
  compared, so an edit in place within the tail window becomes ``message.updated``.
* **scan** (``scan_from`` set): a sequential read from an offset, used when the overlap check
  fails (history changed under us: a clean resync) and for the final verification of a run
  that ended. Every message on the page is looked up by id among the messages already emitted
  (``known``: id -> digest, given by the caller), so a resync never emits a seen id twice and an
  edit anywhere in the history is seen.

The walk reports :class:`~duvo_monitor.changes.MessageCreated` and
:class:`~duvo_monitor.changes.MessageUpdated` values; tool results are joined to their calls
(name, duration) through the checkpoint's open calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from duvo_monitor.changes import MessageCreated, MessageUpdated, RunChange
from duvo_monitor.checkpoint import Checkpoint, message_digest
from duvo_monitor.models import Message, MessagePage, format_time, parse_time

OPEN_CALLS_CAP = 256
LIFECYCLE_TYPES = frozenset(
    {"session_started", "session_completed", "session_interrupted", "session_error"}
)
# The statuses a message of these types (or a user's message: an answer, a resume) says the
# run went to: a status read just before, in the same poll, that shows one of them already saw
# the change, and asking again would buy nothing.
USER = "user"
SUGGESTED_STATUS = {
    "human_request": frozenset({"waiting"}),
    "session_started": frozenset({"running"}),
    "session_completed": frozenset({"completed"}),
    "session_interrupted": frozenset({"interrupted"}),
    "session_error": frozenset({"failed"}),
    USER: frozenset({"pending", "starting", "running"}),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDiff:
    checkpoint: Checkpoint
    changes: list[RunChange]
    next_offset: int | None
    """Offset of the next page to read in this poll, or None when caught up."""
    resync: bool = False
    seen: list[tuple[str, str]] = field(default_factory=list)
    """(message id, digest) of every message created or updated by this page."""
    suggests: str | None = None
    """The page's last message that suggests the status changed too: its type (lifecycle,
    human request) or ``"user"`` (an answer, a resume). The poller asks for the status unless
    this poll's own status read shows that change (``SUGGESTED_STATUS``)."""
    new_messages: int = 0
    asked: tuple[str, ...] = ()
    """The ids this page looked up in ``known``: a lookup that finds none of them in the state
    store would not change this diff (see :mod:`duvo_monitor.poller`)."""


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
    changes: list[RunChange] = field(default_factory=list)
    tail: list[tuple[str, str]] = field(default_factory=list)
    calls: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    suggests: str | None = None
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
            self.suggests = message.type
        elif message.role == "user":
            self.suggests = USER
        when = parse_time(message.timestamp)
        self.changes.append(
            MessageCreated(
                key=message.id,
                run_id=self.cp.run_id,
                agent_id=self.cp.agent_id,
                time=message.timestamp if when is not None else format_time(self.seen_at),
                change_time=when if when is not None else self.seen_at,
                data=data,
            )
        )

    def updated(self, index: int, message: Message, digest: str, previous: str) -> None:
        self.seen.append((message.id, digest))
        self.changes.append(
            MessageUpdated(
                key=f"{message.id}:{digest}",
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
            return MessageDiff(checkpoint=resynced, changes=[], next_offset=0, resync=True)
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
        changes=walk.changes,
        next_offset=end if more else None,
        seen=walk.seen,
        suggests=walk.suggests,
        new_messages=walk.new_messages,
        asked=tuple(message.id for _, message in fresh),
    )


def scanning_from_start(cp: Checkpoint, offset: int) -> bool:
    return cp.scan_from is not None and offset == 0


def start_final_verify(cp: Checkpoint) -> Checkpoint:
    """After a run ends: re-read its whole history once, to see edits made anywhere in it."""
    return replace(cp, scan_from=0)
