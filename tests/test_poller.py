"""The poller over real HTTP against the simulator: it takes a checkpoint as a value, returns its
result with the new one, and never reads the state store; what was emitted before is looked up
after the poll and folded in by :meth:`Poller.refold`."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from simfixtures import KEY, PLAIN_AGENT, manual_clock, run_id, scenario, serving

import duvo_monitor.poller as poller_module
from duvo_monitor.api import DuvoClient
from duvo_monitor.config import PollingConfig
from duvo_monitor.credentials import Secret
from duvo_monitor.differ import Checkpoint, start_final_verify
from duvo_monitor.events import Change
from duvo_monitor.poller import Ending, Poller, PollResult
from duvo_monitor.scheduler import Plan
from duvo_monitor.simulator import Simulator
from duvo_monitor.state import Commit, StateStore

RUN = run_id(1)
SAID = [f"line {i}" for i in range(7)]
TIMELINE = [
    {"at": "1s", "status": "running"},
    *({"at": f"{2 + i}s", "say": text} for i, text in enumerate(SAID)),
    {"at": "20s", "status": "completed"},
]
PLAN = Plan(status=True, messages=True)


def simulator() -> Simulator:
    runs = [{"id": RUN, "agent": PLAIN_AGENT, "start": "-60s", "timeline": TIMELINE}]
    return Simulator(scenario(runs), clock=manual_clock())


async def poll(poller: Poller, cp: Checkpoint) -> tuple[PollResult, PollResult]:
    status = await poller.poll_status(cp, PLAN)
    return status, await poller.poll_messages(status, PLAN)


def test_the_poller_is_given_no_state_store() -> None:
    """Nothing the poller holds can reach SQLite: its only I/O is the Duvo client."""
    assert "state" not in inspect.signature(Poller).parameters
    assert "StateStore" not in inspect.getsource(poller_module)


@pytest.mark.anyio
async def test_a_poll_returns_its_result_and_names_the_ids_to_look_up() -> None:
    """A first poll of a run that ended reads its status and every message, returns the events
    and the new checkpoint, and lists the message ids whose earlier digests would matter."""
    sim = simulator()
    async with serving(sim) as http:
        client = DuvoClient(http=http, base_url=str(http.base_url), api_key=Secret(KEY))
        poller = Poller(client, clock=sim.clock, config=PollingConfig())
        status, result = await poll(poller, Checkpoint(run_id=RUN))
    assert [e.change for e in status.events] == [Change.STATUS]
    created = [e for e in result.events if e.change is Change.MESSAGE_CREATED]
    assert len(created) >= len(SAID)
    assert result.ending is Ending.CAUGHT_UP
    assert set(result.asked) == {e.data["message"]["id"] for e in created}
    assert result.checkpoint.status == "completed" and result.checkpoint.verified


@pytest.mark.anyio
async def test_a_re_read_emits_nothing_once_the_store_is_asked_after_the_poll(
    tmp_path: Path,
) -> None:
    """The final re-read of a run whose messages were all emitted: alone the poll would emit
    them again; with the store's digests, looked up after the poll, it emits nothing and the
    run is verified."""
    sim = simulator()
    store = await StateStore.open(tmp_path / "state.db")
    try:
        async with serving(sim) as http:
            client = DuvoClient(http=http, base_url=str(http.base_url), api_key=Secret(KEY))
            poller = Poller(client, clock=sim.clock, config=PollingConfig())
            _, first = await poll(poller, Checkpoint(run_id=RUN))
            await store.commit([Commit(checkpoint=first.checkpoint, seen=first.seen)])
            again = start_final_verify(first.checkpoint)
            status, reread = await poll(poller, again)
        assert len(reread.events) == len(first.events)
        found = await store.known(RUN, reread.asked)
        assert set(found) == set(reread.asked)
        folded = poller.refold(status, reread, found)
    finally:
        await store.close()
    assert folded.events == [] and folded.seen == []
    assert folded.checkpoint.verified and folded.checkpoint.scan_from is None
    assert folded.requests == reread.requests and folded.pages == reread.pages
