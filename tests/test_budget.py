"""The request budget: never more than N in any window; the server can only tighten it."""

from __future__ import annotations

import time

import anyio
import pytest

from duvo_monitor.api import Observation
from duvo_monitor.budget import Budget
from duvo_monitor.clock import Clock
from duvo_monitor.models import RateLimit


def observation(status: int = 200, **rate: float) -> Observation:
    return Observation(
        endpoint="GET /v2/runs/{run_id}",
        status=status,
        seconds=0.01,
        rate=RateLimit(**rate),  # type: ignore[arg-type]
        at=time.time(),
    )


@pytest.mark.anyio
async def test_never_more_than_limit_in_any_window() -> None:
    """With a 600x clock, 30/min admits 30 at once, and the 31st only a window later."""
    clock = Clock.scaled(600)
    budget = Budget(30, clock=clock, window=60, margin=1)
    sent: list[float] = []
    with anyio.fail_after(5):
        for _ in range(45):
            await budget.acquire()
            sent.append(clock.monotonic())
    for i, t in enumerate(sent):
        in_window = [s for s in sent if t <= s < t + 60]
        assert len(in_window) <= 30, i
    assert sent[30] - sent[0] >= 61 - 0.5


def test_server_limit_tightens_never_loosens() -> None:
    """x-ratelimit-limit below ours lowers the budget; above ours changes nothing."""
    budget = Budget(300, clock=Clock())
    budget.observe(observation(limit=100))
    assert budget.limit == 100
    budget.observe(observation(limit=1000))
    assert budget.limit == 300


def test_429_pauses_everything_until_retry_after() -> None:
    """A 429 with retry-after pauses all requests for that long."""
    budget = Budget(300, clock=Clock())
    assert budget.wait_time() == 0
    budget.observe(observation(429, retry_after=7))
    assert 6 < budget.wait_time() <= 7
    assert budget.rate_limited == 1


def test_429_without_header_pauses_cautiously() -> None:
    """A bare 429 still pauses (a few seconds), never ignored."""
    budget = Budget(300, clock=Clock())
    budget.observe(observation(429))
    assert budget.wait_time() > 0


def test_server_remaining_zero_waits_for_reset() -> None:
    """remaining 0 with a reset in 20 s: no request before the reset."""
    budget = Budget(300, clock=Clock())
    budget.observe(observation(remaining=0, reset=time.time() + 20))
    assert 19 < budget.wait_time() <= 20
    snap = budget.snapshot()
    assert snap.remaining == 0


def test_rejects_zero_budget() -> None:
    """A budget of 0 requests is a configuration error, not a hang."""
    with pytest.raises(ValueError, match="at least one"):
        Budget(0, clock=Clock())


@pytest.mark.anyio
async def test_sweeps_go_ahead_of_the_queue() -> None:
    """With the budget full, a waiting list-runs sweep is admitted before queued polls."""
    clock = Clock.scaled(300)
    budget = Budget(5, clock=clock, window=6, margin=0)
    for _ in range(5):
        await budget.acquire()
    order: list[str] = []

    async def ask(name: str, endpoint: str) -> None:
        await budget.acquire(endpoint)
        order.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "poll-1", "GET /v2/runs/{run_id}/messages")
            tg.start_soon(ask, "poll-2", "GET /v2/runs/{run_id}/messages")
            await anyio.sleep(0.001)
            tg.start_soon(ask, "sweep", "GET /v2/teams/{teamId}/runs")
    assert order[0] == "sweep"


@pytest.mark.anyio
async def test_requests_are_counted_by_kind() -> None:
    """Sweeps, hinted (urgent) and routine requests are counted apart: the daemon paces its
    sweep rounds on what the routine probes leave."""
    clock = Clock.scaled(300)
    budget = Budget(50, clock=clock)
    await budget.acquire("GET /v2/teams/{teamId}/runs")
    await budget.acquire("GET /v2/runs/{run_id}/messages")
    await budget.acquire("GET /v2/runs/{run_id}/messages", urgent=True)
    await budget.acquire("GET /v2/runs/{run_id}", urgent=True)
    assert budget.sent == {"sweep": 1, "hinted": 2, "routine": 1}
    assert budget.sent_by["hinted", "GET /v2/runs/{run_id}"] == 1
    assert budget.waiting == 0


@pytest.mark.anyio
async def test_waiting_counts_requests_held_at_the_gate() -> None:
    """The dispatcher holds polls while requests wait at the gate: it can see them."""
    clock = Clock.scaled(300)
    budget = Budget(1, clock=clock, window=3, margin=0)
    await budget.acquire()
    seen: list[int] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(budget.acquire)
            await anyio.sleep(0.001)
            seen.append(budget.waiting)
    assert seen == [1] and budget.waiting == 0


def test_slow_answers_widen_the_window() -> None:
    """A request reaches the server before its answer returns: with answers slower than the
    margin, the window grows by the slowest of them, so late arrivals cannot crowd a window
    of the server's (capped, and back to normal once the slow answer leaves the window)."""
    clock = Clock.scaled(1)
    budget = Budget(300, clock=clock)
    assert budget.window == 61.0
    budget.observe(Observation(endpoint="x", status=200, seconds=0.2, rate=RateLimit(), at=0.0))
    assert budget.window == 61.0
    budget.observe(Observation(endpoint="x", status=200, seconds=3.5, rate=RateLimit(), at=0.0))
    assert budget.window == 63.5
    budget.observe(Observation(endpoint="x", status=200, seconds=90.0, rate=RateLimit(), at=0.0))
    assert budget.window == 70.0
