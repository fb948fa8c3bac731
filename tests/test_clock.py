"""The virtual clock: time moves only when the test says, and sleepers wake in deadline order."""

from __future__ import annotations

import anyio
import pytest

from duvo_monitor.clock import VirtualClock

pytestmark = pytest.mark.anyio


async def test_sleepers_wake_only_when_time_is_advanced_past_their_deadline() -> None:
    """A sleep of 5 s survives 4.9 s of advancing and ends at 5 s; time() and monotonic()
    move by exactly what was advanced."""
    clock = VirtualClock()
    start, woke = clock.time(), anyio.Event()

    async def nap() -> None:
        await clock.sleep(5)
        woke.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(nap)
            await clock.sleeping(1)
            clock.advance(4.9)
            await anyio.wait_all_tasks_blocked()
            assert not woke.is_set() and clock.sleepers == 1
            assert clock.next_deadline() == pytest.approx(0.1)
            clock.advance(0.1)
            await woke.wait()
    assert clock.time() - start == pytest.approx(5.0)
    assert clock.monotonic() == pytest.approx(5.0)
    assert clock.sleepers == 0 and clock.next_deadline() is None


async def test_one_advance_wakes_every_due_sleeper_in_deadline_order() -> None:
    """Three sleepers of 3, 1 and 2 s all wake on one advance of 3 s, shortest first."""
    clock = VirtualClock()
    order: list[float] = []

    async def nap(seconds: float) -> None:
        await clock.sleep(seconds)
        order.append(seconds)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for seconds in (3.0, 1.0, 2.0):
                tg.start_soon(nap, seconds)
            await clock.sleeping(3)
            clock.advance(3)
    assert order == [1.0, 2.0, 3.0]


async def test_a_cancelled_sleeper_is_forgotten_and_zero_sleeps_do_not_wait() -> None:
    """Cancelling a sleep removes it from the sleepers; sleep(0) returns without any advance."""
    clock = VirtualClock()
    with anyio.fail_after(5):
        await clock.sleep(0)
        with anyio.move_on_after(0.01):
            await clock.sleep(100)
    assert clock.sleepers == 0


def test_time_cannot_go_back_nor_cross_processes() -> None:
    """advance() refuses a negative step; a virtual clock has no environment form."""
    clock = VirtualClock()
    with pytest.raises(ValueError, match="back"):
        clock.advance(-1)
    with pytest.raises(TypeError):
        clock.to_environ()
