"""The ticker: the daemon's once-a-second housekeeping.

Each tick refreshes the scheduler's Σ√λ and its probe rate (from the pacer), reports the
requests sent and the budget to the metrics, says "ready" to systemd once every run has been
polled (or after ``READY_AFTER`` seconds), and, every ``SLOW_BEATS`` ticks, updates the systemd
status line and tends the watch list (a changed runs file, retired runs to forget). Each tick also
saves the budget's request window to the state file (``save``), so that a daemon restarted after
a crash does not spend that window again. For
``duvo-monitor watch`` it also notices that every watched run has ended, and stops the daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from duvo_monitor.accounting import Accounting
from duvo_monitor.budget import Budget
from duvo_monitor.context import Context
from duvo_monitor.errors import StateError
from duvo_monitor.pacer import TICK
from duvo_monitor.sdnotify import Notifier
from duvo_monitor.state import StateStore

log = structlog.get_logger("duvo_monitor.ticker")

READY_AFTER = 60.0
SLOW_BEATS = 5


class SavedWindow:
    """The budget's request window in the state file: counted at start, saved when it changed
    (each tick, and once more at the end)."""

    def __init__(self, budget: Budget, state: StateStore) -> None:
        self.budget = budget
        self.state = state
        self._saved: list[tuple[float, int]] = []

    async def restore(self) -> None:
        restored = self.budget.restore(await self.state.sent_requests())
        if restored:
            log.info("requests of the last minute counted", requests=restored)
        self._saved = self.budget.history()

    async def save(self) -> None:
        """A failure is a warning: a restart may then spend part of the window again."""
        history = self.budget.history()
        if history == self._saved:
            return
        try:
            await self.state.save_sent_requests(history)
        except StateError as exc:
            log.warning("request window not saved", error=str(exc))
            return
        self._saved = history


class Ticker:
    def __init__(
        self,
        ctx: Context,
        *,
        accounting: Accounting,
        notifier: Notifier,
        tend: Callable[[], Awaitable[None]],
        save: Callable[[], Awaitable[None]],
        stop: Callable[[int], None],
        until_terminal: bool,
        started_at: float,
    ) -> None:
        self.config = ctx.config
        self.clock = ctx.clock
        self.scheduler = ctx.scheduler
        self.budget = ctx.budget
        self.pacer = ctx.pacer
        self.telemetry = ctx.telemetry
        self.stopping = ctx.stopping
        self.accounting = accounting
        self.notifier = notifier
        self.tend = tend
        self.save = save
        self.stop = stop
        self.until_terminal = until_terminal
        self.started_at = started_at
        self._ready = False
        self._status_text = ""

    async def run(self) -> None:
        beat = 0
        while True:
            self.accounting.requests_sent(self.pacer.tally(self.budget.sent))
            config = self.config()
            discover = config.watch.discover
            budget_rate = self.budget.requests_per_second()
            sustained = self.pacer.sustained_rate(
                budget_rate=budget_rate, reserve=config.polling.reserve
            )
            snap, mono = self.budget.snapshot(), self.clock.monotonic()
            # What the window (and the server's own count) can still take, the reserve kept:
            # spent on top of the sustained rate while polls find news (Pacer.spend_rate).
            spendable = snap.limit * (1 - config.polling.reserve)
            room = snap.remaining - snap.limit * config.polling.reserve
            spend = self.pacer.spend_rate(
                sustained=sustained, room=room, spendable=spendable, now=mono
            )
            self.budget.set_pace(spend, sustained=sustained)
            self.scheduler.rate = self.pacer.probe_rate(
                sustained=spend,
                listing=config.api.version == "v2"
                and (self.scheduler.sweeping or discover is not None),
                budget_rate=budget_rate,
                sweep_interval=config.polling.sweep_interval,
                discover_interval=None if discover is None else discover.interval,
            )
            forward = self.pacer.bring_forward(
                short=self.budget.short(),
                room=room,
                spendable=spendable,
                now=mono,
            )
            self.scheduler.recompute(mono if forward else None)
            self.telemetry.budget(snap.limit, snap.remaining, snap.used, spend)
            self._check_ready()
            await self.save()
            if beat % SLOW_BEATS == 0:
                text = (
                    f"watching {self.scheduler.live()} runs; "
                    f"{snap.used}/{snap.limit} requests in the last minute"
                )
                if text != self._status_text:
                    self.notifier.status(text)
                    self._status_text = text
                await self.tend()
            if self.until_terminal and self.all_done():
                log.info("every watched run has ended")
                self.stop(0)
            beat += 1
            await self.clock.sleep(TICK)

    def _check_ready(self) -> None:
        if self._ready or self.stopping.is_set():
            return
        tracks = self.scheduler.tracks.values()
        elapsed = self.clock.time() - self.started_at
        if all(t.polls > 0 for t in tracks) or elapsed > READY_AFTER:
            self._ready = True
            self.notifier.ready()
            log.info("ready", runs=len(self.scheduler.tracks))

    def all_done(self) -> bool:
        """Every watched run has ended (lingering or retired) and none is being polled."""
        tracks = list(self.scheduler.tracks.values())
        if not tracks:
            return True
        return all(
            not t.inflight and (t.retired or t.phase in ("lingering", "retired")) for t in tracks
        )


__all__ = ["Ticker"]
