"""Every pacing decision of the daemon, in one pure place: how fast the routine probes may go,
how often the sweeps run, when the next trusted round may start, whether the dispatcher holds.

The callers (the ticker, the sweeper, the dispatcher) are thin: they read the clock and the
budget and ask one :class:`Pacer` question each. Nothing here awaits or reads a clock; times
(monotonic seconds) and counts are passed in, so the policy is tested without an event loop and
can be replaced whole (see docs/scheduling.md for why each number is what it is).

The pieces:

* the sustained rate routine requests may leave at (the budget's rate less the reserve; the
  budget's pace bucket, see bucket.py), and the probe rate the scheduler shares among the
  runs' probes: that rate less what the sweeps steadily cost (at most ``SWEEP_SHARE``);
* the spend rate: above the sustained rate while the window has a surplus and polls are finding
  news (:meth:`Pacer.spend_rate`), so that a world busier than the sustained rate is read
  from the stock the sliding window holds, not only at the rate it refills;
* the sweep gap: ``polling.sweep_interval``, never faster than ``SWEEP_SHARE`` of the budget
  allows; discovery alone at least every ``watch.discover.interval``;
* trusted rounds: a sweep and the hinted polls it set off are one round; the next sweep waits
  until those polls have left (at most ``MAX_SWEEP_GAP``), so that sweeps do not pile hints on
  a budget that cannot serve them yet;
* the requests sent by kind (``sweep``, ``hinted``, ``routine``) since the last tally;
* the dispatcher's hold: hand out a poll only when the budget can send it (a hinted one waits
  for the budget only, a routine one for the pace as well).
"""

from __future__ import annotations

from collections.abc import Mapping

TICK = 1.0
SPEND_HORIZON = 5.0  # seconds over which the window's surplus is spent while every poll finds news
SPEND_CAP = 4.0  # the spend rate is at most this many times the sustained rate
YIELD_HALF_LIFE = 5.0  # seconds: how fast the news yield of recent polls forgets
YIELD_PRIOR = 1.0  # requests that found nothing: the yield before any evidence is 0
FORWARD_YIELD = 0.5  # after a burst, probes are brought forward only while this share finds news
DISPATCH_STEP = 0.02
SWEEP_SHARE = 0.25
MAX_SWEEP_GAP = 15.0
ROUND_STEP = 0.1
MAX_SWEEP_RETRY = 120.0
KINDS = ("sweep", "hinted", "routine")


def surplus(room: float, spendable: float) -> float:
    """The window's ``room`` (requests it can still take, the reserve kept) beyond half of what
    it may hold (``spendable``): what a burst of news may spend early (Pacer.spend_rate)."""
    return max(0.0, room - spendable / 2)


class Pacer:
    """The pacing state (the last sweep's size, the requests counted so far) and its decisions."""

    def __init__(self, *, sent: Mapping[str, int] | None = None) -> None:
        self.sweep_pages = 1
        self._sent = dict.fromkeys(KINDS, 0) | dict(sent or {})
        # The news yield of recent polls: decayed counts of requests and of those that found news.
        self._asked = 0.0
        self._found = 0.0
        self._yield_at: float | None = None

    # -- the requests sent, by kind ------------------------------------------------------------

    def tally(self, sent: Mapping[str, int]) -> dict[str, int]:
        """Requests sent since the last tally, by kind (``sent`` is the running count)."""
        delta = {kind: n - self._sent.get(kind, 0) for kind, n in sent.items()}
        self._sent = dict(sent)
        return delta

    # -- the routine probes --------------------------------------------------------------------

    @staticmethod
    def sustained_rate(*, budget_rate: float, reserve: float) -> float:
        """Requests a second routine requests may take, sustained: the budget less the reserve
        (hinted polls, catch-up and retries are served from what is left and from the log)."""
        return budget_rate * (1 - reserve)

    # -- spending the window's stock -----------------------------------------------------------

    def _decay(self, now: float) -> None:
        if self._yield_at is not None and now > self._yield_at:
            keep = 0.5 ** ((now - self._yield_at) / YIELD_HALF_LIFE)
            self._asked *= keep
            self._found *= keep
        self._yield_at = now if self._yield_at is None else max(self._yield_at, now)

    def polled(self, *, requests: int, found: int, now: float) -> None:
        """A poll (not a run's first look, whose history is always news) sent ``requests``
        requests, ``found`` of which brought news (a new status, new messages)."""
        self._decay(now)
        self._asked += max(0, requests)
        self._found += max(0, min(found, requests))

    def news_yield(self, now: float) -> float:
        """The share of recent requests that found news (0 to 1; 0 before any evidence): what
        one more request is likely to buy now."""
        self._decay(now)
        return self._found / (self._asked + YIELD_PRIOR)

    def spend_rate(self, *, sustained: float, room: float, spendable: float, now: float) -> float:
        """Requests a second the probes may take now: the sustained rate, and on top of it the
        window's surplus, its ``room`` (requests it can still take, the reserve kept) beyond
        half of what it may hold (``spendable``), spent over ``SPEND_HORIZON`` seconds in
        proportion to the news yield, at most ``SPEND_CAP`` times the sustained rate.

        The sliding window is a stock as well as a rate: a world busier than the sustained rate
        for less than a minute can be read from what the window holds. Only the surplus is
        spent early, and only while polls find news: a quiet spell (finished runs that find
        nothing) does not take what the news after it will need, and news that goes on for
        longer than a minute keeps half the window for its second half (spent to the last,
        the window then admits nothing but the trickle until it ages out). In steady state
        there is no surplus, and the spend rate is the sustained one."""
        extra = self.news_yield(now) * surplus(room, spendable) / SPEND_HORIZON
        return min(sustained + extra, sustained * SPEND_CAP)

    def bring_forward(self, *, short: bool, room: float, spendable: float, now: float) -> bool:
        """May idle probes be brought forward to a larger share now (scheduler, repace.py)?
        Always while the log has no burst to pay back. With one, a request spent now is one
        the next minute's news cannot have: only while most recent requests find news (a few
        runs found lost among many quiet polls do not make a quiet spell worth the room) and
        the burst left more than half of what the window may hold (``spendable``: the
        budget less the reserve) free, as the first looks of a few dozen runs do; a window
        mostly taken is kept for the news of the rest of the minute."""
        if not short:
            return True
        return surplus(room, spendable) > 0 and self.news_yield(now) >= FORWARD_YIELD

    def probe_rate(
        self,
        *,
        sustained: float,
        listing: bool,
        budget_rate: float,
        sweep_interval: float,
        discover_interval: float | None,
    ) -> float:
        """Requests a second the scheduler shares among the probes: the sustained rate less the
        sweeps' steady cost while the sweeper lists runs. Hints, catch-up and final reads are
        not subtracted: when they come, routine polls leave a little late (in due order) rather
        than the budget ever lying idle while a probe could use it."""
        rate = sustained
        if listing:
            gap = self.sweep_gap(
                sweeping=True,
                sweep_interval=sweep_interval,
                discover_interval=discover_interval,
                budget_rate=budget_rate,
            )
            rate -= min(rate * SWEEP_SHARE, self.sweep_pages / gap)
        return max(rate, 0.01)

    # -- the sweeps ----------------------------------------------------------------------------

    def swept(self, pages: int) -> None:
        """A sweep read ``pages`` pages: what the next one is expected to cost."""
        self.sweep_pages = pages

    def sweep_gap(
        self,
        *,
        sweeping: bool,
        sweep_interval: float,
        discover_interval: float | None,
        budget_rate: float,
    ) -> float:
        """Seconds from one list-runs sweep to the next: ``sweep_interval``, for change
        detection and discovery alike, unless that would take more than ``SWEEP_SHARE`` of the
        budget; discovery alone at least every ``discover_interval``."""
        floor = self.sweep_pages / (budget_rate * SWEEP_SHARE)
        gap = max(sweep_interval, floor)
        if not sweeping and discover_interval is not None:
            gap = min(gap, max(discover_interval, sweep_interval))
        return gap

    @staticmethod
    def sweep_retry(interval: float, failures: int) -> float:
        """The wait after ``failures`` failed passes in a row: exponential, up to
        ``MAX_SWEEP_RETRY``, never shorter than the usual ``interval``."""
        return max(interval, min(MAX_SWEEP_RETRY, 2.0**failures))

    @staticmethod
    def round_wait(*, started: float, gap: float, now: float, hinted_backlog: bool) -> float:
        """With trusted sweeps: how long the next sweep should still wait for the hinted polls
        of this round (started at ``started``) to leave (0: start it now). Never longer than
        ``max(gap, MAX_SWEEP_GAP)`` after the round began; checked every ``ROUND_STEP``."""
        cap = started + max(gap, MAX_SWEEP_GAP)
        if now >= cap or not hinted_backlog:
            return 0.0
        return min(ROUND_STEP, cap - now)

    # -- the dispatcher ------------------------------------------------------------------------

    @staticmethod
    def dispatch_hold(*, budget_wait: float, waiting: int) -> float:
        """How long the dispatcher should hold the next poll (0: hand it out now), given the
        budget's wait for the next poll (the pace included for a routine one) and the requests
        already waiting at its gate."""
        if budget_wait > 0:
            return min(budget_wait, TICK)
        return DISPATCH_STEP if waiting else 0.0


__all__ = [
    "DISPATCH_STEP",
    "MAX_SWEEP_GAP",
    "ROUND_STEP",
    "SWEEP_SHARE",
    "TICK",
    "Pacer",
]
