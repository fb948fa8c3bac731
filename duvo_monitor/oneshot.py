"""The one-shot Runs API commands: ``start``, ``send``, ``respond``, ``stop``.

Each resolves its target and key (:mod:`duvo_monitor.invocation`), makes its one call through
:func:`~duvo_monitor.retry.with_retries` (a retried ``start`` carries one Idempotency-Key, so it
starts one run), and prints the answer as JSON on stdout. ``start --watch`` hands over to
``watch`` in :mod:`duvo_monitor.cli`, which composes the two.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from duvo_monitor.api import DuvoClient
from duvo_monitor.config import Config
from duvo_monitor.ids import require_uuid
from duvo_monitor.invocation import UsageError, client_call, command_config, print_json
from duvo_monitor.models import HumanResponse
from duvo_monitor.retry import with_retries

log = structlog.get_logger("duvo_monitor.cli")


def start_run(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """``start``: start the run (one run however often the call is retried), print it, tell a
    running daemon to watch it; the run's id, for ``--watch``."""
    config = command_config(args, environ)
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

    run = client_call(config, environ, go)
    print_json({"run": run.to_dict()})
    run_id: str = run.id
    return run_id


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
    config = command_config(args, environ)
    run_id = require_uuid(args.run_id, "run id")
    message = client_call(
        config, environ, lambda c: with_retries(lambda: c.post_message(run_id, args.text))
    )
    print_json({"message": message.to_dict()})
    return 0


def cmd_respond(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = command_config(args, environ)
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
    record = client_call(
        config, environ, lambda c: with_retries(lambda: c.respond(run_id, request_id, response))
    )
    print_json(
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
    config = command_config(args, environ)
    run_id = require_uuid(args.run_id, "run id")
    result = client_call(config, environ, lambda c: with_retries(lambda: c.stop_run(run_id)))
    print_json({"success": result.success, "message": result.message})
    return 0 if result.success else 1


__all__ = ["cmd_respond", "cmd_send", "cmd_stop", "start_run"]
