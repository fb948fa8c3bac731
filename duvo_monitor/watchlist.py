"""The watch list: which runs the daemon follows, from where, and for how long.

Runs come from four places, each recorded as the run's ``source``: ``config`` (``watch.runs``),
``file`` (``watch.runs_file``, re-read when it changes), ``api`` and ``webhook`` (the control
API) and ``discover`` (the sweeper). Every addition and removal is persisted in the state store
before it is acknowledged, so a restart watches the same runs; runs removed from the config or
the runs file while the daemon was down are unwatched at the next start.

The control API sees the watch list only through :class:`duvo_monitor.control.WatchedRuns`, so
it neither imports the daemon nor touches the scheduler's tracks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import structlog

from duvo_monitor.config import Config, read_runs_file
from duvo_monitor.context import Context
from duvo_monitor.differ import Checkpoint
from duvo_monitor.scheduler import Track
from duvo_monitor.state import StateStore

log = structlog.get_logger("duvo_monitor.watchlist")

CONFIGURED = ("config", "file")


class WatchList:
    """Adds, removes and re-reads the watched runs; the control API's view of them."""

    def __init__(
        self,
        ctx: Context,
        *,
        state: StateStore,
    ) -> None:
        self.config = ctx.config
        self.clock = ctx.clock
        self.scheduler = ctx.scheduler
        self.telemetry = ctx.telemetry
        self.wake = ctx.wake
        self.state = state
        self._runs_file_mtime: float | None = None

    # -- at start ----------------------------------------------------------------------------

    async def load(self) -> None:
        """The configured runs and those stored as watched, with their checkpoints."""
        config = self.config()
        stored = {r.run_id: r for r in await self.state.load()}
        wanted = self._configured_runs(config)
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

    def _configured_runs(self, config: Config) -> dict[str, str]:
        runs = {run_id: "config" for run_id in config.watch.runs}
        if config.watch.runs_file:
            file_runs, problems = read_runs_file(config.watch.runs_file)
            for problem in problems:
                log.warning("runs file line ignored", problem=str(problem))
            for run_id in file_runs:
                runs.setdefault(run_id, "file")
            try:
                self._runs_file_mtime = os.stat(config.watch.runs_file).st_mtime
            except OSError:
                self._runs_file_mtime = None
        return runs

    # -- while running -----------------------------------------------------------------------

    async def check_runs_file(self) -> None:
        """Re-read ``watch.runs_file`` if it changed since it was last read."""
        config = self.config()
        path = config.watch.runs_file
        if not path:
            return
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return
        if mtime != self._runs_file_mtime:
            log.info("runs file changed; re-reading", path=path)
            await self.apply(config)

    async def apply(self, config: Config) -> None:
        """Follow ``config``'s runs and runs file: add the new ones, drop the removed ones."""
        wanted = self._configured_runs(config)
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
            else:
                self.scheduler.hint(run_id, now, status=True, messages=True)
            added.append(run_id)
        if added:
            await self.state.watch(added, source=source)
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
