"""The file sink: whole lines, fsync policies, logrotate, a full disk, crash leftovers."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
import structlog
from sinkkit import Observed, events, eventually

from duvo_monitor.clock import Clock
from duvo_monitor.fanout import FanOut
from duvo_monitor.sinks.backoff import Backoff
from duvo_monitor.sinks.config import FileConfig
from duvo_monitor.sinks.file import AppendFile, FileSink

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingFile(AppendFile):
    fsyncs = 0

    def fsync(self) -> None:
        type(self).fsyncs += 1
        super().fsync()


class Disk:
    """A disk that can fill up: writes then store half their bytes and fail with ENOSPC."""

    def __init__(self) -> None:
        self.full = False
        self.failures = 0

    def opener(self, path: str) -> AppendFile:
        disk = self

        class FillingFile(AppendFile):
            def write(self, data: object) -> int:
                view = memoryview(data)  # type: ignore[arg-type]
                if disk.full:
                    disk.failures += 1
                    super().write(view[: len(view) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")
                return super().write(view)

        return FillingFile(path, "ab")


def config(path: Path, **kwargs: object) -> FileConfig:
    return FileConfig(type="file", name="file", path=str(path), **kwargs)  # type: ignore[arg-type]


def lines_of(*paths: Path) -> list[bytes]:
    out: list[bytes] = []
    for path in paths:
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path} ends with a partial line"
        out.extend(data.splitlines(keepends=True))
    return out


async def test_appends_exactly_the_event_lines(tmp_path: Path) -> None:
    """Each batch lands as the events' exact bytes, whole lines, fsynced before the ack."""
    path = tmp_path / "sub" / "events.jsonl"
    CountingFile.fsyncs = 0
    sink = FileSink(config(path), clock=Clock(), opener=lambda p: CountingFile(p, "ab"))
    await sink.open()
    batches = [events(3, start=0), events(2, start=3)]
    for batch in batches:
        await sink.deliver(batch)
    await sink.close()
    assert path.read_bytes() == b"".join(e.line for b in batches for e in b)
    assert CountingFile.fsyncs == 2


async def test_fsync_never_and_interval(tmp_path: Path) -> None:
    """``never`` does not fsync; a duration fsyncs from the timer once data is that old."""
    CountingFile.fsyncs = 0
    never = FileSink(
        config(tmp_path / "n", fsync="never"), clock=Clock(), opener=lambda p: CountingFile(p, "ab")
    )
    await never.open()
    await never.deliver(events(5))
    await never.close()
    assert CountingFile.fsyncs == 0

    sink = FileSink(
        config(tmp_path / "i", fsync=0.05), clock=Clock(), opener=lambda p: CountingFile(p, "ab")
    )
    await sink.open()
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        await sink.deliver(events(5))
        assert CountingFile.fsyncs == 0  # acknowledged before the fsync
        await eventually(lambda: CountingFile.fsyncs > 0, within=5)
        tg.cancel_scope.cancel()
    await sink.close()


async def test_cuts_a_partial_line_left_by_a_crash(tmp_path: Path) -> None:
    """A half-written last line (never acknowledged) is cut off when the file is opened."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    sink = FileSink(config(path), clock=Clock())
    with structlog.testing.capture_logs() as logs:
        await sink.open()
    await sink.deliver(events(1))
    await sink.close()
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n' + events(1)[0].line
    assert any(entry["event"].startswith("cut off a partial") for entry in logs)


async def test_a_file_without_any_newline_is_emptied(tmp_path: Path) -> None:
    """Nothing but a fragment: the file becomes empty, then gets whole lines."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x" * 100_000)
    sink = FileSink(config(path), clock=Clock())
    await sink.open()
    await sink.deliver(events(1))
    await sink.close()
    assert path.read_bytes() == events(1)[0].line


async def test_logrotate_rename_while_writing_loses_no_line(tmp_path: Path) -> None:
    """A thread renames the file (logrotate ``create``) while batches are written: every line
    ends up in exactly one file, whole, and the sink keeps writing to the new file."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(config(path, fsync="never", reopen_check=0.001), clock=Clock())
    await sink.open()
    rotated: list[Path] = []
    stop = threading.Event()

    def rotate() -> None:
        while not stop.is_set() and len(rotated) < 20:
            time.sleep(0.003)
            target = tmp_path / f"events.jsonl.{len(rotated) + 1}"
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue
            rotated.append(target)

    written = [events(5, start=5 * i) for i in range(200)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, rotate)
        for batch in written:
            await sink.deliver(batch)
            await anyio.lowlevel.checkpoint()
        stop.set()
    # The last rename may come within reopen_check of the sink's last look; past it, the next
    # write looks again and goes to the new file.
    await anyio.sleep(0.01)
    await sink.deliver(events(1, start=10_000))
    await sink.close()
    assert len(rotated) >= 3
    expected = [e.line for batch in written for e in batch] + [events(1, start=10_000)[0].line]
    assert lines_of(*rotated, path) == expected
    assert path.read_bytes().endswith(expected[-1])


async def test_copytruncate_loses_no_line_and_leaves_no_hole(tmp_path: Path) -> None:
    """copytruncate between batches: the copies plus the file hold every line once, no NULs."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(config(path, reopen_check=0.001), clock=Clock())
    await sink.open()
    copies: list[Path] = []
    written = [events(3, start=3 * i) for i in range(40)]
    with structlog.testing.capture_logs() as logs:
        for index, batch in enumerate(written):
            await sink.deliver(batch)
            if index % 7 == 6:
                copy = tmp_path / f"copy.{len(copies)}"
                shutil.copyfile(path, copy)
                os.truncate(path, 0)
                copies.append(copy)
                await anyio.sleep(0.002)
    await sink.close()
    assert b"\0" not in path.read_bytes()
    assert lines_of(*copies, path) == [e.line for batch in written for e in batch]
    assert any("truncated" in entry["event"] for entry in logs)


async def test_reopen_after_sighup(tmp_path: Path) -> None:
    """reopen() makes the next write go to a fresh file at the path, at once."""
    path = tmp_path / "events.jsonl"
    sink = FileSink(config(path, reopen_check=3600.0), clock=Clock())
    await sink.open()
    await sink.deliver(events(1))
    os.rename(path, tmp_path / "old")
    await sink.deliver(events(1, start=1))  # not noticed yet: goes to the renamed file
    sink.reopen()
    await sink.deliver(events(1, start=2))
    await sink.close()
    assert lines_of(tmp_path / "old") == [e.line for e in events(2)]
    assert lines_of(path) == [events(1, start=2)[0].line]


async def test_full_disk_is_retried_and_loses_nothing(tmp_path: Path) -> None:
    """ENOSPC: the half-written batch is cut back, the sink shows retry and an ENOSPC error,
    and once space is back every line is there exactly once."""
    path = tmp_path / "events.jsonl"
    disk = Disk()
    observed = Observed()
    sink = FileSink(config(path), clock=Clock(), opener=disk.opener)
    fanout = FanOut(
        [sink], observer=observed, clock=Clock(), retry=Backoff(initial=0.01, maximum=0.02)
    )
    first, second = events(3), events(4, start=3)
    async with anyio.create_task_group() as tg:
        await tg.start(fanout.run)
        await (await fanout.publish(first)).wait()
        disk.full = True
        delivery = await fanout.publish(second)
        await eventually(lambda: disk.failures >= 3, within=5)
        assert not delivery.done
        assert fanout.health() == {"file": "retry"}
        assert path.read_bytes() == b"".join(e.line for e in first)  # no fragment visible
        disk.full = False
        with anyio.fail_after(5):
            await delivery.wait()
        assert fanout.health() == {"file": "ok"}
        assert await fanout.drain(anyio.current_time() + 5) == 0
    assert path.read_bytes() == b"".join(e.line for e in first + second)
    assert ("error", "file", "ENOSPC") in observed.calls
    assert ("health", "file", "retry") in observed.calls
    health = [call for call in observed.calls if call[0] == "health"]
    assert health[-1] == ("health", "file", "ok")
