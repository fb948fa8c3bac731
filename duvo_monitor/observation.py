"""What the Duvo client tells, and asks of, the rest of the monitor around each request.

Before a request leaves, the client awaits its :class:`Gate` (the daemon's request budget), so
nothing bypasses the budget; after it finishes, answered or not, every :data:`Observer` receives
one :class:`Observation` (endpoint template, status, duration, the parsed rate-limit headers).
The budget and the metrics depend on these small types, not on the HTTP client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from duvo_monitor.models import RateLimit


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One finished request, as observers see it."""

    endpoint: str
    status: int | None  # None: no answer (transport failure)
    seconds: float
    rate: RateLimit
    at: float
    error: str | None = None


Observer = Callable[[Observation], None]


class Gate(Protocol):
    """Waits until a request to ``endpoint`` may leave; an ``urgent`` one goes ahead of others,
    and one of a run's ``first`` look may spend the window's burst (see budget.py)."""

    def __call__(self, endpoint: str, *, urgent: bool, first: bool = False) -> Awaitable[None]: ...


__all__ = ["Gate", "Observation", "Observer"]
