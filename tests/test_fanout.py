"""The fan-out: isolation between sinks, backpressure, drops, filters, acks, drain, reload.

Time is a :class:`VirtualClock` (retry backoff, health watch, stuck detection): it moves when
a test advances it. Tasks are synchronised with anyio events and
``anyio.wait_all_tasks_blocked`` (every task is waiting: the worker holds its batch at the
gate), never with real sleeps, so the outcomes do not depend on the machine's speed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sinkkit import AGENT, RUN_B, Observed, RecordingSink, events, eventually, make_event

from duvo_monitor.clock import Clock, VirtualClock
from duvo_monitor.errors import SinkError
from duvo_monitor.events import Event
from duvo_monitor.fanout import SPOOL_MAX_BYTES, FanOut
from duvo_monitor.sinks.backoff import Backoff
from duvo_monitor.sinks.base import SinkClosed
from duvo_monitor.sinks.config import FileConfig
from duvo_monitor.sinks.file import FileSink
from duvo_monitor.sinks.spool import Spool

pytestmark = pytest.mark.anyio
FAST_RETRY = Backoff(initial=0.005, maximum=0.01)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fanout_of(
    *sinks: RecordingSink, observer: Observed | None = None, clock: VirtualClock | None = None
) -> FanOut:
    return FanOut(
        list(sinks),
        observer=observer or Observed(),
        clock=clock or VirtualClock(),
        retry=FAST_RETRY,
    )


async def advance_until(clock: VirtualClock, done: Callable[[], bool], step: float) -> None:
    """Move time ``step`` at a time, each once every task waits, until ``done()``."""
    while not done():
        await anyio.wait_all_tasks_blocked()
        clock.advance(step)


class SlowSink(RecordingSink):
    """Takes ``per_event`` seconds of the virtual clock for each event it is given."""

    def __init__(self, name: str, clock: VirtualClock, per_event: float) -> None:
        super().__init__(name)
        self.clock, self.per_event = clock, per_event

    async def deliver(self, batch: Sequence[Event]) -> None:
        await self.clock.sleep(self.per_event * len(batch))
        await super().deliver(batch)
        self.times[-len(batch) :] = [self.clock.monotonic()] * len(batch)


async def test_a_slow_sink_does_not_delay_a_fast_one() -> None:
    """Beside a sink that takes 200 ms (virtual) per event, the fast sink has each event at
    the moment it is published, while the slow one is still at its first."""
    clock = VirtualClock()
    slow = SlowSink("slow", clock, per_event=0.2)
    fast = RecordingSink("fast")
    fanout = fanout_of(slow, fast, clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for event in events(10):
            await fanout.publish([event])
            await anyio.wait_all_tasks_blocked()
            clock.advance(0.005)
        assert fast.received == events(10)
        assert len(slow.received) <= 1
        await advance_until(clock, lambda: len(slow.received) == 10, step=0.05)
        tg.cancel_scope.cancel()
    assert slow.received == events(10)
    assert slow.times[-1] >= 10 * 0.2 - 1e-9  # each event took its 200 ms of the slow sink


async def test_a_stuck_sink_does_not_hold_the_others_or_publish() -> None:
    """A sink blocked forever (room in its buffer) holds only its own acks."""
    stuck, fast = RecordingSink("stuck"), RecordingSink("fast")
    stuck.gate = anyio.Event()
    fanout = fanout_of(stuck, fast)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        deliveries = [await fanout.publish(events(1, start=i)) for i in range(50)]
        await eventually(lambda: len(fast.received) == 50, within=2)
        assert not any(d.done for d in deliveries)  # the stuck sink has not acked
        stuck.gate.set()
        with anyio.fail_after(2):
            for delivery in deliveries:
                await delivery.wait()
        assert stuck.received == fast.received == events(50)
        tg.cancel_scope.cancel()


async def test_full_buffer_blocks_publish_after_feeding_the_others() -> None:
    """on_full=block: publish waits for room (backpressure), but the other sinks already have
    the events of the waiting publish."""
    small, other = RecordingSink("small", buffer=2), RecordingSink("other")
    small.gate = anyio.Event()
    fanout = fanout_of(small, other)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await fanout.publish(events(1))  # taken by the worker, held at the gate
        await anyio.wait_all_tasks_blocked()
        await fanout.publish(events(2, start=1))  # fills the buffer
        published = anyio.Event()

        async def third() -> None:
            await fanout.publish(events(1, start=3))
            published.set()

        tg.start_soon(third)
        await anyio.wait_all_tasks_blocked()
        assert not published.is_set(), "publish should wait for room"
        assert [e.data["n"] for e in other.received] == [0, 1, 2, 3]
        small.gate.set()
        with anyio.fail_after(2):
            await published.wait()
            delivery = await fanout.publish(events(1, start=4))
            await delivery.wait()
        tg.cancel_scope.cancel()
    assert [e.data["n"] for e in small.received] == [0, 1, 2, 3, 4]


async def test_drop_oldest_never_blocks_and_counts_every_drop() -> None:
    """on_full=drop_oldest: publish never waits; the oldest buffered events are dropped,
    acknowledged, counted and logged by id."""
    lossy = RecordingSink("lossy", buffer=3, on_full="drop_oldest")
    lossy.gate = anyio.Event()
    observed = Observed()
    fanout = fanout_of(lossy, observer=observed)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        first = await fanout.publish(events(1))
        await anyio.wait_all_tasks_blocked()  # the first is in the sink's hands
        with anyio.fail_after(1):
            deliveries = [await fanout.publish(events(1, start=i)) for i in range(1, 6)]
        assert [d.done for d in deliveries] == [True, True, False, False, False]
        assert observed.count("dropped", "lossy", "queue_full") == 2
        lossy.gate.set()
        with anyio.fail_after(2):
            await first.wait()
            for delivery in deliveries:
                await delivery.wait()
        tg.cancel_scope.cancel()
    assert [e.data["n"] for e in lossy.received] == [0, 3, 4, 5]


async def test_filters_route_by_type_glob_and_agent() -> None:
    """types globs and agent ids choose events; an event nobody wants is acked at once."""
    runs = RecordingSink("runs", types=("ai.duvo.run.*",))
    agent = RecordingSink("agent", agents=frozenset({AGENT}))
    fanout = fanout_of(runs, agent)
    status = make_event(1, type="ai.duvo.run.completed", agent=None)
    message = make_event(2, type="ai.duvo.message.created")
    nobody = make_event(3, type="ai.duvo.message.updated", agent="someone-else", run=RUN_B)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        assert (await fanout.publish([nobody])).done
        with anyio.fail_after(2):
            await (await fanout.publish([status, message, nobody])).wait()
        tg.cancel_scope.cancel()
    assert runs.received == [status]
    assert agent.received == [message]


async def test_delivery_waits_for_every_sink_through_retries() -> None:
    """Delivery.wait returns only after every sink acked; a retrying sink delays only that."""
    flaky, fine = RecordingSink("flaky"), RecordingSink("fine")
    flaky.fail_next = 3
    observed = Observed()
    clock = VirtualClock()
    fanout = fanout_of(flaky, fine, observer=observed, clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        delivery = await fanout.publish(events(4))
        await anyio.wait_all_tasks_blocked()
        assert fine.received == events(4) and not delivery.done  # flaky waits for its backoff
        with anyio.fail_after(5):
            await advance_until(clock, lambda: delivery.done, step=FAST_RETRY.maximum)
        tg.cancel_scope.cancel()
    assert flaky.received == fine.received == events(4)
    assert observed.calls.count(("error", "flaky", "test")) == 3
    health = [c for c in observed.calls if c[:2] == ("health", "flaky")]
    assert [c[2] for c in health] == ["ok", "retry", "ok"]


async def test_drain_delivers_what_is_buffered_then_run_returns() -> None:
    """drain() empties the buffers, closes the sinks, and run() returns; later publishes fail."""
    sink = RecordingSink("s")
    sink.delay = 0.001
    fanout = fanout_of(sink)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        for i in range(20):
            await fanout.publish(events(5, start=5 * i))
        assert await fanout.drain(anyio.current_time() + 5) == 0
        with pytest.raises(anyio.ClosedResourceError):
            await fanout.publish(events(1))
    assert sink.received == events(100)
    assert sink.closed


async def test_drain_reports_what_a_stuck_sink_still_holds() -> None:
    """At the deadline, drain() cancels a stuck sink and says how many events it left."""
    stuck = RecordingSink("stuck")
    stuck.gate = anyio.Event()
    fanout = fanout_of(stuck)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        delivery = await fanout.publish(events(7))
        assert await fanout.drain(anyio.current_time() + 0.05) == 7
    assert not delivery.done
    assert stuck.closed


async def test_sink_closed_ends_run_unwrapped() -> None:
    """stdout's SinkClosed comes out of run() as itself (not in a group), for a clean exit."""

    class Closing(RecordingSink):
        async def deliver(self, batch: object) -> None:
            raise SinkClosed("reader went away", sink=self.name)

    fanout = fanout_of(Closing("stdout"), RecordingSink("other"))
    caught: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def guard() -> None:
            try:
                await fanout.run()
            except SinkClosed as exc:  # a bare except, as the daemon's guard has
                caught.append(exc)
                tg.cancel_scope.cancel()

        tg.start_soon(guard)
        await anyio.wait_all_tasks_blocked()
        await fanout.publish(events(1))
        await anyio.sleep_forever()
    assert len(caught) == 1
    assert caught[0].sink == "stdout"  # type: ignore[attr-defined]


async def test_permanent_failure_drops_with_a_count() -> None:
    """A permanent SinkError fails the sink; its events are acked as dropped, others go on."""

    class Broken(RecordingSink):
        async def deliver(self, batch: object) -> None:
            raise SinkError("gone for good", sink=self.name, permanent=True)

    observed = Observed()
    fine = RecordingSink("fine")
    fanout = fanout_of(Broken("broken"), fine, observer=observed)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        with anyio.fail_after(2):
            await (await fanout.publish(events(3))).wait()
            await (await fanout.publish(events(2, start=3))).wait()
        assert fanout.health() == {"broken": "failed", "fine": "ok"}
        tg.cancel_scope.cancel()
    assert observed.count("dropped", "broken", "sink_failed") == 5
    assert fine.received == events(5)


async def test_reconfigure_keeps_loses_and_repeats_nothing() -> None:
    """SIGHUP reload while publishing: the unchanged sink keeps running (and is reopened), a
    removed one drains, an added one starts, a changed one hands over in order: every sink
    sees each event once."""
    kept, removed, changed = RecordingSink("kept"), RecordingSink("removed"), RecordingSink("c")
    for sink in (kept, removed, changed):
        sink.delay = 0.0005
    fanout = fanout_of(kept, removed, changed)
    published: list[Event] = []
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)

        finished = anyio.Event()

        async def publisher() -> None:
            for i in range(60):
                batch = events(3, start=3 * i)
                await fanout.publish(batch)
                published.extend(batch)
                if len(published) >= 30:
                    under_way.set()
                await anyio.lowlevel.checkpoint()
            finished.set()

        under_way = anyio.Event()
        tg.start_soon(publisher)
        await under_way.wait()
        same_kept = RecordingSink("kept")
        added = RecordingSink("added")
        changed_new = RecordingSink("c", buffer=50)
        before = len(published)
        await fanout.reconfigure([same_kept, changed_new, added])
        assert fanout.sinks == [kept, changed_new, added]
        with anyio.fail_after(10):
            await finished.wait()
        assert await fanout.drain(anyio.current_time() + 5) == 0
    assert kept.received == published
    assert kept.reopened == 1
    assert not same_kept.opened
    assert removed.closed
    assert published[: len(removed.received)] == removed.received
    assert len(removed.received) >= before
    assert changed.received + changed_new.received == published
    assert added.received == published[len(published) - len(added.received) :]
    assert len(added.received) > 0


async def test_a_large_drop_logs_a_count_and_a_few_ids_not_every_id() -> None:
    """500 events dropped at once log as one line with the count and at most ten ids."""
    from structlog.testing import capture_logs

    lossy = RecordingSink("lossy", buffer=1, on_full="drop_oldest")
    lossy.gate = anyio.Event()
    fanout = fanout_of(lossy)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        with capture_logs() as logged:
            await fanout.publish(events(501))
        tg.cancel_scope.cancel()
    drops = [entry for entry in logged if entry["event"].startswith("sink buffer full")]
    assert len(drops) == 1
    assert drops[0]["count"] == 500
    assert drops[0]["event_ids"][-1] == "... 490 more" and len(drops[0]["event_ids"]) == 11


# -- a sink that never acknowledges: isolated, spilled to disk, nothing lost -------------------


class CountingSink(RecordingSink):
    """A recording sink the test can await: :meth:`reached` returns once it holds ``n``."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._grew = anyio.Event()

    async def deliver(self, batch: Sequence[Event]) -> None:
        await super().deliver(batch)
        self._grew.set()
        self._grew = anyio.Event()

    async def reached(self, n: int) -> None:
        while len(self.received) < n:
            await self._grew.wait()


def file_sink(path: Path) -> FileSink:
    return FileSink(FileConfig(type="file", name="file", path=str(path)), clock=Clock())


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines()]


def health_of(observed: Observed, sink: str) -> list[str]:
    return [call[2] for call in observed.calls if call[:2] == ("health", sink)]


def left_on_disk(directory: Path) -> int:
    spool = Spool(str(directory), max_bytes=SPOOL_MAX_BYTES)
    spool.open()
    try:
        return spool.pending
    finally:
        spool.close()


async def test_a_sink_that_never_acks_spills_to_disk_and_the_others_go_on(tmp_path: Path) -> None:
    """A full buffer of a sink that never acknowledges spills to its spool: every publish is
    acknowledged (the file sink has all of it, the stuck one durably holds it), the stuck sink
    shows retry, and when it recovers it gets every event, in order, exactly once."""
    stuck = CountingSink("stuck", buffer=4)
    stuck.gate = anyio.Event()
    observed = Observed()
    path = tmp_path / "events.jsonl"
    fanout = FanOut(
        [stuck, file_sink(path)],
        observer=observed,
        clock=VirtualClock(),
        spool_dir=tmp_path / "state",
    )
    published = events(40)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        with anyio.fail_after(20):
            deliveries = [await fanout.publish([event]) for event in published]
            for delivery in deliveries:
                await delivery.wait()
            assert fanout.health()["stuck"] == "retry"
            assert health_of(observed, "stuck")[-1] == "retry"
            assert fanout.spooled() == 40 and fanout.pending() == 0
            assert ids_in(path) == [event.id for event in published]
            stuck.gate.set()
            await stuck.reached(40)
            assert await fanout.drain(anyio.current_time() + 10) == 0
    assert [event.id for event in stuck.received] == [event.id for event in published]
    assert health_of(observed, "stuck")[-2:] == ["retry", "ok"]
    assert left_on_disk(tmp_path / "state" / "fanout-stuck") == 0


async def test_a_sink_that_holds_events_too_long_spills_them(tmp_path: Path) -> None:
    """With room in its buffer, a sink that acknowledges nothing for stuck_after (virtual)
    seconds spills what it holds, so the publishers waiting for it are released; the events
    reach it once it recovers, each once."""
    stuck = CountingSink("stuck")
    stuck.gate = anyio.Event()
    clock = VirtualClock()
    fanout = FanOut([stuck], observer=Observed(), clock=clock, spool_dir=tmp_path, stuck_after=5)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        with anyio.fail_after(20):
            delivery = await fanout.publish(events(3))
            await clock.sleeping(2)  # the lane's guard and health watch
            clock.advance(4)
            await clock.sleeping(2)
            assert not delivery.done  # not stuck yet: a slow batch is no reason to spill
            clock.advance(1)
            await delivery.wait()
            assert fanout.spooled() == 3
            later = await fanout.publish(events(2, start=3))
            await later.wait()  # behind the spool, on disk at once
            stuck.gate.set()
            await stuck.reached(5)
            assert await fanout.drain(anyio.current_time() + 10) == 0
    assert [e.data["n"] for e in stuck.received] == [0, 1, 2, 3, 4]
    assert left_on_disk(tmp_path / "fanout-stuck") == 0


async def test_spooled_events_reach_the_sink_at_the_next_start(tmp_path: Path) -> None:
    """A stop while a sink is stuck leaves its events in its spool; the next fan-out, with a
    sink of that name, delivers them first, in order, before anything new."""
    stuck = RecordingSink("sink", buffer=2)
    stuck.gate = anyio.Event()
    first = FanOut([stuck], observer=Observed(), clock=VirtualClock(), spool_dir=tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        with anyio.fail_after(20):
            deliveries = [await first.publish(events(1, start=i)) for i in range(6)]
            for delivery in deliveries:
                await delivery.wait()
            assert first.spooled() == 6
            assert await first.drain(anyio.current_time()) == 0  # nothing held in memory only
    assert left_on_disk(tmp_path / "fanout-sink") == 6
    recovered = CountingSink("sink")
    second = FanOut([recovered], observer=Observed(), clock=VirtualClock(), spool_dir=tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(second.run)
        with anyio.fail_after(20):
            await (await second.publish(events(1, start=6))).wait()
            await recovered.reached(7)
            assert await second.drain(anyio.current_time() + 10) == 0
    assert [e.data["n"] for e in recovered.received] == list(range(7))
    assert stuck.received == []
    assert left_on_disk(tmp_path / "fanout-sink") == 0


async def test_a_stuck_sink_does_not_stop_the_daemon_polling(tmp_path: Path) -> None:
    """The daemon against the simulator over HTTP, with a sink that never acknowledges beside
    a working one: the world is followed to the end (every checkpoint committed), the working
    sink has every event, the stuck one's wait in its spool under the state directory, and it
    gets them all, in the same order, once it recovers."""
    from simfixtures import PLAIN_AGENT, run_id, scenario

    from duvo_monitor.config import parse_config
    from duvo_monitor.credentials import Secret
    from duvo_monitor.daemon import Monitor
    from duvo_monitor.demo import follow_world, running
    from duvo_monitor.simulator import DEFAULT_API_KEY, Simulator
    from duvo_monitor.sinks.memory import MemorySink

    clock = Clock.scaled(40)
    runs = [{"id": run_id(n), "agent": PLAIN_AGENT} for n in range(1, 7)]
    sim = Simulator(scenario(runs), clock=clock)
    working = MemorySink(clock, name="working")
    stuck = CountingSink("stuck", buffer=1)
    stuck.gate = anyio.Event()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            bound = await tg.start(sim.serve, "127.0.0.1", 0)
            config = parse_config(
                {
                    "api": {"base_url": bound.url, "version": "v2"},
                    "state": {"path": str(tmp_path / "state.db")},
                    "watch": {"runs": [r["id"] for r in runs]},
                    "polling": {"min_interval": "500ms", "workers": 4},
                }
            )
            monitor = Monitor(
                config,
                api_key=Secret(DEFAULT_API_KEY),
                environ={},
                clock=clock,
                sinks=[working, stuck],
                handle_signals=False,
            )
            async with running(monitor):
                assert await follow_world(monitor, sim, step=1.0)
                ids = [e.envelope["id"] for e in working.received]
                assert len(ids) > 2  # more than the stuck sink's buffer holds
                assert stuck.received == []
                assert monitor.fanout.health()["stuck"] == "retry"
                assert monitor.fanout.spooled() == len(ids)
                stuck.gate.set()
                await stuck.reached(len(ids))
            tg.cancel_scope.cancel()
    assert [e.id for e in stuck.received] == ids
    assert left_on_disk(tmp_path / "fanout-stuck") == 0
