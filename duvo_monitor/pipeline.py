"""The poll pipeline: four stages, each handing values on to the next through a bounded stream.

::

    dispatcher ─(Track, 0)─▶ workers ─(Polled, HANDOFF)─▶ publisher ─(Published, HANDOFF)─▶ ...
     pop_due     polling.workers   stage, publish
                 of them: plan,    (in order)
                 poll, look up ids

    ... ─▶ committer: wait for every ack, commit, scheduler.done

A run taken from the scheduler is held until its events are acknowledged by every sink and its
checkpoint is committed; only the committer gives it back (``scheduler.done``), so a run is never
polled twice at once and a checkpoint never runs ahead of delivery. A worker is free as soon as
it has handed its poll on, so acknowledgements no longer hold the polling, but the streams are
bounded: while the sinks take nothing, the publisher's and the committer's streams fill, the
workers wait to hand on, the dispatcher finds no worker, and no request is spent on news that
could not be delivered (back-pressure, ``tests/test_pipeline.py``). A poll whose status stage
emitted events (a run's end) hands that stage on before reading the pages, so a run's end does
not wait for its final pages; the stages of one poll stay in order through the streams, and the
outbox (one staged delivery per run, see state.py) keeps both until the first is committed.

The dispatcher stream has no buffer: the choice of which run to poll is made when a worker (and,
with the adaptive policy, the budget) can take it, not queued behind older choices. The publisher
and the committer are one task each: publishing is serialised by the fan-out and staging by the
state store anyway, and acknowledgements come in publish order, so the committer waits for them
in that order and commits every delivery that is ready in one transaction. Events staged before a
crash are delivered again, with their ids, before any poll (:meth:`Pipeline.redeliver_staged`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from duvo_monitor.accounting import Accounting
from duvo_monitor.api import Gate
from duvo_monitor.context import Context
from duvo_monitor.errors import Forbidden, SinkError, Unauthorized
from duvo_monitor.events import Change, Event
from duvo_monitor.fanout import FanOut
from duvo_monitor.models import parse_time
from duvo_monitor.pacer import TICK
from duvo_monitor.poller import Poller, PollResult
from duvo_monitor.scheduler import Plan, Track
from duvo_monitor.sinks.lane import Delivery
from duvo_monitor.state import Commit, StateStore

log = structlog.get_logger("duvo_monitor.pipeline")

STOP_GRACE = 10.0
DRAIN_GRACE = 10.0
DELIVERY_RETRY = 5.0
HANDOFF = 8
"""Polls that may wait for the publisher, and deliveries for their acks, beyond those in hand."""
MAX_COMMIT = 64
"""Deliveries committed in one transaction at most."""


@dataclass(slots=True, eq=False)
class Polled:
    """One stage of one run's poll, handed from its worker to the publisher."""

    track: Track
    plan: Plan
    result: PollResult
    final: bool
    """The poll's last stage: the committer gives the run back to the scheduler after it."""
    after: Polled | None = None
    """The poll's status stage, handed on before this one."""
    lines: list[bytes] = field(default_factory=list)
    """What was staged for it (its events' lines, and its status stage's if not yet committed)."""
    committed: bool = False
    failed: bool = False
    """The fan-out refused it; a later stage of the same poll is refused with it."""


@dataclass(slots=True, frozen=True)
class Published:
    """A stage staged and handed to the sinks, on its way to the committer."""

    polled: Polled
    commit: Commit
    delivery: Delivery | None


@dataclass(slots=True)
class Outcome:
    """How the watched runs ended, for ``duvo-monitor watch``'s exit code."""

    statuses: dict[str, str] = field(default_factory=dict)
    forgotten_completed: int = 0
    forgotten_other: int = 0
    """Runs forgotten after they retired (see watchlist.py), counted by how they ended."""

    def forget(self, run_id: str) -> None:
        status = self.statuses.pop(run_id, None)
        if status == "completed":
            self.forgotten_completed += 1
        elif status is not None:
            self.forgotten_other += 1

    def exit_code(self) -> int:
        if not self.statuses and not self.forgotten_completed:
            return 1
        completed = all(s == "completed" for s in self.statuses.values())
        return 0 if completed and not self.forgotten_other else 1


class Pipeline:
    """Dispatch, poll, deliver, redeliver. One per daemon; started by the topology."""

    def __init__(
        self,
        ctx: Context,
        *,
        poller: Poller,
        state: StateStore,
        fanout: FanOut,
        accounting: Accounting,
        outcome: Outcome,
        stop: Callable[[int], None],
        until_terminal: bool,
    ) -> None:
        self.config = ctx.config
        self.clock = ctx.clock
        self.scheduler = ctx.scheduler
        self.budget = ctx.budget
        self.pacer = ctx.pacer
        self.telemetry = ctx.telemetry
        self.stopping = ctx.stopping
        self.wake = ctx.wake
        self.poller = poller
        self.state = state
        self.fanout = fanout
        self.accounting = accounting
        self.outcome = outcome
        self.stop = stop
        self.until_terminal = until_terminal
        self._workers = 0
        self._wanted = 0
        self._held = 0
        self._polling = 0
        self._hire: Callable[[], None] | None = None

    async def poll_until_stopped(self) -> None:
        """Dispatch to ``polling.workers`` workers until stopped; polls in flight then get
        ``STOP_GRACE`` seconds to be delivered and committed (what is cut short is polled again,
        or, if staged, delivered again at the next start)."""
        tracks, taken = anyio.create_memory_object_stream[Track](0)
        polled, to_publish = anyio.create_memory_object_stream[Polled](HANDOFF)
        published, to_commit = anyio.create_memory_object_stream[Published](HANDOFF)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as stages:
                stages.start_soon(self._publisher, to_publish, published)
                stages.start_soon(self._committer, to_commit)
                async with anyio.create_task_group() as polling, taken, polled:

                    def hire() -> None:
                        polling.start_soon(self._worker, taken.clone(), polled.clone())

                    self._hire = hire
                    self.resize(self.config().polling.workers)
                    await self._dispatch(tracks)
                    self._hire = None
                    scope.deadline = anyio.current_time() + STOP_GRACE

    def resize(self, workers: int) -> None:
        """Run ``workers`` workers from now on (a reload): more start at once; the surplus
        leaves as each finishes its poll in flight, so no poll is cut short."""
        self._wanted = workers
        while self._hire is not None and self._workers < workers:
            self._workers += 1
            self._hire()

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def held(self) -> int:
        """Runs taken from the scheduler and not yet given back (handed to a worker, polling, or
        on their way to the committer): at most ``workers + 2 * HANDOFF + 3``."""
        return self._held

    @property
    def polling(self) -> int:
        """Runs in a worker's hands: at most ``polling.workers``."""
        return self._polling

    # -- dispatching -------------------------------------------------------------------------

    async def _dispatch(self, send: MemoryObjectSendStream[Track]) -> None:
        async with send:
            while not self.stopping.is_set():
                if self.config().polling.policy != "fixed":
                    # A first look waits only for the log; a poll of a run known to have news
                    # for the log and the trickle kept for later (budget.py); a routine one for
                    # the pace as well.
                    mono = self.clock.monotonic()
                    if self.scheduler.first_backlog(mono):
                        wait = self.budget.wait_time()
                    elif self.scheduler.hinted_backlog(mono):
                        wait = self.budget.urgent_wait()
                    else:
                        wait = self.budget.routine_wait()
                    held = self.pacer.dispatch_hold(budget_wait=wait, waiting=self.budget.waiting)
                    if held > 0:
                        # Hand out a poll only when the budget can send it: the choice of which
                        # run to poll is made when the request can leave.
                        await self.wake.wait(self.clock, held)
                        continue
                now = self.clock.monotonic()
                track = self.scheduler.pop_due(now)
                if track is None:
                    wait = min(self.scheduler.next_due() - now, TICK)
                    if wait > 0:
                        await self.wake.wait(self.clock, wait)
                    continue
                self.telemetry.poll_lag(max(0.0, now - track.due_popped))
                self._held += 1
                await send.send(track)

    # -- polling ---------------------------------------------------------------------------

    async def _worker(
        self, receive: MemoryObjectReceiveStream[Track], send: MemoryObjectSendStream[Polled]
    ) -> None:
        async with receive, send:
            try:
                async for track in receive:
                    self._polling += 1
                    try:
                        await self._poll_one(track, send)
                    finally:
                        self._polling -= 1
                    if self._workers > self._wanted:
                        break
            finally:
                self._workers -= 1

    async def _poll_one(self, track: Track, send: MemoryObjectSendStream[Polled]) -> None:
        plan = self.scheduler.plan(track, self.clock.monotonic())
        status = await self.poller.poll_status(track.cp, plan)
        stage = None
        if status.events:
            # A run's end is delivered before its final pages are read.
            stage = Polled(track, plan, status, final=False)
            await send.send(stage)
        result = await self.poller.poll_messages(status, plan)
        if result.asked:
            # What was emitted before is read from the state once the poll is over, never
            # during it; it matters only when it knows one of the ids the pages asked about.
            found = await self.state.known(track.run_id, result.asked)
            if found:
                result = self.poller.refold(status, result, found)
        if self.until_terminal and isinstance(result.error, Unauthorized | Forbidden):
            # `watch` is interactive: a key that is refused will not get better by waiting.
            log.error("the API refused the key", error=str(result.error))
            self.stop(1)
        await send.send(Polled(track, plan, result, final=True, after=stage))

    # -- delivering --------------------------------------------------------------------------

    async def _publisher(
        self, receive: MemoryObjectReceiveStream[Polled], send: MemoryObjectSendStream[Published]
    ) -> None:
        """Stage, then publish, in the order the polls were handed on: the staged copy covers
        a crash between publishing and the commit (see state.py)."""
        async with receive, send:
            async for polled in receive:
                result = polled.result
                commit = Commit(checkpoint=result.checkpoint, seen=result.seen)
                delivery = None
                after = polled.after
                if after is not None and after.failed:
                    self._undelivered(polled, None)
                    continue
                if result.events:
                    polled.lines = [e.line for e in result.events]
                    if after is not None and not after.committed:
                        # The outbox holds one staged delivery per run: this one's replaces the
                        # status stage's, so it carries the status stage's events too until
                        # that is committed (after a crash both are delivered again).
                        polled.lines = after.lines + polled.lines
                    try:
                        await self.state.stage(commit, polled.lines)
                        self.accounting.emitted(result.events, self.clock.time())
                        delivery = await self.fanout.publish(result.events)
                    except (SinkError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
                        self._undelivered(polled, e)
                        continue
                await send.send(Published(polled, commit, delivery))

    async def _committer(self, receive: MemoryObjectReceiveStream[Published]) -> None:
        """Wait for each delivery's acks in publish order, then commit every delivery that is
        acknowledged by then in one transaction, and give the runs back to the scheduler."""
        async with receive:
            head: Published | None = None
            while True:
                if head is None:
                    try:
                        head = await receive.receive()
                    except anyio.EndOfStream:
                        return
                ready = [head]
                head = None
                if ready[0].delivery is not None:
                    await ready[0].delivery.wait()
                while len(ready) < MAX_COMMIT:
                    try:
                        item = receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    if item.delivery is not None and not item.delivery.done:
                        head = item
                        break
                    ready.append(item)
                await self._commit(ready)

    async def _commit(self, ready: list[Published]) -> None:
        commits = [
            item.commit
            for item in ready
            if item.commit.checkpoint != item.polled.track.cp
            or item.commit.seen
            or item.delivery is not None
        ]
        if commits:
            started = self.clock.monotonic()
            await self.state.commit(commits)
            self.telemetry.state_commit(self.clock.monotonic() - started)
        for item in ready:
            polled = item.polled
            track = polled.track
            self.scheduler.checkpointed(track, item.commit.checkpoint)
            cp = track.cp
            if cp.status is not None:
                self.telemetry.run_status(cp.run_id, cp.agent_id, cp.status)
                self.outcome.statuses[cp.run_id] = cp.status
            if polled.final:
                self._give_back(track, polled.plan, polled.result, polled.result.error_delay)
            polled.committed = True

    def _undelivered(self, polled: Polled, exc: Exception | None) -> None:
        """The fan-out refused the events (it is closing, or a sink failed), or those of the
        poll's status stage: nothing more of the poll is committed, and the run is polled again
        after ``DELIVERY_RETRY``."""
        track = polled.track
        polled.failed = True
        if exc is not None:
            log.error(
                "delivery failed; the run will be polled again",
                run_id=track.run_id,
                agent_id=track.cp.agent_id,
                error=str(exc),
            )
        if polled.final:
            self._give_back(track, polled.plan, PollResult(checkpoint=track.cp), DELIVERY_RETRY)

    def _give_back(
        self, track: Track, plan: Plan, result: PollResult, error_delay: float | None
    ) -> None:
        self._held -= 1
        self._weigh_sweep(track, result)
        if not plan.first and error_delay is None:
            found = (result.status_news > 0) + (result.message_news > 0)
            self.pacer.polled(requests=result.requests, found=found, now=self.clock.monotonic())
        was_live = not track.retired
        self.scheduler.done(
            track,
            self.clock.monotonic(),
            plan=plan,
            status_news=result.status_news,
            message_news=result.message_news,
            read_messages=result.read_messages,
            status_changed=result.status_changed,
            hint_status=result.hint_status,
            more_messages=result.more_messages,
            error_delay=error_delay,
            # A poll that failed after an earlier request of it was answered (not a run that
            # is not visible yet, whose backoff keeps growing).
            answered=result.error is not None and result.requests > 1,
            quiet_for=self._quiet_for(track, plan, error_delay),
        )
        if was_live and track.retired:
            self._retired(track)
        self.wake.set()

    def _quiet_for(self, track: Track, plan: Plan, error_delay: float | None) -> float | None:
        """A first look's seconds since the run last changed (its ``updated_at``), by the
        server's clock against ours (never below zero): how long a finished run sat unresumed."""
        updated = parse_time(track.cp.updated_at) if plan.first and error_delay is None else None
        return None if updated is None else max(0.0, self.clock.time() - updated)

    def _weigh_sweep(self, track: Track, result: PollResult) -> None:
        """Did the last sweep's updated_at already reflect the messages this poll found?"""
        if track.swept_time is None:
            return
        for event in result.events:
            if event.change is not Change.MESSAGE_CREATED or event.change_time is None:
                continue
            if event.change_time < track.swept_time - 1.0:
                shown = track.swept_updated
                self.scheduler.trust.observe(
                    shown is not None and shown >= event.change_time - 1e-3
                )

    async def drain(self) -> None:
        """After the last poll: give the sinks ``DRAIN_GRACE`` seconds to deliver what they hold."""
        with anyio.CancelScope(shield=True):
            try:
                left = await self.fanout.drain(anyio.current_time() + DRAIN_GRACE)
            except SinkError as exc:
                log.error("sinks could not drain", error=str(exc))
                return
            if left:
                log.warning("sinks still held events at exit", left=left)

    def _retired(self, track: Track) -> None:
        cp = track.cp
        if cp.lost:
            self.outcome.statuses[cp.run_id] = "lost"
        self.telemetry.run_status(cp.run_id, cp.agent_id, None)
        log.info(
            "run retired", run_id=cp.run_id, agent_id=cp.agent_id, status=cp.status, lost=cp.lost
        )

    # -- after a crash -----------------------------------------------------------------------

    async def redeliver_staged(self) -> None:
        """Events handed to the sinks before a crash but never acknowledged: again, same ids.

        A stop ends the wait (a sink that still cannot take them would hold it forever); what
        was not acknowledged stays staged for the next start.
        """
        staged = await self.state.staged()
        async with anyio.create_task_group() as redelivery:

            async def stop_waiting() -> None:
                await self.stopping.wait()
                log.warning("stopped before the staged events were delivered; they stay staged")
                redelivery.cancel_scope.cancel()

            redelivery.start_soon(stop_waiting)
            for commit, lines in staged:
                events = [Event.from_line(line) for line in lines]
                delivery = await self.fanout.publish(events)
                await delivery.wait()
                await self.state.commit([commit])
                track = self.scheduler.tracks.get(commit.checkpoint.run_id)
                if track is not None:
                    self.scheduler.checkpointed(track, commit.checkpoint)
            redelivery.cancel_scope.cancel()
        if staged and not self.stopping.is_set():
            log.info(
                "delivered events staged before a crash",
                runs=len(staged),
                events=sum(len(lines) for _, lines in staged),
            )


def policy_gate(ctx: Context) -> Gate:
    """The budget's gate, bypassed under ``polling.policy: fixed`` (read at each request: a
    reload may switch the policy either way)."""

    async def gate(endpoint: str, *, urgent: bool, first: bool = False) -> None:
        if ctx.config().polling.policy != "fixed":
            await ctx.budget.acquire(endpoint, urgent=urgent, first=first)

    return gate


__all__ = ["Outcome", "Pipeline", "policy_gate"]
