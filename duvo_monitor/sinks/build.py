"""From sink configs to sink instances: paths under the state directory, secrets, the client.

Separate from the configs (pure values) because it reads the environment and credentials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import httpx

from duvo_monitor.clock import Clock
from duvo_monitor.credentials import CredentialError, Secret, read_secret
from duvo_monitor.errors import ConfigError, ConfigProblem
from duvo_monitor.sinks.base import NullObserver, Sink, SinkObserver
from duvo_monitor.sinks.config import (
    WEBHOOK_SECRET_CREDENTIAL,
    FileConfig,
    SinkConfig,
    StdoutConfig,
    WebhookConfig,
)
from duvo_monitor.sinks.file import FileSink
from duvo_monitor.sinks.signing import secret_key
from duvo_monitor.sinks.stdout import StdoutSink
from duvo_monitor.sinks.webhook import WebhookSink


def spool_dir(config: WebhookConfig, state_dir: str | os.PathLike[str]) -> str:
    return config.spool_path or os.path.join(os.fspath(state_dir), f"spool-{config.name}")


def dead_letter_file(config: WebhookConfig, state_dir: str | os.PathLike[str]) -> str:
    return config.dead_letter_path or os.path.join(
        os.fspath(state_dir), f"dead-letter-{config.name}.jsonl"
    )


def webhook_secret(config: WebhookConfig, environ: Mapping[str, str]) -> Secret | None:
    """The signing secret: ``$CREDENTIALS_DIRECTORY/webhook-secret``, then env, then file.

    A source that was configured but yields nothing is an error: the operator meant to sign.
    """
    secret = read_secret(
        WEBHOOK_SECRET_CREDENTIAL,
        environ=environ,
        env_var=config.secret_env,
        file=config.secret_file,
    )
    if secret is None and config.secret_env:
        raise CredentialError(
            WEBHOOK_SECRET_CREDENTIAL, "not found", looked=(f"${config.secret_env}",)
        )
    if secret is not None:
        try:
            secret_key(secret)
        except ValueError as exc:
            raise CredentialError(WEBHOOK_SECRET_CREDENTIAL, str(exc), looked=()) from None
    return secret


def build_sinks(
    configs: Sequence[SinkConfig],
    *,
    state_dir: str | os.PathLike[str],
    environ: Mapping[str, str],
    clock: Clock,
    observer: SinkObserver | None = None,
    http_client: httpx.AsyncClient | None = None,
    stdout: BinaryIO | None = None,
) -> list[Sink]:
    """Sink instances for ``configs``, not yet opened. ConfigError lists every secret problem.

    ``http_client`` is shared by every webhook sink and stays the caller's to close; without
    one, each webhook sink makes (and closes) its own.
    """
    observer = observer or NullObserver()
    sinks: list[Sink] = []
    problems: list[ConfigProblem] = []
    for config in configs:
        if isinstance(config, StdoutConfig):
            sinks.append(StdoutSink(config, stream=stdout))
        elif isinstance(config, FileConfig):
            sinks.append(FileSink(config, clock=clock))
        elif isinstance(config, WebhookConfig):
            try:
                secret = webhook_secret(config, environ)
            except CredentialError as exc:
                problems.append(ConfigProblem(f"sinks.{config.name}.secret", str(exc)))
                continue
            sinks.append(
                WebhookSink(
                    config,
                    spool_path=spool_dir(config, state_dir),
                    dead_letter_path=dead_letter_file(config, state_dir),
                    secret=secret,
                    clock=clock,
                    observer=observer,
                    client=http_client,
                )
            )
        else:  # pragma: no cover - parse_sinks builds only the types above
            raise TypeError(f"unknown sink config {type(config).__name__}")
    if problems:
        raise ConfigError(problems, source="sinks")
    return sinks
