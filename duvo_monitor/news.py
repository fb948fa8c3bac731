"""How much news a probe is expected to find, and how a request rate is shared by it. Pure.

A *probe* is one endpoint of one run asked on a schedule (its messages, or its status). Each has
a news rate λ (news per second), estimated from what its polls found (:class:`Rate`), or, for
probes that rarely find anything on their own (a finished run that may resume, a pending run that
will start), pooled over every probe of the same kind (:class:`PooledRate`).

:func:`water_level` shares a request rate R among probes by the square-root rule with bounds:
probe *i* is polled at ``clamp(c·√λᵢ, 1/hiᵢ, 1/loᵢ)`` requests a second, with the one level ``c``
at which the rates add up to R. Unbounded, that is the rate that minimises the mean detection
delay, ``R·√λᵢ/Σ√λ``; with bounds, a probe that reaches its fastest (``min_interval``) hands the
rest to the others, and when R is short, the least promising probes fall to their slowest first.
So an idle budget is spent (every probe moves toward ``min_interval``, in order of expected news)
and a saturated one is shared by the news it buys (finished runs back at ``linger_interval``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

HALF_LIFE = 120.0
PRIOR_EVENTS = 1.0
PRIOR_SECONDS = 20.0
POOLED_PRIOR_SECONDS = 5.0


@dataclass(slots=True)
class Rate:
    """News per second, exponentially forgetting (half-life ``HALF_LIFE``), with a prior."""

    count: float = 0.0
    span: float = 0.0
    last: float | None = None

    def observe(self, news: int, now: float) -> None:
        if self.last is None:
            self.last = now
        dt = max(0.0, now - self.last)
        decay = 0.5 ** (dt / HALF_LIFE)
        self.count = self.count * decay + news
        self.span = self.span * decay + dt
        self.last = now

    @property
    def value(self) -> float:
        return (self.count + PRIOR_EVENTS) / (self.span + PRIOR_SECONDS)

    def given(self, prior: float) -> float:
        """The rate with a prior of ``prior`` news a second (a pooled rate over probes of the
        same kind) for ``POOLED_PRIOR_SECONDS`` instead of the fixed one: a new probe starts at
        its kind's rate, and its own polls outweigh it within seconds (a quiet run among busy
        ones is not held near their mean)."""
        return (self.count + prior * POOLED_PRIOR_SECONDS) / (self.span + POOLED_PRIOR_SECONDS)


@dataclass(slots=True)
class PooledRate:
    """News per probe-second over many probes of one kind (``exposure`` is the time one probe
    was not looked at before the poll that found ``news``), forgetting over ``half_life`` of
    clock time, with a prior of ``prior_events`` in ``prior_seconds``.

    One finished run resumes too rarely for its own polls to say how often finished runs resume;
    all of them together do."""

    prior_events: float
    prior_seconds: float
    half_life: float = 600.0
    count: float = 0.0
    span: float = 0.0
    last: float | None = None

    def observe(self, news: int, exposure: float, now: float) -> None:
        if self.last is not None and now > self.last:
            decay = 0.5 ** ((now - self.last) / self.half_life)
            self.count *= decay
            self.span *= decay
        self.last = now if self.last is None else max(self.last, now)
        self.count += news
        self.span += max(0.0, exposure)

    @property
    def value(self) -> float:
        return (self.count + self.prior_events) / (self.span + self.prior_seconds)


@dataclass(slots=True)
class SweepTrust:
    """Evidence that a run's ``updated_at`` moves with its messages, so a sweep that shows an
    unchanged ``updated_at`` means "no new message". Every new message that already existed when
    a sweep looked at its run is a sample: consistent if that sweep's ``updated_at`` was not
    older than the message. Decayed counts, so a change in Duvo's behaviour is noticed."""

    consistent: float = 0.0
    inconsistent: float = 0.0

    def observe(self, ok: bool) -> None:
        self.consistent *= 0.995
        self.inconsistent *= 0.995
        if ok:
            self.consistent += 1
        else:
            self.inconsistent += 1

    @property
    def samples(self) -> float:
        return self.consistent + self.inconsistent

    @property
    def trusted(self) -> bool:
        return self.samples >= 20 and self.consistent / self.samples >= 0.95


@dataclass(frozen=True, slots=True)
class Demand:
    """One kind of probe in the share: weight √λ, rates between ``slowest`` and ``fastest``
    (requests a second), ``count`` probes alike."""

    weight: float
    slowest: float
    fastest: float
    count: int = 1


def water_level(demands: Iterable[Demand], rate: float) -> float:
    """The level c at which ``Σ count·clamp(c·weight, slowest, fastest)`` equals ``rate``.

    0 when even the slowest rates use the whole of ``rate``; ``inf`` when the fastest rates do
    not reach it (every probe at its fastest: the budget has room to spare). Exact, by walking
    the sorted breakpoints of the piecewise-linear sum: O(n log n) in the distinct demands.
    """
    floor = 0.0
    points: list[tuple[float, float, float]] = []  # (level, d_constant, d_slope)
    ceiling = 0.0
    for d in demands:
        if d.count <= 0:
            continue
        slowest = min(d.slowest, d.fastest)
        floor += d.count * slowest
        ceiling += d.count * d.fastest
        if d.weight <= 0:
            continue  # stays at its slowest
        # Below slowest/weight the probe sits at its slowest; above fastest/weight at its fastest.
        points.append((slowest / d.weight, -d.count * slowest, d.count * d.weight))
        points.append((d.fastest / d.weight, d.count * d.fastest, -d.count * d.weight))
    if rate <= floor:
        return 0.0
    if rate >= ceiling:
        return math.inf
    points.sort()
    constant, slope = floor, 0.0
    for level, d_constant, d_slope in points:
        # Between breakpoints the sum is constant + slope·c.
        if slope > 0 and constant + slope * level >= rate:
            return (rate - constant) / slope
        constant += d_constant
        slope += d_slope
    return math.inf  # numerically at the ceiling


def share(level: float, weight: float, slowest: float, fastest: float) -> float:
    """A probe's rate at ``level`` (requests a second)."""
    if level == math.inf:
        return fastest
    return min(fastest, max(slowest, level * weight))
