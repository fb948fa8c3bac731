"""The request budget: never more than N in any window; the server can only tighten it.

Time is a :class:`VirtualClock`: it moves only when a test advances it (or, in
:func:`jumping`, to the next deadline once the budget sleeps), so no assertion depends on how
fast the machine is; tasks are synchronised on the clock's sleepers, never on real sleeps.
"""

from __future__ import annotations

import itertools

import anyio
import pytest

from duvo_monitor.api import Observation
from duvo_monitor.budget import Budget
from duvo_monitor.clock import VirtualClock
from duvo_monitor.models import RateLimit

T0 = VirtualClock().origin


def observation(status: int = 200, **rate: float) -> Observation:
    return Observation(
        endpoint="GET /v2/runs/{run_id}",
        status=status,
        seconds=0.01,
        rate=RateLimit(**rate),  # type: ignore[arg-type]
        at=T0,
    )


async def jumping(clock: VirtualClock) -> None:
    """Whenever the code under test sleeps, move time to the first sleeper's deadline (the
    budget is the only sleeper, so this is the time it would have waited)."""
    while True:
        await clock.sleeping(1)
        clock.advance(clock.next_deadline() or 0.0)


@pytest.mark.anyio
async def test_never_more_than_limit_in_any_window() -> None:
    """30/min admits 30 first looks at once (the sliding log; other requests leave a trickle,
    routine ones are paced on top of it), and the 31st only a window (plus the margin) later."""
    clock = VirtualClock()
    budget = Budget(30, clock=clock, window=60, margin=1)
    sent: list[float] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(jumping, clock)
            for _ in range(45):
                await budget.acquire(urgent=True, first=True)
                sent.append(clock.monotonic())
            tg.cancel_scope.cancel()
    for i, t in enumerate(sent):
        in_window = [s for s in sent if t <= s < t + 60]
        assert len(in_window) <= 30, i
    assert sent[29] == sent[0]
    assert sent[30] - sent[0] >= 61


@pytest.mark.anyio
async def test_a_burst_leaves_a_trickle_until_it_ages_out() -> None:
    """After a burst of first looks, hinted requests do not spend the rest of the window at once
    and then leave nothing for a minute: they go at an even rate that fits until the burst ages
    out; the window is never exceeded."""
    clock = VirtualClock()
    budget = Budget(30, clock=clock, window=60, margin=1)
    start = clock.monotonic()
    for _ in range(20):
        await budget.acquire(first=True)
    sent: list[float] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(jumping, clock)
            for _ in range(20):
                await budget.acquire(urgent=True)
                sent.append(clock.monotonic() - start)
            tg.cancel_scope.cancel()
    before = [t for t in sent if t < 61]
    # 10 more fit before the burst ages out at 61 s: spread over it, one every 5-6 s.
    assert len(before) == 10, sent
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(before)), before
    assert before[-1] >= 50
    every = [0.0] * 20 + sent
    assert all(sum(1 for s in every if t <= s < t + 61) <= 30 for t in every)


def test_without_a_burst_the_trickle_does_not_bind() -> None:
    """Requests logged at the sustained rate leave the log's own room untouched."""
    clock = VirtualClock()
    budget = Budget(60, clock=clock, window=60, margin=0)
    for _ in range(59):
        budget._take()
        clock.advance(1.0)
    assert budget.wait_time() == 0 and budget.trickle_wait() == 0


def test_server_limit_tightens_never_loosens() -> None:
    """x-ratelimit-limit below ours lowers the budget; above ours changes nothing."""
    budget = Budget(300, clock=VirtualClock())
    budget.observe(observation(limit=100))
    assert budget.limit == 100
    budget.observe(observation(limit=1000))
    assert budget.limit == 300


def test_429_pauses_everything_until_retry_after() -> None:
    """A 429 with retry-after pauses all requests for that long."""
    clock = VirtualClock()
    budget = Budget(300, clock=clock)
    assert budget.wait_time() == 0
    budget.observe(observation(429, retry_after=7))
    assert budget.wait_time() == 7
    clock.advance(7)
    assert budget.wait_time() == 0
    assert budget.rate_limited == 1


def test_429_without_header_pauses_cautiously() -> None:
    """A bare 429 still pauses (a few seconds), never ignored."""
    budget = Budget(300, clock=VirtualClock())
    budget.observe(observation(429))
    assert budget.wait_time() > 0


def test_server_remaining_zero_waits_for_reset() -> None:
    """remaining 0 with a reset in 20 s: no request before the reset."""
    clock = VirtualClock()
    budget = Budget(300, clock=clock)
    budget.observe(observation(remaining=0, reset=clock.time() + 20))
    assert budget.wait_time() == 20
    snap = budget.snapshot()
    assert snap.remaining == 0


def test_rejects_zero_budget() -> None:
    """A budget of 0 requests is a configuration error, not a hang."""
    with pytest.raises(ValueError, match="at least one"):
        Budget(0, clock=VirtualClock())


@pytest.mark.anyio
async def test_sweeps_go_ahead_of_the_queue() -> None:
    """With the budget full, a waiting list-runs sweep is admitted before queued polls."""
    clock = VirtualClock()
    budget = Budget(5, clock=clock, window=6, margin=0)
    for _ in range(5):
        await budget.acquire(first=True)  # fills the log at once (only first looks may)
    order: list[str] = []
    all_in = anyio.Event()

    async def ask(name: str, endpoint: str) -> None:
        await budget.acquire(endpoint)
        order.append(name)
        if len(order) == 3:
            all_in.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "poll-1", "GET /v2/runs/{run_id}/messages")
            tg.start_soon(ask, "poll-2", "GET /v2/runs/{run_id}/messages")
            await clock.sleeping(1)  # poll-1 waits at the gate, poll-2 behind it
            tg.start_soon(ask, "sweep", "GET /v2/teams/{teamId}/runs")
            await clock.sleeping(2)  # the sweep waits too
            assert order == []
            tg.start_soon(jumping, clock)
            await all_in.wait()
            tg.cancel_scope.cancel()
    assert order[0] == "sweep" and sorted(order[1:]) == ["poll-1", "poll-2"]


@pytest.mark.anyio
async def test_requests_are_counted_by_kind() -> None:
    """Sweeps, hinted (urgent) and routine requests are counted apart: the daemon paces its
    sweep rounds on what the routine probes leave."""
    clock = VirtualClock()
    budget = Budget(50, clock=clock)
    await budget.acquire("GET /v2/runs/{run_id}/messages")  # routine first: the pace holds one
    await budget.acquire("GET /v2/teams/{teamId}/runs")
    await budget.acquire("GET /v2/runs/{run_id}/messages", urgent=True)
    await budget.acquire("GET /v2/runs/{run_id}", urgent=True)
    assert budget.sent == {"sweep": 1, "hinted": 2, "routine": 1}
    assert budget.sent_by["hinted", "GET /v2/runs/{run_id}"] == 1
    assert budget.waiting == 0


@pytest.mark.anyio
async def test_waiting_counts_requests_held_at_the_gate() -> None:
    """The dispatcher holds polls while requests wait at the gate: it can see them."""
    clock = VirtualClock()
    budget = Budget(1, clock=clock, window=3, margin=0)
    await budget.acquire()
    seen: list[int] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(budget.acquire)
            await clock.sleeping(1)
            seen.append(budget.waiting)
            clock.advance(3)
    assert seen == [1] and budget.waiting == 0


def test_slow_answers_widen_the_window() -> None:
    """A request reaches the server before its answer returns: with answers slower than the
    margin, the window grows by the slowest of them, so late arrivals cannot crowd a window
    of the server's (capped, and back to normal once the slow answer leaves the window)."""
    clock = VirtualClock()
    budget = Budget(300, clock=clock)
    assert budget.window == 61.0
    budget.observe(Observation(endpoint="x", status=200, seconds=0.2, rate=RateLimit(), at=0.0))
    assert budget.window == 61.0
    budget.observe(Observation(endpoint="x", status=200, seconds=3.5, rate=RateLimit(), at=0.0))
    assert budget.window == 63.5
    budget.observe(Observation(endpoint="x", status=200, seconds=90.0, rate=RateLimit(), at=0.0))
    assert budget.window == 70.0


@pytest.mark.anyio
async def test_routine_requests_leave_at_the_pace_never_bunched() -> None:
    """Routine requests leave at the pace the daemon sets (not as a burst the log would admit),
    and never more than the limit in any window."""
    clock = VirtualClock()
    budget = Budget(60, clock=clock, window=60, margin=1)
    budget.set_pace(0.9)
    sent: list[float] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(jumping, clock)
            for _ in range(20):
                await budget.acquire()
                sent.append(clock.monotonic())
            tg.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(sent[1:])]  # the first may leave at once
    assert min(gaps) >= 1 / 0.9 - 1e-6
    for t in sent:
        assert len([s for s in sent if t <= s < t + 60]) <= 60


async def routine_after_burst(**burst: bool) -> float:
    """Seconds that 18 routine requests take at a pace of 9 a second, right after 26 requests
    of the given kind (``first=True`` or ``urgent=True``), with a log of 600 a minute."""
    clock = VirtualClock()
    budget = Budget(600, clock=clock, window=60, margin=1)
    budget.set_pace(9.0)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(jumping, clock)
            for _ in range(26):
                await budget.acquire(**burst)
            start = clock.monotonic()
            for _ in range(18):
                await budget.acquire()
            tg.cancel_scope.cancel()
    return clock.monotonic() - start


@pytest.mark.anyio
async def test_a_burst_of_first_looks_does_not_stall_routine_polls() -> None:
    """First looks take the burst the log allows and, with the log mostly free, are not owed
    to the pace: routine polls right after them leave at the pace (they waited seconds while
    new runs kept arriving). Hinted polls are owed: after a burst of them routine polls give
    way."""
    # 18 routine requests at 9 a second take 2 s, not the 2 s of debt and then 2 more.
    assert await routine_after_burst(first=True) <= 18 / 9.0 + 1e-6
    assert await routine_after_burst(urgent=True) > 18 / 9.0 + 1.0


@pytest.mark.anyio
async def test_first_looks_that_leave_the_log_short_are_owed_to_the_pace() -> None:
    """Once the log is short (its fitting rate below the pace), first looks drain the pace too:
    routine polls then give way instead of taking what the next minute's news needs."""
    clock = VirtualClock()
    budget = Budget(60, clock=clock, window=60, margin=1)
    budget.set_pace(0.9)
    with anyio.fail_after(5):
        for _ in range(5):  # plenty of room: not owed
            await budget.acquire(first=True)
        assert budget.fitting_rate() > 0.9
        assert budget.pace.wait(clock.monotonic()) == 0.0
        for _ in range(45):  # the log is short now: owed
            await budget.acquire(first=True)
    assert budget.fitting_rate() < 0.9
    assert budget.pace.wait(clock.monotonic()) > 1.0


@pytest.mark.anyio
async def test_a_log_is_short_against_the_sustained_rate_not_a_raised_pace() -> None:
    """While the pacer spends the window's room (a pace above the sustained rate), the log is
    short only once its fitting rate falls below the sustained rate: a raised pace must not
    make every log look like a burst to pay back (which would stop first looks from taking
    the room and the scheduler from bringing probes forward)."""
    clock = VirtualClock()
    budget = Budget(60, clock=clock, window=60, margin=1)
    budget.set_pace(3.0, sustained=0.9)
    with anyio.fail_after(5):
        for _ in range(5):
            await budget.acquire(first=True)
    assert 0.9 < budget.fitting_rate() < 3.0
    assert not budget.short()
    budget.set_pace(0.9)  # no sustained rate given: the pace is the sustained rate
    assert budget.sustained == 0.9
    with anyio.fail_after(5):
        for _ in range(45):
            await budget.acquire(first=True)
    assert budget.short()


@pytest.mark.anyio
async def test_a_restarted_budget_counts_what_the_last_process_sent() -> None:
    """A daemon killed after spending its window, restarted at once, must not spend it again:
    the window saved by whole seconds (each counted at its second's end) and restored makes the
    new budget wait as the old one would have, a second at most later; what aged out of the
    window, or what the file cannot count, is not counted."""
    clock = VirtualClock()
    old = Budget(30, clock=clock, window=60, margin=1)
    for _ in range(20):
        await old.acquire(urgent=True, first=True)
    clock.advance(10.0)
    for _ in range(10):
        await old.acquire(urgent=True, first=True)
    history = old.history()
    assert sum(count for _, count in history) == 30 and len(history) == 2
    assert old.wait_time() == pytest.approx(51.0)

    clock.advance(5.0)  # the restart
    new = Budget(30, clock=clock, window=60, margin=1)
    assert new.restore(history) == 30
    assert 46.0 <= new.wait_time() <= 47.0  # 61 - 15 s, rounded up to the second
    assert new.snapshot().used == 30

    later = Budget(30, clock=clock, window=60, margin=1)
    clock.advance(50.0)  # the first 20 aged out
    assert later.restore(history) == 10
    assert later.wait_time() == 0.0
    assert later.restore([(clock.time() + 3600.0, 5), (float("nan"), 3), (clock.time(), -2)]) == 5
    assert later.snapshot().used == 15
