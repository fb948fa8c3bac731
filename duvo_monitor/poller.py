"""One poll of one run: the requests its plan asks for, folded through the differ.

The differ says what changed (typed changes); the poller renders each into its event
(:func:`duvo_monitor.events.render`) for the pipeline to deliver.

A poll is two stages, each returning a :class:`PollResult` that the pipeline delivers before the
next begins: the status (``GET run``; a run's end should not wait for its final pages), then the
messages, which continue from the checkpoint the status stage reached. The requests go through
the client bound to the plan's urgency (:meth:`DuvoClient.with_urgency`).

A poll is a named boundary: an API failure ends the poll (not the daemon) and what it produced
before the failure is kept, because the checkpoint and the events always move together. Message
reading continues page after page while pages are full (catch-up of a long history), up to
``MAX_PAGES_PER_POLL`` so that one long run cannot hold a worker while others wait; the rest is
read at the run's next turn, which the scheduler makes immediate.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field, replace

import structlog

from duvo_monitor.api import MESSAGES_PAGE_MAX, DuvoClient
from duvo_monitor.clock import Clock
from duvo_monitor.config import PollingConfig
from duvo_monitor.differ import (
    NOT_FOUND_GRACE,
    Checkpoint,
    diff_messages,
    diff_status,
    page_request,
    start_final_verify,
)
from duvo_monitor.errors import ApiError, MalformedResponse, NotFound, RateLimited
from duvo_monitor.events import Event, render
from duvo_monitor.scheduler import Plan
from duvo_monitor.state import StateStore

log = structlog.get_logger("duvo_monitor.poller")

MAX_PAGES_PER_POLL = 10


@dataclass(slots=True, kw_only=True)
class PollResult:
    checkpoint: Checkpoint
    events: list[Event] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    status_news: int = 0
    message_news: int = 0
    status_changed: bool = False
    touched: bool = False
    not_yet: bool = False
    hint_status: bool = False
    more_messages: bool = False
    requests: int = 0
    error: ApiError | None = None
    error_delay: float | None = None


class Poller:
    def __init__(
        self,
        client: DuvoClient,
        state: StateStore,
        *,
        clock: Clock,
        config: PollingConfig,
        not_found_grace: float = NOT_FOUND_GRACE,
    ) -> None:
        self.client = client
        self.not_found_grace = not_found_grace
        self.state = state
        self.clock = clock
        self.config = config

    async def poll_status(self, cp: Checkpoint, plan: Plan) -> PollResult:
        """The first stage: the run's status, if the plan asks (or it was never seen)."""
        result = PollResult(checkpoint=cp)
        if plan.status or cp.status is None:
            client = self.client.with_urgency(plan.urgent)
            await self._guarded(result, self._status(result, client))
        return result

    async def poll_messages(self, status: PollResult, plan: Plan) -> PollResult:
        """The second stage, after ``status`` was delivered: the new messages, if the plan asks
        (or the status stage found the run changed). Carries the status stage's findings."""
        result = replace(status, events=[], seen=[])
        if result.error is not None or result.checkpoint.lost or result.not_yet:
            return result
        if plan.messages or result.status_changed or result.touched:
            client = self.client.with_urgency(plan.urgent)
            await self._guarded(result, self._messages(result, client))
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
            cp, snapshot, seen_at=self.clock.time(), not_found_grace=self.not_found_grace
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
        cp = result.checkpoint
        offset, limit = page_request(cp, MESSAGES_PAGE_MAX)
        first = True
        emitted: dict[str, str] = {}
        for _ in range(MAX_PAGES_PER_POLL):
            result.requests += 1
            try:
                page = await client.list_messages(cp.run_id, limit=limit, offset=offset)
            except NotFound:
                # The run may be gone: let the status probe find out, right away.
                result.hint_status = True
                return
            known = await self.state.known(cp.run_id, [m.id for m in page.messages])
            known.update({k: v for k, v in emitted.items() if k not in known})
            diff = diff_messages(
                cp,
                page,
                offset=offset,
                first_page=first,
                known=known,
                seen_at=self.clock.time(),
                tail_window=self.config.tail_window,
                page_size=limit,
            )
            if diff.resync:
                log.warning(
                    "message history changed; resyncing",
                    run_id=cp.run_id,
                    agent_id=cp.agent_id,
                    cursor=cp.next_index,
                )
            cp = diff.checkpoint
            result.checkpoint = cp
            result.events.extend(render(change) for change in diff.changes)
            result.seen.extend(diff.seen)
            emitted.update(dict(diff.seen))
            result.message_news += len(diff.changes)
            result.hint_status = result.hint_status or diff.hint_status
            if diff.next_offset is None:
                break
            offset = diff.next_offset
            first = diff.resync
        else:
            result.more_messages = True
            return
        if cp.terminal and not cp.verified and cp.scan_from is None:
            # Caught up with a run that ended: done (tail), or one full re-read to come (full).
            if self.config.final_verify == "tail":
                result.checkpoint = replace(cp, verified=True)
            else:
                result.checkpoint = start_final_verify(cp)
                result.more_messages = True
