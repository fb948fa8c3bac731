"""SIGHUP: re-read the config file and apply what changed, part by part, while running.

A config that does not load is refused whole and the old one keeps running. Of one that loads,
``api``, ``state``, ``metrics`` and ``control.listen`` (and the control token's source) change
only on restart: the old values are kept and the log names the keys that differ. Everything
else is applied live: the polling settings (scheduler, poller), the log level and format, the
sinks (rebuilt only if their config changed, else reopened, so rotated files are followed) and
the watch list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import structlog

from duvo_monitor.config import Config, load_config
from duvo_monitor.context import Context
from duvo_monitor.errors import ConfigError
from duvo_monitor.fanout import FanOut
from duvo_monitor.logs import configure_logging
from duvo_monitor.poller import Poller
from duvo_monitor.sdnotify import Notifier
from duvo_monitor.sinks.base import Sink
from duvo_monitor.watchlist import WatchList

log = structlog.get_logger("duvo_monitor.reloader")


def log_json(fmt: str, environ: Mapping[str, str]) -> bool | None:
    """The log format asked for, ``DUVO_MONITOR_LOG_FORMAT`` first (None: decide by the tty)."""
    fmt = environ.get("DUVO_MONITOR_LOG_FORMAT", fmt)
    return {"json": True, "console": False}.get(fmt)


class Reloader:
    def __init__(
        self,
        ctx: Context,
        *,
        config_path: str | None,
        environ: Mapping[str, str],
        install: Callable[[Config], None],
        notifier: Notifier,
        fanout: FanOut,
        build_sinks: Callable[[Config], Sequence[Sink]] | None,
        poller: Poller,
        watchlist: WatchList,
    ) -> None:
        self.ctx = ctx
        self.current = ctx.config
        self.scheduler = ctx.scheduler
        self.config_path = config_path
        self.environ = environ
        self.install = install
        self.notifier = notifier
        self.fanout = fanout
        self.build_sinks = build_sinks
        self.poller = poller
        self.watchlist = watchlist

    def _set(self, config: Config) -> None:
        self.install(config)
        self.scheduler.config = config.polling
        self.poller.config = config.polling

    async def reload(self) -> bool:
        """Re-read the config; a bad one is refused and the old one keeps running."""
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
        old = self.current()
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
        self._set(new)
        configure_logging(new.logging.level, json=log_json(new.logging.format, self.environ))
        if new.sinks != old.sinks and self.build_sinks is not None:
            try:
                sinks = self.build_sinks(new)
            except ConfigError as exc:
                log.error(
                    "new sinks refused; keeping the old config",
                    problems=[str(p) for p in exc.problems],
                )
                self._set(old)
                self.notifier.ready()
                return False
            await self.fanout.reconfigure(list(sinks))
        else:
            for sink in self.fanout.sinks:
                sink.reopen()
        await self.watchlist.apply(new)
        self.notifier.ready()
        log.info("config reloaded", runs=self.scheduler.live(), sinks=len(new.sinks))
        return True


__all__ = ["Reloader", "log_json"]
