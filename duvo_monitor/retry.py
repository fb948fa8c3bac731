"""How a one-shot command retries a Duvo request: a :class:`Retry` value and :func:`with_retries`.

The client never retries on its own (in the daemon the scheduler decides what a failure costs);
the CLI's start/send/respond/stop wrap their one call in :func:`with_retries`, which retries only
errors marked ``retryable`` (transport, malformed, 429, 5xx), honours ``Retry-After`` and
otherwise backs off exponentially with jitter. Clock and random source are injected.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from duvo_monitor.clock import Clock
from duvo_monitor.errors import ApiError, RateLimited

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """How a one-shot command retries: attempts, exponential backoff with jitter, Retry-After."""

    attempts: int = 4
    backoff: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, error: ApiError, rng: random.Random) -> float:
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return float(min(self.cap * 4, error.retry_after))
        return min(self.cap, self.backoff * 2.0**attempt) * (0.5 + rng.random() / 2)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    retry: Retry = Retry(),
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> T:
    """Run ``call`` again on retryable errors (transport, malformed, 429, 5xx)."""
    clock = clock or Clock()
    rng = rng or random.Random()
    for attempt in range(retry.attempts):
        try:
            return await call()
        except ApiError as exc:
            if not exc.retryable or attempt == retry.attempts - 1:
                raise
            await clock.sleep(retry.delay(attempt, exc, rng))
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["Retry", "with_retries"]
