"""From a command line to what a command needs: the resolved config, the API key, a client.

Shared by ``watch`` (:mod:`duvo_monitor.cli`) and the one-shot commands
(:mod:`duvo_monitor.oneshot`): the ``--config`` file with its ``api`` section resolved against
the environment and the flags (:mod:`duvo_monitor.target`), the key read in
:func:`~duvo_monitor.credentials.read_secret`'s order and registered for log redaction before
any request, and one short-lived client per command. A problem a user can fix is a
:class:`UsageError` (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import anyio
import orjson

from duvo_monitor.api import DuvoClient, make_http_client
from duvo_monitor.config import Config, load_config, parse_config
from duvo_monitor.credentials import API_KEY, CREDENTIALS_DIRECTORY_ENV, Secret, read_secret
from duvo_monitor.logs import register_secret
from duvo_monitor.target import TargetFlags, resolve_target


class UsageError(Exception):
    """A problem with the command line the user can fix; ``main`` prints it and exits 2."""


def command_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The --config file (or the defaults), its api section resolved against the environment and
    the flags (see duvo_monitor.target)."""
    config = load_config(args.config) if args.config else parse_config({}, source="<defaults>")
    flags = TargetFlags(
        base_url=args.base_url,
        api_version=args.api_version,
        team_id=args.team_id,
        requests_per_minute=args.requests_per_minute,
    )
    return replace(config, api=resolve_target(config.api, flags, environ))


def target_argv(args: argparse.Namespace) -> list[str]:
    """The target flags as given, to repeat in a command the board suggests."""
    argv: list[str] = []
    for flag, value in (
        ("--base-url", args.base_url),
        ("--api-version", args.api_version),
        ("--team-id", args.team_id),
        ("--config", args.config),
    ):
        if value is not None:
            argv += [flag, value]
    return argv


def key_source(config: Config, environ: Mapping[str, str]) -> str:
    """Where the API key was found, in read_secret's order; names the place, never the key."""
    directory = environ.get(CREDENTIALS_DIRECTORY_ENV)
    if directory and os.path.isfile(os.path.join(directory, API_KEY)):
        return f"the systemd credential {API_KEY} (${CREDENTIALS_DIRECTORY_ENV}/{API_KEY})"
    if config.api.key_env in environ:
        return f"${config.api.key_env}"
    return f"the file {config.api.key_file} (api.key_file)"


def api_key(config: Config, environ: Mapping[str, str]) -> Secret:
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


def client_call(config: Config, environ: Mapping[str, str], fn: Any) -> Any:
    key = api_key(config, environ)

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


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


__all__ = [
    "UsageError",
    "api_key",
    "client_call",
    "command_config",
    "key_source",
    "print_json",
    "target_argv",
]
