"""Fan-out: every event to every sink that wants it, each sink behind its own buffer and worker.

::

    publish(events) ──filter──▶ [buffer A] ──worker A──▶ sink A.deliver ──ack──┐
                    ──filter──▶ [buffer B] ──worker B──▶ sink B.deliver ──ack──┼─▶ Delivery.wait()
                    ──filter──▶ [buffer C] ──worker C──▶ sink C.deliver ──ack──┘

Isolation: a sink that is slow, retrying or dead only holds up its own buffer; the others keep
delivering. :meth:`FanOut.publish` first hands every sink what fits in its buffer and only then
waits for the full ones, so even a blocked publish has already fed the healthy sinks.

Full buffers: ``on_full: block`` (the default) spills to the lane's spool (below), or without
one makes ``publish`` wait for room: the daemon's backpressure. ``on_full: drop_oldest`` never
waits: the oldest buffered event is dropped, acknowledged, counted
(``sink_dropped(reason="queue_full")``) and logged with its id.

Spilling (with ``spool_dir``, as the daemon runs it): a lane whose buffer is full, or that has
held events for ``stuck_after`` seconds without an acknowledgement, moves what it holds and every
later event to its own spool on disk (:mod:`duvo_monitor.sinks.lane`), fsynced, where they count
as held: the sink shows ``retry``, the others and the publishers go on. Once the sink takes
events again it gets the spool in order, each once, and the lane returns to memory; a spool left
at a stop goes out first at the next start. Only a full spool makes ``publish`` wait again.

Acknowledgement: :meth:`Delivery.wait` returns once every sink has acknowledged its part of the
published events or durably holds it in its spool (filtered-out events need no ack; dropped
ones count as acknowledged). A sink's ``deliver`` raising a transient
:class:`~duvo_monitor.errors.SinkError` is retried for the same batch with backoff (the sink
shows ``retry``) and acks wait; a permanent one marks the sink ``failed``, and its events are
dropped with a count and a log line from then on. :class:`~duvo_monitor.sinks.base.SinkClosed`
(stdout's reader went away) ends :meth:`FanOut.run` with that exception, so that the daemon can
exit cleanly.

Structured: :meth:`FanOut.run` is the parent of every worker and every sink's own background
task; sinks are closed in shielded scopes when their worker ends.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from duvo_monitor.clock import Clock
from duvo_monitor.errors import SinkError
from duvo_monitor.events import Event
from duvo_monitor.logs import capped
from duvo_monitor.sinks.backoff import Backoff
from duvo_monitor.sinks.base import Sink, SinkClosed, SinkObserver, error_kind
from duvo_monitor.sinks.lane import Delivery, Lane

log = structlog.get_logger("duvo_monitor.fanout")

MAX_BATCH = 500
CLOSE_TIMEOUT = 10.0
REMOVE_TIMEOUT = 30.0
HEALTH_INTERVAL = 1.0
RETRY = Backoff(initial=0.2, maximum=30.0)
# A lane holding events this long without an acknowledgement spills to disk: long enough for a
# healthy sink's slow batch, short enough that polls do not wait on a dead one. Wall seconds
# (times the clock's speed): a sink's slowness is its disk's or network's, not simulated time's.
STUCK_AFTER = 10.0
SPOOL_MAX_BYTES = 1024**3


class FanOut:
    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        observer: SinkObserver,
        clock: Clock,
        retry: Backoff = RETRY,
        max_batch: int = MAX_BATCH,
        rng: random.Random | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        stuck_after: float = STUCK_AFTER,
        spool_max_bytes: int = SPOOL_MAX_BYTES,
    ) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique: {names}")
        self._lanes: dict[str, Lane] = {sink.name: Lane.of(sink) for sink in sinks}
        self._observer = observer
        self._clock = clock
        self._retry = retry
        self._max_batch = max_batch
        self._rng = rng or random.Random()
        self._spool_dir = None if spool_dir is None else os.fspath(spool_dir)
        self._stuck_after = stuck_after
        self._spool_max_bytes = spool_max_bytes
        self._publish_lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self._closed = False

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes.values()]

    def health(self) -> dict[str, str]:
        return {name: lane.health() for name, lane in self._lanes.items()}

    def pending(self) -> int:
        """Events held in memory (buffers, batches in flight), over all sinks."""
        return sum(lane.held for lane in self._lanes.values())

    def spooled(self) -> int:
        """Events held in the sinks' spools on disk, over all sinks."""
        return sum(lane.spooled for lane in self._lanes.values())

    # --- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every sink until :meth:`drain` has emptied them (or until cancelled).

        ``started`` comes once every worker runs; sinks open inside their workers (an open that
        fails is retried there), so a sink that cannot open yet does not hold up start-up.
        Raises :class:`SinkClosed` unwrapped when stdout's reader goes away.
        """
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for lane in list(self._lanes.values()):
                    await tg.start(self._run_lane, lane)
                task_status.started()
        except* SinkClosed as group:
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            raise leaf from None
        finally:
            self._tg = None

    async def _run_lane(self, lane: Lane, *, task_status: TaskStatus[None]) -> None:
        bound = log.bind(sink=lane.name)
        try:
            with lane.scope:
                if lane.after is None:
                    await lane.open_spool(self._spool_dir, self._spool_max_bytes)
                task_status.started()
                self._report(lane)
                async with anyio.create_task_group() as guard:
                    guard.start_soon(self._guard, lane)
                    if lane.after is not None:
                        # The lane it replaces owns the spool directory until it has finished.
                        await lane.after.wait()
                        await lane.open_spool(self._spool_dir, self._spool_max_bytes)
                    await self._open(lane)
                    try:
                        async with anyio.create_task_group() as tg:
                            await tg.start(lane.sink.run)
                            tg.start_soon(self._watch, lane)
                            await self._work(lane)
                            tg.cancel_scope.cancel()
                    finally:
                        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                            try:
                                await lane.sink.close()
                            except (SinkError, OSError) as exc:
                                bound.error("closing the sink failed", error=str(exc))
                    guard.cancel_scope.cancel()
        finally:
            await lane.close_spool()
            lane.finished.set()

    async def _guard(self, lane: Lane) -> None:
        """Spill a lane that holds events and has acknowledged none for ``stuck_after``."""
        while True:
            await self._clock.sleep(HEALTH_INTERVAL)
            if not self._stuck(lane):
                continue
            async with self._publish_lock:  # a spill must not interleave with a publish
                if self._stuck(lane):
                    await self._spool_events(lane, [], None)

    def _stuck(self, lane: Lane) -> bool:
        return (
            lane.spool is not None
            and not lane.spooling
            and not lane.failed
            and lane.held > 0
            and self._clock.monotonic() - lane.progress_at >= self._stuck_after * self._clock.speed
        )

    async def _open(self, lane: Lane) -> None:
        attempt = 0
        while True:
            try:
                await lane.sink.open()
            except SinkError as exc:
                if isinstance(exc, SinkClosed):
                    raise
                self._observer.sink_error(lane.name, error_kind(exc))
                lane.retrying = True
                self._report(lane)
                delay = self._retry.delay(attempt, self._rng)
                log.error("cannot open the sink; retrying", sink=lane.name, error=str(exc))
                attempt += 1
                await self._clock.sleep(delay)
                continue
            lane.retrying = False
            self._report(lane)
            return

    async def _watch(self, lane: Lane) -> None:
        """Report state the sink changes in the background (a webhook's retries, its spool)."""
        while True:
            await self._clock.sleep(HEALTH_INTERVAL)
            self._report(lane)

    async def _work(self, lane: Lane) -> None:
        """Deliver the lane's buffer, then its spool, in batches, until both are empty and the
        lane no longer accepts."""
        limit = max(1, min(self._max_batch, lane.capacity))
        while True:
            changed = lane.changed.waiter()
            if lane.queue:
                await self._work_memory(lane, limit)
            elif lane.spooling:
                await self._work_spool(lane, self._max_batch)
            elif not lane.accepting:
                return
            else:
                await changed.wait()

    async def _work_memory(self, lane: Lane, limit: int) -> None:
        items = lane.batch = [lane.queue.popleft() for _ in range(min(limit, len(lane.queue)))]
        lane.space.notify()
        await self._deliver(lane, [event for event, _ in items])
        async with lane.spool_lock:  # a spill in progress decides who acknowledges this batch
            seqs, lane.batch_seqs, lane.batch = lane.batch_seqs, None, []
            if seqs is not None:
                # Spilled while in the sink's hands: delivered now, so out of the spool too.
                await lane.ack_spooled(seqs)
        if seqs is None:
            acks: dict[Delivery, int] = {}
            for _, delivery in items:
                acks[delivery] = acks.get(delivery, 0) + 1
            for delivery, count in acks.items():
                delivery._ack(count)
        self._delivered(lane, [event for event, _ in items])

    async def _work_spool(self, lane: Lane, limit: int) -> None:
        async with lane.spool_lock:
            records = await lane.read_spooled(limit)
            if not records:
                lane.spooling = False
                log.info("sink caught up with its spool", sink=lane.name)
                self._report(lane)
                return
        events = [Event.from_line(record.line) for record in records]
        await self._deliver(lane, events)
        await lane.ack_spooled([record.seq for record in records])
        lane.space.notify()
        self._delivered(lane, events)

    def _delivered(self, lane: Lane, events: list[Event]) -> None:
        lane.progress_at = self._clock.monotonic()
        if not lane.failed:
            types: dict[str, int] = {}
            for event in events:
                types[event.type] = types.get(event.type, 0) + 1
            for type_, count in types.items():
                self._observer.sink_delivered(lane.name, type_, count)
        self._report(lane)

    async def _deliver(self, lane: Lane, events: list[Event]) -> None:
        """One batch to one sink, retried until acknowledged. The one delivery boundary."""
        attempt = 0
        while not lane.failed:
            try:
                await lane.sink.deliver(events)
            except SinkClosed as exc:
                self._observer.sink_error(lane.name, error_kind(exc))
                lane.failed = True
                self._report(lane)
                raise
            except SinkError as exc:
                self._observer.sink_error(lane.name, error_kind(exc))
                if exc.permanent:
                    lane.failed = True
                    log.error("sink failed for good", sink=lane.name, error=str(exc))
                    break
                lane.retrying = True
                self._report(lane)
                delay = self._retry.delay(attempt, self._rng)
                log.warning(
                    "sink delivery failed; retrying",
                    sink=lane.name,
                    error=str(exc),
                    attempt=attempt + 1,
                    delay=round(delay, 3),
                )
                attempt += 1
                await self._clock.sleep(delay)
                continue
            if lane.retrying:
                lane.retrying = False
                log.info("sink delivers again", sink=lane.name, attempts=attempt + 1)
            return
        self._observer.sink_dropped(lane.name, "sink_failed", len(events))
        log.error(
            "sink failed; events dropped",
            sink=lane.name,
            count=len(events),
            event_ids=capped(event.id for event in events),
        )

    def _report(self, lane: Lane) -> None:
        self._observer.sink_queue(lane.name, lane.held + lane.spooled + lane.sink.backlog)
        state = lane.health()
        if state != lane.reported:
            lane.reported = state
            self._observer.sink_health(lane.name, state)

    # --- publishing -------------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> Delivery:
        """Hand ``events`` to every sink that wants them; wait only where a buffer is full and
        there is no spool to spill to (or it is full too).

        Calls are serialised, so each sink sees events in publish order.
        """
        if self._closed:
            raise anyio.ClosedResourceError("the fan-out is draining")
        async with self._publish_lock:
            if self._closed:  # drain() began while this call waited for the lock
                raise anyio.ClosedResourceError("the fan-out is draining")
            routed = [
                (lane, lane.filter.select(events))
                for lane in self._lanes.values()
                if lane.accepting
            ]
            delivery = Delivery(sum(len(selected) for _, selected in routed))
            waiting: list[tuple[Lane, list[Event]]] = []
            for lane, selected in routed:
                rest = self._offer(lane, selected, delivery)
                if rest:
                    waiting.append((lane, rest))
            for lane, rest in waiting:
                await self._hand(lane, rest, delivery)
            return delivery

    async def _hand(self, lane: Lane, events: list[Event], delivery: Delivery) -> None:
        """Events that did not fit (or that must queue behind the spool): spool them, or wait
        for room."""
        index = 0
        while index < len(events):
            full = len(lane.queue) >= lane.capacity
            if (lane.spooling or full) and lane.spool is not None:
                if await self._spool_events(lane, events[index:], delivery):
                    return
            elif not full:
                self._enqueue(lane, events[index], delivery)
                index += 1
                continue
            space = lane.space.waiter()
            self._report(lane)
            await space.wait()

    def _enqueue(self, lane: Lane, event: Event, delivery: Delivery) -> None:
        if not lane.queue and not lane.batch:
            lane.progress_at = self._clock.monotonic()
        lane.queue.append((event, delivery))
        lane.changed.notify()

    async def _spool_events(
        self, lane: Lane, events: list[Event], delivery: Delivery | None
    ) -> bool:
        """:meth:`Lane.spool_events`, then the report. Called with the publish lock held."""
        if not await lane.spool_events(events, delivery, self._clock.time()):
            return False
        self._report(lane)
        return True

    def _offer(self, lane: Lane, events: list[Event], delivery: Delivery) -> list[Event]:
        """Enqueue what fits without waiting; the rest (block lanes) is returned."""
        if lane.spooling:
            return events  # behind the spooled ones, in order
        dropped: list[Event] = []
        rest: list[Event] = []
        for index, event in enumerate(events):
            if len(lane.queue) >= lane.capacity:
                if not lane.drop_oldest:
                    rest = events[index:]
                    break
                old, old_delivery = lane.queue.popleft()
                old_delivery._ack(1)
                dropped.append(old)
            if not lane.queue and not lane.batch:
                lane.progress_at = self._clock.monotonic()
            lane.queue.append((event, delivery))
        if len(events) > len(rest):
            lane.changed.notify()
        if dropped:
            self._observer.sink_dropped(lane.name, "queue_full", len(dropped))
            log.warning(
                "sink buffer full; dropped the oldest events",
                sink=lane.name,
                count=len(dropped),
                event_ids=capped(event.id for event in dropped),
            )
        self._report(lane)
        return rest

    # --- stopping and reloading -------------------------------------------------------------

    async def drain(self, deadline: float) -> int:
        """Stop accepting, let every buffer empty until ``deadline`` (``anyio.current_time()``).

        Returns how many sink-events were left unacknowledged (0: all delivered). Lanes still
        busy at the deadline are cancelled; their events were not acknowledged, so their runs'
        checkpoints did not advance and they are sent again after a restart.
        """
        self._closed = True
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.accepting = False
            lane.changed.notify()
        with anyio.move_on_at(deadline):
            for lane in lanes:
                await lane.finished.wait()
        left = 0
        for lane in lanes:
            if not lane.finished.is_set():
                left += lane.held
                lane.scope.cancel()
        return left

    async def reconfigure(
        self, sinks: Sequence[Sink], *, drain_within: float = REMOVE_TIMEOUT
    ) -> None:
        """Swap to ``sinks`` (SIGHUP). Unchanged sinks keep running and are reopened.

        A sink whose config is equal to a running one's is not started: the running one stays
        (the new instance is discarded unopened). Removed sinks stop accepting, drain, and
        close. An added sink takes events at once; if it replaces a sink of the same name, it
        starts delivering only after that one has drained, so a file gets its lines in order.
        Events published meanwhile are neither lost nor repeated. A removed sink that cannot
        drain within ``drain_within`` seconds is cancelled and what it held is counted as dropped.
        """
        if self._tg is None:
            raise RuntimeError("reconfigure() needs a running fan-out")
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique: {names}")
        async with self._publish_lock:
            old = self._lanes
            new: dict[str, Lane] = {}
            removed: list[Lane] = []
            for sink in sinks:
                current = old.get(sink.name)
                if current is not None and current.sink.config == sink.config:
                    new[sink.name] = current
                    current.sink.reopen()
            for name, lane in old.items():
                if new.get(name) is not lane:
                    lane.accepting = False
                    lane.changed.notify()
                    removed.append(lane)
            for sink in sinks:
                if sink.name in new:
                    continue
                lane = Lane.of(sink)
                previous = old.get(sink.name)
                if previous is not None:
                    lane.after = previous.finished
                new[sink.name] = lane
                await self._tg.start(self._run_lane, lane)
            self._lanes = new
        log.info(
            "sinks reconfigured",
            kept=[n for n, lane in new.items() if old.get(n) is lane],
            added=[n for n, lane in new.items() if old.get(n) is not lane],
            removed=[lane.name for lane in removed],
        )
        with anyio.move_on_after(drain_within):
            for lane in removed:
                await lane.finished.wait()
        for lane in removed:
            if not lane.finished.is_set():
                held = [*(lane.batch if lane.batch_seqs is None else ()), *lane.queue]
                lane.batch = []
                lane.queue.clear()
                lane.scope.cancel()
                for _, delivery in held:
                    delivery._ack(1)
                self._observer.sink_dropped(lane.name, "removed", len(held))
                log.error(
                    "a removed sink did not drain in time; its events are dropped",
                    sink=lane.name,
                    count=len(held),
                )
