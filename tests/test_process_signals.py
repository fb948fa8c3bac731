"""The real daemon process and its signals (issues 5 and 7): SIGTERM drains and exits 0 with the
state saved, a second signal exits at once with the state whole, SIGHUP reloads (a bad config is
refused and the old one keeps running), a runs file is re-read when it changes, and a reader
closing stdout (``| head -1``) ends the daemon cleanly."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from proc import (
    Child,
    Processes,
    Sim,
    Tail,
    behind,
    caught_up,
    daemon_config,
    integrity_check,
    read_events,
    tracebacks,
    write_config,
)

from duvo_monitor.pipeline import DRAIN_GRACE, STOP_GRACE
from duvo_monitor.simulator.scoring import score

SPEED = 10.0
# Six runs live from the start, busy for about 60 simulated seconds (6 s here).
BUSY = "generate:runs=6,active=6,duration=60,message_rate=1.0"
BUSY_SEED = 4


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    with Processes(tmp_path) as p:
        yield p


def file_sink(path: Path, name: str = "file") -> dict[str, Any]:
    return {"type": "file", "name": name, "path": str(path)}


def repeated_ids(envelopes: Sequence[Mapping[str, Any]]) -> list[str]:
    return [i for i, n in Counter(str(e["id"]) for e in envelopes).items() if n > 1]


def assert_clean(stderr: str) -> None:
    assert not tracebacks(stderr), stderr[-3000:]
    assert "Exception ignored" not in stderr, stderr[-3000:]


def outbox_rows(state: Path) -> int:
    """Events handed to sinks and not yet acknowledged, as the state file holds them."""
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "outbox" not in tables:
            return 0
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


def wait_settled(procs: Processes, sim: Sim, tail: Tail, runs: set[str] | None = None) -> None:
    """Until the world is quiet and the events show every (chosen) run as it is."""
    quiet = sim.quiet_at()

    def chosen() -> list[dict[str, Any]]:
        return [r for r in sim.runs() if runs is None or r["id"] in runs]

    procs.wait_until(
        lambda: sim.now() > quiet and caught_up(chosen(), tail.envelopes()),
        20,
        "the world to go quiet and the daemon to catch up",
        why=lambda: (sim.now() - quiet, behind(chosen(), tail.envelopes())),
    )


def test_sigterm_during_activity_drains_exits_0_and_a_restart_repeats_nothing(
    procs: Processes, tmp_path: Path
) -> None:
    """SIGTERM while events flow: exit 0 within 5 s, no traceback, nothing left unacknowledged
    in the state; the restart on that state sends no event a second time and misses none."""
    sim = procs.simulator(BUSY, speed=SPEED, seed=BUSY_SEED)
    events = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path / "config.yaml", daemon_config(tmp_path, sim, sinks=[file_sink(events)])
    )
    tail = Tail(events, sim.now)
    procs.tickers.append(tail.poll)
    first = procs.daemon(config, sim)
    procs.wait_until(lambda: len(tail.received) >= 40, 15, "40 events")
    first.signal(signal.SIGTERM)
    began = time.monotonic()
    assert procs.wait_exit(first, 5) == 0, first.stderr()[-3000:]
    assert time.monotonic() - began < 5
    assert_clean(first.stderr())
    assert first.events_logged("stopped")
    state = tmp_path / "state.db"
    assert integrity_check(state) == "ok"
    assert outbox_rows(state) == 0
    tail.poll()
    before = len(tail.received)

    second = procs.daemon(config, sim)
    wait_settled(procs, sim, tail)
    assert second.running()
    second.signal(signal.SIGTERM)
    assert procs.wait_exit(second, 5) == 0, second.stderr()[-3000:]
    assert_clean(second.stderr())

    envelopes = read_events(events)
    assert not repeated_ids(envelopes), repeated_ids(envelopes)
    s = score(sim.truth(), tail.received)
    assert not s.messages_missed and not s.messages_duplicated, s.summary()
    assert len(envelopes) > before


def fill(fd: int) -> None:
    """Fill a pipe to capacity, as a reader that stopped reading leaves it."""
    os.set_blocking(fd, False)
    try:
        while True:
            os.write(fd, b" " * 512)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)  # a flag of the open file, which the daemon will share


def start_with_a_stalled_sink(
    procs: Processes, tmp_path: Path, **stdout: Any
) -> tuple[Sim, Child, Tail]:
    """A daemon whose second sink, stdout into a full pipe nobody reads, takes nothing more."""
    sim = procs.simulator(BUSY, speed=SPEED, seed=BUSY_SEED)
    events = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path / "config.yaml",
        daemon_config(tmp_path, sim, sinks=[file_sink(events), {"type": "stdout", **stdout}]),
    )
    tail = Tail(events, sim.now)
    procs.tickers.append(tail.poll)
    _, stalled = procs.pipe(size=4096)
    daemon = procs.daemon(config, sim, stdout=stalled)
    procs.wait_until(lambda: len(tail.received) >= 10, 10, "10 events")
    procs.sleep(0.5)
    return sim, daemon, tail


@pytest.mark.parametrize("second_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_second_signal_while_the_stop_waits_on_a_stalled_sink_exits_at_once(
    procs: Processes, tmp_path: Path, second_signal: signal.Signals
) -> None:
    """A sink that cannot take its events holds the stop (its polls wait for the ack, then the
    drain); a second signal ends the process within a second, with 143/130, no traceback, and a
    state file that passes SQLite's integrity check."""
    _, daemon, _ = start_with_a_stalled_sink(procs, tmp_path)
    daemon.signal(signal.SIGTERM)
    procs.wait_until(
        lambda: daemon.events_logged("stopping") or not daemon.running(), 5, "stopping"
    )
    procs.sleep(1.0)
    assert daemon.running(), "the stop did not wait for the stalled sink"
    daemon.signal(second_signal)
    began = time.monotonic()
    code = procs.wait_exit(daemon, 3)
    took = time.monotonic() - began
    assert code == (130 if second_signal == signal.SIGINT else 143), daemon.stderr()[-3000:]
    assert took < 1.0, took
    assert daemon.events_logged("second signal; exiting now")
    assert_clean(daemon.stderr())
    assert integrity_check(tmp_path / "state.db") == "ok"


def test_sigterm_with_a_stalled_sink_gives_up_at_the_deadline_and_keeps_the_events(
    procs: Processes, tmp_path: Path
) -> None:
    """One SIGTERM while a sink never acknowledges (its one-event buffer full, so it is isolated
    at once): the daemon gives up on the blocked write at the drain deadline and exits 0 (no
    hang); what that sink never took waits in its spool on disk, not in the outbox (the
    checkpoints went on without it), and the next start, with a reader, writes it out first:
    every event after the stall, in the file sink's order, once, under its id."""
    sim, daemon, tail = start_with_a_stalled_sink(procs, tmp_path, buffer=1)
    daemon.signal(signal.SIGTERM)
    began = time.monotonic()
    code = procs.wait_exit(daemon, STOP_GRACE + DRAIN_GRACE + 3)
    took = time.monotonic() - began
    assert code == 0, daemon.stderr()[-3000:]
    assert took < STOP_GRACE + DRAIN_GRACE + 2, took
    assert daemon.events_logged("sink is not keeping up; its events wait in its spool")
    assert_clean(daemon.stderr())
    state = tmp_path / "state.db"
    assert integrity_check(state) == "ok"
    assert outbox_rows(state) == 0
    assert (tmp_path / "fanout-stdout").is_dir()
    tail.poll()
    before = [e["id"] for e in tail.envelopes()]

    # The same config, stdout now a file: the spool goes out before anything new.
    again = procs.daemon(tmp_path / "config.yaml", sim)
    procs.wait_until(
        lambda: again.events_logged("sink caught up with its spool"), 10, "the spool to drain"
    )
    again.signal(signal.SIGTERM)
    assert procs.wait_exit(again, STOP_GRACE + DRAIN_GRACE + 3) == 0
    written = [json.loads(line)["id"] for line in again.stdout().splitlines()]
    kept = [i for i in written if i in set(before)]
    assert kept, "the spooled events did not come out under their ids"
    start = before.index(kept[0])
    assert kept == before[start:], "the spool lost, repeated or reordered events"


def test_sigterm_while_staged_events_wait_for_a_stalled_sink_still_stops(
    procs: Processes, tmp_path: Path
) -> None:
    """A start that finds events staged by a crash hands them over before polling; when a sink
    still cannot take them, SIGTERM ends that wait: exit 0 within the drain deadline, and the
    events stay staged for the next start."""
    sim, daemon, _ = start_with_a_stalled_sink(procs, tmp_path)
    daemon.signal(signal.SIGKILL)
    procs.wait_exit(daemon, 5)
    state = tmp_path / "state.db"
    staged = outbox_rows(state)
    assert staged > 0

    _, stalled = procs.pipe(size=4096)
    fill(stalled)  # its reader stalled long ago
    again = procs.daemon(tmp_path / "config.yaml", sim, stdout=stalled)
    procs.wait_watching(again)
    procs.sleep(1.0)
    assert not again.events_logged("delivered events staged before a crash")
    again.signal(signal.SIGTERM)
    began = time.monotonic()
    assert procs.wait_exit(again, DRAIN_GRACE + 3) == 0, again.stderr()[-3000:]
    assert time.monotonic() - began < DRAIN_GRACE + 2
    assert_clean(again.stderr())
    assert integrity_check(state) == "ok"
    assert outbox_rows(state) == staged


def test_sighup_applies_a_changed_config_without_a_restart(
    procs: Processes, tmp_path: Path
) -> None:
    """SIGHUP with a run added to watch.runs and a second file sink: same process, the new run's
    events and the new sink start; across the reload the first sink loses and repeats nothing."""
    sim = procs.simulator(BUSY, speed=SPEED, seed=BUSY_SEED)
    run_a, run_b = sim.run_ids()[:2]
    events, added = tmp_path / "events.jsonl", tmp_path / "added.jsonl"
    path = tmp_path / "config.yaml"

    def config(runs: list[str], sinks: list[dict[str, Any]]) -> Path:
        raw = daemon_config(tmp_path, sim, sinks=sinks, discover=False, watch={"runs": runs})
        return write_config(path, raw)

    config([run_a], [file_sink(events)])
    tail = Tail(events, sim.now)
    procs.tickers.append(tail.poll)
    daemon = procs.daemon(path, sim)
    procs.wait_until(lambda: len(tail.received) >= 5, 10, "events of the first run")
    assert {e["subject"] for e in tail.envelopes()} == {run_a}

    procs.wait_until(lambda: run_b in {r["id"] for r in sim.runs()}, 5, "the second run")
    config([run_a, run_b], [file_sink(events), file_sink(added, "added")])
    daemon.signal(signal.SIGHUP)
    procs.wait_until(lambda: daemon.events_logged("config reloaded"), 5, "the reload")
    procs.wait_until(
        lambda: run_b in {e["subject"] for e in tail.envelopes()}, 10, "the added run's events"
    )
    wait_settled(procs, sim, tail, runs={run_a, run_b})
    assert daemon.running()
    daemon.signal(signal.SIGTERM)
    assert procs.wait_exit(daemon, 5) == 0
    assert_clean(daemon.stderr())
    assert len([c for c in procs.children if c.name == "daemon"]) == 1

    envelopes = read_events(events)
    assert not repeated_ids(envelopes), repeated_ids(envelopes)
    s = score(sim.truth(), tail.received, runs={run_a, run_b})
    assert not s.messages_missed and not s.messages_duplicated, s.summary()
    assert not s.final_mismatch, s.final_mismatch
    # The new sink has every event the old one got after the reload, in the same order.
    second = read_events(added)
    assert second, "the added sink got nothing"
    ids = [e["id"] for e in envelopes]
    start = ids.index(second[0]["id"])
    assert [e["id"] for e in second] == ids[start:]


def test_sighup_with_a_bad_config_is_refused_and_the_old_one_keeps_running(
    procs: Processes, tmp_path: Path
) -> None:
    """A config with an unknown key and a bad duration: SIGHUP logs an error naming the
    problems, the process keeps running and events keep flowing to the old sink."""
    sim = procs.simulator(BUSY, speed=SPEED, seed=BUSY_SEED)
    events = tmp_path / "events.jsonl"
    path = write_config(
        tmp_path / "config.yaml", daemon_config(tmp_path, sim, sinks=[file_sink(events)])
    )
    tail = Tail(events, sim.now)
    procs.tickers.append(tail.poll)
    daemon = procs.daemon(path, sim)
    procs.wait_until(lambda: len(tail.received) >= 5, 10, "events")

    bad = daemon_config(tmp_path, sim, sinks=[file_sink(events)], surprise=True)
    bad["polling"] = {"min_interval": "soon"}
    write_config(path, bad)
    daemon.signal(signal.SIGHUP)
    refused = procs.wait_until(
        lambda: daemon.events_logged("new config refused; keeping the old one"), 5, "the refusal"
    )
    assert refused[0]["level"] == "error"
    problems = " ".join(refused[0]["problems"])
    assert "surprise" in problems and "polling.min_interval" in problems, problems
    count = len(tail.received)
    procs.wait_until(lambda: len(tail.received) > count + 5, 10, "events after the refusal")
    assert daemon.running()
    daemon.signal(signal.SIGTERM)
    assert procs.wait_exit(daemon, 5) == 0
    assert_clean(daemon.stderr())


def test_an_edited_runs_file_is_picked_up_without_a_signal(
    procs: Processes, tmp_path: Path
) -> None:
    """Appending a run id to ``watch.runs_file`` makes the running daemon watch it within a
    couple of seconds, with no signal sent."""
    sim = procs.simulator(BUSY, speed=SPEED, seed=BUSY_SEED)
    run_a, run_b = sim.run_ids()[:2]
    events = tmp_path / "events.jsonl"
    runs_file = tmp_path / "runs.txt"
    runs_file.write_text(f"# watched\n{run_a}\n")
    path = write_config(
        tmp_path / "config.yaml",
        daemon_config(
            tmp_path,
            sim,
            sinks=[file_sink(events)],
            discover=False,
            watch={"runs_file": str(runs_file)},
        ),
    )
    tail = Tail(events, sim.now)
    procs.tickers.append(tail.poll)
    daemon = procs.daemon(path, sim)
    procs.wait_until(lambda: len(tail.received) >= 3, 10, "events of the first run")
    procs.sleep(0.5)
    assert {e["subject"] for e in tail.envelopes()} == {run_a}

    procs.wait_until(lambda: run_b in {r["id"] for r in sim.runs()}, 5, "the second run")
    with runs_file.open("a") as f:
        f.write(f"{run_b}\n")
    edited = time.monotonic()
    procs.wait_until(
        lambda: run_b in {e["subject"] for e in tail.envelopes()}, 5, "the added run's events"
    )
    assert time.monotonic() - edited < 3.0
    assert daemon.events_logged("runs file changed; re-reading")
    assert not daemon.events_logged("config reloaded")
    daemon.signal(signal.SIGTERM)
    assert procs.wait_exit(daemon, 5) == 0
    assert_clean(daemon.stderr())


def test_a_reader_closing_stdout_ends_the_daemon_cleanly(procs: Processes, tmp_path: Path) -> None:
    """``duvo-monitor run | head -1``: after the reader takes one line and goes away, the daemon
    exits 0 on its own, without a traceback or a "BrokenPipeError" on stderr."""
    sim = procs.simulator(BUSY, speed=SPEED, seed=BUSY_SEED)
    path = write_config(
        tmp_path / "config.yaml", daemon_config(tmp_path, sim, sinks=[{"type": "stdout"}])
    )
    read_end, write_end = procs.pipe()
    daemon = procs.daemon(path, sim, stdout=write_end)
    procs.close_fd(write_end)  # the daemon holds the only writer now
    os.set_blocking(read_end, False)
    got = bytearray()

    def a_line() -> bool:
        if select.select([read_end], [], [], 0)[0]:
            got.extend(os.read(read_end, 65536))  # head reads a buffer, keeps one line
        return b"\n" in got

    procs.wait_until(a_line, 10, "a first line on stdout")
    procs.close_fd(read_end)  # and goes away
    line = bytes(got[: got.index(b"\n") + 1])
    assert line.startswith(b"{") and line.endswith(b"\n")
    code = procs.wait_exit(daemon, 10)
    assert code == 0, daemon.stderr()[-3000:]
    assert daemon.events_logged("output closed; stopping")
    stderr = daemon.stderr()
    assert_clean(stderr)
    assert "BrokenPipe" not in stderr, stderr[-3000:]
