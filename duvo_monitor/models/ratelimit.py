"""The rate-limit headers of one answer, read leniently: a header that is absent, junk, ``inf`` or
``nan`` is no information, never an error. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """The rate-limit headers of one answer; any of them may be absent."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    retry_after: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, now: float) -> RateLimit:
        return cls(
            limit=_int_header(headers.get("x-ratelimit-limit")),
            remaining=_int_header(headers.get("x-ratelimit-remaining")),
            reset=_reset_header(headers.get("x-ratelimit-reset"), now),
            retry_after=_retry_after(headers.get("retry-after"), now),
        )


def _number_header(value: str | None) -> float | None:
    """A finite number, else None: ``inf``, ``nan`` and junk are ignored, never raised."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _int_header(value: str | None) -> int | None:
    number = _number_header(value)
    if number is None:
        return None
    return int(number) if number >= 0 else None


def _reset_header(value: str | None, now: float) -> float | None:
    """``x-ratelimit-reset``: unix seconds per Duvo's docs; small numbers read as delta seconds."""
    number = _number_header(value)
    if number is None or number < 0:
        return None
    # Tolerate both readings: a delta (some APIs) or an absolute unix time (Duvo's docs).
    return now + number if number < 1_000_000_000 else number


def _retry_after(value: str | None, now: float) -> float | None:
    """``retry-after``: delay seconds, or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    seconds = _number_header(value)
    if seconds is None:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, not the host's local time
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return max(0.0, seconds)
