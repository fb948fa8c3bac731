"""Time, injected.

Everything that waits or reads the time takes a :class:`Clock`. Production uses
:class:`Clock` itself (speed 1). Tests and benchmarks compress time with a scaled clock: both the
simulator and the daemon read ``now = origin + (wall - origin) * speed`` from the same ``origin``,
so that their timestamps agree even across processes, while every sleep is divided by ``speed``.

The environment variable ``DUVO_MONITOR_CLOCK="speed=20,origin=1764380000.0"`` selects a scaled
clock for a daemon started as a subprocess. It exists for tests and benchmarks only.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

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


class _Timeline:
    """The mutable part of a :class:`VirtualClock`: now, and who sleeps until when."""

    __slots__ = ("changed", "now", "order", "sleepers")

    def __init__(self, now: float) -> None:
        self.now = now
        self.sleepers: list[tuple[float, int, anyio.Event]] = []  # a heap by deadline
        self.order = itertools.count()
        self.changed = anyio.Event()  # set (and replaced) whenever someone starts sleeping

    def wake_due(self) -> None:
        while self.sleepers and self.sleepers[0][0] <= self.now:
            heapq.heappop(self.sleepers)[2].set()


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualClock(Clock):
    """A clock whose time moves only when the test calls :meth:`advance`.

    ``time()`` is ``origin`` plus the time advanced so far, ``monotonic()`` the time advanced;
    ``sleep(s)`` waits until the test has advanced at least ``s`` past the moment it began (a
    sleep of zero or less is a checkpoint). :meth:`sleeping` lets the test wait, with an anyio
    event rather than a real sleep, until the code under test has gone to sleep on this clock.
    Its events belong to the event loop: create it inside the test.
    """

    origin: float = 1_764_000_000.0
    timeline: _Timeline = field(default_factory=lambda: _Timeline(0.0))

    def time(self) -> float:
        return self.origin + self.timeline.now

    def monotonic(self) -> float:
        return self.timeline.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        timeline = self.timeline
        woken = anyio.Event()
        entry = (timeline.now + seconds, next(timeline.order), woken)
        heapq.heappush(timeline.sleepers, entry)
        changed, timeline.changed = timeline.changed, anyio.Event()
        changed.set()
        try:
            await woken.wait()
        finally:
            if not woken.is_set():  # cancelled: no longer a sleeper
                timeline.sleepers.remove(entry)
                heapq.heapify(timeline.sleepers)

    def wall(self, seconds: float) -> float:
        """Code that bounds a wait by wall time (``move_on_after``) gets it as at speed 1: those
        waits are on the event loop, not on this clock, and the test does not drive them."""
        return seconds

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``; every sleeper whose deadline has come wakes."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        self.timeline.now += seconds
        self.timeline.wake_due()

    @property
    def sleepers(self) -> int:
        """How many tasks sleep on this clock now."""
        return len(self.timeline.sleepers)

    def next_deadline(self) -> float | None:
        """Seconds from now until the first sleeper wakes, or None if nobody sleeps."""
        if not self.timeline.sleepers:
            return None
        return max(0.0, self.timeline.sleepers[0][0] - self.timeline.now)

    async def sleeping(self, count: int = 1) -> None:
        """Return once at least ``count`` tasks sleep on this clock (always a checkpoint)."""
        await anyio.lowlevel.checkpoint()
        while len(self.timeline.sleepers) < count:
            await self.timeline.changed.wait()

    def to_environ(self) -> str:
        raise TypeError("a virtual clock cannot be handed to another process")
