"""The sweeper: v2 list-runs passes, for change detection (sweeps) and discovery.

One list-runs page shows a hundred runs' status and ``updated_at`` for one request. A *sweep*
compares them with what the daemon knows and hints the runs that moved (status changed: both
probes; ``updated_at`` moved: the messages), so the per-run status probes can become a slow
safety net (see scheduler.py). *Discovery* (``watch.discover``) adds the runs the filters
select. Runs the last pass listed and this one does not are *vanished*: their own probes come
back, and if they should have been on the pages read they are probed at once (a 404 is a lost
run). How often a pass runs, and when a trusted round may start, is the pacer's decision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from duvo_monitor.api import DuvoClient, RunFilters
from duvo_monitor.context import Context
from duvo_monitor.errors import ApiError
from duvo_monitor.models import parse_time
from duvo_monitor.pacer import TICK
from duvo_monitor.scheduler import Track
from duvo_monitor.state import Forgotten
from duvo_monitor.track import FINISHED_STATUSES

log = structlog.get_logger("duvo_monitor.sweeper")

SWEEP_MAX_PAGES = 10
SWEEP_MIN_RUNS = 3
PAGE = 100


class Sweeper:
    """The list-runs loop (v2 only): sweeps, discovery, vanished runs."""

    def __init__(
        self,
        ctx: Context,
        *,
        client: DuvoClient,
        add_runs: Callable[[Sequence[str]], Awaitable[list[str]]],
        forgotten: Mapping[str, Forgotten],
    ) -> None:
        self.config = ctx.config
        self.clock = ctx.clock
        self.scheduler = ctx.scheduler
        self.budget = ctx.budget
        self.pacer = ctx.pacer
        self.telemetry = ctx.telemetry
        self.stopping = ctx.stopping
        self.wake = ctx.wake
        self.client = client
        self.add_runs = add_runs
        self.forgotten = forgotten
        self._last_sweep: float | None = None
        self._swept: dict[str, str] = {}  # run id -> updated_at as the last sweep showed it
        self._listed: set[str] = set()  # the runs the last pass showed

    def sweep_wanted(self) -> bool:
        c = self.config()
        if c.api.version != "v2" or c.polling.policy != "adaptive" or c.polling.sweep == "off":
            return False
        live = self.scheduler.live()
        if self.scheduler.sweeping:
            # Hysteresis: keep sweeping while any run is live, so runs are not handed back and
            # forth as the live count crosses the threshold.
            return c.polling.sweep == "on" or live >= 1
        return c.polling.sweep == "on" or live >= SWEEP_MIN_RUNS

    async def run(self) -> None:
        if self.config().api.version != "v2":
            return
        failures = 0
        while not self.stopping.is_set():
            discover = self.config().watch.discover  # read each pass: a reload may change it
            sweeping = self.sweep_wanted()
            self.scheduler.set_sweeping(sweeping, self.clock.monotonic())
            if not sweeping and discover is None:
                await self.clock.sleep(TICK)
                continue
            interval = self.pacer.sweep_gap(
                sweeping=sweeping,
                sweep_interval=self.config().polling.sweep_interval,
                discover_interval=None if discover is None else discover.interval,
                budget_rate=self.budget.requests_per_second(),
            )
            started = self.clock.monotonic()
            if sweeping:
                gap = None if self._last_sweep is None else started - self._last_sweep
                self._last_sweep = started
                self.telemetry.sweeps(trusted=self.scheduler.trust.trusted, interval=gap)
            try:
                await self._list_once(discover_new=discover is not None)
                failures = 0
            except ApiError as exc:
                failures += 1
                log.warning("list runs failed", error=str(exc), endpoint=exc.endpoint)
                # The runs it would have shown get their own probes back meanwhile.
                self.scheduler.sweep_failed(self.clock.monotonic())
                self.wake.set()
                interval = self.pacer.sweep_retry(interval, failures)
            await self.clock.sleep(interval)
            if sweeping and not failures and self.scheduler.trust.trusted:
                await self._drain_round(started, interval)

    async def _drain_round(self, started: float, gap: float) -> None:
        """With trusted sweeps, wait until the pacer lets the next round start (the hinted
        polls of this one have left; they are being sent meanwhile)."""
        while not self.stopping.is_set():
            now = self.clock.monotonic()
            wait = self.pacer.round_wait(
                started=started, gap=gap, now=now, hinted_backlog=self.scheduler.hinted_backlog(now)
            )
            if wait <= 0:
                return
            await self.clock.sleep(wait)

    async def _list_once(self, *, discover_new: bool) -> None:
        discover = self.config().watch.discover
        now_unix = self.clock.time()
        tracks = self.scheduler.tracks
        live_created = [
            parse_time(t.cp.created_at)
            for t in tracks.values()
            if not t.retired and t.cp.created_at
        ]
        oldest_live = min((c for c in live_created if c is not None), default=None)
        horizon = now_unix - discover.since if discover is not None else None
        filters = RunFilters()
        if discover is not None and len(discover.agents) == 1:
            filters = RunFilters(agent_id=discover.agents[0])
        pages = 0
        offset = 0
        new: list[str] = []
        listed: set[str] = set()
        oldest_seen: float | None = None
        mono = self.clock.monotonic()
        while pages < SWEEP_MAX_PAGES:
            page = await self.client.list_runs(filters, limit=PAGE, offset=offset)
            pages += 1
            oldest_on_page: float | None = None
            for summary in page.data:
                created = parse_time(summary.created_at)
                if created is not None:
                    oldest_on_page = (
                        created if oldest_on_page is None else min(oldest_on_page, created)
                    )
                listed.add(summary.id)
                track = tracks.get(summary.id)
                if track is not None:
                    self._swept_hint(track, summary.status, summary.updated_at, mono)
                elif discover_new and self._discoverable(summary, horizon):
                    new.append(summary.id)
            offset += len(page.data)
            if oldest_on_page is not None:
                oldest_seen = min(oldest_on_page, oldest_seen or oldest_on_page)
            if len(page.data) < PAGE or offset >= page.total:
                break
            # Far enough back: older than every live run and than the discovery horizon.
            floor = [x for x in (oldest_live, horizon) if x is not None]
            if oldest_on_page is not None and (not floor or oldest_on_page < min(floor)):
                break
        self.pacer.swept(pages)
        exhausted = len(page.data) < PAGE or offset >= page.total
        self._vanished(listed, oldest_seen, exhausted, mono)
        for run_id in [r for r in self._swept if r not in tracks]:
            del self._swept[run_id]  # forgotten or removed: the sweep memory follows the tracks
        if new:
            added = await self.add_runs(new)
            if added:
                log.info("discovered runs", count=len(added))

    def _vanished(
        self, listed: set[str], oldest_seen: float | None, exhausted: bool, now: float
    ) -> None:
        """Runs the last sweep showed and this one does not get their own status probes back;
        if they should have been on the pages read (not older than the oldest run listed), they
        were deleted or hidden from the key: look now (a 404 is a lost run)."""
        gone = self._listed - listed
        self._listed = listed
        for run_id in gone:
            track = self.scheduler.tracks.get(run_id)
            if track is None:
                continue
            self.scheduler.unswept(track, now)
            if track.retired:
                continue
            created = parse_time(track.cp.created_at)
            if exhausted or (
                created is not None and oldest_seen is not None and created >= oldest_seen
            ):
                self.scheduler.hint(run_id, now, status=True)
                self.wake.set()

    def _swept_hint(self, track: Track, status: str, updated_at: str, now: float) -> None:
        self.scheduler.swept(track, now, updated=parse_time(updated_at), at=self.clock.time())
        previous = self._swept.get(track.run_id, track.cp.updated_at)
        self._swept[track.run_id] = updated_at
        # As times: the list and GET run may write one instant differently.
        moved = updated_at != previous and (
            parse_time(updated_at) is None or parse_time(updated_at) != parse_time(previous)
        )
        if track.retired:
            # The list shows it: a lost run is back, a finished one resumed (and may have
            # ended again between two sweeps: its status the same, its updated_at moved).
            if (status != track.cp.status and not track.cp.lost) or moved:
                self.scheduler.hint(track.run_id, now, status=True, messages=True)
                self.wake.set()
            return
        if status != track.cp.status and track.cp.status is not None:
            self.scheduler.hint(track.run_id, now, status=True, messages=True)
            self.wake.set()
        elif previous is not None and moved:
            # Same status, but the run moved: a waiting run's request answered, or a finished
            # run resumed and ended again between two sweeps (its status event is news too).
            status_too = track.cp.status == "waiting" or track.cp.status in FINISHED_STATUSES
            self.scheduler.hint(track.run_id, now, status=status_too, messages=True)
            self.wake.set()

    def _discoverable(self, summary: Any, horizon: float | None) -> bool:
        discover = self.config().watch.discover
        if discover is None or summary.id in self.forgotten:  # retired and forgotten: not new
            return False
        if discover.agents and summary.agent_id not in discover.agents:
            return False
        if discover.sources and summary.source not in discover.sources:
            return False
        if discover.statuses and summary.status not in discover.statuses:
            return False
        created = parse_time(summary.created_at)
        return horizon is None or created is None or created >= horizon


__all__ = ["Sweeper"]
