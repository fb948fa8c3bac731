"""One poll of one run: the requests its plan asks for, folded through the differ.

The differ says what changed (typed changes); the poller renders each into its event
(:func:`duvo_monitor.events.render`) for the pipeline to deliver.

A poll is two stages, each returning a :class:`PollResult` that the pipeline hands on to delivery
as soon as it is ready: the status (``GET run``; a run's end should not wait for its final
pages), then the messages, which continue from the checkpoint the status stage reached. The
requests go through the client bound to the plan's urgency (:meth:`DuvoClient.with_urgency`).

A poll is a named boundary: an API failure ends the poll (not the daemon) and what it produced
before the failure is kept, because the checkpoint and the events always move together. Message
reading continues page after page while pages are full (catch-up of a long history), up to
``MAX_PAGES_PER_POLL`` so that one long run cannot hold a worker while others wait; the rest is
read at the run's next turn, which the scheduler makes immediate.

The poller never reads the state store: it takes the checkpoint as a value and returns its
result with the new one. The one thing the store knows that a diff may need is which messages
were emitted before (a resync or the final re-read must not emit a seen id twice); those ids are
only known once the pages are read, and loading a run's whole history of ids up front would cost
every poll its history's length. So each page is folded as it arrives, taking this poll's own
messages as the emitted ones, and the result names the ids it looked up (``asked``); the
pipeline looks them up after the poll and, only if the store knows one (a resync, a final
re-read, a shifted history), folds the same pages again with them (:meth:`Poller.refold`).
Where each page starts does not depend on what was emitted before, so the pages stay valid.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

import structlog

from duvo_monitor.api import MESSAGES_PAGE_MAX, DuvoClient
from duvo_monitor.clock import Clock
from duvo_monitor.config import PollingConfig
from duvo_monitor.differ import (
    SUGGESTED_STATUS,
    Checkpoint,
    MessageDiff,
    diff_messages,
    diff_status,
    page_request,
    start_final_verify,
)
from duvo_monitor.errors import ApiError, MalformedResponse, NotFound, RateLimited
from duvo_monitor.events import Event, render
from duvo_monitor.models import MessagePage
from duvo_monitor.scheduler import Plan

log = structlog.get_logger("duvo_monitor.poller")

MAX_PAGES_PER_POLL = 10


class Ending(Enum):
    """How a poll's message pages ended (None on a result: not read, or an API failure)."""

    CAUGHT_UP = "caught_up"
    CAPPED = "capped"
    """``MAX_PAGES_PER_POLL`` pages read, more to come at the run's next turn."""
    GONE = "gone"
    """The messages answered 404: the status probe should look at the run right away."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PageRead:
    """One page of messages as a poll read it: where, how many asked, and when."""

    offset: int
    first: bool
    page: MessagePage
    limit: int
    seen_at: float


@dataclass(slots=True, kw_only=True)
class PollResult:
    checkpoint: Checkpoint
    events: list[Event] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    status_news: int = 0
    message_news: int = 0
    status_changed: bool = False
    touched: bool = False
    read_status: bool = False  # the status stage ran in this poll
    read_messages: bool = False  # the messages stage ran (asked by the plan or by the status)
    suggests: str | None = None  # the last lifecycle or human-request message's type
    not_yet: bool = False
    hint_status: bool = False
    more_messages: bool = False
    requests: int = 0
    error: ApiError | None = None
    error_delay: float | None = None
    pages: list[PageRead] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    """Message ids whose earlier digests, if the state store holds any, change this result:
    the caller looks them up after the poll and asks :meth:`Poller.refold`."""
    ending: Ending | None = None


class Poller:
    def __init__(
        self,
        client: DuvoClient,
        *,
        clock: Clock,
        config: PollingConfig,
        not_found_grace: float | None = None,
    ) -> None:
        self.client = client
        self.not_found_grace = not_found_grace  # None: polling.appear_timeout (read at reload)
        self.clock = clock
        self.config = config

    @property
    def appear_timeout(self) -> float:
        """How long a run never seen may answer 404 before it is declared lost."""
        given = self.not_found_grace
        return self.config.appear_timeout if given is None else given

    async def poll_status(self, cp: Checkpoint, plan: Plan) -> PollResult:
        """The first stage: the run's status, if the plan asks (or it was never seen)."""
        result = PollResult(checkpoint=cp)
        if plan.status or cp.status is None:
            result.read_status = True
            client = self.client.with_urgency(plan.urgent, first=plan.first)
            await self._guarded(result, self._status(result, client))
        return result

    async def poll_messages(self, status: PollResult, plan: Plan) -> PollResult:
        """The second stage, after ``status`` was handed on: the new messages, if the plan asks
        (or the status stage found the run changed). Carries the status stage's findings."""
        result = replace(status, events=[], seen=[], pages=[], asked=[])
        if result.error is not None or result.checkpoint.lost or result.not_yet:
            return result
        if plan.messages or result.status_changed or result.touched:
            result.read_messages = True
            client = self.client.with_urgency(plan.urgent, first=plan.first)
            await self._guarded(result, self._messages(result, client))
            suggested = SUGGESTED_STATUS.get(result.suggests or "", frozenset())
            if result.suggests is not None and not (
                result.read_status and result.checkpoint.status in suggested
            ):
                # Read just before these pages, the status already shows the change they
                # suggest; otherwise it is asked for (a message-only poll, or another status).
                result.hint_status = True
        return result

    async def _guarded(self, result: PollResult, stage: Awaitable[None]) -> None:
        """Run one stage; an API failure ends the poll, keeping what it found before."""
        try:
            await stage
        except ApiError as exc:
            result.error = exc
            result.error_delay = 0.0
            if isinstance(exc, RateLimited):
                result.error_delay = exc.retry_after or 0.0
            level = "warning" if exc.retryable else "error"
            getattr(log, level)(
                "poll failed",
                run_id=result.checkpoint.run_id,
                agent_id=result.checkpoint.agent_id,
                endpoint=exc.endpoint,
                status=exc.status,
                error=str(exc),
                kind=type(exc).__name__,
                malformed=isinstance(exc, MalformedResponse),
            )

    async def _status(self, result: PollResult, client: DuvoClient) -> None:
        cp = result.checkpoint
        result.requests += 1
        try:
            snapshot = await client.get_run(cp.run_id)
        except NotFound:
            snapshot = None
        diff = diff_status(
            cp, snapshot, seen_at=self.clock.time(), not_found_grace=self.appear_timeout
        )
        run = None if snapshot is None else snapshot.run
        if run is not None and cp.updated_at is not None and run.updated_at != cp.updated_at:
            # Same status, but the run moved: new messages are the likely news.
            result.touched = True
        result.checkpoint = diff.checkpoint
        if diff.not_yet:
            # Not visible yet: ask again later (with backoff), read no messages now.
            result.error_delay = 0.0
            result.not_yet = True
            return
        result.events.extend(render(change) for change in diff.changes)
        result.status_news += len(diff.changes)
        result.status_changed = result.status_changed or diff.changed
        new = diff.checkpoint
        if (
            new.terminal
            and not new.verified
            and new.scan_from is None
            and self.config.final_verify == "full"
            and (diff.changed or cp.status is None)
        ):
            result.checkpoint = start_final_verify(new)

    async def _messages(self, result: PollResult, client: DuvoClient) -> None:
        """Read pages while they are full; each is folded as it comes (its offsets say where
        the next page starts), taking only this poll's own messages as already emitted."""
        cp = result.checkpoint
        offset, limit = page_request(cp, MESSAGES_PAGE_MAX)
        first = True
        now = self.clock.time
        for _ in range(MAX_PAGES_PER_POLL):
            result.requests += 1
            try:
                page = await client.list_messages(cp.run_id, limit=limit, offset=offset)
            except NotFound:
                # The run may be gone: let the status probe find out, right away.
                result.ending = Ending.GONE
                _finish(result)
                return
            read = PageRead(offset=offset, first=first, page=page, limit=limit, seen_at=now())
            result.pages.append(read)
            diff = _fold_page(result, read, {}, self.config.tail_window)
            if diff.resync:
                log.warning(
                    "message history changed; resyncing",
                    run_id=cp.run_id,
                    agent_id=cp.agent_id,
                    cursor=cp.next_index,
                )
            cp = result.checkpoint
            if diff.next_offset is None:
                result.ending = Ending.CAUGHT_UP
                break
            offset = diff.next_offset
            first = diff.resync
        else:
            result.ending = Ending.CAPPED
        _finish(result, self.config.final_verify)

    def refold(self, status: PollResult, read: PollResult, found: Mapping[str, str]) -> PollResult:
        """``read`` again from ``status``, with ``found``: the digests the state store holds
        for ``read.asked`` (the caller looks them up after the poll, none of it mid-poll). The
        pages are the same: where each page starts depends on the checkpoint and the ids on
        the pages, never on what was emitted before, so only the changes can differ."""
        result = replace(
            status,
            events=[],
            seen=[],
            pages=list(read.pages),
            asked=[],
            ending=read.ending,
            requests=read.requests,
            error=read.error,
            error_delay=read.error_delay,
        )
        for page in read.pages:
            _fold_page(result, page, found, self.config.tail_window)
        _finish(result, self.config.final_verify)
        return result


def _fold_page(
    result: PollResult, read: PageRead, found: Mapping[str, str], tail_window: int
) -> MessageDiff:
    """Fold one page into ``result``; ``found`` (from the state store) goes before what this
    poll emitted on its earlier pages."""
    cp = result.checkpoint
    known = dict(found)
    known.update({k: v for k, v in dict(result.seen).items() if k not in found})
    diff = diff_messages(
        cp,
        read.page,
        offset=read.offset,
        first_page=read.first,
        known=known,
        seen_at=read.seen_at,
        tail_window=tail_window,
        page_size=read.limit,
    )
    result.checkpoint = diff.checkpoint
    result.events.extend(render(change) for change in diff.changes)
    result.seen.extend(diff.seen)
    result.asked.extend(diff.asked)
    result.message_news += len(diff.changes)
    result.suggests = diff.suggests or result.suggests
    return diff


def _finish(result: PollResult, final_verify: str = "full") -> None:
    """What the way the pages ended says about the run."""
    if result.ending is Ending.GONE:
        result.hint_status = True
    elif result.ending is Ending.CAPPED:
        result.more_messages = True
    elif result.ending is Ending.CAUGHT_UP:
        cp = result.checkpoint
        if cp.terminal and not cp.verified and cp.scan_from is None:
            # Caught up with a run that ended: done (tail), or one full re-read to come (full).
            if final_verify == "tail":
                result.checkpoint = replace(cp, verified=True)
            else:
                result.checkpoint = start_final_verify(cp)
                result.more_messages = True
