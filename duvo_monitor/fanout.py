"""Fan-out: every event to every sink that wants it, each sink behind its own buffer and worker.

::

    publish(events) ──filter──▶ [buffer A] ──worker A──▶ sink A.deliver ──ack──┐
                    ──filter──▶ [buffer B] ──worker B──▶ sink B.deliver ──ack──┼─▶ Delivery.wait()
                    ──filter──▶ [buffer C] ──worker C──▶ sink C.deliver ──ack──┘

Isolation: a sink that is slow, retrying or dead only holds up its own buffer; the others keep
delivering. :meth:`FanOut.publish` first hands every sink what fits in its buffer and only then
waits for the full ones, so even a blocked publish has already fed the healthy sinks.

Full buffers: ``on_full: block`` (the default) makes ``publish`` wait, which is the daemon's
backpressure (its polls wait for their events to be taken). ``on_full: drop_oldest`` never
waits: the oldest buffered event is dropped, acknowledged, counted
(``sink_dropped(reason="queue_full")``) and logged with its id.

Acknowledgement: :meth:`Delivery.wait` returns once every sink has acknowledged its part of the
published events (filtered-out events need no ack; dropped ones count as acknowledged). A sink's
``deliver`` raising a transient :class:`~duvo_monitor.errors.SinkError` is retried for the same
batch with backoff (the sink shows ``retry``) and acks wait; a permanent one marks the sink
``failed``, and its events are dropped with a count and a log line from then on.
:class:`~duvo_monitor.sinks.base.SinkClosed` (stdout's reader went away) ends :meth:`FanOut.run`
with that exception, so that the daemon can exit cleanly.

Structured: :meth:`FanOut.run` is the parent of every worker and every sink's own background
task; sinks are closed in shielded scopes when their worker ends.
"""

from __future__ import annotations

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
from duvo_monitor.sinks.wakeup import Signal

log = structlog.get_logger("duvo_monitor.fanout")

MAX_BATCH = 500
CLOSE_TIMEOUT = 10.0
REMOVE_TIMEOUT = 30.0
HEALTH_INTERVAL = 1.0
RETRY = Backoff(initial=0.2, maximum=30.0)


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
        return len(self.queue) + len(self.batch)

    def health(self) -> SinkState:
        state = self.sink.state
        if self.failed or state == "failed":
            return "failed"
        if self.retrying or state == "retry":
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
        self._publish_lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self._closed = False

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes.values()]

    def health(self) -> dict[str, str]:
        return {name: lane.health() for name, lane in self._lanes.items()}

    def pending(self) -> int:
        """Events held in buffers or in flight, over all sinks."""
        return sum(lane.held for lane in self._lanes.values())

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
                task_status.started()
                self._report(lane)
                if lane.after is not None:
                    await lane.after.wait()
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
        finally:
            lane.finished.set()

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
        """Deliver the lane's buffer in batches until it is empty and no longer accepting."""
        limit = max(1, min(self._max_batch, lane.capacity))
        while True:
            changed = lane.changed.waiter()
            if not lane.queue:
                if not lane.accepting:
                    return
                await changed.wait()
                continue
            items = lane.batch = [lane.queue.popleft() for _ in range(min(limit, len(lane.queue)))]
            lane.space.notify()
            await self._deliver(lane, [event for event, _ in items])
            lane.batch = []
            acks: dict[Delivery, int] = {}
            types: dict[str, int] = {}
            for event, delivery in items:
                acks[delivery] = acks.get(delivery, 0) + 1
                types[event.type] = types.get(event.type, 0) + 1
            for delivery, count in acks.items():
                delivery._ack(count)
            if not lane.failed:
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
        self._observer.sink_queue(lane.name, lane.held + lane.sink.backlog)
        state = lane.health()
        if state != lane.reported:
            lane.reported = state
            self._observer.sink_health(lane.name, state)

    # --- publishing -------------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> Delivery:
        """Hand ``events`` to every sink that wants them; wait only where a buffer is full.

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
                for event in rest:
                    while len(lane.queue) >= lane.capacity:
                        space = lane.space.waiter()
                        self._report(lane)
                        await space.wait()
                    lane.queue.append((event, delivery))
                    lane.changed.notify()
            return delivery

    def _offer(self, lane: _Lane, events: list[Event], delivery: Delivery) -> list[Event]:
        """Enqueue what fits without waiting; the rest (block lanes) is returned."""
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
                held = [*lane.batch, *lane.queue]
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
