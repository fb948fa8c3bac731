"""A sink that keeps every event in memory, with the time it arrived: a testing helper shipped
as product (like structlog's ``capture_logs``), used by the test harness and the benchmarks to
score what the daemon emitted against the simulator's truth. Not configurable from YAML."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from duvo_monitor.clock import Clock
from duvo_monitor.events import Event
from duvo_monitor.simulator.scoring import Emitted
from duvo_monitor.sinks.base import InProcessSink
from duvo_monitor.sinks.config import StdoutConfig


class MemorySink(InProcessSink):
    """Keeps every event it is given, with the (possibly simulated) time it arrived."""

    def __init__(self, clock: Clock, name: str = "memory") -> None:
        self.clock = clock
        self._name = name
        self._config = StdoutConfig(type="stdout", name=name)
        self.received: list[Emitted] = []

    async def deliver(self, batch: Sequence[Event]) -> None:
        now = self.clock.time()
        self.received.extend(Emitted(envelope=orjson.loads(e.line), at=now) for e in batch)

    def envelopes(self) -> list[dict[str, Any]]:
        return [dict(e.envelope) for e in self.received]
