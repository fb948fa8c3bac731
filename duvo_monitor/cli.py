"""``duvo-monitor`` subcommands -> exit codes. Wiring only; the work is in the modules.

Exit codes: 0 success; 1 a run failed (``watch``) or the daemon failed; 2 bad usage or config
(every problem listed with its YAML path, no traceback); 130/143 interrupted twice.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import orjson
import structlog

from duvo_monitor import __version__
from duvo_monitor.api import DuvoClient, make_http_client, require_uuid, with_retries
from duvo_monitor.config import Config, ControlConfig, WatchConfig, load_config, parse_config
from duvo_monitor.credentials import API_KEY, CONTROL_TOKEN, CredentialError, Secret, read_secret
from duvo_monitor.errors import ApiError, ConfigError
from duvo_monitor.logs import configure_logging, register_secret
from duvo_monitor.models import HumanResponse

log = structlog.get_logger("duvo_monitor.cli")

EXIT_USAGE = 2


class UsageError(Exception):
    pass


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

    watch = sub.add_parser("watch", help="follow runs until each has ended")
    watch.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    watch.add_argument("--config", help="take api settings from this config")
    watch.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
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

    start = sub.add_parser("start", help="start a run")
    start.add_argument("--agent-id", required=True)
    start.add_argument("--message")
    start.add_argument("--sandbox-id")
    start.add_argument("--watch", action="store_true", help="then follow it until it ends")
    start.add_argument("--config")
    start.set_defaults(handler=cmd_start)

    send = sub.add_parser("send", help="post a message to a run (resumes it)")
    send.add_argument("run_id")
    send.add_argument("text")
    send.add_argument("--config")
    send.set_defaults(handler=cmd_send)

    respond = sub.add_parser("respond", help="answer a run's human request")
    respond.add_argument("run_id")
    respond.add_argument("request_id")
    group = respond.add_mutually_exclusive_group(required=True)
    group.add_argument("--approve", action="store_true")
    group.add_argument("--deny", action="store_true")
    group.add_argument("--answer", action="append", metavar="QUESTION=ANSWER")
    respond.add_argument("--config")
    respond.set_defaults(handler=cmd_respond)

    stop = sub.add_parser("stop", help="stop a run")
    stop.add_argument("run_id")
    stop.add_argument("--config")
    stop.set_defaults(handler=cmd_stop)
    return p


# -- helpers ---------------------------------------------------------------------------------


def _config(path: str | None) -> Config:
    return load_config(path) if path else parse_config({}, source="<defaults>")


def _api_key(config: Config, environ: Mapping[str, str]) -> Secret:
    key = read_secret(
        API_KEY, environ=environ, env_var=config.api.key_env, file=config.api.key_file
    )
    if key is None:
        raise UsageError(
            f"no API key: set {config.api.key_env}, api.key_file, or a systemd credential "
            f"named {API_KEY}"
        )
    register_secret(key.reveal())
    return key


def _client_call(config: Config, environ: Mapping[str, str], fn: Any) -> Any:
    key = _api_key(config, environ)

    async def go() -> Any:
        async with make_http_client() as http:
            client = DuvoClient(
                http=http,
                base_url=config.api.base_url,
                api_key=key,
                version=config.api.version,
                team_id=config.api.team_id,
            )
            return await fn(client)

    return anyio.run(go)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


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
    key = _api_key(config, environ)
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


def _console_or_stdout(as_json: bool) -> Any:
    if sys.stdout.isatty() and not as_json:
        from duvo_monitor.sinks.console import ConsoleSink

        return lambda: [ConsoleSink()]
    return None


def cmd_watch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from duvo_monitor.daemon import run_daemon

    run_ids = [require_uuid(r, "run id") for r in args.run_ids]
    config = _config(args.config)
    key = _api_key(config, environ)
    with tempfile.TemporaryDirectory(prefix="duvo-monitor-watch-") as tmp:
        watch_config = _watch_config(config, run_ids, tmp)
        if not config.sinks or args.config is None:
            watch_config = replace(watch_config, sinks=parse_config({}).sinks)
        return run_daemon(
            watch_config,
            api_key=key,
            environ=environ,
            until_terminal=True,
            sinks_factory=_console_or_stdout(args.json),
        )


def cmd_demo(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from duvo_monitor.demo import run_demo

    return run_demo(
        speed=args.speed,
        scenario=args.scenario,
        seed=args.seed,
        sinks_factory=_console_or_stdout(args.json),
    )


def cmd_simulate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from duvo_monitor.simulator.cli import simulate_main

    return simulate_main(args)


def cmd_start(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import uuid

    config = _config(args.config)
    agent_id = require_uuid(args.agent_id, "agent id")
    idempotency_key = str(uuid.uuid4())
    webhook_url = _receiver_url(config, environ)

    async def go(client: DuvoClient) -> Any:
        run = await with_retries(
            lambda: client.start_run(
                agent_id,
                message=args.message,
                sandbox_id=args.sandbox_id,
                webhook_url=webhook_url,
                idempotency_key=idempotency_key,
            )
        )
        await _register_with_daemon(config, environ, run.id)
        return run

    run = _client_call(config, environ, go)
    _print_json({"run": run.to_dict()})
    if args.watch:
        args.run_ids = [run.id]
        args.json = False
        return cmd_watch(args, environ)
    return 0


def _receiver_url(config: Config, environ: Mapping[str, str]) -> str | None:
    """The daemon's Duvo-webhook receiver, when the config says where it is reachable."""
    control = config.control
    if control.public_url and control.webhook_path:
        return f"{control.public_url}/{control.webhook_path.strip('/')}"
    return None


async def _register_with_daemon(config: Config, environ: Mapping[str, str], run_id: str) -> None:
    """Tell a running daemon (control API) to watch this run; best effort, logged."""
    control = config.control
    if not control.listen:
        return
    from duvo_monitor.control import register_runs

    try:
        await register_runs(control, environ, [run_id])
    except Exception as exc:  # a daemon that is down must not fail the start
        log.warning("could not register the run with the daemon", run_id=run_id, error=str(exc))


def cmd_send(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = _config(args.config)
    run_id = require_uuid(args.run_id, "run id")
    message = _client_call(
        config, environ, lambda c: with_retries(lambda: c.post_message(run_id, args.text))
    )
    _print_json({"message": message.to_dict()})
    return 0


def cmd_respond(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = _config(args.config)
    run_id = require_uuid(args.run_id, "run id")
    request_id = require_uuid(args.request_id, "human request id")
    if args.answer:
        answers: dict[str, str] = {}
        for item in args.answer:
            question, sep, answer = item.partition("=")
            if not sep or not question:
                raise UsageError(f"--answer takes QUESTION=ANSWER, not {item!r}")
            answers[question] = answer
        response = HumanResponse(answers=answers)
    else:
        response = HumanResponse(approved=bool(args.approve))
    record = _client_call(
        config, environ, lambda c: with_retries(lambda: c.respond(run_id, request_id, response))
    )
    _print_json(
        {
            "human_request": {
                "id": record.id,
                "run_id": record.run_id,
                "title": record.title,
                "response": record.response,
                "responded_at": record.responded_at,
            }
        }
    )
    return 0


def cmd_stop(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = _config(args.config)
    run_id = require_uuid(args.run_id, "run id")
    result = _client_call(config, environ, lambda c: with_retries(lambda: c.stop_run(run_id)))
    _print_json({"success": result.success, "message": result.message})
    return 0 if result.success else 1
