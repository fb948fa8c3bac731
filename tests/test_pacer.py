"""The pacer's decisions, without an event loop: times and counts are passed in."""

from __future__ import annotations

import pytest

from duvo_monitor.pacer import (
    DISPATCH_STEP,
    FORWARD_YIELD,
    MAX_SWEEP_GAP,
    ROUND_STEP,
    SPEND_CAP,
    SPEND_HORIZON,
    SWEEP_SHARE,
    TICK,
    YIELD_HALF_LIFE,
    Pacer,
)


def probe_rate(pacer: Pacer, *, listing: bool, discover: float | None = None) -> float:
    return pacer.probe_rate(
        sustained=4.5,
        listing=listing,
        budget_rate=5.0,
        sweep_interval=1.0,
        discover_interval=discover,
    )


def test_the_sustained_rate_is_the_budget_less_the_reserve() -> None:
    """Routine requests may take the budget's rate less the reserve."""
    assert Pacer.sustained_rate(budget_rate=5.0, reserve=0.1) == pytest.approx(4.5)


def test_the_probes_get_the_sustained_rate_less_what_sweeps_steadily_cost() -> None:
    """Without listing, the probes share the whole sustained rate; while the sweeper lists, its
    pages per sweep gap come off, never more than SWEEP_SHARE."""
    pacer = Pacer()
    assert probe_rate(pacer, listing=False) == pytest.approx(4.5)
    assert probe_rate(pacer, listing=True) == pytest.approx(4.5 - 1 / 1.0)
    pacer.swept(10)  # 10 pages: the gap stretches to 8 s, the share caps the cost
    assert probe_rate(pacer, listing=True) == pytest.approx(4.5 - min(4.5 * SWEEP_SHARE, 10 / 8))


def test_probe_rate_never_reaches_zero() -> None:
    """Even a budget of nothing leaves the scheduler a positive rate to divide by."""
    rate = Pacer().probe_rate(
        sustained=0.0, listing=True, budget_rate=1.0, sweep_interval=1.0, discover_interval=None
    )
    assert rate == 0.01


def test_tally_gives_the_requests_since_the_last_one_by_kind() -> None:
    """The running counts in, the requests since the previous tally out."""
    pacer = Pacer(sent={"sweep": 2, "hinted": 0, "routine": 5})
    assert pacer.tally({"sweep": 3, "hinted": 4, "routine": 5}) == {
        "sweep": 1,
        "hinted": 4,
        "routine": 0,
    }
    assert pacer.tally({"sweep": 3, "hinted": 4, "routine": 9})["routine"] == 4


def test_sweep_gap_floor_and_discovery() -> None:
    """The sweep gap is sweep_interval unless SWEEP_SHARE of the budget cannot pay for the
    pages; discovery alone lists at least every discover interval."""
    pacer = Pacer()
    kw = {"sweep_interval": 1.0, "budget_rate": 5.0}
    assert pacer.sweep_gap(sweeping=True, discover_interval=None, **kw) == 1.0
    assert pacer.sweep_gap(sweeping=True, discover_interval=30.0, **kw) == 1.0
    pacer.swept(10)  # 10 pages at a quarter of 5/s: one sweep per 8 s at most
    assert pacer.sweep_gap(sweeping=True, discover_interval=None, **kw) == pytest.approx(8.0)
    assert pacer.sweep_gap(sweeping=False, discover_interval=2.0, **kw) == 2.0
    assert pacer.sweep_gap(sweeping=False, discover_interval=30.0, **kw) == pytest.approx(8.0)


def test_failed_sweeps_back_off_exponentially_up_to_two_minutes() -> None:
    """1, 2, 3 failures: at least 2, 4, 8 s; never more than 120 s; never less than usual."""
    assert [Pacer.sweep_retry(1.0, n) for n in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, 120.0]
    assert Pacer.sweep_retry(300.0, 1) == 300.0


def test_a_trusted_round_waits_for_its_hinted_polls_but_not_forever() -> None:
    """The next sweep waits (in steps) while hinted polls of this round wait to leave; not at
    all once they have; never past MAX_SWEEP_GAP (or the gap, if longer) after the round began."""
    assert Pacer.round_wait(started=100.0, gap=1.0, now=101.0, hinted_backlog=True) == ROUND_STEP
    assert Pacer.round_wait(started=100.0, gap=1.0, now=101.0, hinted_backlog=False) == 0.0
    cap = 100.0 + MAX_SWEEP_GAP
    assert Pacer.round_wait(
        started=100.0, gap=1.0, now=cap - 0.05, hinted_backlog=True
    ) == pytest.approx(0.05)
    assert Pacer.round_wait(started=100.0, gap=1.0, now=cap, hinted_backlog=True) == 0.0
    assert Pacer.round_wait(started=100.0, gap=30.0, now=cap, hinted_backlog=True) == ROUND_STEP


def test_dispatch_hold() -> None:
    """Hold while the budget has no room (at most a tick), briefly while requests queue at the
    gate, not at all otherwise."""
    assert Pacer.dispatch_hold(budget_wait=0.3, waiting=0) == 0.3
    assert Pacer.dispatch_hold(budget_wait=30.0, waiting=0) == TICK
    assert Pacer.dispatch_hold(budget_wait=0.0, waiting=2) == DISPATCH_STEP
    assert Pacer.dispatch_hold(budget_wait=0.0, waiting=0) == 0.0


def test_no_news_found_keeps_the_spend_rate_at_the_sustained_rate() -> None:
    """Before any poll, and while polls find nothing (finished runs that do not resume), the
    window's room is kept for the news after the quiet spell."""
    pacer = Pacer()
    assert pacer.spend_rate(sustained=4.5, room=200.0, spendable=270.0, now=0.0) == pytest.approx(
        4.5
    )
    for t in range(10):
        pacer.polled(requests=2, found=0, now=float(t))
    assert pacer.news_yield(10.0) == 0.0
    assert pacer.spend_rate(sustained=4.5, room=200.0, spendable=270.0, now=10.0) == pytest.approx(
        4.5
    )


def test_polls_that_find_news_spend_the_windows_surplus_over_the_horizon() -> None:
    """While every request finds news, the room beyond half the spendable window goes out
    over SPEND_HORIZON on top of the sustained rate; half the requests finding news spend half
    as fast; with half the window or less free (a burst to pay back, or news that has gone on
    for a minute), nothing extra."""
    pacer = Pacer()
    for t in range(20):
        pacer.polled(requests=2, found=2, now=float(t) / 10)
    y = pacer.news_yield(2.0)
    assert 0.8 < y < 1.0  # below 1: the prior of YIELD_PRIOR requests that found nothing
    assert pacer.spend_rate(sustained=4.5, room=180.0, spendable=270.0, now=2.0) == (
        pytest.approx(4.5 + y * (180.0 - 135.0) / SPEND_HORIZON)  # below the cap
    )
    for room in (135.0, 100.0, 0.0, -30.0):
        assert pacer.spend_rate(
            sustained=4.5, room=room, spendable=270.0, now=2.0
        ) == pytest.approx(4.5)
    half = Pacer()
    for t in range(20):
        half.polled(requests=2, found=1, now=float(t) / 10)
    assert half.news_yield(2.0) == pytest.approx(y / 2, rel=0.01)


def test_the_spend_rate_is_capped_and_the_yield_forgets() -> None:
    """However much room, at most SPEND_CAP times the sustained rate; the evidence halves
    every YIELD_HALF_LIFE seconds without polls (so the yield fades to nothing), and a poll
    that claims more news than requests counts as every request finding news."""
    pacer = Pacer()
    for t in range(50):
        pacer.polled(requests=1, found=3, now=float(t) / 10)
    assert (
        pacer.spend_rate(sustained=4.5, room=10_000.0, spendable=270.0, now=5.0) == 4.5 * SPEND_CAP
    )
    assert pacer.news_yield(5.0) < 1.0
    before = pacer.news_yield(5.0)
    # The evidence fades: with it, the yield falls toward its empty prior (the +1 weighs more).
    assert pacer.news_yield(5.0 + 3 * YIELD_HALF_LIFE) < before
    assert pacer.news_yield(5.0 + 10 * YIELD_HALF_LIFE) < 0.1


def test_probes_are_brought_forward_after_a_burst_only_while_most_polls_find_news() -> None:
    """Without a burst to pay back, always; with one, only while at least FORWARD_YIELD of
    recent requests found news (a few runs found lost among many quiet polls, as in the first
    minute after reading 80 finished runs, are not enough) and the burst left more than half
    of the spendable window free (the first looks of 50 runs on 600 a minute do; 158 on 300
    a minute do not)."""
    pacer = Pacer()
    assert pacer.bring_forward(short=False, room=0.0, spendable=540.0, now=0.0)
    assert not pacer.bring_forward(short=True, room=440.0, spendable=540.0, now=0.0)
    for t in range(20):  # 2 of 40 requests found news
        pacer.polled(requests=2, found=1 if t in (3, 9) else 0, now=t / 10)
    assert 0 < pacer.news_yield(2.0) < FORWARD_YIELD
    assert not pacer.bring_forward(short=True, room=440.0, spendable=540.0, now=2.0)
    busy = Pacer()
    for t in range(20):
        busy.polled(requests=2, found=2, now=t / 10)
    assert busy.news_yield(2.0) >= FORWARD_YIELD
    assert busy.bring_forward(short=True, room=440.0, spendable=540.0, now=2.0)
    assert not busy.bring_forward(short=True, room=100.0, spendable=270.0, now=2.0)
