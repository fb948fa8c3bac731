"""What each probe of a run claims of the share, by the run's phase: its weight and bounds. Pure.

A probe's *spec* is either ``(√λ weight, fastest, slowest interval)``, for the square-root share
(news.water_level), or a fixed interval (``inf``: not polled; ``0``: at once). The scheduler
(scheduler.py) sums the specs of every live run into the share and turns each into an interval;
the table of phases and bounds is in its docstring and in docs/scheduling.md.
"""

from __future__ import annotations

import math

from duvo_monitor.config import PollingConfig
from duvo_monitor.track import STARTUP_STATUSES, Track

INF = math.inf
SWEEP_STATUS_FACTOR = 5.0
# A status change (a run ending, waiting for a human, resuming, vanishing) is worth this many
# messages in the share: it is what operators alert on, and it comes rarely, so without a weight
# the square-root rule would leave it to the messages' leftovers.
STATUS_WEIGHT = 4.0
PENDING_STATUSES = frozenset({"pending"})  # no messages yet

Spec = tuple[float, float, float] | float  # (√λ weight, fastest, slowest interval) or fixed


def message_spec(
    c: PollingConfig, track: Track, *, trusted: bool, live_news: float | None = None
) -> Spec:
    """The run's messages; ``trusted``: sweeps show it and their updated_at is trusted;
    ``live_news``: the pooled message rate of running runs (news.PooledRate), the prior of an
    active run's own rate (a run that just started is as busy as its kind until it shows)."""
    phase = track.phase
    if phase in ("lingering", "retired"):
        return INF
    if phase == "ending":
        return 0.0
    if phase == "waiting":
        return (math.sqrt(track.msg_rate.value), c.min_interval, c.waiting_interval)
    if trusted:
        # Sweeps announce new messages (updated_at moves with them): scheduled message polls
        # are only a safety net, and the budget they leave serves the sweeps' hints at once.
        return c.max_interval
    if track.cp.status in PENDING_STATUSES:
        # No messages before it starts; the status poll that sees it start asks for them.
        return c.max_interval
    news = track.msg_rate.value if live_news is None else track.msg_rate.given(live_news)
    return (math.sqrt(news), c.min_interval, c.max_interval)


def status_spec(
    c: PollingConfig, track: Track, *, swept: bool, linger_news: float, pending_news: float
) -> Spec:
    """The run's status (GET run); ``swept``: sweeps show it; ``linger_news``/``pending_news``:
    the pooled news rates of finished and of starting runs (news.PooledRate)."""
    phase = track.phase
    if phase in ("retired", "ending"):
        return INF
    if phase == "lingering":
        if swept:
            # Sweeps show a resumed run at once (status, updated_at): this is a safety net.
            return c.linger_interval * SWEEP_STATUS_FACTOR
        return (math.sqrt(STATUS_WEIGHT * linger_news), c.min_interval, c.linger_interval)
    if phase == "waiting":
        if swept:
            return c.waiting_interval
        news = track.status_rate.value
        return (math.sqrt(STATUS_WEIGHT * news), c.min_interval, c.waiting_interval)
    if swept:
        # The sweep sees status changes for a fraction of a request; GET run is a safety net.
        return c.max_interval * SWEEP_STATUS_FACTOR
    news = track.status_rate.value
    if track.cp.status in STARTUP_STATUSES:
        news = max(news, pending_news)
    return (math.sqrt(STATUS_WEIGHT * news), c.min_interval, c.max_interval)
