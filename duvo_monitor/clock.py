"""Time, injected.

Everything that waits or reads the time takes a :class:`Clock`. Production uses
:class:`Clock` itself (speed 1). Tests and benchmarks compress time with a scaled clock: both the
simulator and the daemon read ``now = origin + (wall - origin) * speed`` from the same ``origin``,
so that their timestamps agree even across processes, while every sleep is divided by ``speed``.

The environment variable ``DUVO_MONITOR_CLOCK="speed=20,origin=1764380000.0"`` selects a scaled
clock for a daemon started as a subprocess. It exists for tests and benchmarks only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio

CLOCK_ENV = "DUVO_MONITOR_CLOCK"


@dataclass(frozen=True, slots=True, kw_only=True)
class Clock:
    """Unix-seconds time that may run ``speed`` times faster than the wall clock."""

    speed: float = 1.0
    origin: float = 0.0

    def time(self) -> float:
        """Seconds since the epoch, on this clock."""
        wall = time.time()
        if self.speed == 1.0:
            return wall
        return self.origin + (wall - self.origin) * self.speed

    def monotonic(self) -> float:
        """Monotonic seconds on this clock (for intervals, never for timestamps)."""
        return time.monotonic() * self.speed

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time."""
        await anyio.sleep(max(0.0, seconds) / self.speed)

    def wall(self, seconds: float) -> float:
        """How many wall-clock seconds ``seconds`` of this clock's time take."""
        return seconds / self.speed

    @classmethod
    def scaled(cls, speed: float, origin: float | None = None) -> Clock:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        return cls(speed=speed, origin=time.time() if origin is None else origin)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Clock:
        """The clock ``DUVO_MONITOR_CLOCK`` asks for, else the real one."""
        spec = environ.get(CLOCK_ENV, "").strip()
        if not spec:
            return cls()
        fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        try:
            speed = float(fields.get("speed", "1"))
            origin = float(fields["origin"]) if "origin" in fields else None
        except ValueError as exc:
            raise ValueError(f"{CLOCK_ENV} is not 'speed=X,origin=T': {spec!r}") from exc
        return cls.scaled(speed, origin)

    def to_environ(self) -> str:
        return f"speed={self.speed},origin={self.origin}"
