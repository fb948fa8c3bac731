"""news.py: the water level that shares a rate by the square-root rule within bounds. Pure."""

from __future__ import annotations

import math
import random

from duvo_monitor.news import Demand, PooledRate, share, water_level


def total(demands: list[Demand], level: float) -> float:
    return sum(d.count * share(level, d.weight, d.slowest, d.fastest) for d in demands)


def test_the_level_fills_the_rate_exactly() -> None:
    """For random demands and any rate between the slowest and fastest sums, the shares at the
    level add up to the rate; below, everything sits at its slowest; above, at its fastest."""
    rng = random.Random(7)
    for _ in range(200):
        demands = [
            Demand(
                rng.uniform(0.01, 2.0),
                rng.uniform(0.0, 0.1),
                rng.uniform(0.2, 1.0),
                rng.randint(1, 5),
            )
            for _ in range(rng.randint(1, 30))
        ]
        floor = sum(d.count * d.slowest for d in demands)
        ceiling = sum(d.count * d.fastest for d in demands)
        rate = rng.uniform(floor, ceiling)
        level = water_level(demands, rate)
        assert math.isclose(total(demands, level), rate, rel_tol=1e-9)
        assert water_level(demands, floor * 0.5) == 0.0
        assert water_level(demands, ceiling * 1.5) == math.inf
        assert math.isclose(total(demands, math.inf), ceiling)


def test_unbounded_shares_follow_the_square_root_rule() -> None:
    """Without bounds, a probe with 16x the news gets 4x the rate."""
    demands = [Demand(math.sqrt(16.0), 0.0, 1e9), Demand(1.0, 0.0, 1e9)]
    level = water_level(demands, 5.0)
    assert math.isclose(share(level, 4.0, 0.0, 1e9), 4.0)
    assert math.isclose(share(level, 1.0, 0.0, 1e9), 1.0)


def test_a_capped_probe_hands_the_rest_to_the_others() -> None:
    """A probe at its fastest rate leaves what it cannot use to the next most promising."""
    demands = [Demand(10.0, 0.0, 1.0), Demand(1.0, 0.0, 1.0), Demand(0.1, 0.0, 1.0)]
    level = water_level(demands, 2.0)
    rates = [share(level, d.weight, d.slowest, d.fastest) for d in demands]
    assert rates[0] == 1.0 and rates[1] > rates[2] > 0.0
    assert math.isclose(sum(rates), 2.0)


def test_a_pooled_rate_learns_from_every_probe_of_its_kind() -> None:
    """Finished runs that resume often raise the pooled rate above its prior; quiet ones lower
    it; evidence fades with time."""
    busy = PooledRate(1.0, 300.0)
    quiet = PooledRate(1.0, 300.0)
    for k in range(100):
        busy.observe(1 if k % 5 == 0 else 0, 10.0, k * 1.0)
        quiet.observe(0, 10.0, k * 1.0)
    prior = 1.0 / 300.0
    assert busy.value > prior > quiet.value
    quiet.observe(0, 0.0, 100_000.0)
    assert math.isclose(quiet.value, prior, rel_tol=0.01)


def test_routine_requests_are_paced_and_give_way_to_news() -> None:
    """The pace bucket lets routine requests leave at its rate, never bunched beyond a second's
    worth, and what hinted polls spent is owed (within a bound) before routine ones go again."""
    from duvo_monitor.bucket import DEBT, PaceBucket

    pace = PaceBucket(rate=5.0)
    sent = 0
    now = 0.0
    while now < 10.0:  # a routine sender as eager as the bucket allows
        if pace.wait(now) == 0.0:
            pace.take(now)
            sent += 1
        now += 0.01
    assert 49 <= sent <= 56  # 5 a second, plus the one-second burst it may hold
    for _ in range(100):  # a burst of hinted polls (they do not wait for the pace)
        pace.take(now)
    assert math.isclose(pace.wait(now), (1.0 + 5.0 * DEBT) / 5.0)
