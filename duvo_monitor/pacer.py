"""Every pacing decision of the daemon, in one pure place: how fast the routine probes may go,
how often the sweeps run, when the next trusted round may start, whether the dispatcher holds.

The callers (the ticker, the sweeper, the dispatcher) are thin: they read the clock and the
budget and ask one :class:`Pacer` question each. Nothing here awaits or reads a clock; times
(monotonic seconds) and counts are passed in, so the policy is tested without an event loop and
can be replaced whole (see docs/scheduling.md for why each number is what it is).

The pieces:

* the probe rate the scheduler spreads over the runs: the budget's sustained rate less the
  reserve and the sweeps' share, times a feedback factor that backs off while the last minute's
  window is nearly full (hints, catch-up pages and final reads come on top of the scheduled
  probes: keep the whole under the budget, because a poll queued at the gate is a stale poll);
* the sweep interval: ``polling.sweep_interval``, never faster than ``SWEEP_SHARE`` of the budget
  allows, and the discovery interval when that is shorter;
* trusted rounds: one sweep and the hinted polls it set off are one round; the next starts when
  the budget the routine probes left has paid for this one (at most ``MAX_SWEEP_GAP`` apart);
* the smoothed request rates by kind (``sweep``, ``hinted``, ``routine``), from the budget's
  running counts;
* the dispatcher's hold: hand out a poll only when the budget can send it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

TICK = 1.0
DISPATCH_STEP = 0.02
SWEEP_SHARE = 0.25
MAX_SWEEP_GAP = 15.0
RATE_WINDOW = 10.0
MAX_SWEEP_RETRY = 120.0
KINDS = ("sweep", "hinted", "routine")


class Pacer:
    """The pacing state (feedback factor, smoothed rates, last sweep's size) and its decisions."""

    def __init__(self, *, now: float, sent: Mapping[str, int] | None = None) -> None:
        self.rate_factor = 1.0
        self.sweep_pages = 1
        self.rates: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self._sent = dict.fromkeys(KINDS, 0) | dict(sent or {})
        self._tallied_at = now

    # -- the requests sent, by kind ------------------------------------------------------------

    def tally(self, sent: Mapping[str, int], now: float) -> dict[str, int]:
        """Requests sent since the last tally, by kind (``sent`` is the running count); each
        kind's smoothed rate (requests a second, over about ``RATE_WINDOW``) moves toward it."""
        delta = {kind: n - self._sent.get(kind, 0) for kind, n in sent.items()}
        dt = now - self._tallied_at
        self._sent, self._tallied_at = dict(sent), now
        if dt > 0:
            weight = 1 - math.exp(-dt / RATE_WINDOW)
            for kind, count in delta.items():
                rate = self.rates.get(kind, 0.0)
                self.rates[kind] = rate + (count / dt - rate) * weight
        return delta

    # -- the routine probes --------------------------------------------------------------------

    def probe_rate(
        self,
        *,
        budget_rate: float,
        reserve: float,
        sweeping: bool,
        sweep_interval: float,
        used: int,
        limit: int,
    ) -> float:
        """Requests a second the scheduler may spread over the runs' probes (call once a tick:
        it moves the feedback factor by the share of the window ``used``)."""
        rate = budget_rate * (1 - reserve)
        if sweeping:
            rate -= min(rate * SWEEP_SHARE, self.sweep_pages / sweep_interval)
        fill = used / max(limit, 1)
        if fill > 0.97:
            self.rate_factor = max(0.5, self.rate_factor * 0.95)
        elif fill < 0.8:
            self.rate_factor = min(1.0, self.rate_factor * 1.05)
        return max(rate * self.rate_factor, 0.01)

    # -- the sweeps ----------------------------------------------------------------------------

    def swept(self, pages: int) -> None:
        """A sweep read ``pages`` pages: what the next one is expected to cost."""
        self.sweep_pages = pages

    def sweep_interval(
        self,
        *,
        sweeping: bool,
        sweep_interval: float,
        discover_interval: float | None,
        budget_rate: float,
    ) -> float:
        """Seconds from the start of one list-runs pass to the next."""
        interval = discover_interval if discover_interval is not None else math.inf
        if sweeping:
            # Never let sweeps take more than SWEEP_SHARE of the budget.
            floor = self.sweep_pages / (budget_rate * SWEEP_SHARE)
            interval = min(interval, max(sweep_interval, floor))
        return interval

    @staticmethod
    def sweep_retry(interval: float, failures: int) -> float:
        """The wait after ``failures`` failed passes in a row: exponential, up to
        ``MAX_SWEEP_RETRY``, never shorter than the usual ``interval``."""
        return max(interval, min(MAX_SWEEP_RETRY, 2.0**failures))

    def round_budget(self, budget_rate: float) -> float:
        """Requests a second that sweep rounds may spend: the budget less what the routine
        probes spent lately (never below ``SWEEP_SHARE`` of the budget)."""
        spare = budget_rate - self.rates["routine"]
        return max(spare, budget_rate * SWEEP_SHARE)

    def next_round_in(
        self, *, started: float, least: float, hinted: int, budget_rate: float, now: float
    ) -> float:
        """Seconds until the next trusted round may start (0: now). The round began at
        ``started`` and its hinted polls have cost ``hinted`` requests so far. When few runs
        move, that is every ``least`` seconds; when many do, rounds stretch so that their polls
        never queue at the gate (and each poll gathers more messages)."""
        cap = started + max(least, MAX_SWEEP_GAP)
        cost = self.sweep_pages + hinted
        due = started + cost / self.round_budget(budget_rate)
        return max(0.0, min(due, cap) - now)

    # -- the dispatcher ------------------------------------------------------------------------

    @staticmethod
    def dispatch_hold(*, budget_wait: float, waiting: int) -> float:
        """How long the dispatcher should hold the next poll (0: hand it out now), given the
        budget's wait for one more request and the requests already waiting at its gate."""
        if budget_wait > 0:
            return min(budget_wait, TICK)
        return DISPATCH_STEP if waiting else 0.0


__all__ = [
    "DISPATCH_STEP",
    "MAX_SWEEP_GAP",
    "RATE_WINDOW",
    "SWEEP_SHARE",
    "TICK",
    "Pacer",
]
