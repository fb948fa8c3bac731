"""A sink that keeps every event in memory, with the time it arrived: a testing helper shipped
as product (like structlog's ``capture_logs``), used by the test harness and the benchmarks to
score what the daemon emitted against the simulator's truth. Not configurable from YAML."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from anyio.abc import TaskStatus

from duvo_monitor.clock import Clock
from duvo_monitor.events import Event
from duvo_monitor.simulator.scoring import Emitted
from duvo_monitor.sinks.base import SinkState
from duvo_monitor.sinks.config import StdoutConfig


class MemorySink:
    """Keeps every event it is given, with the (possibly simulated) time it arrived."""

    def __init__(self, clock: Clock, name: str = "memory") -> None:
        self.clock = clock
        self._name = name
        self._config = StdoutConfig(type="stdout", name=name)
        self.received: list[Emitted] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> StdoutConfig:
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

    async def deliver(self, batch: Sequence[Event]) -> None:
        now = self.clock.time()
        self.received.extend(Emitted(envelope=orjson.loads(e.line), at=now) for e in batch)

    async def close(self) -> None:
        return None

    def reopen(self) -> None:
        return None

    def envelopes(self) -> list[dict[str, Any]]:
        return [dict(e.envelope) for e in self.received]
