"""SIGHUP: re-read the config file and apply what changed, part by part, while running.

A config that does not load, or whose sinks cannot be built (a missing secret), is refused
whole before anything is applied: the old config, log level and sinks keep running. Of one that
is accepted, the keys that change only on restart (``RESTART_ONLY``: the API, the state file,
the metrics listener, the control listener and its token's source) keep their old values and
the log names each one that differs. Everything else is applied live:

* ``polling``: the scheduler and the poller read it at once; the dispatcher and the budget gate
  read the policy at each step (so ``fixed`` -> ``adaptive`` installs the gate and the pacing);
  ``polling.workers`` resizes the pipeline;
* ``logging``: level and format;
* ``sinks``: rebuilt if their config changed, else reopened (so rotated files are followed);
* ``watch``: the runs and the runs file are re-read; the sweeper reads ``watch.discover`` at
  each pass, so discovery starts, stops or changes its filters at the next one;
* ``control.webhook_path``: read at each request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace

import anyio
import structlog

from duvo_monitor.config import Config, load_config
from duvo_monitor.context import Context
from duvo_monitor.errors import ConfigError, ConfigProblem
from duvo_monitor.fanout import FanOut
from duvo_monitor.logs import configure_logging
from duvo_monitor.pipeline import Pipeline
from duvo_monitor.poller import Poller
from duvo_monitor.sdnotify import Notifier
from duvo_monitor.sinks.base import Sink
from duvo_monitor.watchlist import WatchList

log = structlog.get_logger("duvo_monitor.reloader")

LOAD_DEADLINE = 10.0


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
        pipeline: Pipeline,
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
        self.pipeline = pipeline
        self.watchlist = watchlist

    def _set(self, config: Config) -> None:
        self.install(config)
        self.scheduler.config = config.polling
        self.poller.config = config.polling
        self.pipeline.resize(config.polling.workers)

    async def reload(self) -> bool:
        """Re-read the config; a bad one is refused and the old one keeps running."""
        if not self.config_path:
            log.info("reload asked, but there is no config file; reopening sinks only")
            for sink in self.fanout.sinks:
                sink.reopen()
            return False
        self.notifier.reloading()
        try:
            new = await load_config_in_thread(self.config_path)
        except ConfigError as exc:
            log.error(
                "new config refused; keeping the old one",
                problems=[str(p) for p in exc.problems],
            )
            self.notifier.ready()
            return False
        old = self.current()
        kept = restart_only_changes(old, new)
        if kept:
            log.warning("these keys change only on restart; kept the old values", keys=kept)
        new = keep_restart_only(old, new)
        sinks: Sequence[Sink] | None = None
        if new.sinks != old.sinks and self.build_sinks is not None:
            try:
                sinks = self.build_sinks(new)
            except ConfigError as exc:
                log.error(
                    "new sinks refused; keeping the old config",
                    problems=[str(p) for p in exc.problems],
                )
                self.notifier.ready()
                return False
        self._set(new)
        configure_logging(new.logging.level, json=log_json(new.logging.format, self.environ))
        if sinks is not None:
            await self.fanout.reconfigure(list(sinks))
        else:
            for sink in self.fanout.sinks:
                sink.reopen()
        await self.watchlist.apply(new)
        self.notifier.ready()
        log.info("config reloaded", runs=self.scheduler.live(), sinks=len(new.sinks))
        return True


RESTART_ONLY = ("api", "state", "metrics")
CONTROL_RESTART_ONLY = ("listen", "token_env", "token_file")


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The keys (dotted paths) that differ between ``old`` and ``new`` but change only on
    restart."""
    keys = [
        f"{section}.{f.name}"
        for section in RESTART_ONLY
        for f in fields(getattr(old, section))
        if getattr(getattr(old, section), f.name) != getattr(getattr(new, section), f.name)
    ]
    keys += [
        f"control.{name}"
        for name in CONTROL_RESTART_ONLY
        if getattr(old.control, name) != getattr(new.control, name)
    ]
    return keys


def keep_restart_only(old: Config, new: Config) -> Config:
    """``new`` with the restart-only keys of ``old``."""
    control = replace(
        new.control, **{name: getattr(old.control, name) for name in CONTROL_RESTART_ONLY}
    )
    return replace(
        new, **{section: getattr(old, section) for section in RESTART_ONLY}, control=control
    )


async def load_config_in_thread(path: str) -> Config:
    """:func:`load_config` in a worker thread (a file read and YAML parsing must not stall
    the loop), within ``LOAD_DEADLINE`` seconds; a file that cannot be read in time is a
    :class:`ConfigError` like any unreadable file."""
    try:
        with anyio.fail_after(LOAD_DEADLINE):
            return await anyio.to_thread.run_sync(load_config, path, abandon_on_cancel=True)
    except TimeoutError:
        problem = ConfigProblem("", f"{path} could not be read within {LOAD_DEADLINE:g} s")
        raise ConfigError([problem], source=path) from None


__all__ = ["RESTART_ONLY", "Reloader", "keep_restart_only", "log_json", "restart_only_changes"]
