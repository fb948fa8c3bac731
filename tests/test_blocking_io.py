"""File reads never stall the event loop: a runs file that blocks on open (a FIFO with no
writer, as a stalled network mount would) is read in a worker thread while the daemon runs on."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import CollectSink
from simfixtures import scenario, wait_until

from duvo_monitor.clock import Clock
from duvo_monitor.config import parse_config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.demo import running
from duvo_monitor.simulator import DEFAULT_API_KEY, Simulator

FIRST = "b0000000-0000-4000-8000-000000000001"
SECOND = "b0000000-0000-4000-8000-000000000002"


def run(run_id: str) -> dict[str, Any]:
    return {
        "id": run_id,
        "agent": "Plain",
        "start": "-5s",
        "timeline": [{"at": "1s", "status": "running"}, {"at": "1h", "status": "completed"}],
    }


def open_for_writing(path: Path) -> int | None:
    """A write end of the FIFO if a reader has it open (or is blocked opening it), else None."""
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return None
        raise


class Writer(threading.Thread):
    """Waits for a reader blocked on the FIFO, notes whether the event loop still makes
    progress while that reader is blocked, then feeds the reader the new runs file."""

    def __init__(self, path: Path, beats: list[int]) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.beats = beats
        self.loop_ran: bool | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while (fd := open_for_writing(self.path)) is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        before = len(self.beats)
        time.sleep(0.5)  # a reader is blocked in open() all this while
        self.loop_ran = len(self.beats) > before
        os.write(fd, f"{FIRST}\n{SECOND}\n".encode())
        os.close(fd)


def release_readers(path: Path) -> None:
    """Unblock any reader still waiting on the FIFO (with an empty file), so no thread hangs."""
    for _ in range(100):
        fd = open_for_writing(path)
        if fd is None:
            return
        os.close(fd)
        time.sleep(0.01)


@pytest.mark.anyio
async def test_a_runs_file_that_blocks_does_not_stall_the_loop(tmp_path: Path) -> None:
    """The runs file is replaced by a FIFO nobody writes to: while the daemon's re-read waits
    on it, the event loop keeps running; once the FIFO is written, its runs are watched."""
    clock = Clock.scaled(20.0)
    sim = Simulator(scenario([run(FIRST), run(SECOND)]), clock=clock, rate_limit=None)
    runs_file = tmp_path / "runs.txt"
    runs_file.write_text(f"{FIRST}\n", encoding="utf-8")
    beats: list[int] = []
    writer = Writer(runs_file, beats)
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                bound = await tg.start(sim.serve, "127.0.0.1", 0)
                config = parse_config(
                    {
                        "api": {"base_url": bound.url, "version": "v2"},
                        "state": {"path": str(tmp_path / "state.db")},
                        "watch": {"runs_file": str(runs_file)},
                    }
                )
                monitor = Monitor(
                    config,
                    api_key=Secret(DEFAULT_API_KEY),
                    environ={},
                    clock=clock,
                    sinks=[CollectSink(clock)],
                    handle_signals=False,
                )
                async with running(monitor):
                    await wait_until(lambda: FIRST in monitor.scheduler.tracks)

                    async def heartbeat() -> None:
                        while True:
                            beats.append(1)
                            await anyio.sleep(0.01)

                    tg.start_soon(heartbeat)
                    runs_file.unlink()
                    os.mkfifo(runs_file)
                    writer.start()
                    await wait_until(lambda: SECOND in monitor.scheduler.tracks, within=30)
                tg.cancel_scope.cancel()
    finally:
        writer.join(timeout=35)
        with contextlib.suppress(OSError):
            release_readers(runs_file)
    assert writer.loop_ran is True
