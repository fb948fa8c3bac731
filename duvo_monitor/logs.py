"""Logging: structlog to stderr, JSON lines for machines, colours for people, secrets never shown.

:func:`configure_logging` is called once by the CLI (and as often as they like by tests): it sets
the structlog pipeline and routes the standard library's ``logging`` (httpx, anyio, asyncio)
through the same renderer, so every line leaving the process has one format and one redaction.

The pipeline, in order::

    contextvars -> level -> timestamp (ISO, UTC) -> exception text -> redact -> render -> redact

Redaction works twice on purpose. Before rendering it walks the event (keys and values, nested
dicts and lists, the formatted traceback): values registered with :func:`register_secret` become
``***``, and so does every field whose name looks secret (``*key*``, ``*secret*``, ``*token*``,
``*password*``, ``authorization``, ``cookie``) unless its value is a number or a boolean (a
``max_tokens`` count is not a secret). After rendering, the finished line is scanned once more for
each secret, raw and in its JSON- and repr-escaped spellings, which catches secrets hidden inside
objects the first pass cannot see into (an exception's args, a dataclass's repr).

Lists of unbounded length (the ids of a dropped batch) are logged through :func:`capped`: the
first few and a count of the rest, so one line stays one line however large the batch.

Exceptions are always formatted to plain text before redaction; the console renderer's pretty
tracebacks would otherwise be drawn after the redactor has run.
"""

from __future__ import annotations

import json as _json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Shorter values would shred ordinary words in every line and are no secret anyway.
MIN_SECRET_LENGTH = 4
SECRET_FIELD = re.compile(r"key|secret|token|password|passwd|authorization|cookie", re.IGNORECASE)
# Standard Webhooks secrets are "whsec_" + base64 of the key; the key alone is secret too.
WEBHOOK_SECRET_PREFIX = "whsec_"
# How many items of a list :func:`capped` keeps: enough to find the batch, never the batch.
LOGGED_ITEMS_MAX = 10
# Libraries whose INFO lines are per request: 300 a minute of noise.
CHATTY_LIBRARIES = ("httpx", "httpcore", "hpack")


class Secrets:
    """The set of values that must never appear in a log line."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._spellings: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        value = value.strip()
        if len(value) < MIN_SECRET_LENGTH or value in self._values:
            return
        self._values.add(value)
        if value.startswith(WEBHOOK_SECRET_PREFIX):
            self.add(value.removeprefix(WEBHOOK_SECRET_PREFIX))
        spellings = set(self._spellings)
        for v in self._values:
            spellings.update(
                (
                    v,
                    _json.dumps(v)[1:-1],
                    _json.dumps(v, ensure_ascii=False)[1:-1],
                    repr(v)[1:-1],
                )
            )
        # Longest first, so that a secret containing another is replaced whole.
        self._spellings = tuple(sorted(spellings, key=len, reverse=True))

    def clear(self) -> None:
        self._values.clear()
        self._spellings = ()

    def scrub(self, text: str) -> str:
        for spelling in self._spellings:
            if spelling in text:
                text = text.replace(spelling, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self._spellings)


_SECRETS = Secrets()


def register_secret(value: str) -> None:
    """Never log ``value`` (an API key, a webhook secret, a control token); it stays registered."""
    _SECRETS.add(value)


def forget_secrets() -> None:
    """Forget every registered secret (for tests)."""
    _SECRETS.clear()


def capped(values: Iterable[str], limit: int = LOGGED_ITEMS_MAX) -> list[str]:
    """At most ``limit`` of ``values`` for a log field, then ``"... N more"`` if any were cut."""
    kept: list[str] = []
    more = 0
    for value in values:
        if len(kept) < limit:
            kept.append(value)
        else:
            more += 1
    if more:
        kept.append(f"... {more} more")
    return kept


def redact(value: Any, secrets: Secrets) -> Any:
    """``value`` with secrets replaced, recursively through dicts, lists, tuples and sets."""
    if isinstance(value, str):
        return secrets.scrub(value)
    if isinstance(value, dict):
        return {_redact_key(k, secrets): _redact_field(k, v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, secrets) for v in value]
    return value


def _redact_key(key: Any, secrets: Secrets) -> Any:
    return secrets.scrub(key) if isinstance(key, str) else key


def _redact_field(key: Any, value: Any, secrets: Secrets) -> Any:
    if (
        isinstance(key, str)
        and SECRET_FIELD.search(key)
        and value is not None
        and not isinstance(value, bool | int | float)
    ):
        return REDACTED
    return redact(value, secrets)


class RedactEvent:
    """Processor: secrets out of an event's keys, values and exception text."""

    def __init__(self, secrets: Secrets) -> None:
        self._secrets = secrets

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        redacted: EventDict = redact(dict(event_dict), self._secrets)
        return redacted


class RedactedRenderer:
    """Processor: ``renderer``, then secrets out of the finished line, whatever hid them."""

    def __init__(self, renderer: Processor, secrets: Secrets) -> None:
        self._renderer = renderer
        self._secrets = secrets

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        line = self._renderer(logger, name, event_dict)
        if isinstance(line, bytes | bytearray):
            line = bytes(line).decode("utf-8", "replace")
        return self._secrets.scrub(str(line))


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(LEVELS)}") from None


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def configure_logging(
    level: str = "info",
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send structlog and stdlib logging to ``stream`` (default: stderr at call time).

    ``json=None`` picks JSON lines unless ``stream`` is a terminal; ``level`` is one of
    debug, info, warning, error, critical. Calling it again replaces the previous setup.
    """
    out = sys.stderr if stream is None else stream
    threshold = _level_number(level)
    as_json = not _is_tty(out) if json is None else json
    renderer: Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False, default=repr)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        RedactEvent(_SECRETS),
    ]
    structlog.configure(
        processors=[*shared, RedactedRenderer(renderer, _SECRETS)],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Loggers taken at import time must follow a later reconfiguration (tests, the CLI).
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, threshold, shared, renderer)


def _route_stdlib(
    out: TextIO, threshold: int, shared: Iterable[Processor], renderer: Processor
) -> None:
    handler = logging.StreamHandler(out)
    handler.set_name("duvo_monitor")
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                RedactedRenderer(renderer, _SECRETS),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "duvo_monitor"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING))


__all__ = [
    "REDACTED",
    "Secrets",
    "capped",
    "configure_logging",
    "forget_secrets",
    "redact",
    "register_secret",
]
