"""What every stage of the daemon shares: the live config, the clock, the scheduler, the budget
and its pacer, the telemetry, the stop flag, and the dispatcher's wake-up.

One value handed to each stage instead of eight arguments, so that the topology (daemon.py)
reads as wiring. The config is read through ``config()`` at the moment it is needed, because a
reload replaces it while the stages run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio

from duvo_monitor.budget import Budget
from duvo_monitor.clock import Clock
from duvo_monitor.config import Config
from duvo_monitor.metrics import Telemetry
from duvo_monitor.pacer import Pacer
from duvo_monitor.scheduler import Scheduler


class Wake:
    """Wakes the dispatcher early: a hint, a finished poll, a new run, a stop."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, clock: Clock, seconds: float) -> None:
        """Up to ``seconds`` (on ``clock``), or until :meth:`set`."""
        self._event = anyio.Event()
        with anyio.move_on_after(clock.wall(seconds)):
            await self._event.wait()


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    config: Callable[[], Config]
    clock: Clock
    scheduler: Scheduler
    budget: Budget
    pacer: Pacer
    telemetry: Telemetry
    stopping: anyio.Event
    wake: Wake


__all__ = ["Context", "Wake"]
