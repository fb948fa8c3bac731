"""The topology: one root task group wiring the stages; each job lives in its own module
(docs/architecture.md draws them and says which owns what).

::

    pipeline: dispatcher ──(due runs)──▶ workers (N) ──▶ poller (budget-gated API calls)
                  ──(events)──▶ fan-out ──▶ sink buffers ──▶ sinks ──ack──▶ commit
    sweeper (v2 list runs: sweeps, discovery) ──hints──▶ scheduler ◀──hints── control API
    ticker: probe rate and pace (pacer), gauges, systemd STATUS, watch list; process: signals

A stop ends the dispatcher, lets polls in flight finish (bounded), drains the sinks, saves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry

import duvo_monitor.httpserver as httpserver
from duvo_monitor.accounting import Accounting
from duvo_monitor.api import DuvoClient, make_http_client
from duvo_monitor.budget import Budget
from duvo_monitor.clock import Clock
from duvo_monitor.config import Config
from duvo_monitor.context import Context, Wake
from duvo_monitor.control import serve_control
from duvo_monitor.credentials import Secret
from duvo_monitor.errors import ConfigError, ConfigProblem
from duvo_monitor.fanout import FanOut
from duvo_monitor.metrics import Telemetry, serve_metrics
from duvo_monitor.pacer import Pacer
from duvo_monitor.pipeline import Outcome, Pipeline, policy_gate
from duvo_monitor.poller import Poller
from duvo_monitor.process import handle_signals, run_process, stop_on_closed_output
from duvo_monitor.reloader import Reloader
from duvo_monitor.scheduler import Scheduler
from duvo_monitor.sdnotify import Notifier, watchdog_loop
from duvo_monitor.sinks.base import Sink
from duvo_monitor.sinks.build import build_sinks
from duvo_monitor.state import StateStore
from duvo_monitor.sweeper import Sweeper
from duvo_monitor.ticker import SavedWindow, Ticker
from duvo_monitor.watchlist import WatchList

log = structlog.get_logger("duvo_monitor.daemon")


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
        appear_grace: float | None = None,
    ) -> None:
        if config.control.listen and control_token is None:
            why = "the control API needs a token (control.token_env)"
            raise ConfigError([ConfigProblem("control.listen", why)])
        self.config = config
        # How long a never-seen run may 404 before it is lost (None: polling.appear_timeout).
        self.appear_grace = appear_grace
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
        self.telemetry = Telemetry(
            self.registry,
            agent_label=config.metrics.agent_label,
            tool_cap=config.metrics.tool_cap,
            agents=config.watch.discover.agents if config.watch.discover else (),
            clock=self.clock,
        )
        self.accounting = Accounting(self.telemetry)
        self.budget = Budget(config.api.requests_per_minute, clock=self.clock)
        self.pacer = Pacer(sent=self.budget.sent)
        self.scheduler = Scheduler(config.polling)
        self.scheduler.rate = self.budget.requests_per_second() * (1 - config.polling.reserve)
        self.outcome = Outcome()
        self.started_at = self.clock.time()
        self.stopping = anyio.Event()
        self.wake = Wake()
        self.ctx = Context(
            config=lambda: self.config,
            clock=self.clock,
            scheduler=self.scheduler,
            budget=self.budget,
            pacer=self.pacer,
            telemetry=self.telemetry,
            stopping=self.stopping,
            wake=self.wake,
        )
        self._exit_code = 0
        self._root: TaskGroup | None = None
        self.bound: dict[str, httpserver.Bound] = {}
        # Set in run():
        self.state: StateStore
        self.window: SavedWindow
        self.client: DuvoClient
        self.fanout: FanOut
        self.poller: Poller
        self.watchlist: WatchList
        self.pipeline: Pipeline
        self.reloader: Reloader

    def _install(self, config: Config) -> None:
        self.config = config  # the reloader's: ctx.config reads it

    async def run(self, *, task_status: TaskStatus[Monitor] = anyio.TASK_STATUS_IGNORED) -> int:
        config = self.config
        self.state = await StateStore.open(config.state.path)
        self.window = SavedWindow(self.budget, self.state)
        http = make_http_client(transport=self.transport)
        try:
            ticker, sweeper = self._wire(http)
            await self.window.restore()
            await self.watchlist.load()
            async with anyio.create_task_group() as root:
                self._root = root
                output = partial(stop_on_closed_output, self.fanout.run, stop=self.stop)
                await root.start(partial(output, abort=lambda: self._abort(self._exit_code)))
                if config.metrics.listen:
                    host, port = httpserver.parse_listen(config.metrics.listen)
                    serve = partial(serve_metrics, clock=self.clock)
                    self.bound["metrics"] = await root.start(serve, self.telemetry, host, port)
                if config.control.listen:
                    host, port = httpserver.parse_listen(config.control.listen)
                    self.bound["control"] = await root.start(
                        serve_control, self.watchlist, host, port, self.control_token
                    )
                if self.handle_signals:
                    root.start_soon(self._signals)
                root.start_soon(watchdog_loop, self.notifier)
                root.start_soon(ticker.run)
                root.start_soon(sweeper.run)
                await self.pipeline.redeliver_staged()
                task_status.started(self)
                await self.pipeline.poll_until_stopped()
                await self.pipeline.drain()
                root.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self.notifier.stopping()
                await http.aclose()
                await self.window.save()
                await self.state.close()
        log.info("stopped", exit_code=self._exit_code)
        if self.until_terminal and self._exit_code == 0:
            return self.outcome.exit_code()
        return self._exit_code

    def _wire(self, http: Any) -> tuple[Ticker, Sweeper]:
        config, ctx = self.config, self.ctx
        self.client = DuvoClient(
            http=http,
            base_url=config.api.base_url,
            api_key=self.api_key,
            version=config.api.version,
            team_id=config.api.team_id,
            clock=self.clock,
            gate=policy_gate(ctx),
            observers=(self.budget.observe, self.accounting.observe),
        )
        self.poller = Poller(
            self.client,
            clock=self.clock,
            config=config.polling,
            not_found_grace=self.appear_grace,
        )
        given = self._given_sinks
        sinks = list(given) if given is not None else self._build_sinks(config)
        self.fanout = FanOut(
            sinks, observer=self.telemetry, clock=self.clock, spool_dir=config.state_dir
        )
        self.watchlist = WatchList(ctx, state=self.state, outcome=self.outcome)
        self.pipeline = Pipeline(
            ctx,
            poller=self.poller,
            state=self.state,
            fanout=self.fanout,
            accounting=self.accounting,
            outcome=self.outcome,
            stop=self.stop,
            until_terminal=self.until_terminal,
        )
        self.reloader = Reloader(
            ctx,
            config_path=self.config_path,
            environ=self.environ,
            install=self._install,
            notifier=self.notifier,
            fanout=self.fanout,
            build_sinks=None if given is not None else self._build_sinks,
            poller=self.poller,
            pipeline=self.pipeline,
            watchlist=self.watchlist,
        )
        ticker = Ticker(
            ctx,
            accounting=self.accounting,
            notifier=self.notifier,
            tend=self.watchlist.tend,
            save=self.window.save,
            stop=self.stop,
            until_terminal=self.until_terminal,
            started_at=self.started_at,
        )
        found, gone = partial(self.watchlist.add_runs, source="discover"), self.watchlist.forgotten
        return ticker, Sweeper(ctx, client=self.client, add_runs=found, forgotten=gone)

    def _build_sinks(self, config: Config) -> list[Sink]:
        env, clock, observer = self.environ, self.clock, self.telemetry
        sinks, state_dir = list(config.sinks), config.state_dir
        return build_sinks(sinks, state_dir=state_dir, environ=env, clock=clock, observer=observer)

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, exit_code: int = 0) -> None:
        if not self.stopping.is_set():
            self._exit_code = exit_code
            self.stopping.set()
            self.wake.set()

    def _abort(self, exit_code: int) -> None:
        """Cancel everything now (a second signal, a closed stdout)."""
        self._exit_code = exit_code
        if self._root is not None:
            self._root.cancel_scope.cancel()

    async def _signals(self) -> None:
        await handle_signals(
            stopping=self.stopping,
            stop=self.stop,
            abort=self._abort,
            reload=self.reload,
            announce_stop=self.notifier.stopping,
        )

    # -- for the demo, the tests and the signals ---------------------------------------------

    async def reload(self) -> bool:
        """SIGHUP: see reloader.py."""
        return await self.reloader.reload()


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

    return run_process(main)


__all__ = ["Monitor", "Outcome", "run_daemon"]
