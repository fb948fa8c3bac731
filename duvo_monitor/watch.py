"""``duvo-monitor watch``: the daemon, pointed at a few runs, until each has ended; the exit code.

A person at a terminal typed it, so it answers fast where the daemon would wait patiently::

    reach the API ──(401/403: exit 2, naming where the key came from)
        │  (unreachable: one stderr line per attempt, backoff, bounded by --timeout)
        ▼
    the daemon follows the runs ──(every run ended: 0 if all completed, else 1)
        │   a run the API never showed is given --appear-timeout, then reported lost:
        │   exit 1, ``run <id> not found``
        └──(--timeout passed: exit 124, naming what was still running)

The first look is one ``GET run`` of the first id: it tells a refused key and a wrong address
apart from a run that is merely quiet, before the daemon's own backoff would hide them. The
daemon itself (:class:`~duvo_monitor.daemon.Monitor`) runs unchanged but for the grace it gives
a never-seen run (``appear_grace``).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

import anyio
import structlog
from anyio.abc import TaskStatus

from duvo_monitor.api import DuvoClient, make_http_client
from duvo_monitor.board import BoardSink
from duvo_monitor.clock import Clock
from duvo_monitor.config import Config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.errors import ApiError, Forbidden, NotFound, TransportError, Unauthorized
from duvo_monitor.sinks.base import Sink
from duvo_monitor.status_diff import NOT_FOUND_GRACE

log = structlog.get_logger("duvo_monitor.watch")

EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_TIMEOUT = 124  # what timeout(1) exits with
DEFAULT_APPEAR_TIMEOUT = NOT_FOUND_GRACE
REACH_BACKOFF = 1.0
REACH_BACKOFF_CAP = 30.0
POKE_EVERY = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchOptions:
    """What ``watch`` was asked (durations in the clock's seconds)."""

    run_ids: tuple[str, ...]
    appear_timeout: float = DEFAULT_APPEAR_TIMEOUT
    timeout: float | None = None
    key_source: str = "$DUVO_API_KEY"


class Refused(Exception):
    """The API refused the key; the message names where the key came from, never the key."""


async def reach(
    client: DuvoClient, run_id: str, *, clock: Clock, key_source: str, err: TextIO
) -> None:
    """Look at ``run_id`` once, retrying an unreachable API with backoff (a line per attempt);
    a refused key is :class:`Refused`. Any answer other than a refusal will do (a 404 is the
    appear grace's business, a 5xx the daemon's)."""
    rng = random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            await client.get_run(run_id)
            return
        except (Unauthorized, Forbidden) as exc:
            raise Refused(
                f"the API at {client.base_url} refused the key from {key_source} "
                f"(HTTP {exc.status}); check that key"
            ) from exc
        except NotFound:
            return
        except TransportError as exc:
            delay = min(REACH_BACKOFF_CAP, REACH_BACKOFF * 2.0 ** (attempt - 1))
            delay *= 0.75 + rng.random() / 2
            print(
                f"duvo-monitor: cannot reach {client.base_url} (attempt {attempt}: {exc}); "
                f"retrying in {delay:.1f}s",
                file=err,
                flush=True,
            )
            await clock.sleep(delay)
        except ApiError:
            return


async def watch(
    config: Config,
    options: WatchOptions,
    *,
    api_key: Secret,
    environ: Mapping[str, str] | None = None,
    clock: Clock,
    sinks: Sequence[Sink] | None = None,
    board: BoardSink | None = None,
    err: TextIO | None = None,
) -> int:
    """Watch ``options.run_ids`` to their end; the exit code (see the module docstring)."""
    err = err or sys.stderr
    deadline = math.inf if options.timeout is None else options.timeout
    monitor = Monitor(
        config,
        api_key=api_key,
        environ=environ or {},
        clock=clock,
        sinks=sinks,
        until_terminal=True,
        appear_grace=options.appear_timeout,
    )
    if board is not None:
        board.budget = monitor.budget.snapshot
    started = clock.monotonic()
    with anyio.move_on_after(clock.wall(deadline)) as reaching:
        async with make_http_client() as http:
            client = DuvoClient(
                http=http,
                base_url=config.api.base_url,
                api_key=api_key,
                version=config.api.version,
                team_id=config.api.team_id,
                clock=clock,
            )
            try:
                await reach(
                    client,
                    options.run_ids[0],
                    clock=clock,
                    key_source=options.key_source,
                    err=err,
                )
            except Refused as exc:
                print(f"duvo-monitor: {exc}", file=err, flush=True)
                return EXIT_REFUSED
    if reaching.cancelled_caught:
        print(
            f"duvo-monitor: timed out after {_seconds(options.timeout)} without reaching "
            f"{config.api.base_url}; still running: " + ", ".join(options.run_ids),
            file=err,
            flush=True,
        )
        return EXIT_TIMEOUT

    code = EXIT_FAILED
    timed_out = False
    async with anyio.create_task_group() as tg:

        async def follow(*, task_status: TaskStatus[Monitor]) -> None:
            nonlocal code
            code = await monitor.run(task_status=task_status)
            tg.cancel_scope.cancel()  # every run ended (or the daemon failed): done

        await tg.start(follow)
        left = deadline - (clock.monotonic() - started)
        with anyio.move_on_after(clock.wall(max(0.0, left))) as overall:
            await _hurry_the_missing(monitor, options, clock)
        if overall.cancelled_caught:
            timed_out = True
            monitor.stop(EXIT_TIMEOUT)

    if timed_out:
        running = [
            f"{run_id} ({monitor.outcome.statuses.get(run_id, 'not seen yet')})"
            for run_id in options.run_ids
            if not _ended(monitor, run_id)
        ]
        print(
            f"duvo-monitor: timed out after {_seconds(options.timeout)}; still running: "
            + (", ".join(running) or "nothing (the last run ended just now)"),
            file=err,
            flush=True,
        )
        return EXIT_TIMEOUT
    for run_id in options.run_ids:
        track = monitor.scheduler.tracks.get(run_id)
        if track is not None and track.cp.lost and track.cp.status is None:
            print(f"duvo-monitor: run {run_id} not found", file=err, flush=True)
    return code


async def _hurry_the_missing(monitor: Monitor, options: WatchOptions, clock: Clock) -> None:
    """Once the appear grace is over, look again at each run the API has not shown yet, so that
    a mistyped id is reported when its grace ends, not at its next backed-off poll. Returns
    never: the daemon stopping cancels it."""
    await clock.sleep(options.appear_timeout)
    while True:
        for run_id in options.run_ids:
            track = monitor.scheduler.tracks.get(run_id)
            if track is not None and track.cp.status is None and not track.cp.lost:
                monitor.watchlist.poke(run_id)
        await clock.sleep(POKE_EVERY)


def _ended(monitor: Monitor, run_id: str) -> bool:
    track = monitor.scheduler.tracks.get(run_id)
    return track is not None and (track.cp.lost or track.cp.terminal)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g}s"


__all__ = ["DEFAULT_APPEAR_TIMEOUT", "EXIT_TIMEOUT", "Refused", "WatchOptions", "reach", "watch"]
