"""The watch list: which runs the daemon follows, from where, and for how long.

Runs come from four places, each recorded as the run's ``source``: ``config`` (``watch.runs``),
``file`` (``watch.runs_file``, re-read when it changes), ``api`` and ``webhook`` (the control
API) and ``discover`` (the sweeper). Every addition and removal is persisted in the state store
before it is acknowledged, so a restart watches the same runs; runs removed from the config or
the runs file while the daemon was down are unwatched at the next start.

Discovered runs are forgotten ``polling.forget_after`` after they retired: the track goes, and
so do its rows in the state file; a small *forgotten* entry (see state.py) stays while discovery
could list the run again, so that a sweep does not discover it a second time (a run resumed after
that is not followed: ``polling.linger`` is the time a finished run is watched for a resume,
and ``forget_after`` starts only when it is over). Runs from the config, the runs file
or the control API are never forgotten: someone asked for them by name.

Files are read in a worker thread within ``FILE_DEADLINE`` seconds (a runs file on a stalled
network mount must not stall the loop); one that cannot be read in time changes nothing.

The control API sees the watch list only through :class:`duvo_monitor.control.WatchedRuns`, so
it neither imports the daemon nor touches the scheduler's tracks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import anyio
import structlog

from duvo_monitor.config import Config, read_runs_file
from duvo_monitor.context import Context
from duvo_monitor.differ import Checkpoint
from duvo_monitor.errors import ConfigProblem
from duvo_monitor.models import parse_time
from duvo_monitor.pipeline import Outcome
from duvo_monitor.scheduler import Track
from duvo_monitor.state import Forgotten, StateStore

log = structlog.get_logger("duvo_monitor.watchlist")

CONFIGURED = ("config", "file")
FILE_DEADLINE = 5.0
FORGET_MARGIN = 60.0
T = TypeVar("T")


class WatchList:
    """Adds, removes and re-reads the watched runs; the control API's view of them."""

    def __init__(
        self,
        ctx: Context,
        *,
        state: StateStore,
        outcome: Outcome,
    ) -> None:
        self.config = ctx.config
        self.clock = ctx.clock
        self.scheduler = ctx.scheduler
        self.telemetry = ctx.telemetry
        self.wake = ctx.wake
        self.state = state
        self.outcome = outcome
        self.forgotten: dict[str, Forgotten] = {}
        self._retired_at: dict[str, float] = {}  # discovered runs, since when they are retired
        self._runs_file_mtime: float | None = None

    # -- at start ----------------------------------------------------------------------------

    async def load(self) -> None:
        """The configured runs and those stored as watched, with their checkpoints."""
        config = self.config()
        stored = {r.run_id: r for r in await self.state.load()}
        # In place: the sweeper holds this mapping.
        self.forgotten.update({f.run_id: f for f in await self.state.forgotten()})
        wanted = await self._configured_runs(config) or {}
        now = self.clock.monotonic()
        for run_id, source in wanted.items():
            stored_run = stored.get(run_id)
            cp = stored_run.checkpoint if stored_run else Checkpoint(run_id=run_id)
            self.scheduler.add(cp, now, source=source)
        for source in CONFIGURED:
            await self.state.watch([r for r, s in wanted.items() if s == source], source=source)
        for run_id, stored_run in stored.items():
            if run_id in wanted or not stored_run.watched:
                continue
            if stored_run.source in CONFIGURED:
                # Removed from the config since the last start: no longer watched.
                await self.state.unwatch([run_id])
                continue
            self.scheduler.add(stored_run.checkpoint, now, source=stored_run.source)
        log.info(
            "watching",
            runs=len(self.scheduler.tracks),
            api=config.api.version,
            policy=config.polling.policy,
            budget=config.api.requests_per_minute,
        )

    async def _configured_runs(self, config: Config) -> dict[str, str] | None:
        """The runs named by ``config`` and its runs file; None if the file could not be read
        in time."""
        runs = {run_id: "config" for run_id in config.watch.runs}
        path = config.watch.runs_file
        if path:
            read = await _in_thread(_read_runs_file, path)
            if read is None:
                log.warning("runs file not read in time; the watch list is unchanged", path=path)
                return None
            file_runs, problems, self._runs_file_mtime = read
            for problem in problems:
                log.warning("runs file line ignored", problem=str(problem))
            for run_id in file_runs:
                runs.setdefault(run_id, "file")
        return runs

    # -- while running -----------------------------------------------------------------------

    async def check_runs_file(self) -> None:
        """Re-read ``watch.runs_file`` if it changed since it was last read."""
        config = self.config()
        path = config.watch.runs_file
        if not path:
            return
        mtime = await _in_thread(_mtime, path)
        if mtime is not None and mtime != self._runs_file_mtime:
            log.info("runs file changed; re-reading", path=path)
            await self.apply(config)

    async def apply(self, config: Config) -> None:
        """Follow ``config``'s runs and runs file: add the new ones, drop the removed ones."""
        wanted = await self._configured_runs(config)
        if wanted is None:
            return
        current = {
            run_id: t.source
            for run_id, t in self.scheduler.tracks.items()
            if t.source in CONFIGURED
        }
        gone = [r for r in current if r not in wanted]
        if gone:
            await self.remove_runs(gone)
        for source in CONFIGURED:
            await self.add_runs([r for r, s in wanted.items() if s == source], source=source)

    async def add_runs(self, run_ids: Sequence[str], *, source: str) -> list[str]:
        """Watch more runs (control API, webhooks, discovery); persisted. Returns the new ones."""
        added: list[str] = []
        now = self.clock.monotonic()
        for run_id in run_ids:
            track = self.scheduler.tracks.get(run_id)
            if track is not None and not track.retired:
                continue
            if track is None:
                self.scheduler.add(Checkpoint(run_id=run_id), now, source=source)
                self.forgotten.pop(run_id, None)
            else:
                self.scheduler.hint(run_id, now, status=True, messages=True)
            added.append(run_id)
        if added:
            await self.state.watch(added, source=source)
            await self.state.unforget(added)
            self.wake.set()
        return added

    async def remove_runs(self, run_ids: Sequence[str]) -> list[str]:
        """Stop watching these runs; persisted. Returns the ones that were watched."""
        removed = []
        for run_id in run_ids:
            track = self.scheduler.remove(run_id)
            if track is not None:
                self.telemetry.run_status(run_id, track.cp.agent_id, None)
                removed.append(run_id)
        if removed:
            await self.state.unwatch(removed)
        return removed

    def poke(self, run_id: str) -> bool:
        """Poll this run now (a Duvo webhook said something happened)."""
        hinted = self.scheduler.hint(run_id, self.clock.monotonic(), status=True, messages=True)
        self.wake.set()
        return hinted

    async def forget_retired(self) -> None:
        """Forget the discovered runs retired for ``polling.forget_after``, and the forgotten
        entries that discovery can no longer list (created before its horizon)."""
        config = self.config()
        now = self.clock.monotonic()
        due: list[Forgotten] = []
        retired_at, self._retired_at = self._retired_at, {}
        for run_id, track in list(self.scheduler.tracks.items()):
            if track.source != "discover" or not track.retired or track.inflight:
                continue
            since = retired_at.get(run_id, now)
            if now - since < config.polling.forget_after:
                self._retired_at[run_id] = since
                continue
            self.scheduler.remove(run_id)
            self.outcome.forget(run_id)
            cp = track.cp
            # Created no later than now: an unknown creation time keeps the entry long enough.
            created = parse_time(cp.created_at) or self.clock.time()
            entry = Forgotten(run_id=run_id, created_at=created, updated_at=cp.updated_at)
            self.forgotten[run_id] = entry
            due.append(entry)
        await self.state.forget(due)
        discover = config.watch.discover
        # A margin past the horizon: a sweep that started a little earlier still lists them.
        horizon = None if discover is None else self.clock.time() - discover.since - FORGET_MARGIN
        stale = [
            f.run_id
            for f in self.forgotten.values()
            if horizon is None or f.created_at is None or f.created_at < horizon
        ]
        for run_id in stale:
            del self.forgotten[run_id]
        await self.state.unforget(stale)
        if due:
            log.info("forgot retired runs", count=len(due), forgotten=len(self.forgotten))

    async def tend(self) -> None:
        """The ticker's slow beat: a changed runs file, runs to forget."""
        await self.check_runs_file()
        await self.forget_retired()

    # -- what the control API reads ----------------------------------------------------------

    @property
    def webhook_path(self) -> str | None:
        return self.config().control.webhook_path

    def knows(self, run_id: str) -> bool:
        return run_id in self.scheduler.tracks

    def track(self, run_id: str) -> Track | None:
        return self.scheduler.tracks.get(run_id)

    def tracks(self) -> Iterable[Track]:
        return sorted(self.scheduler.tracks.values(), key=lambda t: t.run_id)

    def monotonic(self) -> float:
        return self.clock.monotonic()


__all__ = ["WatchList"]


def _read_runs_file(path: str) -> tuple[list[str], list[ConfigProblem], float | None]:
    runs, problems = read_runs_file(path)
    return runs, problems, _mtime(path)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


async def _in_thread(fn: Callable[[str], T], path: str) -> T | None:
    """``fn(path)`` in a worker thread; None if it takes longer than ``FILE_DEADLINE``."""
    with anyio.move_on_after(FILE_DEADLINE):
        return await anyio.to_thread.run_sync(fn, path, abandon_on_cancel=True)
    return None
