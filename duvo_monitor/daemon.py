"""The topology: one root task group wiring the API client, the scheduler, the workers, the
fan-out to the sinks, the state store, the listeners and the signals.

::

    dispatcher ──(due runs)──▶ workers (N) ──▶ poller (budget-gated API calls) ──▶ differ
                                   │
                                   └─▶ fan-out ──▶ sink buffers ──▶ sinks ──ack──▶ commit checkpoint
    lister (v2 sweeps, discovery) ──hints──▶ scheduler ◀──hints── Duvo webhooks (control API)
    ticker: Σ√λ, budget gauges, systemd STATUS, runs_file changes, "all terminal" for `watch`

A worker holds its run until the run's events are acknowledged by every sink and its checkpoint
is committed, so a run is never polled twice at once and a checkpoint never runs ahead of
delivery. SIGTERM/SIGINT stop the dispatcher, let polls in flight finish (bounded by the grace
period), drain the sinks, save, exit 0; a second signal cancels everything at once (SQLite
commits are atomic, so the state stays whole). SIGHUP reloads the config.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from prometheus_client import CollectorRegistry

import duvo_monitor.httpserver as httpserver
from duvo_monitor.api import DuvoClient, Observation, RunFilters, make_http_client
from duvo_monitor.budget import URGENT, Budget
from duvo_monitor.clock import Clock
from duvo_monitor.config import Config, load_config, read_runs_file
from duvo_monitor.credentials import Secret
from duvo_monitor.differ import NOT_FOUND_GRACE, Checkpoint
from duvo_monitor.errors import (
    ApiError,
    ConfigError,
    ConfigProblem,
    DuvoMonitorError,
    Forbidden,
    SinkError,
    Unauthorized,
)
from duvo_monitor.events import TYPE_PREFIX, Event
from duvo_monitor.fanout import FanOut
from duvo_monitor.logs import configure_logging
from duvo_monitor.metrics import Telemetry, serve_metrics
from duvo_monitor.models import TERMINAL_STATUSES, parse_time
from duvo_monitor.poller import Poller, PollResult
from duvo_monitor.scheduler import Scheduler, Track
from duvo_monitor.sdnotify import Notifier, watchdog_loop
from duvo_monitor.sinks.base import Sink, SinkClosed
from duvo_monitor.sinks.build import build_sinks
from duvo_monitor.state import Commit, StateStore

log = structlog.get_logger("duvo_monitor.daemon")

STOP_GRACE = 10.0
DRAIN_GRACE = 10.0
TICK = 1.0
DISPATCH_STEP = 0.02
SWEEP_SHARE = 0.25
MAX_SWEEP_GAP = 15.0
RATE_WINDOW = 10.0
SWEEP_MAX_PAGES = 10
SWEEP_MIN_RUNS = 3
STUCK_THREAD_GRACE = 0.25


@dataclass(slots=True)
class Outcome:
    """How the watched runs ended, for ``duvo-monitor watch``'s exit code."""

    statuses: dict[str, str] = field(default_factory=dict)

    def exit_code(self) -> int:
        if not self.statuses:
            return 1
        return 0 if all(s == "completed" for s in self.statuses.values()) else 1


class Monitor:
    """The daemon. ``await monitor.run()`` until stopped; returns the process exit code."""

    def __init__(
        self,
        config: Config,
        *,
        api_key: Secret,
        environ: Mapping[str, str],
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        transport: Any = None,
        sinks: Sequence[Sink] | None = None,
        config_path: str | None = None,
        until_terminal: bool = False,
        handle_signals: bool = True,
        notifier: Notifier | None = None,
        control_token: Secret | None = None,
        appear_grace: float = NOT_FOUND_GRACE,
    ) -> None:
        self.config = config
        self.appear_grace = appear_grace  # how long a never-seen run may 404 before it is lost
        self.api_key = api_key
        self.environ = environ
        self.clock = clock or Clock()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.transport = transport
        self._given_sinks = sinks
        self.config_path = config_path
        self.until_terminal = until_terminal
        self.handle_signals = handle_signals
        self.notifier = notifier or Notifier.from_environ(environ)
        self.control_token = control_token
        if config.control.listen and control_token is None:
            raise ConfigError(
                [
                    ConfigProblem(
                        "control.listen", "the control API needs a token (control.token_env)"
                    )
                ]
            )
        self.telemetry = Telemetry(
            self.registry,
            agent_label=config.metrics.agent_label,
            tool_cap=config.metrics.tool_cap,
            agents=config.watch.discover.agents if config.watch.discover else (),
            clock=self.clock,
        )
        self.budget = Budget(config.api.requests_per_minute, clock=self.clock)
        self.scheduler = Scheduler(config.polling)
        self.outcome = Outcome()
        self.started_at = self.clock.time()
        self.stopping = anyio.Event()
        self._wake = anyio.Event()
        self._ready = False
        self._sweep_pages = 1
        self._rate_factor = 1.0
        self._routine_rate = 0.0  # requests a second sent by routine (unhinted) polls, smoothed
        self._last_sweep: float | None = None
        self._sent_reported = dict(self.budget.sent)
        self._tallied_at = self.clock.monotonic()
        self._swept: dict[str, str] = {}
        self._listed: set[str] = set()  # the runs the last sweep showed
        self._runs_file_mtime: float | None = None
        self._status_text = ""
        self._exit_code = 0
        self._root: TaskGroup | None = None
        self.running = False
        self.bound: dict[str, httpserver.Bound] = {}
        # Set in run():
        self.state: StateStore
        self.client: DuvoClient
        self.fanout: FanOut
        self.poller: Poller

    # -- life cycle --------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Monitor] = anyio.TASK_STATUS_IGNORED) -> int:
        config = self.config
        self.running = True
        self.state = await StateStore.open(config.state.path)
        http = make_http_client(transport=self.transport)
        try:
            self.client = DuvoClient(
                http=http,
                base_url=config.api.base_url,
                api_key=self.api_key,
                version=config.api.version,
                team_id=config.api.team_id,
                clock=self.clock,
                gate=None if config.polling.policy == "fixed" else self.budget.acquire,
                observers=(self._observe,),
            )
            self.poller = Poller(
                self.client,
                self.state,
                clock=self.clock,
                config=config.polling,
                not_found_grace=self.appear_grace,
            )
            sinks = (
                list(self._given_sinks)
                if self._given_sinks is not None
                else self._build_sinks(config)
            )
            self.fanout = FanOut(sinks, observer=self.telemetry, clock=self.clock)
            await self._load_watch_list()
            async with anyio.create_task_group() as root:
                self._root = root
                await root.start(self._fanout_guard)
                if config.metrics.listen:
                    host, port = httpserver.parse_listen(config.metrics.listen)
                    self.bound["metrics"] = await root.start(
                        _serve_metrics, self.telemetry, host, port, self.clock
                    )
                if config.control.listen:
                    from duvo_monitor.control import serve_control

                    host, port = httpserver.parse_listen(config.control.listen)
                    self.bound["control"] = await root.start(
                        serve_control, self, host, port, self.control_token
                    )
                if self.handle_signals:
                    root.start_soon(self._signals)
                root.start_soon(watchdog_loop, self.notifier)
                root.start_soon(self._ticker)
                root.start_soon(self._lister)
                await self._redeliver_staged()
                task_status.started(self)
                await self._poll_until_stopped()
                await self._drain()
                root.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self.notifier.stopping()
                await http.aclose()
                await self.state.close()
            self.running = False
        log.info("stopped", exit_code=self._exit_code)
        if self.until_terminal and self._exit_code == 0:
            return self.outcome.exit_code()
        return self._exit_code

    def stop(self, exit_code: int = 0) -> None:
        if not self.stopping.is_set():
            self._exit_code = exit_code
            self.stopping.set()
            self._wake.set()

    def _build_sinks(self, config: Config) -> list[Sink]:
        return build_sinks(
            list(config.sinks),
            state_dir=config.state_dir,
            environ=self.environ,
            clock=self.clock,
            observer=self.telemetry,
        )

    async def _fanout_guard(self, *, task_status: TaskStatus[None]) -> None:
        """Run the fan-out; a closed stdout (``| head``) is a request to stop, not a crash."""
        try:
            await self.fanout.run(task_status=task_status)
        except SinkClosed as exc:
            log.info("output closed; stopping", sink=exc.sink)
            self.stop(0)
            # The closed sink can never acknowledge again: stop now rather than drain.
            if self._root is not None:
                self._root.cancel_scope.cancel()

    async def _poll_until_stopped(self) -> None:
        send, receive = anyio.create_memory_object_stream[Track](0)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as polling:
                for _ in range(self.config.polling.workers):
                    polling.start_soon(self._worker, receive.clone())
                receive.close()
                await self._dispatch(send)
                # Stopped: polls in flight get a grace period to deliver and commit.
                scope.deadline = anyio.current_time() + STOP_GRACE

    async def _drain(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                left = await self.fanout.drain(anyio.current_time() + DRAIN_GRACE)
            except SinkError as exc:
                log.error("sinks could not drain", error=str(exc))
                return
            if left:
                log.warning("sinks still held events at exit", left=left)

    # -- dispatching -------------------------------------------------------------------------

    async def _dispatch(self, send: MemoryObjectSendStream[Track]) -> None:
        async with send:
            paced = self.config.polling.policy != "fixed"
            while not self.stopping.is_set():
                if paced and (held := self._budget_hold()) > 0:
                    # Hand out a poll only when the budget can send it: the choice of which run
                    # to poll is made when the request can leave, not queued behind older ones.
                    self._wake = anyio.Event()
                    with anyio.move_on_after(self.clock.wall(held)):
                        await self._wake.wait()
                    continue
                now = self.clock.monotonic()
                track = self.scheduler.pop_due(now)
                if track is None:
                    wait = min(self.scheduler.next_due() - now, TICK)
                    if wait > 0:
                        self._wake = anyio.Event()
                        with anyio.move_on_after(self.clock.wall(wait)):
                            await self._wake.wait()
                    continue
                self.telemetry.poll_lag(max(0.0, now - track.due_popped))
                await send.send(track)

    def _budget_hold(self) -> float:
        """How long the dispatcher should hold the next poll (0: hand it out now)."""
        wait = self.budget.wait_time()
        if wait > 0:
            return min(wait, TICK)
        return DISPATCH_STEP if self.budget.waiting else 0.0

    async def _worker(self, receive: MemoryObjectReceiveStream[Track]) -> None:
        async with receive:
            async for track in receive:
                await self._poll_one(track)

    async def _poll_one(self, track: Track) -> None:
        now = self.clock.monotonic()
        plan = self.scheduler.plan(track, now)
        urgent = URGENT.set(plan.urgent)
        try:
            result = await self.poller.poll(
                track.cp, plan, flush=lambda early: self._deliver(track, early)
            )
            error_delay = result.error_delay
            if self.until_terminal and isinstance(result.error, Unauthorized | Forbidden):
                # `watch` is interactive: a key that is refused will not get better by waiting.
                log.error("the API refused the key", error=str(result.error))
                self.stop(1)
            await self._deliver(track, result)
        except (SinkError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            log.error(
                "delivery failed; the run will be polled again",
                run_id=track.run_id,
                agent_id=track.cp.agent_id,
                error=str(exc),
            )
            error_delay = 5.0
            result = PollResult(checkpoint=track.cp)
        finally:
            URGENT.reset(urgent)
        self._weigh_sweep(track, result)
        done = self.clock.monotonic()
        was_live = not track.retired
        self.scheduler.done(
            track,
            done,
            plan=plan,
            status_news=result.status_news,
            message_news=result.message_news,
            status_changed=result.status_changed,
            hint_status=result.hint_status,
            more_messages=result.more_messages,
            error_delay=error_delay,
        )
        if was_live and track.retired:
            self._retired(track)
        self._wake.set()

    def _weigh_sweep(self, track: Track, result: PollResult) -> None:
        """Did the last sweep's updated_at already reflect the messages this poll found?"""
        if track.swept_time is None:
            return
        for event in result.events:
            if event.type != f"{TYPE_PREFIX}message.created" or event.change_time is None:
                continue
            if event.change_time < track.swept_time - 1.0:
                shown = track.swept_updated
                self.scheduler.trust.observe(
                    shown is not None and shown >= event.change_time - 1e-3
                )

    async def _deliver(self, track: Track, result: PollResult) -> None:
        """Stage, publish, wait for every sink's ack, then commit: the checkpoint follows
        delivery, and the staged copy covers a crash in between (see state.py)."""
        commit = Commit(checkpoint=result.checkpoint, seen=result.seen)
        if result.events:
            await self.state.stage(commit, [e.line for e in result.events])
            now = self.clock.time()
            for event in result.events:
                self._account(event, now)
            delivery = await self.fanout.publish(result.events)
            await delivery.wait()
        if result.checkpoint != track.cp or result.seen or result.events:
            started = self.clock.monotonic()
            await self.state.commit([commit])
            self.telemetry.state_commit(self.clock.monotonic() - started)
        track.cp = result.checkpoint
        cp = track.cp
        if cp.status is not None:
            self.telemetry.run_status(cp.run_id, cp.agent_id, cp.status)
            self.outcome.statuses[cp.run_id] = cp.status

    async def _redeliver_staged(self) -> None:
        """Events handed to the sinks before a crash but never acknowledged: again, same ids.

        A stop ends the wait (a sink that still cannot take them would hold it forever); what
        was not acknowledged stays staged for the next start.
        """
        staged = await self.state.staged()
        async with anyio.create_task_group() as redelivery:

            async def stop_waiting() -> None:
                await self.stopping.wait()
                log.warning("stopped before the staged events were delivered; they stay staged")
                redelivery.cancel_scope.cancel()

            redelivery.start_soon(stop_waiting)
            for commit, lines in staged:
                events = [Event.from_line(line) for line in lines]
                delivery = await self.fanout.publish(events)
                await delivery.wait()
                await self.state.commit([commit])
                track = self.scheduler.tracks.get(commit.checkpoint.run_id)
                if track is not None:
                    track.cp = commit.checkpoint
            redelivery.cancel_scope.cancel()
        if staged and not self.stopping.is_set():
            log.info(
                "delivered events staged before a crash",
                runs=len(staged),
                events=sum(len(lines) for _, lines in staged),
            )

    def _retired(self, track: Track) -> None:
        cp = track.cp
        if cp.lost:
            self.outcome.statuses[cp.run_id] = "lost"
        self.telemetry.run_status(cp.run_id, cp.agent_id, None)
        log.info(
            "run retired", run_id=cp.run_id, agent_id=cp.agent_id, status=cp.status, lost=cp.lost
        )

    def _account(self, event: Event, now: float) -> None:
        """Run metrics from the events themselves: what is counted is what was emitted."""
        t = self.telemetry
        data = event.data
        lag = 0.0 if event.change_time is None else max(0.0, now - event.change_time)
        t.event_emitted(event.type, lag)
        if event.type == f"{TYPE_PREFIX}message.created":
            message = data["message"]
            t.message(message["role"], message["type"])
            result = message.get("tool_result")
            if result is not None:
                t.tool_call(
                    result.get("name") or "unknown",
                    "error" if result.get("error") else "ok",
                    result.get("duration_seconds"),
                )
        elif event.type == f"{TYPE_PREFIX}human_request.opened":
            t.human_request_opened(event.subject, parse_time(data["request"].get("created_at")))
        elif event.type == f"{TYPE_PREFIX}human_request.resolved":
            t.human_request_resolved(event.subject, data.get("waited_seconds"))
        elif (
            event.type.startswith(f"{TYPE_PREFIX}run.")
            and "to" in data
            and data["to"] in TERMINAL_STATUSES
        ):
            t.run_finished(data.get("agent_id"), data["to"], data.get("duration_seconds"))

    def _observe(self, observation: Observation) -> None:
        self.budget.observe(observation)
        code: int | str = observation.status if observation.status is not None else "error"
        self.telemetry.api_request(observation.endpoint, code, observation.seconds)
        if observation.status == 429:
            self.telemetry.rate_limited(observation.rate.retry_after)
        if observation.error == "MalformedResponse":
            self.telemetry.malformed_answer(observation.endpoint)
        # 401, 403 and 429 are answers, but not ones a ready monitor gets.
        status = observation.status
        answered = status is not None and status < 500 and status not in (401, 403, 429)
        if answered and observation.error is None:
            self.telemetry.api_answered(observation.at)

    # -- the watch list ----------------------------------------------------------------------

    async def _load_watch_list(self) -> None:
        stored = {r.run_id: r for r in await self.state.load()}
        wanted = self._configured_runs(self.config)
        now = self.clock.monotonic()
        for run_id, source in wanted.items():
            stored_run = stored.get(run_id)
            cp = stored_run.checkpoint if stored_run else Checkpoint(run_id=run_id)
            self.scheduler.add(cp, now, source=source)
        await self.state.watch([r for r, s in wanted.items() if s == "config"], source="config")
        await self.state.watch([r for r, s in wanted.items() if s == "file"], source="file")
        for run_id, stored_run in stored.items():
            if run_id in wanted or not stored_run.watched:
                continue
            if stored_run.source in ("config", "file"):
                # Removed from the config since the last start: no longer watched.
                await self.state.unwatch([run_id])
                continue
            self.scheduler.add(stored_run.checkpoint, now, source=stored_run.source)
        log.info(
            "watching",
            runs=len(self.scheduler.tracks),
            api=self.config.api.version,
            policy=self.config.polling.policy,
            budget=self.config.api.requests_per_minute,
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
            self._wake.set()
        return added

    async def remove_runs(self, run_ids: Sequence[str]) -> list[str]:
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
        self._wake.set()
        return hinted

    # -- the lister: v2 sweeps and discovery ------------------------------------------------

    def _sweep_wanted(self) -> bool:
        c = self.config
        if c.api.version != "v2" or c.polling.policy != "adaptive" or c.polling.sweep == "off":
            return False
        live = self.scheduler.live()
        if self.scheduler.sweeping:
            # Hysteresis: keep sweeping while any run is live, so runs are not handed back and
            # forth as the live count crosses the threshold.
            return c.polling.sweep == "on" or live >= 1
        return c.polling.sweep == "on" or live >= SWEEP_MIN_RUNS

    async def _lister(self) -> None:
        discover = self.config.watch.discover
        if self.config.api.version != "v2":
            return
        failures = 0
        while not self.stopping.is_set():
            sweeping = self._sweep_wanted()
            self.scheduler.set_sweeping(sweeping, self.clock.monotonic())
            if not sweeping and discover is None:
                await self.clock.sleep(TICK * 5)
                continue
            interval = discover.interval if discover is not None else math.inf
            if sweeping:
                # Never let sweeps take more than a quarter of the budget.
                floor = self._sweep_pages / (self.budget.requests_per_second() * SWEEP_SHARE)
                interval = min(interval, max(self.config.polling.sweep_interval, floor))
            started = self.clock.monotonic()
            hinted_before = self.budget.sent["hinted"]
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
                self._wake.set()
                interval = max(interval, min(120.0, 2.0**failures))
            await self.clock.sleep(interval)
            if sweeping and not failures and self.scheduler.trust.trusted:
                await self._pace_sweep(started, hinted_before, interval)

    async def _pace_sweep(self, started: float, hinted_before: int, least: float) -> None:
        """With trusted sweeps, one sweep and the hinted polls it set off are one round: the
        next round starts when the budget left by the routine probes has paid for this one.
        When few runs move, that is every ``sweep_interval``; when many do, rounds stretch so
        that their polls never queue at the gate (and each poll gathers more messages)."""
        cap = started + max(least, MAX_SWEEP_GAP)
        while not self.stopping.is_set():
            now = self.clock.monotonic()
            cost = self._sweep_pages + self.budget.sent["hinted"] - hinted_before
            due = started + cost / self._round_budget()
            if now >= min(due, cap):
                return
            await self.clock.sleep(min(due, cap) - now)

    def _round_budget(self) -> float:
        """Requests a second that sweep rounds may spend: the budget less what the routine
        probes spent lately (never below a quarter of the budget)."""
        rate = self.budget.requests_per_second()
        spare = rate - self._routine_rate
        return max(spare, rate * SWEEP_SHARE)

    async def _list_once(self, *, discover_new: bool) -> None:
        discover = self.config.watch.discover
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
            page = await self.client.list_runs(filters, limit=100, offset=offset)
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
                elif discover_new and discover is not None and self._discoverable(summary, horizon):
                    new.append(summary.id)
            offset += len(page.data)
            if oldest_on_page is not None:
                oldest_seen = min(oldest_on_page, oldest_seen or oldest_on_page)
            if len(page.data) < 100 or offset >= page.total:
                break
            # Far enough back: older than every live run and than the discovery horizon.
            floor = [x for x in (oldest_live, horizon) if x is not None]
            if oldest_on_page is not None and (not floor or oldest_on_page < min(floor)):
                break
        self._sweep_pages = pages
        exhausted = len(page.data) < 100 or offset >= page.total
        self._vanished(listed, oldest_seen, exhausted, mono)
        if new:
            added = await self.add_runs(new, source="discover")
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
                self._wake.set()

    def _swept_hint(self, track: Track, status: str, updated_at: str, now: float) -> None:
        track.swept_at = now
        track.swept_updated = parse_time(updated_at)
        track.swept_time = self.clock.time()
        previous = self._swept.get(track.run_id, track.cp.updated_at)
        self._swept[track.run_id] = updated_at
        if track.retired:
            # The list shows it: a lost run is back, a finished one may have resumed.
            moved = updated_at != previous
            if (status != track.cp.status and not track.cp.lost) or (track.cp.lost and moved):
                self.scheduler.hint(track.run_id, now, status=True, messages=True)
                self._wake.set()
            return
        if status != track.cp.status and track.cp.status is not None:
            self.scheduler.hint(track.run_id, now, status=True, messages=True)
            self._wake.set()
        elif previous is not None and updated_at != previous:
            waiting = track.cp.status == "waiting"
            self.scheduler.hint(track.run_id, now, status=waiting, messages=True)
            self._wake.set()

    def _discoverable(self, summary: Any, horizon: float | None) -> bool:
        discover = self.config.watch.discover
        assert discover is not None
        if discover.agents and summary.agent_id not in discover.agents:
            return False
        if discover.sources and summary.source not in discover.sources:
            return False
        if discover.statuses and summary.status not in discover.statuses:
            return False
        created = parse_time(summary.created_at)
        return horizon is None or created is None or created >= horizon

    # -- the ticker, signals, reload --------------------------------------------------------

    async def _ticker(self) -> None:
        beat = 0
        while True:
            self.scheduler.recompute()
            self._tally_sent()
            rate = self.budget.requests_per_second() * (1 - self.config.polling.reserve)
            if self.scheduler.sweeping:
                rate -= min(
                    rate * SWEEP_SHARE, self._sweep_pages / self.config.polling.sweep_interval
                )
            snap = self.budget.snapshot()
            # Feedback: hints, catch-up pages and final reads come on top of the scheduled
            # probes; keep the whole under the budget so requests do not queue at the gate
            # (a queued poll is a stale poll).
            used = snap.used / max(snap.limit, 1)
            if used > 0.97:
                self._rate_factor = max(0.5, self._rate_factor * 0.95)
            elif used < 0.8:
                self._rate_factor = min(1.0, self._rate_factor * 1.05)
            self.scheduler.rate = max(rate * self._rate_factor, 0.01)
            self.telemetry.budget(snap.limit, snap.remaining, snap.used)
            self._check_ready()
            if beat % 5 == 0:
                text = (
                    f"watching {self.scheduler.live()} runs; "
                    f"{snap.used}/{snap.limit} requests in the last minute"
                )
                if text != self._status_text:
                    self.notifier.status(text)
                    self._status_text = text
                await self._check_runs_file()
            if self.until_terminal and self.all_done():
                log.info("every watched run has ended")
                self.stop(0)
            beat += 1
            await self.clock.sleep(TICK)

    def _tally_sent(self) -> None:
        """Requests sent since the last tick, by purpose: to the metrics, and into the smoothed
        rate of routine requests that paces the sweep rounds."""
        now = self.clock.monotonic()
        sent = dict(self.budget.sent)
        delta = {purpose: n - self._sent_reported.get(purpose, 0) for purpose, n in sent.items()}
        for purpose, count in delta.items():
            self.telemetry.requests_sent(purpose, count)
        dt = now - self._tallied_at
        self._sent_reported, self._tallied_at = sent, now
        if dt > 0:
            weight = 1 - math.exp(-dt / RATE_WINDOW)
            self._routine_rate += (delta["routine"] / dt - self._routine_rate) * weight

    def _check_ready(self) -> None:
        if self._ready or self.stopping.is_set():
            return
        tracks = self.scheduler.tracks.values()
        elapsed = self.clock.time() - self.started_at
        if all(t.polls > 0 for t in tracks) or elapsed > 60:
            self._ready = True
            self.notifier.ready()
            log.info("ready", runs=len(self.scheduler.tracks))

    def all_done(self) -> bool:
        tracks = list(self.scheduler.tracks.values())
        if not tracks:
            return True
        return all(
            not t.inflight and (t.retired or t.phase in ("lingering", "retired")) for t in tracks
        )

    async def _check_runs_file(self) -> None:
        path = self.config.watch.runs_file
        if not path:
            return
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return
        if mtime != self._runs_file_mtime:
            log.info("runs file changed; re-reading", path=path)
            await self._apply_watch_list(self.config)

    async def _apply_watch_list(self, config: Config) -> None:
        wanted = self._configured_runs(config)
        current = {
            run_id: t.source
            for run_id, t in self.scheduler.tracks.items()
            if t.source in ("config", "file")
        }
        gone = [r for r in current if r not in wanted]
        if gone:
            await self.remove_runs(gone)
        for source in ("config", "file"):
            await self.add_runs([r for r, s in wanted.items() if s == source], source=source)

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                if self.stopping.is_set():
                    log.warning("second signal; exiting now", signal=signal.Signals(signum).name)
                    self._exit_code = 130 if signum == signal.SIGINT else 143
                    if self._root is not None:
                        self._root.cancel_scope.cancel()
                    return
                log.info("stopping", signal=signal.Signals(signum).name)
                self.notifier.stopping()
                self.stop(0)

    async def reload(self) -> bool:
        """SIGHUP: re-read the config; a bad one is refused and the old one keeps running."""
        if not self.config_path:
            log.info("reload asked, but there is no config file; reopening sinks only")
            for sink in self.fanout.sinks:
                sink.reopen()
            return False
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error(
                "new config refused; keeping the old one",
                problems=[str(p) for p in exc.problems],
            )
            self.notifier.ready()
            return False
        old = self.config
        restart_only = (
            new.api != old.api
            or new.state != old.state
            or new.metrics != old.metrics
            or new.control.listen != old.control.listen
        )
        if restart_only:
            log.warning(
                "api, state, metrics and control.listen change only on restart; kept the old ones"
            )
        new = replace(
            new,
            api=old.api,
            state=old.state,
            metrics=old.metrics,
            control=replace(
                new.control,
                listen=old.control.listen,
                token_env=old.control.token_env,
                token_file=old.control.token_file,
            ),
        )
        self.config = new
        self.scheduler.config = new.polling
        self.poller.config = new.polling
        configure_logging(new.logging.level, json=_log_json(new.logging.format, self.environ))
        if new.sinks != old.sinks and self._given_sinks is None:
            try:
                sinks = self._build_sinks(new)
            except ConfigError as exc:
                log.error(
                    "new sinks refused; keeping the old config",
                    problems=[str(p) for p in exc.problems],
                )
                self.config = old
                self.scheduler.config = old.polling
                self.poller.config = old.polling
                self.notifier.ready()
                return False
            await self.fanout.reconfigure(sinks)
        else:
            for sink in self.fanout.sinks:
                sink.reopen()
        await self._apply_watch_list(new)
        self.notifier.ready()
        log.info("config reloaded", runs=self.scheduler.live(), sinks=len(new.sinks))
        return True


def _log_json(fmt: str, environ: Mapping[str, str]) -> bool | None:
    fmt = environ.get("DUVO_MONITOR_LOG_FORMAT", fmt)
    return {"json": True, "console": False}.get(fmt)


async def _serve_metrics(
    telemetry: Telemetry,
    host: str,
    port: int,
    clock: Clock,
    *,
    task_status: TaskStatus[httpserver.Bound],
) -> None:
    await serve_metrics(telemetry, host, port, clock=clock, task_status=task_status)


def run_daemon(
    config: Config,
    *,
    api_key: Secret,
    environ: Mapping[str, str],
    config_path: str | None = None,
    until_terminal: bool = False,
    sinks_factory: Callable[[], Sequence[Sink]] | None = None,
    control_token: Secret | None = None,
) -> int:
    """Run the daemon in this process until it stops; the exit code."""
    clock = Clock.from_environ(environ)

    async def main() -> int:
        monitor = Monitor(
            config,
            api_key=api_key,
            environ=environ,
            clock=clock,
            config_path=config_path,
            until_terminal=until_terminal,
            sinks=None if sinks_factory is None else sinks_factory(),
            control_token=control_token,
        )
        return await monitor.run()

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
    _leave_stuck_threads(before, code)
    return code


def _leave_stuck_threads(before: set[threading.Thread], code: int) -> None:
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


__all__ = ["Monitor", "Outcome", "run_daemon"]
