"""The SQLite state: checkpoints, seen ids, watch list, recovery from damaged files."""

from __future__ import annotations

from pathlib import Path

import pytest

from duvo_monitor.differ import Checkpoint
from duvo_monitor.state import SENT_KEY, Commit, StateStore, _set_meta

RUN = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"


@pytest.mark.anyio
async def test_commit_and_reload(tmp_path: Path) -> None:
    """A committed checkpoint and its seen ids come back after reopening."""
    store = await StateStore.open(tmp_path / "s.db")
    cp = Checkpoint(run_id=RUN, status="running", next_index=3, tail=(("m1", "d1"),))
    await store.commit([Commit(checkpoint=cp, seen=[("m1", "d1"), ("m2", "d2")])])
    await store.close()
    store = await StateStore.open(tmp_path / "s.db")
    runs = {r.run_id: r for r in await store.load()}
    assert runs[RUN].checkpoint == cp
    assert await store.known(RUN, ["m1", "m2", "m3"]) == {"m1": "d1", "m2": "d2"}
    await store.close()


@pytest.mark.anyio
async def test_watch_and_unwatch(tmp_path: Path) -> None:
    """Runs added from outside persist with their source; unwatch keeps the row."""
    store = await StateStore.open(tmp_path / "s.db")
    await store.watch([RUN, OTHER], source="api")
    await store.unwatch([OTHER])
    runs = {r.run_id: r for r in await store.load()}
    assert runs[RUN].watched and runs[RUN].source == "api"
    assert not runs[OTHER].watched
    await store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
async def test_damaged_file_is_recovered(tmp_path: Path, damage: str) -> None:
    """An empty, garbage or truncated state file is moved aside and the daemon starts."""
    path = tmp_path / "s.db"
    store = await StateStore.open(path)
    for i in range(200):
        run = f"{i:08x}-1111-4111-8111-111111111111"
        await store.commit([Commit(checkpoint=Checkpoint(run_id=run, next_index=i))])
    await store.close()
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.write_bytes(data[: len(data) // 2])
    store = await StateStore.open(path)
    runs = await store.load()
    assert isinstance(runs, list)
    await store.commit([Commit(checkpoint=Checkpoint(run_id=RUN))])
    await store.close()
    if damage != "empty":
        assert store.recovered, "the damage is reported"
        assert list(tmp_path.glob("s.db.corrupt-*"))


@pytest.mark.anyio
async def test_unreadable_checkpoint_starts_that_run_afresh(tmp_path: Path) -> None:
    """One bad checkpoint row does not cost the others."""
    import sqlite3

    path = tmp_path / "s.db"
    store = await StateStore.open(path)
    await store.commit([Commit(checkpoint=Checkpoint(run_id=RUN, next_index=7))])
    await store.commit([Commit(checkpoint=Checkpoint(run_id=OTHER, next_index=9))])
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET checkpoint = 'not json' WHERE run_id = ?", (OTHER,))
    conn.commit()
    conn.close()
    store = await StateStore.open(path)
    runs = {r.run_id: r for r in await store.load()}
    assert runs[RUN].checkpoint.next_index == 7
    assert runs[OTHER].checkpoint == Checkpoint(run_id=OTHER)
    await store.close()


@pytest.mark.anyio
async def test_outbox_survives_a_crash_and_commit_clears_it(tmp_path: Path) -> None:
    """Staged events outlive the process until their checkpoint is committed."""
    from duvo_monitor.events import Change, Event

    event = Event.build(
        kind=Change.MESSAGE_CREATED,
        key="m1",
        type="ai.duvo.message.created",
        run_id=RUN,
        agent_id=None,
        time="2026-01-01T00:00:00.000Z",
        change_time=None,
        data={"run_id": RUN, "agent_id": None},
    )
    store = await StateStore.open(tmp_path / "s.db")
    commit = Commit(checkpoint=Checkpoint(run_id=RUN, next_index=1), seen=[("m1", "d1")])
    await store.stage(commit, [event.line])
    await store.close()  # a crash before the acknowledgement
    store = await StateStore.open(tmp_path / "s.db")
    staged = await store.staged()
    assert len(staged) == 1
    again = Event.from_line(staged[0][1][0])
    assert again.id == event.id and again.line == event.line
    assert staged[0][0] == commit
    await store.commit([staged[0][0]])
    assert await store.staged() == []
    assert await store.known(RUN, ["m1"]) == {"m1": "d1"}
    await store.close()


@pytest.mark.anyio
async def test_the_request_window_survives_a_restart_and_a_bad_value_counts_nothing(
    tmp_path: Path,
) -> None:
    """What the budget saved of its window comes back after reopening; a value that does not
    read as one is not counted (a warning), never a failed start."""
    store = await StateStore.open(tmp_path / "s.db")
    assert await store.sent_requests() == []
    await store.save_sent_requests([(1764000000.0, 12), (1764000001.0, 3)])
    await store.close()
    store = await StateStore.open(tmp_path / "s.db")
    assert await store.sent_requests() == [(1764000000.0, 12), (1764000001.0, 3)]
    for bad in ('{"a": 1}', "[[1, 2, 3]]", "not json", '[["x", 1]]'):
        await store._run(_set_meta, SENT_KEY, bad)
        assert await store.sent_requests() == [], bad
    await store.close()
