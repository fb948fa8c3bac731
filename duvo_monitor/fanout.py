"""Fan-out: every event to every sink that wants it, each sink behind its own buffer and worker.

::

    publish(events) ──filter──▶ [buffer A] ──worker A──▶ sink A.deliver ──ack──┐
                    ──filter──▶ [buffer B] ──worker B──▶ sink B.deliver ──ack──┼─▶ Delivery.wait()
                    ──filter──▶ [buffer C] ──worker C──▶ sink C.deliver ──ack──┘

Isolation: a sink that is slow, retrying or dead only holds up its own buffer; the others keep
delivering. :meth:`FanOut.publish` first hands every sink what fits in its buffer and only then
waits for the full ones, so even a blocked publish has already fed the healthy sinks.

Full buffers: ``on_full: block`` (the default) makes ``publish`` wait for room, or spill to the
spool when there is one (see below), which is the daemon's backpressure (its polls wait for
their events to be taken). ``on_full: drop_oldest`` never
waits: the oldest buffered event is dropped, acknowledged, counted
(``sink_dropped(reason="queue_full")``) and logged with its id.

Spilling (with ``spool_dir``, as the daemon runs it): a sink that falls behind is isolated
without losing anything. When its buffer is full, or when it has held events for
``stuck_after`` seconds without acknowledging any, its lane *spills*: what it holds (the batch
in the sink's hands, then its buffer) and every later event for it go to an on-disk
:class:`~duvo_monitor.sinks.spool.Spool` of its own (``<spool_dir>/fanout-<name>/``), fsynced,
and count as held. The sink is reported ``retry`` (unhealthy) while it spools; the other sinks
and the publishers go on. The lane's worker delivers the spool in order once the sink takes
events again (a batch in its hands when the lane spilled is acknowledged in the spool when it
returns, not sent twice), then goes back to memory. A spool left at a stop is delivered first
at the next start. Only a full spool (``spool_max_bytes``) makes ``publish`` wait again.
Without ``spool_dir`` a full buffer simply blocks, as below.

Acknowledgement: :meth:`Delivery.wait` returns once every sink has acknowledged its part of the
published events or durably holds it in its spool (filtered-out events need no ack; dropped
ones count as acknowledged). A sink's
``deliver`` raising a transient :class:`~duvo_monitor.errors.SinkError` is retried for the same
batch with backoff (the sink shows ``retry``) and acks wait; a permanent one marks the sink
``failed``, and its events are dropped with a count and a log line from then on.
:class:`~duvo_monitor.sinks.base.SinkClosed` (stdout's reader went away) ends :meth:`FanOut.run`
with that exception, so that the daemon can exit cleanly.

Structured: :meth:`FanOut.run` is the parent of every worker and every sink's own background
task; sinks are closed in shielded scopes when their worker ends.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from duvo_monitor.clock import Clock
from duvo_monitor.errors import SinkError
from duvo_monitor.events import Event
from duvo_monitor.logs import capped
from duvo_monitor.sinks.backoff import Backoff
from duvo_monitor.sinks.base import (
    EventFilter,
    Sink,
    SinkClosed,
    SinkObserver,
    SinkState,
    error_kind,
)
from duvo_monitor.sinks.spool import Spool
from duvo_monitor.sinks.wakeup import Signal

log = structlog.get_logger("duvo_monitor.fanout")

MAX_BATCH = 500
CLOSE_TIMEOUT = 10.0
REMOVE_TIMEOUT = 30.0
HEALTH_INTERVAL = 1.0
RETRY = Backoff(initial=0.2, maximum=30.0)
# A lane holding events this long (clock seconds) without an acknowledgement spills to disk: long
# enough for a healthy sink's slow batch, short enough that polls do not wait on a dead one.
STUCK_AFTER = 10.0
SPOOL_MAX_BYTES = 1024**3
SPOOL_PREFIX = "fanout-"


class Delivery:
    """The acknowledgement of one :meth:`FanOut.publish`."""

    __slots__ = ("_done", "_pending")

    def __init__(self, pending: int) -> None:
        self._pending = pending
        self._done = anyio.Event()
        if pending <= 0:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def pending(self) -> int:
        """Sink-events not yet acknowledged (an event for two sinks counts twice)."""
        return self._pending

    async def wait(self) -> None:
        """Return when every sink has acknowledged its part."""
        await self._done.wait()

    def _ack(self, count: int) -> None:
        self._pending -= count
        if self._pending <= 0:
            self._done.set()


@dataclass(eq=False, slots=True, kw_only=True)
class _Lane:
    """One sink's buffer, worker state and lifecycle."""

    sink: Sink
    filter: EventFilter
    capacity: int
    drop_oldest: bool
    queue: deque[tuple[Event, Delivery]] = field(default_factory=deque)
    batch: list[tuple[Event, Delivery]] = field(default_factory=list)  # in the sink's hands
    accepting: bool = True
    retrying: bool = False
    failed: bool = False
    reported: str = ""
    changed: Signal = field(default_factory=Signal)  # queue grew or accepting changed
    space: Signal = field(default_factory=Signal)  # queue shrank
    after: anyio.Event | None = None  # the lane it replaces has finished
    spool: Spool | None = None  # open while the lane runs, if the fan-out has a spool directory
    spooling: bool = False  # the spool holds events: later ones go behind them, not to memory
    spool_lock: anyio.Lock = field(default_factory=anyio.Lock)  # spill or read vs batch ack
    batch_seqs: list[int] | None = None  # the batch in the sink's hands is also in the spool
    progress_at: float = 0.0  # clock.monotonic of the last ack, or of going busy from idle
    finished: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    @classmethod
    def of(cls, sink: Sink) -> _Lane:
        config = sink.config
        return cls(
            sink=sink,
            filter=EventFilter(types=config.types, agents=config.agents),
            capacity=config.buffer,
            drop_oldest=config.on_full == "drop_oldest",
        )

    @property
    def name(self) -> str:
        return self.sink.name

    @property
    def held(self) -> int:
        """Events held in memory only (buffer and batch), not yet safe anywhere."""
        return len(self.queue) + (len(self.batch) if self.batch_seqs is None else 0)

    @property
    def spooled(self) -> int:
        return self.spool.pending if self.spool is not None else 0

    def health(self) -> SinkState:
        state = self.sink.state
        if self.failed or state == "failed":
            return "failed"
        if self.retrying or self.spooling or state == "retry":
            return "retry"
        return "ok"


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
        self._lanes: dict[str, _Lane] = {sink.name: _Lane.of(sink) for sink in sinks}
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

    async def _run_lane(self, lane: _Lane, *, task_status: TaskStatus[None]) -> None:
        bound = log.bind(sink=lane.name)
        try:
            with lane.scope:
                if lane.after is None:
                    await self._open_spool(lane)
                task_status.started()
                self._report(lane)
                async with anyio.create_task_group() as guard:
                    guard.start_soon(self._guard, lane)
                    if lane.after is not None:
                        # The lane it replaces owns the spool directory until it has finished.
                        await lane.after.wait()
                        await self._open_spool(lane)
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
            await self._close_spool(lane)
            lane.finished.set()

    async def _open_spool(self, lane: _Lane) -> None:
        """Recover the lane's spool; what a previous run left in it goes out before anything new."""
        if self._spool_dir is None:
            return
        spool = Spool(
            os.path.join(self._spool_dir, SPOOL_PREFIX + lane.name),
            max_bytes=self._spool_max_bytes,
        )
        try:
            await anyio.to_thread.run_sync(spool.open)
        except OSError as exc:
            log.error(
                "cannot open the sink's spool; a full buffer will block",
                sink=lane.name,
                error=str(exc),
            )
            return
        lane.spool = spool
        if spool.pending:
            lane.spooling = True
            log.info(
                "events spooled before a stop go out first", sink=lane.name, count=spool.pending
            )
            lane.changed.notify()

    async def _close_spool(self, lane: _Lane) -> None:
        spool, lane.spool = lane.spool, None
        if spool is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(spool.close)
            except OSError as exc:
                log.error("closing the sink's spool failed", sink=lane.name, error=str(exc))

    async def _guard(self, lane: _Lane) -> None:
        """Spill a lane that holds events and has acknowledged none for ``stuck_after``."""
        while True:
            await self._clock.sleep(min(HEALTH_INTERVAL, self._stuck_after))
            if not self._stuck(lane):
                continue
            async with self._publish_lock:  # a spill must not interleave with a publish
                if self._stuck(lane):
                    await self._spool_events(lane, [], None)

    def _stuck(self, lane: _Lane) -> bool:
        return (
            lane.spool is not None
            and not lane.spooling
            and not lane.failed
            and lane.held > 0
            and self._clock.monotonic() - lane.progress_at >= self._stuck_after
        )

    async def _open(self, lane: _Lane) -> None:
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

    async def _watch(self, lane: _Lane) -> None:
        """Report state the sink changes in the background (a webhook's retries, its spool)."""
        while True:
            await self._clock.sleep(HEALTH_INTERVAL)
            self._report(lane)

    async def _work(self, lane: _Lane) -> None:
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

    async def _work_memory(self, lane: _Lane, limit: int) -> None:
        items = lane.batch = [lane.queue.popleft() for _ in range(min(limit, len(lane.queue)))]
        lane.space.notify()
        await self._deliver(lane, [event for event, _ in items])
        async with lane.spool_lock:  # a spill in progress decides who acknowledges this batch
            seqs, lane.batch_seqs, lane.batch = lane.batch_seqs, None, []
            if seqs is not None:
                # Spilled while in the sink's hands: delivered now, so out of the spool too.
                await self._spool_ack(lane, seqs)
        if seqs is None:
            acks: dict[Delivery, int] = {}
            for _, delivery in items:
                acks[delivery] = acks.get(delivery, 0) + 1
            for delivery, count in acks.items():
                delivery._ack(count)
        self._delivered(lane, [event for event, _ in items])

    async def _work_spool(self, lane: _Lane, limit: int) -> None:
        spool = lane.spool
        assert spool is not None
        async with lane.spool_lock:
            records = await anyio.to_thread.run_sync(spool.read, limit)
            if not records:
                lane.spooling = False
                log.info("sink caught up with its spool", sink=lane.name)
                self._report(lane)
                return
        events = [Event.from_line(record.line) for record in records]
        await self._deliver(lane, events)
        await self._spool_ack(lane, [record.seq for record in records])
        lane.space.notify()
        self._delivered(lane, events)

    async def _spool_ack(self, lane: _Lane, seqs: list[int]) -> None:
        spool = lane.spool
        assert spool is not None
        await anyio.to_thread.run_sync(spool.ack, seqs)

    def _delivered(self, lane: _Lane, events: list[Event]) -> None:
        lane.progress_at = self._clock.monotonic()
        if not lane.failed:
            types: dict[str, int] = {}
            for event in events:
                types[event.type] = types.get(event.type, 0) + 1
            for type_, count in types.items():
                self._observer.sink_delivered(lane.name, type_, count)
        self._report(lane)

    async def _deliver(self, lane: _Lane, events: list[Event]) -> None:
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

    def _report(self, lane: _Lane) -> None:
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
            waiting: list[tuple[_Lane, list[Event]]] = []
            for lane, selected in routed:
                rest = self._offer(lane, selected, delivery)
                if rest:
                    waiting.append((lane, rest))
            for lane, rest in waiting:
                await self._hand(lane, rest, delivery)
            return delivery

    async def _hand(self, lane: _Lane, events: list[Event], delivery: Delivery) -> None:
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

    def _enqueue(self, lane: _Lane, event: Event, delivery: Delivery) -> None:
        if not lane.queue and not lane.batch:
            lane.progress_at = self._clock.monotonic()
        lane.queue.append((event, delivery))
        lane.changed.notify()

    async def _spool_events(
        self, lane: _Lane, events: list[Event], delivery: Delivery | None
    ) -> bool:
        """Put ``events`` in the lane's spool, behind what the lane holds in memory if it is not
        spooling yet (a spill); acknowledge them all as durably held. False if the spool is full
        (nothing changed). Called with the publish lock held."""
        spool = lane.spool
        assert spool is not None
        async with lane.spool_lock:
            spill = not lane.spooling
            # Taken out of the buffer before the write, so that the worker cannot deliver them
            # meanwhile; the batch in the sink's hands stays there, and the worker waits for this
            # lock before acknowledging it.
            batch = lane.batch if spill and lane.batch_seqs is None else []
            taken = list(lane.queue) if spill else []
            lines = [event.line for event, _ in (*batch, *taken)]
            lines.extend(event.line for event in events)
            if not lines:
                return True
            if not spool.has_room(sum(len(line) for line in lines)):
                return False
            lane.queue.clear()
            try:
                first = await anyio.to_thread.run_sync(spool.append, lines, self._clock.time())
            except (OSError, ValueError) as exc:
                lane.queue.extendleft(reversed(taken))
                log.error("cannot spool the sink's events", sink=lane.name, error=str(exc))
                return False
            if batch:
                lane.batch_seqs = list(range(first, first + len(batch)))
            for _, held in (*batch, *taken):
                held._ack(1)
            if delivery is not None:
                delivery._ack(len(events))
            lane.spooling = True
        lane.space.notify()
        lane.changed.notify()
        if spill:
            log.warning(
                "sink is not keeping up; its events wait in its spool",
                sink=lane.name,
                held=len(batch) + len(taken),
                spooled=spool.pending,
            )
        self._report(lane)
        return True

    def _offer(self, lane: _Lane, events: list[Event], delivery: Delivery) -> list[Event]:
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
            new: dict[str, _Lane] = {}
            removed: list[_Lane] = []
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
                lane = _Lane.of(sink)
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
