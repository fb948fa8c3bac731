"""The one :class:`Sink` protocol, the :class:`SinkObserver` that telemetry implements, filters.

A sink is driven by exactly one worker of the fan-out (never two ``deliver`` calls at once) and
lives inside the fan-out's task group::

    await sink.open()                       # acquire files, recover a spool; may raise SinkError
    await task_group.start(sink.run)        # background work (fsync timer, webhook posting)
    await sink.deliver(batch)  ...          # returns once the batch is durably handed over
    # run() is cancelled, then, shielded:
    await sink.close()

``deliver`` returning is the sink's acknowledgement: written and flushed (fsynced per policy),
or durably spooled, or dead-lettered with a count and a log line. A transient failure raises
:class:`~duvo_monitor.errors.SinkError` with ``permanent=False`` and the fan-out retries the
same batch, so ``deliver`` must leave nothing half-done behind it (the file sink truncates a
partial write back). :class:`SinkClosed` means the reader went away for good (``| head``): the
daemon ends cleanly.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from anyio.abc import TaskStatus

from duvo_monitor.errors import SinkError
from duvo_monitor.events import Event

if TYPE_CHECKING:
    from duvo_monitor.sinks.config import SinkConfig

SinkState = Literal["ok", "retry", "failed"]
SINK_STATES: tuple[SinkState, ...] = ("ok", "retry", "failed")


class SinkClosed(SinkError):
    """The reader closed the stream (EPIPE): nothing more can ever be written. Permanent.

    The fan-out lets it propagate out of :meth:`FanOut.run`; the daemon treats it as a request
    to stop (exit 0, no traceback), the way ``yes | head -1`` ends ``yes``.
    """

    def __init__(self, message: str, *, sink: str) -> None:
        super().__init__(message, sink=sink, permanent=True)


class SinkUnavailable(SinkError):
    """A transient failure; ``kind`` is a bounded metric label (``ENOSPC``, ``timeout``)."""

    def __init__(self, message: str, *, sink: str, kind: str) -> None:
        super().__init__(message, sink=sink, permanent=False)
        self.kind = kind


def error_kind(exc: SinkError) -> str:
    """The bounded metric label of a sink error."""
    if isinstance(exc, SinkUnavailable):
        return exc.kind
    return "closed" if isinstance(exc, SinkClosed) else "error"


class SinkObserver(Protocol):
    """What sinks and the fan-out report; ``duvo_monitor.metrics.Telemetry`` implements it.

    Labels stay bounded: ``sink`` is a configured name, ``type`` an event type, ``kind`` and
    ``reason`` come from small fixed sets.
    """

    def sink_delivered(self, sink: str, type: str, count: int = 1) -> None: ...

    def sink_queue(self, sink: str, depth: int) -> None: ...

    def sink_error(self, sink: str, kind: str) -> None: ...

    def sink_dropped(self, sink: str, reason: str, count: int = 1) -> None: ...

    def sink_health(self, sink: str, state: str) -> None: ...


class NullObserver:
    """Observes nothing (tests, benchmarks)."""

    def sink_delivered(self, sink: str, type: str, count: int = 1) -> None:
        pass

    def sink_queue(self, sink: str, depth: int) -> None:
        pass

    def sink_error(self, sink: str, kind: str) -> None:
        pass

    def sink_dropped(self, sink: str, reason: str, count: int = 1) -> None:
        pass

    def sink_health(self, sink: str, state: str) -> None:
        pass


class Sink(Protocol):
    """Where events go. See the module docstring for the lifecycle and the ack contract."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> SinkConfig:
        """The frozen config it was built from; equal configs mean "unchanged" on reload."""
        ...

    @property
    def state(self) -> SinkState: ...

    @property
    def backlog(self) -> int:
        """Events acknowledged but not yet at their destination (a webhook's spool); else 0."""
        ...

    async def open(self) -> None: ...

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Background work until cancelled; ``task_status.started()`` once it is ready."""
        ...

    async def deliver(self, batch: Sequence[Event]) -> None: ...

    async def close(self) -> None: ...

    def reopen(self) -> None:
        """Reopen files at the next chance (SIGHUP after logrotate). Never blocks."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which events a sink wants: type globs (fnmatch) and agent ids; empty means all."""

    types: tuple[str, ...] = ()
    agents: frozenset[str] = frozenset()

    def matches(self, event: Event) -> bool:
        if self.agents and event.agent_id not in self.agents:
            return False
        if self.types:
            return any(fnmatch.fnmatchcase(event.type, pattern) for pattern in self.types)
        return True

    def select(self, events: Sequence[Event]) -> list[Event]:
        if not self.types and not self.agents:
            return list(events)
        return [event for event in events if self.matches(event)]


class InProcessSink:
    """The lifecycle of a sink that lives in this process and never fails on its own (the
    console printer, the in-memory sink): no files to open, no background work, always "ok".
    Subclasses set ``_name`` and ``_config`` and implement ``deliver``."""

    _name: str
    _config: SinkConfig

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> SinkConfig:
        return self._config

    @property
    def state(self) -> SinkState:
        return "ok"

    @property
    def backlog(self) -> int:
        return 0

    async def open(self) -> None:
        return None

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()

    async def close(self) -> None:
        return None

    def reopen(self) -> None:
        return None
