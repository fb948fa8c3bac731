"""Per-key request limits as Duvo announces them: N requests a minute, all endpoints together.

Duvo does not document whether its window is fixed or sliding; the simulator uses fixed windows
of simulated time aligned on multiples of the window length (``floor(now / 60) * 60``), which is
the harsher reading for a client that bursts at a window's end. Every request counts, whatever
its answer (401, 404, a faulted 503 ... and the 429s themselves). Pure: ``now`` is passed in.

Every key has its own counter, and may have its own limit (``limits``): two clients of one
simulator, each with its own key, never spend each other's budget, as with Duvo's per-key limits.
``window`` is in simulated seconds; a benchmark whose clients run on the real clock while the
world's time is compressed ``speed`` times sets it to ``60 * speed``, so that the window is one
real minute, the minute the client's own budget counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_LIMIT = 300
WINDOW = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # unix seconds (sim clock) when the window ends
    retry_after: int  # whole seconds, >= 1; meaningful when not allowed

    def headers(self) -> list[tuple[str, str]]:
        out = [
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(self.reset)),
        ]
        if not self.allowed:
            out.append(("retry-after", str(self.retry_after)))
        return out


@dataclass(slots=True)
class RateLimiter:
    """Fixed-window counters, one per key. ``limit=None`` counts but never refuses; ``limits``
    gives some keys a limit of their own."""

    limit: int | None = DEFAULT_LIMIT
    window: float = WINDOW
    limits: Mapping[str, int] = field(default_factory=dict)
    _counts: dict[str, tuple[float, int]] = field(default_factory=dict)

    def hit(self, key: str, now: float) -> Decision:
        """Count one request by ``key`` at ``now`` and say whether it may be served."""
        start = math.floor(now / self.window) * self.window
        window_start, count = self._counts.get(key, (start, 0))
        if window_start != start:
            count = 0
        count += 1
        self._counts[key] = (start, count)
        end = start + self.window
        own = self.limits.get(key, self.limit)
        limit = own if own is not None else 10**9
        return Decision(
            allowed=count <= limit,
            limit=limit,
            remaining=max(0, limit - count),
            reset=math.ceil(end),
            retry_after=max(1, math.ceil(end - now)),
        )
