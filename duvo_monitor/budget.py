"""The request budget of one API key: never more than N requests in any 60-second window.

An exact sliding log rather than a token bucket: a bucket of rate r and burst b admits
b + 60·r requests in a minute, so a bucket that honours "300 in any 60 s" must give up either
burst or rate; the log of send times (at most N entries) admits exactly N in any window of
``window`` seconds, which we widen by ``margin`` so that requests that arrive late at the server
(network delay) still fall into windows the server counts the same way. The margin is at least
the slowest answer of the requests in the current window: a request reaches the server before
its answer comes back, so a window that long cannot hold more than N arrivals either, however
late some arrive (a congested link, a stalled event loop).

The server has the last word, and it can only tighten:

* ``x-ratelimit-limit`` below our configured budget lowers the budget;
* ``x-ratelimit-remaining`` R with ``x-ratelimit-reset`` T: at most R more requests before T
  (counting those already in flight when the answer left the server);
* a 429 with ``retry-after`` pauses *every* request until then (no header: a cautious pause).

A burst must not take the whole window. Requests sent at once (the first looks at every run,
a storm of hints) stay in the log for a full window; spent to the last, the log then holds
*every* request until they age out, however much news waits: seconds with nothing sent. So,
apart from first looks, requests leave as fast as the log allows only while the fastest even
rate that would still fit until each logged request ages out stays above a *trickle*
(``TRICKLE`` of the sustained rate); from there on they leave at that even rate. A burst may
take the window's spare room at once, never the share of the seconds after it. A log filled at
the sustained rate or slower never binds here, so this only shapes bursts.

Pure apart from :meth:`acquire`, which sleeps on the injected clock.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

import anyio

from duvo_monitor.api import Observation
from duvo_monitor.bucket import PaceBucket
from duvo_monitor.clock import Clock

DEFAULT_429_PAUSE = 5.0
MAX_MARGIN = 10.0
KINDS = ("sweep", "hinted", "routine")
MAX_SLEEP_STEP = 1.0
PRIORITY_YIELD = 0.01
PRIORITY_ENDPOINTS = frozenset({"GET /v2/teams/{teamId}/runs"})
TRICKLE = 0.5  # share of the sustained rate a burst leaves for each second until it ages out


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSnapshot:
    limit: int
    used: int
    remaining: int
    paused_for: float


class Budget:
    def __init__(
        self,
        per_minute: int,
        *,
        clock: Clock,
        window: float = 60.0,
        margin: float = 1.0,
    ) -> None:
        if per_minute < 1:
            raise ValueError("the budget needs at least one request a minute")
        self.configured = per_minute
        self.clock = clock
        self.base_window = window
        self.margin = margin
        # Sliding maximum of answer times over the window: (monotonic, seconds), decreasing.
        self._slowest: deque[tuple[float, float]] = deque()
        self._log: deque[float] = deque()
        self._server_limit: int | None = None
        self._paused_until = 0.0  # on clock.time()
        # What the server last said it still allows before its reset.
        self._server_remaining: int | None = None
        self._server_reset = 0.0
        self._sent_since_report = 0
        self._inflight = 0
        self._lock = anyio.Lock()
        self._priority_waiting = 0
        self._waiting = 0
        self.rate_limited = 0
        # Requests sent, by (kind, endpoint): the daemon paces sweeps on what each kind costs.
        self.sent_by: Counter[tuple[str, str]] = Counter()
        # Routine requests leave at the sustained rate, not as fast as the log admits (bucket.py).
        self.pace = PaceBucket(self.requests_per_second())
        self.sustained = self.pace.rate

    def set_pace(self, rate: float, *, sustained: float | None = None) -> None:
        """Requests a second routine requests may take now (set by the daemon's ticker), and
        the ``sustained`` rate below it (the budget less the reserve; default: ``rate``) that
        tells a log with a burst to pay back (:meth:`short`)."""
        self.pace.set_rate(rate, self.clock.monotonic())
        self.sustained = rate if sustained is None else sustained

    def routine_wait(self) -> float:
        """Seconds until a routine request may be sent: the log, the trickle and the pace allow
        it."""
        return max(self.urgent_wait(), self.pace.wait(self.clock.monotonic()))

    def urgent_wait(self) -> float:
        """Seconds until a request other than a first look may be sent: the log allows it and
        leaves the trickle's room (see the module's docstring)."""
        return max(self.wait_time(), self.trickle_wait())

    def trickle_wait(self, now_mono: float | None = None) -> float:
        """Seconds until a request other than a first look may leave for the trickle (see the
        module's docstring): 0 while the fastest even rate that fits the log until each logged
        request ages out is above ``TRICKLE`` of the sustained rate. O(requests in the log)."""
        mono = self.clock.monotonic() if now_mono is None else now_mono
        fits = self.fitting_rate(mono)
        limit, window = self.limit, self.window
        if fits <= 0:
            return 0.0  # the log itself is full: wait_time says when it frees
        if fits > TRICKLE * limit / window:
            return 0.0  # room for a burst and the trickle after it
        # The burst has taken what it may: from here the even rate that fits.
        return max(0.0, self._log[-1] + 1.0 / fits - mono)

    def fitting_rate(self, now_mono: float | None = None) -> float:
        """The fastest even rate (requests a second) that still fits the log until each
        logged request ages out: the sustained rate or more for a log filled at that rate, less
        after a burst (``inf`` for an empty log). O(requests in the log)."""
        mono = self.clock.monotonic() if now_mono is None else now_mono
        self._prune(mono)
        n = len(self._log)
        if n == 0:
            return math.inf
        limit, window = self.limit, self.window
        # Sending at an even rate r until the i-th logged request ages out (s_i from now) adds
        # r·s_i to the n - i still logged then: r ≤ (limit - (n - i)) / s_i for every i.
        return min(
            max(0.0, limit - (n - i)) / max(sent + window - mono, 1e-9)
            for i, sent in enumerate(self._log)
        )

    def short(self) -> bool:
        """Does the log hold a burst to pay back (its fitting rate below the sustained rate)?
        Then first looks are owed to the pace too, and the scheduler brings no probe forward."""
        return self.fitting_rate() < self.sustained

    @property
    def limit(self) -> int:
        if self._server_limit is not None:
            return min(self.configured, self._server_limit)
        return self.configured

    @property
    def window(self) -> float:
        slowest = self._slowest[0][1] if self._slowest else 0.0
        return self.base_window + max(self.margin, min(slowest, MAX_MARGIN))

    def _prune(self, now: float) -> None:
        while self._slowest and self._slowest[0][0] <= now - self.base_window - MAX_MARGIN:
            self._slowest.popleft()
        horizon = now - self.window
        while self._log and self._log[0] <= horizon:
            self._log.popleft()

    def wait_time(self, now_mono: float | None = None, now_unix: float | None = None) -> float:
        """Seconds until one more request may be sent (0: now)."""
        mono = self.clock.monotonic() if now_mono is None else now_mono
        unix = self.clock.time() if now_unix is None else now_unix
        self._prune(mono)
        wait = max(0.0, self._paused_until - unix)
        if len(self._log) >= self.limit:
            index = len(self._log) - self.limit
            wait = max(wait, self._log[index] + self.window - mono)
        if (
            self._server_remaining is not None
            and unix < self._server_reset
            and self._sent_since_report >= self._server_remaining
        ):
            wait = max(wait, self._server_reset - unix)
        return wait

    async def acquire(
        self, endpoint: str = "", *, urgent: bool = False, first: bool = False
    ) -> None:
        """Wait until a request fits the budget, then count it as sent.

        Routine requests also wait for the pace (bucket.py); all but a run's ``first`` look
        for the trickle a burst leaves (see the module's docstring). Requests wait their turn
        in order, except the change detector and what it found: a list-runs sweep
        (``PRIORITY_ENDPOINTS``) and the polls of a run known to have news
        (``urgent``: a hinted poll, see ``DuvoClient.with_urgency``) go ahead of routine polls.
        """
        sweep = endpoint in PRIORITY_ENDPOINTS
        kind = "sweep" if sweep else "hinted" if urgent or first else "routine"
        gate = self.wait_time if first else self.urgent_wait
        self._waiting += 1
        try:
            if kind != "routine":
                self._priority_waiting += 1
                try:
                    while (wait := gate()) > 0:
                        await self.clock.sleep(min(wait, MAX_SLEEP_STEP))
                finally:
                    self._priority_waiting -= 1
            else:
                async with self._lock:
                    while (wait := self.routine_wait()) > 0 or self._priority_waiting:
                        await self.clock.sleep(min(max(wait, PRIORITY_YIELD), MAX_SLEEP_STEP))
            # A first look is owed to the pace only once the log is short (a burst to pay
            # back): with room, owing it stalled every routine poll for seconds after a start
            # or while new runs kept arriving, with most of the log free; short, routine polls
            # must give way to it, or they take what the next minute's news needs.
            self._take(pace=not first or self.short())
            self.sent_by[kind, endpoint] += 1
        finally:
            self._waiting -= 1

    @property
    def waiting(self) -> int:
        """Requests waiting at the gate now."""
        return self._waiting

    @property
    def sent(self) -> dict[str, int]:
        """Requests sent so far by kind: ``sweep``, ``hinted``, ``routine``."""
        totals = dict.fromkeys(KINDS, 0)
        for (kind, _), count in self.sent_by.items():
            totals[kind] += count
        return totals

    def _take(self, *, pace: bool = True) -> None:
        if pace:
            self.pace.take(self.clock.monotonic())
        self._log.append(self.clock.monotonic())
        self._sent_since_report += 1
        self._inflight += 1

    def observe(self, observation: Observation) -> None:
        """Fold one answer's rate-limit headers (and a 429) into the budget."""
        self._inflight = max(0, self._inflight - 1)
        mono = self.clock.monotonic()
        while self._slowest and self._slowest[-1][1] <= observation.seconds:
            self._slowest.pop()
        self._slowest.append((mono, observation.seconds))
        rate = observation.rate
        now = self.clock.time()
        if rate.limit is not None and rate.limit > 0:
            self._server_limit = rate.limit
        if rate.remaining is not None:
            reset = rate.reset if rate.reset is not None else now + 60.0
            # Requests still in flight were sent after this answer was counted by the server.
            self._server_remaining = rate.remaining
            self._server_reset = reset
            self._sent_since_report = self._inflight
        if observation.status == 429:
            self.rate_limited += 1
            if rate.retry_after is not None:
                until = now + rate.retry_after
            elif rate.reset is not None and rate.reset > now:
                until = rate.reset
            else:
                until = now + DEFAULT_429_PAUSE
            self._paused_until = max(self._paused_until, until)

    def history(self) -> list[tuple[float, int]]:
        """The window's requests for a daemon that starts after this one (saved in the state
        file): per second with any, ``(its end on clock.time(), requests)``, oldest first. By
        whole seconds, so that it stays small at any budget; each counts as sent at its
        second's end, which is late by under a second: a restart waits slightly too long, never
        too little."""
        mono, unix = self.clock.monotonic(), self.clock.time()
        self._prune(mono)
        seconds: Counter[float] = Counter(math.ceil(unix - (mono - sent)) for sent in self._log)
        return sorted(seconds.items())

    def restore(self, history: Iterable[tuple[float, int]]) -> int:
        """Count what an earlier process sent in the window (:meth:`history`, from the state
        file): a daemon restarted after a crash must not spend that again. A time ahead of now
        (a clock stepped back) counts as now; the window's newest ``limit`` requests are kept,
        older ones dropped. Returns how many were counted."""
        mono, unix = self.clock.monotonic(), self.clock.time()
        window, ages = self.window, []
        for at, count in history:
            age = max(0.0, unix - at)
            if math.isfinite(at) and age < window and count > 0:
                ages.extend([age] * min(int(count), self.limit))
        kept = sorted(ages)[: self.limit]
        self._log = deque(sorted([*(mono - age for age in kept), *self._log]))
        return len(kept)

    def snapshot(self) -> BudgetSnapshot:
        mono = self.clock.monotonic()
        self._prune(mono)
        used = len(self._log)
        remaining = max(0, self.limit - used)
        if self._server_remaining is not None and self.clock.time() < self._server_reset:
            remaining = min(remaining, max(0, self._server_remaining - self._sent_since_report))
        return BudgetSnapshot(
            limit=self.limit,
            used=used,
            remaining=remaining,
            paused_for=max(0.0, self._paused_until - self.clock.time()),
        )

    def requests_per_second(self) -> float:
        """The sustained rate the budget allows."""
        return self.limit / (self.window)
