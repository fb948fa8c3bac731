"""The pacer's decisions, without an event loop: times and counts are passed in."""

from __future__ import annotations

import math

import pytest

from duvo_monitor.pacer import DISPATCH_STEP, MAX_SWEEP_GAP, SWEEP_SHARE, TICK, Pacer


def probe_rate(pacer: Pacer, *, used: int, sweeping: bool = False, limit: int = 300) -> float:
    return pacer.probe_rate(
        budget_rate=5.0, reserve=0.1, sweeping=sweeping, sweep_interval=5.0, used=used, limit=limit
    )


def test_probe_rate_is_the_budget_less_the_reserve() -> None:
    """Without sweeps and with room in the window, the probes get the budget less the reserve."""
    assert probe_rate(Pacer(now=0.0), used=0) == pytest.approx(4.5)


def test_sweeps_take_their_pages_but_never_more_than_their_share() -> None:
    """Sweeping takes pages / sweep_interval off the probe rate, capped at SWEEP_SHARE."""
    pacer = Pacer(now=0.0)
    pacer.swept(2)
    assert probe_rate(pacer, used=0, sweeping=True) == pytest.approx(4.5 - 2 / 5.0)
    pacer.swept(100)
    assert probe_rate(pacer, used=0, sweeping=True) == pytest.approx(4.5 * (1 - SWEEP_SHARE))


def test_a_full_window_backs_the_probes_off_and_room_brings_them_back() -> None:
    """Over 97 % of the window used, the factor falls 5 % a tick (to 0.5 at most); under 80 %
    it recovers to 1; in between it holds."""
    pacer = Pacer(now=0.0)
    first = probe_rate(pacer, used=295)
    assert first == pytest.approx(4.5 * 0.95)
    for _ in range(100):
        probe_rate(pacer, used=300)
    assert pacer.rate_factor == pytest.approx(0.5)
    held = probe_rate(pacer, used=270)
    assert held == pytest.approx(4.5 * 0.5)
    for _ in range(100):
        probe_rate(pacer, used=10)
    assert pacer.rate_factor == 1.0


def test_probe_rate_never_reaches_zero() -> None:
    """Even a budget of nothing leaves the scheduler a positive rate to divide by."""
    pacer = Pacer(now=0.0)
    rate = pacer.probe_rate(
        budget_rate=0.0, reserve=0.5, sweeping=True, sweep_interval=5.0, used=0, limit=0
    )
    assert rate == 0.01


def test_tally_gives_the_delta_and_smooths_the_rates_by_kind() -> None:
    """The requests since the last tally, by kind; each kind's rate approaches its true rate."""
    pacer = Pacer(now=0.0, sent={"sweep": 0, "hinted": 0, "routine": 0})
    sent = {"sweep": 0, "hinted": 0, "routine": 0}
    delta: dict[str, int] = {}
    for second in range(1, 121):
        sent = {
            "sweep": sent["sweep"] + 1,
            "hinted": sent["hinted"],
            "routine": sent["routine"] + 3,
        }
        delta = pacer.tally(sent, float(second))
    assert delta == {"sweep": 1, "hinted": 0, "routine": 3}
    assert pacer.rates["routine"] == pytest.approx(3.0, rel=1e-3)
    assert pacer.rates["sweep"] == pytest.approx(1.0, rel=1e-3)
    assert pacer.rates["hinted"] == 0.0


def test_a_tally_at_the_same_instant_moves_no_rate() -> None:
    """No time passed: the delta is reported, the rates are not divided by zero."""
    pacer = Pacer(now=5.0)
    assert pacer.tally({"sweep": 0, "hinted": 2, "routine": 0}, 5.0)["hinted"] == 2
    assert pacer.rates["hinted"] == 0.0


def test_sweep_interval_floor_and_discovery() -> None:
    """The sweep interval is never faster than SWEEP_SHARE of the budget pays for; discovery
    alone runs at its own interval; with neither, never."""
    pacer = Pacer(now=0.0)
    kw = {"sweep_interval": 5.0, "budget_rate": 5.0}
    assert pacer.sweep_interval(sweeping=True, discover_interval=None, **kw) == 5.0
    pacer.swept(10)  # 10 pages at a quarter of 5/s: one pass per 8 s at most
    assert pacer.sweep_interval(sweeping=True, discover_interval=None, **kw) == pytest.approx(8.0)
    assert pacer.sweep_interval(sweeping=True, discover_interval=2.0, **kw) == 2.0
    assert pacer.sweep_interval(sweeping=False, discover_interval=30.0, **kw) == 30.0
    assert pacer.sweep_interval(sweeping=False, discover_interval=None, **kw) == math.inf


def test_failed_sweeps_back_off_exponentially_up_to_two_minutes() -> None:
    """1, 2, 3 failures: at least 2, 4, 8 s; never more than 120 s; never less than usual."""
    assert [Pacer.sweep_retry(1.0, n) for n in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, 120.0]
    assert Pacer.sweep_retry(300.0, 1) == 300.0


def test_a_trusted_round_waits_until_the_spare_budget_paid_for_it() -> None:
    """Round cost (pages + hinted polls) over the spare budget (budget less routine spend, at
    least SWEEP_SHARE of it) says when the next round starts, capped at MAX_SWEEP_GAP."""
    pacer = Pacer(now=0.0)
    pacer.swept(1)
    # No routine spend: 1 page + 9 hinted polls at 5/s is 2 s.
    assert pacer.round_budget(5.0) == 5.0
    assert pacer.next_round_in(
        started=100.0, least=1.0, hinted=9, budget_rate=5.0, now=100.5
    ) == pytest.approx(1.5)
    # Routine probes spending 4.5/s leave only the floor, a quarter of the budget.
    for second in range(1, 200):
        pacer.tally({"sweep": 0, "hinted": 0, "routine": int(4.5 * second)}, float(second))
    assert pacer.round_budget(5.0) == pytest.approx(5.0 * SWEEP_SHARE)
    assert pacer.next_round_in(
        started=100.0, least=1.0, hinted=9, budget_rate=5.0, now=100.0
    ) == pytest.approx(8.0)
    # However busy, rounds are at most MAX_SWEEP_GAP (or the interval, if longer) apart.
    assert pacer.next_round_in(
        started=100.0, least=1.0, hinted=1000, budget_rate=5.0, now=100.0
    ) == pytest.approx(MAX_SWEEP_GAP)
    assert pacer.next_round_in(started=100.0, least=1.0, hinted=0, budget_rate=5.0, now=200.0) == 0


def test_dispatch_hold() -> None:
    """Hold while the budget has no room (at most a tick), briefly while requests queue at the
    gate, not at all otherwise."""
    assert Pacer.dispatch_hold(budget_wait=0.3, waiting=0) == 0.3
    assert Pacer.dispatch_hold(budget_wait=30.0, waiting=0) == TICK
    assert Pacer.dispatch_hold(budget_wait=0.0, waiting=2) == DISPATCH_STEP
    assert Pacer.dispatch_hold(budget_wait=0.0, waiting=0) == 0.0
