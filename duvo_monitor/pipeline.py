"""The poll pipeline: the dispatcher hands due runs to the workers, a worker polls its run and
delivers what the poll found, and only then lets the run go.

::

    dispatcher ──(due Track, stream of 0)──▶ worker ──▶ poller ──▶ deliver: stage, publish,
                                                                    wait for every ack, commit

A worker holds its run until the run's events are acknowledged by every sink and its checkpoint
is committed, so a run is never polled twice at once and a checkpoint never runs ahead of
delivery. The stream between the dispatcher and the workers has no buffer: the choice of which
run to poll is made when a worker (and, with the adaptive policy, the budget) can take it, not
queued behind older choices. Events staged before a crash are delivered again, with their ids,
before any poll (:meth:`Pipeline.redeliver_staged`).
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
from duvo_monitor.pacer import TICK
from duvo_monitor.poller import Poller, PollResult
from duvo_monitor.scheduler import Track
from duvo_monitor.state import Commit, StateStore

log = structlog.get_logger("duvo_monitor.pipeline")

STOP_GRACE = 10.0
DRAIN_GRACE = 10.0
DELIVERY_RETRY = 5.0


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
        self._hire: Callable[[], None] | None = None

    async def poll_until_stopped(self) -> None:
        """Dispatch to ``polling.workers`` workers until stopped; polls in flight then get
        ``STOP_GRACE`` seconds to deliver and commit."""
        send, receive = anyio.create_memory_object_stream[Track](0)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as polling, receive:

                def hire() -> None:
                    polling.start_soon(self._worker, receive.clone())

                self._hire = hire
                self.resize(self.config().polling.workers)
                await self._dispatch(send)
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

    # -- dispatching -------------------------------------------------------------------------

    async def _dispatch(self, send: MemoryObjectSendStream[Track]) -> None:
        async with send:
            while not self.stopping.is_set():
                if self.config().polling.policy != "fixed":
                    # A poll of a run known to have news waits only for the budget; a routine
                    # one for the pace as well.
                    urgent = self.scheduler.hinted_backlog(self.clock.monotonic())
                    wait = self.budget.wait_time() if urgent else self.budget.routine_wait()
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
                await send.send(track)

    async def _worker(self, receive: MemoryObjectReceiveStream[Track]) -> None:
        async with receive:
            try:
                async for track in receive:
                    await self._poll_one(track)
                    if self._workers > self._wanted:
                        break
            finally:
                self._workers -= 1

    # -- one poll ----------------------------------------------------------------------------

    async def _poll_one(self, track: Track) -> None:
        now = self.clock.monotonic()
        plan = self.scheduler.plan(track, now)
        try:
            status = await self.poller.poll_status(track.cp, plan)
            if status.events:
                # A run's end is delivered before its final pages are read.
                await self._deliver(track, status)
            result = await self.poller.poll_messages(status, plan)
            if result.asked:
                # What was emitted before is read from the state once the poll is over, never
                # during it; it matters only when it knows one of the ids the pages asked about.
                found = await self.state.known(track.run_id, result.asked)
                if found:
                    result = self.poller.refold(status, result, found)
            error_delay = result.error_delay
            if self.until_terminal and isinstance(result.error, Unauthorized | Forbidden):
                # `watch` is interactive: a key that is refused will not get better by waiting.
                log.error("the API refused the key", error=str(result.error))
                self.stop(1)
            await self._deliver(track, result)
        except (SinkError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            log.error(
                "delivery failed; the run will be polled again",
                run_id=track.run_id,
                agent_id=track.cp.agent_id,
                error=str(exc),
            )
            error_delay = DELIVERY_RETRY
            result = PollResult(checkpoint=track.cp)
        self._weigh_sweep(track, result)
        was_live = not track.retired
        self.scheduler.done(
            track,
            self.clock.monotonic(),
            plan=plan,
            status_news=result.status_news,
            message_news=result.message_news,
            status_changed=result.status_changed,
            hint_status=result.hint_status,
            more_messages=result.more_messages,
            error_delay=error_delay,
        )
        if was_live and track.retired:
            self._retired(track)
        self.wake.set()

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

    async def _deliver(self, track: Track, result: PollResult) -> None:
        """Stage, publish, wait for every sink's ack, then commit: the checkpoint follows
        delivery, and the staged copy covers a crash in between (see state.py)."""
        commit = Commit(checkpoint=result.checkpoint, seen=result.seen)
        if result.events:
            await self.state.stage(commit, [e.line for e in result.events])
            self.accounting.emitted(result.events, self.clock.time())
            delivery = await self.fanout.publish(result.events)
            await delivery.wait()
        if result.checkpoint != track.cp or result.seen or result.events:
            started = self.clock.monotonic()
            await self.state.commit([commit])
            self.telemetry.state_commit(self.clock.monotonic() - started)
        self.scheduler.checkpointed(track, result.checkpoint)
        cp = track.cp
        if cp.status is not None:
            self.telemetry.run_status(cp.run_id, cp.agent_id, cp.status)
            self.outcome.statuses[cp.run_id] = cp.status

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

    async def gate(endpoint: str, *, urgent: bool) -> None:
        if ctx.config().polling.policy != "fixed":
            await ctx.budget.acquire(endpoint, urgent=urgent)

    return gate


__all__ = ["Outcome", "Pipeline", "policy_gate"]
