"""``duvo-monitor`` subcommands -> exit codes. Wiring only; the work is in the modules.

Exit codes: 0 success; 1 a run failed, was lost or was not found (``watch``), or the daemon
failed; 2 bad usage or config (every problem listed with its YAML path, no traceback), or a key
the API refused (``watch``); 124 ``watch --timeout`` passed; 130/143 interrupted twice.

This module is the parser, the dispatch and the commands that wire the long-running parts
(``run``, ``watch``, ``demo``, ``simulate``). The one-shot commands (start, send, respond, stop)
are :mod:`duvo_monitor.oneshot`; the config, key and client every command resolves from its
flags, :mod:`duvo_monitor.invocation`. The API they talk to is resolved by
:mod:`duvo_monitor.target` (flag > environment > ``--config`` > default); ``watch`` itself is
:mod:`duvo_monitor.watch`, and its live board on a terminal :mod:`duvo_monitor.board`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog

from duvo_monitor import __version__
from duvo_monitor.clock import Clock
from duvo_monitor.config import (
    DEFAULT_KEY_ENV,
    Config,
    ControlConfig,
    WatchConfig,
    load_config,
    parse_config,
)
from duvo_monitor.credentials import (
    API_KEY,
    CONTROL_TOKEN,
    CredentialError,
    read_secret,
)
from duvo_monitor.errors import ApiError, ConfigError, DuvoMonitorError
from duvo_monitor.ids import require_uuid
from duvo_monitor.invocation import (
    UsageError,
    api_key,
    command_config,
    key_source,
    target_argv,
)
from duvo_monitor.logs import configure_logging, register_secret
from duvo_monitor.oneshot import cmd_respond, cmd_send, cmd_stop, start_run
from duvo_monitor.target import TEAM_ENV, URL_ENV, VERSION_ENV
from duvo_monitor.units import parse_duration

if TYPE_CHECKING:
    from duvo_monitor.board import BoardSink

log = structlog.get_logger("duvo_monitor.cli")

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(
        args.log_level or environ.get("DUVO_MONITOR_LOG_LEVEL", "info"),
        json=_log_format(environ),
    )
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        result: int = args.handler(args, environ)
        return result
    except ConfigError as exc:
        print(f"duvo-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, CredentialError, ValueError) as exc:
        print(f"duvo-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        print(f"duvo-monitor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _log_format(environ: Mapping[str, str]) -> bool | None:
    return {"json": True, "console": False}.get(environ.get("DUVO_MONITOR_LOG_FORMAT", "auto"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="duvo-monitor",
        description="Watch Duvo agent runs; emit every change as a CloudEvent.",
    )
    p.add_argument("--version", action="version", version=f"duvo-monitor {__version__}")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True)
    run.set_defaults(handler=cmd_run)

    check = sub.add_parser("check-config", help="check a config file (exit 0, or 2 with problems)")
    check.add_argument("--config", required=True)
    check.set_defaults(handler=cmd_check_config)

    watch = sub.add_parser(
        "watch",
        help="follow runs until each has ended",
        description="Follow runs until each has ended: a live board on a terminal, JSON lines "
        "on a pipe. Exit 0 when all completed, 1 when one did not (or was not found), 2 when "
        "the API refused the key, 124 when --timeout passed.",
        epilog=TARGET_EPILOG,
    )
    watch.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    watch.add_argument("--config", help="take api settings from this config")
    watch.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    _watch_args(watch)
    _target_args(watch)
    watch.set_defaults(handler=cmd_watch)

    demo = sub.add_parser("demo", help="the simulator with a lively scenario, and the daemon")
    demo.add_argument("--speed", type=float, default=6.0)
    demo.add_argument("--scenario", default=None)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    demo.set_defaults(handler=cmd_demo)

    sim = sub.add_parser("simulate", help="serve the embedded Duvo API simulator")
    sim.add_argument("--listen", default="127.0.0.1:8080")
    sim.add_argument("--scenario", default=None)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--speed", type=float, default=1.0)
    sim.add_argument("--rate-limit", type=int, default=300)
    sim.add_argument("--api-key", default="sim-key")
    sim.set_defaults(handler=cmd_simulate)

    start = sub.add_parser("start", help="start a run", epilog=TARGET_EPILOG)
    start.add_argument("--agent-id", required=True)
    start.add_argument("--message")
    start.add_argument("--sandbox-id")
    start.add_argument("--watch", action="store_true", help="then follow it until it ends")
    start.add_argument("--config")
    _watch_args(start)
    _target_args(start)
    start.set_defaults(handler=cmd_start)

    send = sub.add_parser("send", help="post a message to a run (resumes it)", epilog=TARGET_EPILOG)
    send.add_argument("run_id")
    send.add_argument("text")
    send.add_argument("--config")
    _target_args(send)
    send.set_defaults(handler=cmd_send)

    respond = sub.add_parser("respond", help="answer a run's human request", epilog=TARGET_EPILOG)
    respond.add_argument("run_id")
    respond.add_argument("request_id")
    group = respond.add_mutually_exclusive_group(required=True)
    group.add_argument("--approve", action="store_true")
    group.add_argument("--deny", action="store_true")
    group.add_argument("--answer", action="append", metavar="QUESTION=ANSWER")
    respond.add_argument("--config")
    _target_args(respond)
    respond.set_defaults(handler=cmd_respond)

    stop = sub.add_parser("stop", help="stop a run", epilog=TARGET_EPILOG)
    stop.add_argument("run_id")
    stop.add_argument("--config")
    _target_args(stop)
    stop.set_defaults(handler=cmd_stop)
    return p


TARGET_EPILOG = (
    f"Which API: each of --base-url, --api-version, --team-id and --requests-per-minute is "
    f"taken from the flag, else the environment (${URL_ENV}, ${VERSION_ENV}, ${TEAM_ENV}), "
    f"else the --config file (api.*), else the default (https://api.duvo.ai, v2, the key's "
    f"only team, 300). The key: ${DEFAULT_KEY_ENV}, api.key_file, or the systemd credential "
    f"{API_KEY}."
)


def _target_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("which API (flag > environment > --config > default)")
    g.add_argument("--base-url", metavar="URL", help=f"the API's address (${URL_ENV})")
    g.add_argument("--api-version", metavar="v1|v2", help=f"the API version (${VERSION_ENV})")
    g.add_argument("--team-id", metavar="ID", help=f"the team, for v2 (${TEAM_ENV})")
    g.add_argument(
        "--requests-per-minute", metavar="N", help="the key's request budget (default 300)"
    )


def _watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--appear-timeout",
        metavar="DURATION",
        default=None,
        help="how long a run the API has never shown may answer 404 before it is reported "
        "not found (default 10s)",
    )
    p.add_argument(
        "--timeout",
        metavar="DURATION",
        default=None,
        help="give up after this long, exit 124, naming what was still running",
    )


# -- commands --------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = load_config(args.config)
    print(
        f"{args.config}: ok (api {config.api.version} at {config.api.base_url}, "
        f"{len(config.watch.runs)} run(s) listed, {len(config.sinks)} sink(s))",
        file=sys.stderr,
    )
    return 0


def cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from duvo_monitor.daemon import run_daemon

    config = load_config(args.config)
    configure_logging(
        args.log_level or config.logging.level,
        json=_log_format(environ)
        if "DUVO_MONITOR_LOG_FORMAT" in environ
        else {"json": True, "console": False}.get(config.logging.format),
    )
    key = api_key(config, environ)
    token = None
    if config.control.listen:
        token = read_secret(
            CONTROL_TOKEN,
            environ=environ,
            env_var=config.control.token_env,
            file=config.control.token_file,
        )
        if token is None:
            raise UsageError(
                f"control.listen is set but there is no token: set {config.control.token_env}, "
                f"control.token_file, or a systemd credential named {CONTROL_TOKEN}"
            )
        register_secret(token.reveal())
    return run_daemon(
        config, api_key=key, environ=environ, config_path=args.config, control_token=token
    )


def _watch_config(config: Config, run_ids: Sequence[str], state_dir: str) -> Config:
    return replace(
        config,
        watch=WatchConfig(runs=tuple(run_ids)),
        state=replace(config.state, path=str(Path(state_dir) / "watch.db")),
        control=ControlConfig(),
        metrics=replace(config.metrics, listen=None),
    )


def _wants_board(as_json: bool) -> bool:
    return sys.stdout.isatty() and not as_json


def _board(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    run_ids: Sequence[str] = (),
    respond_prefix: Sequence[str] = (),
) -> BoardSink:
    """The live board on stdout, with log lines printed above it when stderr is the terminal
    too (a raw write there would tear the redraw)."""
    from rich.console import Console

    from duvo_monitor.board import BoardSink

    console = Console(no_color=True if environ.get("NO_COLOR") else None, highlight=False)
    board = BoardSink(
        console,
        clock=Clock.from_environ(environ),
        run_ids=run_ids,
        respond_prefix=respond_prefix,
    )
    if sys.stderr.isatty():
        as_json = _log_format(environ)
        configure_logging(
            args.log_level or environ.get("DUVO_MONITOR_LOG_LEVEL", "info"),
            json=False if as_json is None else as_json,
            stream=board.log_stream(sys.stderr, colour=console.no_color is not True),
        )
    return board


def _duration_arg(flag: str, value: str | None, default: float | None) -> float | None:
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def cmd_watch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from duvo_monitor.process import leave_stuck_threads
    from duvo_monitor.watch import DEFAULT_APPEAR_TIMEOUT, WatchOptions, watch

    run_ids = [require_uuid(r, "run id") for r in args.run_ids]
    appear = _duration_arg("--appear-timeout", args.appear_timeout, DEFAULT_APPEAR_TIMEOUT)
    timeout = _duration_arg("--timeout", args.timeout, None)
    config = command_config(args, environ)
    key = api_key(config, environ)
    options = WatchOptions(
        run_ids=tuple(run_ids),
        appear_timeout=appear or 0.0,
        timeout=timeout,
        key_source=key_source(config, environ),
    )
    clock = Clock.from_environ(environ)
    board = _board(args, environ, run_ids, target_argv(args)) if _wants_board(args.json) else None
    with tempfile.TemporaryDirectory(prefix="duvo-monitor-watch-") as tmp:
        watch_config = _watch_config(config, run_ids, tmp)
        if not config.sinks or args.config is None:
            watch_config = replace(watch_config, sinks=parse_config({}).sinks)

        async def go() -> int:
            return await watch(
                watch_config,
                options,
                api_key=key,
                environ=environ,
                clock=clock,
                sinks=None if board is None else [board],
                board=board,
            )

        before = set(threading.enumerate())
        try:
            code = anyio.run(go)
        except DuvoMonitorError as exc:
            if isinstance(exc, ConfigError | ApiError):
                raise
            log.error("watch failed", error=str(exc))
            return 1
    # As `run` does: a write stuck on a stalled pipe (`watch ... | less`) must not hold the exit.
    leave_stuck_threads(before, code)
    return code


def cmd_demo(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from duvo_monitor.demo import run_demo

    return run_demo(
        speed=args.speed,
        scenario=args.scenario,
        seed=args.seed,
        board=_board(args, environ) if _wants_board(args.json) else None,
    )


def cmd_simulate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from duvo_monitor.simulator.cli import simulate_main

    return simulate_main(args)


def cmd_start(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``start``, then with ``--watch`` a ``watch`` of the run it started."""
    run_id = start_run(args, environ)
    if args.watch:
        args.run_ids = [run_id]
        args.json = False
        return cmd_watch(args, environ)
    return 0
