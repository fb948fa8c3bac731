"""One sink's lane through the fan-out: its buffer, its spill spool, and the acknowledgement
a publisher waits on. :mod:`duvo_monitor.fanout` drives lanes; this module only holds their
state and the few blocking calls on the spool (run in a thread), so the fan-out reads as the
flow of events and this as what each sink carries.

A lane holds events in one of three places, oldest first: the batch in the sink's hands, the
memory buffer, and (once it has spilled) its :class:`~duvo_monitor.sinks.spool.Spool` under
``<spool_dir>/fanout-<name>/``. While ``spooling``, every new event goes behind the spooled
ones, so the order never changes.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

import anyio
import structlog

from duvo_monitor.events import Event
from duvo_monitor.sinks.base import EventFilter, Sink, SinkState
from duvo_monitor.sinks.spool import Record, Spool
from duvo_monitor.sinks.wakeup import Signal

log = structlog.get_logger("duvo_monitor.fanout")

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
class Lane:
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
    def of(cls, sink: Sink) -> Lane:
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

    async def spool_events(
        self, events: list[Event], delivery: Delivery | None, now: float
    ) -> bool:
        """Put ``events`` in the lane's spool, behind what the lane holds in memory if it is not
        spooling yet (a spill); acknowledge them all as durably held. False if the spool is full
        (nothing changed). The caller holds the publish lock: no event can join meanwhile."""
        spool = self.spool
        assert spool is not None
        async with self.spool_lock:
            spill = not self.spooling
            # Taken out of the buffer before the write, so that the worker cannot deliver them
            # meanwhile; the batch in the sink's hands stays there, and the worker waits for this
            # lock before acknowledging it.
            batch = self.batch if spill and self.batch_seqs is None else []
            taken = list(self.queue) if spill else []
            lines = [event.line for event, _ in (*batch, *taken)]
            lines.extend(event.line for event in events)
            if not lines:
                return True
            if not spool.has_room(sum(len(line) for line in lines)):
                return False
            self.queue.clear()
            try:
                first = await anyio.to_thread.run_sync(spool.append, lines, now)
            except (OSError, ValueError) as exc:
                self.queue.extendleft(reversed(taken))
                log.error("cannot spool the sink's events", sink=self.name, error=str(exc))
                return False
            if batch:
                self.batch_seqs = list(range(first, first + len(batch)))
            for _, held in (*batch, *taken):
                held._ack(1)
            if delivery is not None:
                delivery._ack(len(events))
            self.spooling = True
        self.space.notify()
        self.changed.notify()
        if spill:
            log.warning(
                "sink is not keeping up; its events wait in its spool",
                sink=self.name,
                held=len(batch) + len(taken),
                spooled=spool.pending,
            )
        return True

    # --- the spill spool (blocking calls in a thread) ------------------------------------------

    async def open_spool(self, directory: str | None, max_bytes: int) -> None:
        """Recover the lane's spool under ``directory`` (None: no spool); what a previous run
        left in it goes out before anything new. A spool that cannot open leaves the lane
        without one: a full buffer then blocks, as it always did."""
        if directory is None:
            return
        spool = Spool(os.path.join(directory, SPOOL_PREFIX + self.name), max_bytes=max_bytes)
        try:
            await anyio.to_thread.run_sync(spool.open)
        except OSError as exc:
            log.error(
                "cannot open the sink's spool; a full buffer will block",
                sink=self.name,
                error=str(exc),
            )
            return
        self.spool = spool
        if spool.pending:
            self.spooling = True
            log.info(
                "events spooled before a stop go out first", sink=self.name, count=spool.pending
            )
            self.changed.notify()

    async def close_spool(self) -> None:
        spool, self.spool = self.spool, None
        if spool is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(spool.close)
            except OSError as exc:
                log.error("closing the sink's spool failed", sink=self.name, error=str(exc))

    async def read_spooled(self, limit: int) -> list[Record]:
        assert self.spool is not None
        return await anyio.to_thread.run_sync(self.spool.read, limit)

    async def ack_spooled(self, seqs: list[int]) -> None:
        assert self.spool is not None
        await anyio.to_thread.run_sync(self.spool.ack, seqs)
