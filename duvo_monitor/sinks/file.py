"""The file sink: whole JSON lines appended to one file, fsynced per policy, logrotate-aware.

Whole lines only. Each batch is one ``write`` of complete lines to a descriptor opened with
``O_APPEND``. If a write fails half-way (ENOSPC, EIO) the file is truncated back to where the
batch began before the error is raised, and the fan-out retries the same batch later, so a retry
never leaves a fragment or a duplicate. If even that truncate fails, the repair is remembered
and done before the next write.

A partial last line found when the file is opened (the process died inside ``write``, or the
machine lost power before the data reached the disk) is cut off, not completed with a newline:
that batch was never acknowledged (with ``fsync: batch`` the ack comes only after fsync), so the
monitor emits those events again in full, with the same ids. Terminating the fragment instead
would leave a malformed line that every reader has to skip forever. A reader following the file
never saw the fragment as an event, because it had no newline yet.

fsync: ``batch`` fsyncs before every ack (a power loss loses no acknowledged line); a duration
fsyncs from a timer when data is that old (a power loss loses at most that much; a crash of the
process loses nothing, the kernel has the data); ``never`` leaves it to the kernel.

Rotation: every ``reopen_check`` (and at once after :meth:`FileSink.reopen`, which the daemon
calls on SIGHUP) the sink compares the path's inode with its descriptor's. A renamed or removed
file (logrotate ``create``/``nocreate``) is fsynced, closed and the path is opened anew; lines
written in between went to the renamed file, so none is lost. A file shorter than what we wrote
(logrotate ``copytruncate``) is logged and writing simply goes on at its new end, which
``O_APPEND`` guarantees without a sparse hole. copytruncate itself can lose lines written
between its copy and its truncate; that race is logrotate's, not ours, so prefer ``create`` +
``postrotate: kill -HUP``.

File operations run in a worker thread: fsync can take tens of milliseconds and a full or slow
disk must not stall the event loop.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable, Sequence

import anyio
import structlog
from anyio.abc import TaskStatus

from duvo_monitor.clock import Clock
from duvo_monitor.events import Event
from duvo_monitor.sinks.base import SinkState, SinkUnavailable
from duvo_monitor.sinks.config import FileConfig

log = structlog.get_logger("duvo_monitor.sinks.file")


class AppendFile(io.FileIO):
    """A file opened ``O_APPEND`` (mode ``ab``) that can fsync itself.

    The one seam for faults: tests subclass it to fail like a full disk or to count fsyncs.
    """

    def fsync(self) -> None:
        os.fsync(self.fileno())


Opener = Callable[[str], AppendFile]
"""Opens ``path`` for appending."""

_TAIL_CHUNK = 64 * 1024


def open_append(path: str) -> AppendFile:
    return AppendFile(path, "ab")


def errno_kind(exc: OSError) -> str:
    """A bounded label for an OSError: its errno name (``ENOSPC``), else ``OSError``."""
    return errno.errorcode.get(exc.errno or 0, "OSError")


def repair_tail(path: str) -> int:
    """Cut a partial last line off ``path``; how many bytes were removed (0 if none)."""
    try:
        handle = open(path, "r+b")  # noqa: SIM115 - closed below, in a thread
    except FileNotFoundError:
        return 0
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        handle.truncate(keep)
        os.fsync(handle.fileno())
        return size - keep


class FileSink:
    def __init__(self, config: FileConfig, *, clock: Clock, opener: Opener = open_append) -> None:
        self.name = config.name
        self.config = config
        self._path = config.path
        self._clock = clock
        self._opener = opener
        self._file: AppendFile | None = None
        self._end = 0  # where our last write ended: a shorter file was truncated under us
        self._repair_to: int | None = None
        self._dirty_since: float | None = None
        self._last_check = 0.0
        self._reopen_requested = False
        self._failing = False
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._log = log.bind(sink=self.name, path=self._path)

    backlog = 0

    @property
    def state(self) -> SinkState:
        return "retry" if self._failing else "ok"

    async def open(self) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self._open_file)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fsync timer (``fsync: <duration>``), prompt reopen after SIGHUP, idle rotation check."""
        task_status.started()
        fsync = self.config.fsync
        interval = min(fsync, self.config.reopen_check) if isinstance(fsync, float) else None
        interval = interval or self.config.reopen_check
        while True:
            with anyio.move_on_after(self._clock.wall(interval)):
                await self._wake.wait()
            self._wake = anyio.Event()
            async with self._lock:
                try:
                    await anyio.to_thread.run_sync(self._tick)
                except SinkUnavailable as exc:
                    self._log.warning("file housekeeping failed; will retry", error=str(exc))

    async def deliver(self, batch: Sequence[Event]) -> None:
        data = b"".join(event.line for event in batch)
        async with self._lock:
            await anyio.to_thread.run_sync(self._write, data)

    async def close(self) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self._close_file)

    def reopen(self) -> None:
        self._reopen_requested = True
        self._wake.set()

    # --- in the worker thread, under the lock -------------------------------------------------

    def _open_file(self) -> None:
        try:
            directory = os.path.dirname(self._path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            removed = repair_tail(self._path)
            if removed:
                self._log.warning("cut off a partial last line left by a crash", bytes=removed)
            self._file = self._opener(self._path)
            self._end = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            self._file = None
            self._failing = True
            raise SinkUnavailable(
                f"cannot open {self._path}: {exc}", sink=self.name, kind=errno_kind(exc)
            ) from exc
        self._last_check = self._clock.monotonic()
        self._reopen_requested = False

    def _close_file(self) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        try:
            if self._dirty_since is not None and self.config.fsync != "never":
                handle.fsync()
            self._dirty_since = None
        except OSError as exc:
            self._log.error("fsync before close failed", error=str(exc))
        finally:
            handle.close()

    def _check_rotation(self) -> None:
        now = self._clock.monotonic()
        due = now - self._last_check >= self.config.reopen_check
        if self._file is not None and not self._reopen_requested and not due:
            return
        self._last_check = now
        if self._file is None:
            self._open_file()
            return
        reason = "reopen requested" if self._reopen_requested else None
        own = os.fstat(self._file.fileno())
        if reason is None:
            try:
                current = os.stat(self._path)
            except FileNotFoundError:
                reason = "file removed"
            else:
                if (current.st_ino, current.st_dev) != (own.st_ino, own.st_dev):
                    reason = "file renamed"
        if reason is not None:
            self._log.info("reopening the file", reason=reason)
            self._close_file()
            self._repair_to = None
            self._open_file()
        elif own.st_size < self._end:
            self._log.warning(
                "file was truncated (copytruncate?); appending at its new end",
                size=own.st_size,
                expected=self._end,
            )
            self._end = own.st_size

    def _write(self, data: bytes) -> None:
        try:
            self._check_rotation()
            handle = self._file
            assert handle is not None
            if self._repair_to is not None:
                handle.truncate(self._repair_to)
                self._repair_to = None
            start = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            self._failing = True
            raise SinkUnavailable(
                f"cannot prepare {self._path}: {exc}", sink=self.name, kind=errno_kind(exc)
            ) from exc
        try:
            view = memoryview(data)
            while view:
                written = handle.write(view)
                if not written:
                    raise OSError(errno.EIO, "write wrote nothing")
                view = view[written:]
            if self.config.fsync == "batch":
                handle.fsync()
        except OSError as exc:
            self._failing = True
            self._undo(handle, start)
            raise SinkUnavailable(
                f"write to {self._path} failed: {exc}", sink=self.name, kind=errno_kind(exc)
            ) from exc
        if self._failing:
            self._log.info("writing works again")
        self._failing = False
        self._end = start + len(data)
        if self.config.fsync != "batch" and self._dirty_since is None:
            self._dirty_since = self._clock.monotonic()

    def _undo(self, handle: AppendFile, start: int) -> None:
        """Cut a half-written batch off; if that fails too, do it before the next write."""
        try:
            handle.truncate(start)
        except OSError:
            self._repair_to = start

    def _tick(self) -> None:
        try:
            if self._reopen_requested or self._file is not None:
                self._check_rotation()
            fsync = self.config.fsync
            if (
                isinstance(fsync, float)
                and self._file is not None
                and self._dirty_since is not None
                and self._clock.monotonic() - self._dirty_since >= fsync
            ):
                self._file.fsync()
                self._dirty_since = None
        except OSError as exc:
            raise SinkUnavailable(str(exc), sink=self.name, kind=errno_kind(exc)) from exc
