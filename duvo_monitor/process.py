"""The process around the daemon: signals, exit codes, and threads stuck in a blocking call.

SIGTERM/SIGINT ask for a stop (polls in flight finish, the sinks drain, the state is saved, exit
0); a second one cancels everything at once (exit 130/143: SQLite commits are atomic, so the
state stays whole). SIGHUP asks for a reload. :func:`run_process` runs the daemon's main
coroutine and maps what escapes it to an exit code: 2 for a refused config, 1 for any other
:class:`~duvo_monitor.errors.DuvoMonitorError`, 130 for a KeyboardInterrupt.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.abc import TaskStatus

from duvo_monitor.errors import ConfigError, DuvoMonitorError
from duvo_monitor.sinks.base import SinkClosed

log = structlog.get_logger("duvo_monitor.process")

STUCK_THREAD_GRACE = 0.25


async def handle_signals(
    *,
    stopping: anyio.Event,
    stop: Callable[[int], None],
    abort: Callable[[int], None],
    reload: Callable[[], Awaitable[object]],
    announce_stop: Callable[[], object],
) -> None:
    """Until cancelled (or a second stop signal): SIGHUP reloads, SIGTERM/SIGINT stop, the
    second of those aborts with 130 (SIGINT) or 143 (SIGTERM)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await reload()
                continue
            if stopping.is_set():
                log.warning("second signal; exiting now", signal=signal.Signals(signum).name)
                abort(130 if signum == signal.SIGINT else 143)
                return
            log.info("stopping", signal=signal.Signals(signum).name)
            announce_stop()
            stop(0)


async def stop_on_closed_output(
    run: Callable[..., Awaitable[None]],
    *,
    stop: Callable[[int], None],
    abort: Callable[[], None],
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the fan-out (``run``); a closed stdout (``| head``) is a request to stop, not a crash.
    The closed sink can never acknowledge again: stop now (exit 0) rather than drain."""
    try:
        await run(task_status=task_status)
    except SinkClosed as exc:
        log.info("output closed; stopping", sink=exc.sink)
        stop(0)
        abort()


def run_process(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` on a fresh event loop in this process; its exit code."""
    before = set(threading.enumerate())
    try:
        code = anyio.run(main)
    except ConfigError as exc:
        log.error("config refused", problems=[str(p) for p in exc.problems])
        return 2
    except DuvoMonitorError as exc:
        log.error("daemon failed", error=str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    leave_stuck_threads(before, code)
    return code


def leave_stuck_threads(before: set[threading.Thread], code: int) -> None:
    """Exit now if a worker thread of this run is stuck in a blocking call.

    A sink write blocked on a reader that stalled (stdout into a full pipe) is abandoned when
    its task is cancelled, but the thread is not a daemon thread: the interpreter would join it
    at exit, forever, and neither a drain deadline nor a second signal could end the process.
    Everything that matters is written by now (state closed, logs flushed below).
    """
    deadline = time.monotonic() + STUCK_THREAD_GRACE
    stuck = []
    for thread in set(threading.enumerate()) - before:
        if thread.daemon or thread is threading.current_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            stuck.append(thread.name)
    if stuck:
        log.warning("a thread is stuck in a blocking call; exiting without it", threads=stuck)
        sys.stderr.flush()
        os._exit(code)


__all__ = ["handle_signals", "leave_stuck_threads", "run_process"]
