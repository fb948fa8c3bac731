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


WAITS = [
    {"at": "1s", "status": "running"},
    {"at": "2s", "say": "Need a decision."},
    {"at": "3s", "human_request": {"type": "approval", "title": "Go ahead?"}},
]
RESUMED = [
    {"at": "1s", "status": "running"},
    {"at": "2s", "say": "Done."},
    {"at": "3s", "status": "completed"},
    {"at": "8s", "post": "One more thing, please."},
]


async def polled(runs: list[dict[str, object]], cp: Checkpoint, plan: Plan) -> PollResult:
    sim = Simulator(scenario(runs), clock=manual_clock())  # type: ignore[arg-type]
    async with serving(sim) as http:
        client = DuvoClient(http=http, base_url=str(http.base_url), api_key=Secret(KEY))
        poller = Poller(client, clock=sim.clock, config=PollingConfig())
        return await poller.poll_messages(await poller.poll_status(cp, plan), plan)


@pytest.mark.anyio
async def test_a_message_that_suggests_a_status_asks_for_it_unless_this_poll_just_read_it() -> None:
    """A human request's message (or a lifecycle one, or a user's) suggests the status changed.
    Read right after this poll's own status read, which already shows that status, it asks for
    nothing more: asking again cost every run a second poll at each human request, answer and
    start (3-6 % of the requests in the resume, wake-up and reference worlds). A poll that did
    not read the status, or read one the message does not explain (a finished run that a
    user's message resumes, read a moment before the resume took), asks for it."""
    asking = [{"id": RUN, "agent": PLAIN_AGENT, "start": "-10s", "timeline": WAITS}]
    both = await polled(asking, Checkpoint(run_id=RUN), PLAN)
    assert both.checkpoint.status == "waiting" and both.suggests == "human_request"
    assert not both.hint_status
    seen = Checkpoint(run_id=RUN, status="running", updated_at=None)
    alone = await polled(asking, seen, Plan(status=False, messages=True))
    assert alone.suggests == "human_request" and alone.hint_status

    resumed = [{"id": RUN, "agent": PLAIN_AGENT, "start": "-10s", "timeline": RESUMED}]
    after = await polled(resumed, Checkpoint(run_id=RUN), PLAN)
    assert after.checkpoint.status == "running" and after.suggests == "user"
    assert not after.hint_status
    finished = Checkpoint(run_id=RUN, status="completed")
    before = await polled(resumed, finished, Plan(status=False, messages=True))
    assert before.suggests == "user" and before.hint_status
