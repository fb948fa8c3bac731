"""How fast routine polls may leave: a pacing bucket over what was really sent. Pure.

The budget (budget.py) is a sliding log: it admits N requests in any 60 s however they bunch.
Spent faster than N/60 a second, it fills early and then holds *every* request until old ones
age out: seconds with nothing sent while news waits. So routine polls are paced on top of it:
the bucket fills at ``rate`` (the budget's sustained rate less ``polling.reserve``) and drains by
every request actually sent, of any kind (sweeps, hinted polls, catch-up pages, retries), a
run's first look only while the log is short (budget.py: with room, it is bounded by the log). A
routine poll leaves only while the bucket holds a request's worth; hinted polls and sweeps never
wait for it, but what they spend is owed (down to ``debt`` seconds of the rate), so routine work
gives way to news instead of adding to it.
"""

from __future__ import annotations

from dataclasses import dataclass

BURST = 1.0  # seconds of the rate the bucket holds: routine polls never bunch more than this
DEBT = 2.0  # seconds of the rate that hinted polls and sweeps may run ahead of it


@dataclass(slots=True)
class PaceBucket:
    rate: float
    level: float = 1.0
    at: float | None = None

    def _refill(self, now: float) -> None:
        if self.at is not None:
            self.level += self.rate * max(0.0, now - self.at)
        self.at = now if self.at is None else max(self.at, now)
        self.level = min(self.level, max(1.0, self.rate * BURST))

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = max(rate, 1e-6)

    def take(self, now: float) -> None:
        """One request of any kind was sent."""
        self._refill(now)
        self.level = max(-self.rate * DEBT, self.level - 1.0)

    def wait(self, now: float) -> float:
        """Seconds until a routine request may leave (0: now)."""
        self._refill(now)
        if self.level >= 1.0:
            return 0.0
        return (1.0 - self.level) / self.rate
