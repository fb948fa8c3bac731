"""The stdout sink: JSON lines to standard output, flushed once per batch.

Writes happen in a worker thread (``anyio.to_thread``). A pipe holds 64 KiB; when its reader
stalls (``| less`` scrolled back, a slow log shipper) ``write`` blocks, and on the event loop
that would freeze polling, metrics and every other sink. One thread hop per batch costs a few
microseconds against that.

A closed pipe (``| head -1``) raises :class:`~duvo_monitor.sinks.base.SinkClosed`. Before
raising, standard output is pointed at ``/dev/null`` so that the interpreter's own flush at exit
cannot print "Exception ignored ... BrokenPipeError" (the recipe of the ``signal`` module's docs).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import BinaryIO

import anyio
import structlog
from anyio.abc import TaskStatus

from duvo_monitor.events import Event
from duvo_monitor.sinks.base import SinkClosed, SinkState, SinkUnavailable
from duvo_monitor.sinks.config import StdoutConfig

log = structlog.get_logger("duvo_monitor.sinks.stdout")


class StdoutSink:
    def __init__(self, config: StdoutConfig, *, stream: BinaryIO | None = None) -> None:
        self.name = config.name
        self.config = config
        self._stream = stream
        self._closed = False

    backlog = 0

    @property
    def state(self) -> SinkState:
        return "failed" if self._closed else "ok"

    async def open(self) -> None:
        if self._stream is None:
            self._stream = sys.stdout.buffer

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async def deliver(self, batch: Sequence[Event]) -> None:
        if self._closed:
            raise SinkClosed("standard output is closed", sink=self.name)
        data = b"".join(event.line for event in batch)
        # abandon_on_cancel: a write stuck on a stalled reader must not hold up shutdown.
        await anyio.to_thread.run_sync(self._write, data, abandon_on_cancel=True)

    def _write(self, data: bytes) -> None:
        stream = self._stream
        assert stream is not None, "open() first"
        try:
            stream.write(data)
            stream.flush()
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) or exc.errno in (errno.EPIPE, errno.ECONNRESET):
                self._silence(stream)
                raise SinkClosed("the reader closed standard output", sink=self.name) from exc
            name = errno.errorcode.get(exc.errno or 0, "OSError")
            raise SinkUnavailable(f"write failed: {exc}", sink=self.name, kind=name) from exc
        except ValueError as exc:  # the stream object itself was closed
            self._closed = True
            raise SinkClosed("standard output is closed", sink=self.name) from exc

    def _silence(self, stream: BinaryIO) -> None:
        """Point the stream's descriptor at /dev/null: later flushes (at exit too) go nowhere."""
        self._closed = True
        try:
            fd = stream.fileno()
        except (OSError, ValueError):
            fd = -1
        if fd >= 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)

    async def close(self) -> None:
        stream = self._stream
        if stream is None or self._closed:
            return
        try:
            await anyio.to_thread.run_sync(stream.flush, abandon_on_cancel=True)
        except BrokenPipeError:
            self._silence(stream)
        except (OSError, ValueError):
            self._closed = True

    def reopen(self) -> None:
        pass
