"""How sinks wait between attempts: exponential backoff with full jitter, ``Retry-After`` first.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the retries of many
runs and workers after an outage instead of synchronising them into waves. A server's
``Retry-After`` is honoured as given (never shortened, clamped only to :data:`MAX_RETRY_AFTER`).
Pure: the random source is passed in.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass

MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 300.0
    multiplier: float = 2.0

    def ceiling(self, attempt: int) -> float:
        """The largest delay before retry number ``attempt`` (0-based)."""
        return min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random, *, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        return rng.uniform(0.0, self.ceiling(attempt))


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
