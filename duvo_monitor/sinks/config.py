"""The ``sinks:`` section of the config: frozen values, parsed with every problem reported.

:func:`parse_sinks` never stops at the first mistake: it returns the configs it could build and
one :class:`~duvo_monitor.errors.ConfigProblem` per problem, each with its YAML path
(``sinks[1].url: required for type webhook``). Defaults are the module constants below and are
documented in ``docs/sinks.md``. Paths that depend on the state directory (spool, dead letters)
stay ``None`` here and are resolved by :func:`duvo_monitor.sinks.build_sinks`. Pure.
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from duvo_monitor.errors import ConfigProblem
from duvo_monitor.units import parse_duration, parse_size

OnFull = Literal["block", "drop_oldest"]

DEFAULT_BUFFER = 1000
DEFAULT_REOPEN_CHECK = 1.0
DEFAULT_BATCH_SIZE = 1
DEFAULT_BATCH_MAX_WAIT = 0.2
DEFAULT_TIMEOUT = 10.0
DEFAULT_SPOOL_MAX = 1024**3
DEFAULT_RETRY_HORIZON = 86400.0
DEFAULT_MAX_BACKOFF = 300.0
DEFAULT_CONCURRENCY = 4
MAX_BATCH_SIZE = 10_000
WEBHOOK_SECRET_CREDENTIAL = "webhook-secret"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkConfig:
    """What every sink has: a name, a filter, a buffer and what to do when it is full."""

    type: str
    name: str
    types: tuple[str, ...] = ()
    agents: frozenset[str] = frozenset()
    buffer: int = DEFAULT_BUFFER
    on_full: OnFull = "block"


@dataclass(frozen=True, slots=True, kw_only=True)
class StdoutConfig(SinkConfig):
    flush: Literal["batch"] = "batch"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileConfig(SinkConfig):
    path: str
    # "batch": fsync before every ack; "never": leave it to the kernel; seconds: at most that old.
    fsync: Literal["batch", "never"] | float = "batch"
    reopen_check: float = DEFAULT_REOPEN_CHECK


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookConfig(SinkConfig):
    url: str
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_max_wait: float = DEFAULT_BATCH_MAX_WAIT
    timeout: float = DEFAULT_TIMEOUT
    secret_env: str | None = None
    secret_file: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    spool_path: str | None = None
    spool_max: int = DEFAULT_SPOOL_MAX
    retry_horizon: float = DEFAULT_RETRY_HORIZON
    max_backoff: float = DEFAULT_MAX_BACKOFF
    dead_letter_path: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY


_COMMON = frozenset({"type", "name", "types", "agents", "buffer", "on_full"})
_KEYS: dict[str, frozenset[str]] = {
    "stdout": _COMMON | {"flush"},
    "file": _COMMON | {"path", "fsync", "reopen_check"},
    "webhook": _COMMON
    | {
        "url",
        "batch_size",
        "batch_max_wait",
        "timeout",
        "secret_env",
        "secret_file",
        "headers",
        "spool_path",
        "spool_max",
        "retry_horizon",
        "max_backoff",
        "dead_letter_path",
        "concurrency",
    },
}
_T = TypeVar("_T")


class _Reader:
    """Reads one sink mapping, collecting problems instead of raising."""

    def __init__(self, raw: Mapping[str, Any], path: str, problems: list[ConfigProblem]) -> None:
        self.raw = raw
        self.path = path
        self.problems = problems

    def problem(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(f"{self.path}.{key}" if key else self.path, message))

    def get(self, key: str, default: _T, convert: Callable[[Any], _T], what: str) -> _T:
        if key not in self.raw or self.raw[key] is None:
            return default
        try:
            return convert(self.raw[key])
        except (TypeError, ValueError) as exc:
            detail = str(exc) if isinstance(exc, ValueError) and str(exc) else what
            self.problem(key, detail)
            return default

    def required_str(self, key: str, sink_type: str) -> str:
        value = self.raw.get(key)
        if value is None or value == "":
            self.problem(key, f"required for type {sink_type}")
            return ""
        if not isinstance(value, str):
            self.problem(key, "must be a string")
            return ""
        return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError
    return value


def _positive_int(limit: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        if not 1 <= value <= limit:
            raise ValueError(f"must be between 1 and {limit}")
        return value

    return convert


def _duration(value: Any) -> float:
    return parse_duration(value)


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0")
    return seconds


def _size(value: Any) -> int:
    size = parse_size(value)
    if size < 64 * 1024:
        raise ValueError("must be at least 64KiB")
    return size


def _on_full(value: Any) -> OnFull:
    if value == "block":
        return "block"
    if value == "drop_oldest":
        return "drop_oldest"
    raise ValueError("must be block or drop_oldest")


def _fsync(value: Any) -> Literal["batch", "never"] | float:
    if value == "batch":
        return "batch"
    if value == "never":
        return "never"
    try:
        return _positive_duration(value)
    except ValueError:
        raise ValueError("must be batch, never or a duration like 200ms") from None


def _string_list(reader: _Reader, key: str) -> tuple[str, ...]:
    value = reader.raw.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        reader.problem(key, "must be a list of strings")
        return ()
    items: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            reader.problem(f"{key}[{index}]", "must be a non-empty string")
        else:
            items.append(item)
    return tuple(items)


def _common(reader: _Reader, sink_type: str, default_name: str) -> dict[str, Any]:
    name = reader.get("name", default_name, _string, "must be a non-empty string")
    if not _NAME.match(name):
        reader.problem("name", "use letters, digits, '.', '_' and '-' (at most 64)")
    agents = _string_list(reader, "agents")
    for index, agent in enumerate(agents):
        try:
            uuid.UUID(agent)
        except ValueError:
            reader.problem(f"agents[{index}]", f"not a uuid: {agent!r}")
    return {
        "type": sink_type,
        "name": name,
        "types": _string_list(reader, "types"),
        "agents": frozenset(a.lower() for a in agents),
        "buffer": reader.get(
            "buffer", DEFAULT_BUFFER, _positive_int(10_000_000), "must be an integer"
        ),
        "on_full": reader.get("on_full", "block", _on_full, "must be block or drop_oldest"),
    }


def _stdout(reader: _Reader, common: dict[str, Any]) -> StdoutConfig:
    if reader.raw.get("flush", "batch") != "batch":
        reader.problem("flush", "must be batch")
    return StdoutConfig(**common)


def _file(reader: _Reader, common: dict[str, Any]) -> FileConfig:
    return FileConfig(
        **common,
        path=reader.required_str("path", "file"),
        fsync=reader.get("fsync", "batch", _fsync, "must be batch, never or a duration"),
        reopen_check=reader.get(
            "reopen_check", DEFAULT_REOPEN_CHECK, _positive_duration, "must be a duration"
        ),
    )


def _url(reader: _Reader) -> str:
    url = reader.required_str("url", "webhook")
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            reader.problem("url", f"not an http(s) URL: {url!r}")
    return url


def _headers(reader: _Reader) -> tuple[tuple[str, str], ...]:
    value = reader.raw.get("headers")
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        reader.problem("headers", "must be a mapping of header name to string")
        return ()
    headers: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(key, str) or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", key):
            reader.problem(f"headers.{key}", "not a valid header name")
        elif key.lower() in _RESERVED_HEADERS:
            reader.problem(f"headers.{key}", "set by the sink itself")
        elif not isinstance(item, str | int) or isinstance(item, bool):
            reader.problem(f"headers.{key}", "must be a string")
        else:
            headers.append((key, str(item)))
    return tuple(sorted(headers))


def _webhook(reader: _Reader, common: dict[str, Any]) -> WebhookConfig:
    secret_env = reader.get("secret_env", None, _string, "must be a non-empty string")
    secret_file = reader.get("secret_file", None, _string, "must be a non-empty string")
    if secret_env and secret_file:
        reader.problem("secret_file", "give secret_env or secret_file, not both")
    return WebhookConfig(
        **common,
        url=_url(reader),
        batch_size=reader.get(
            "batch_size", DEFAULT_BATCH_SIZE, _positive_int(MAX_BATCH_SIZE), "must be an integer"
        ),
        batch_max_wait=reader.get(
            "batch_max_wait", DEFAULT_BATCH_MAX_WAIT, _duration, "must be a duration"
        ),
        timeout=reader.get("timeout", DEFAULT_TIMEOUT, _positive_duration, "must be a duration"),
        secret_env=secret_env,
        secret_file=secret_file,
        headers=_headers(reader),
        spool_path=reader.get("spool_path", None, _string, "must be a non-empty string"),
        spool_max=reader.get("spool_max", DEFAULT_SPOOL_MAX, _size, "must be a size like 1GiB"),
        retry_horizon=reader.get(
            "retry_horizon", DEFAULT_RETRY_HORIZON, _positive_duration, "must be a duration"
        ),
        max_backoff=reader.get(
            "max_backoff", DEFAULT_MAX_BACKOFF, _positive_duration, "must be a duration"
        ),
        dead_letter_path=reader.get(
            "dead_letter_path", None, _string, "must be a non-empty string"
        ),
        concurrency=reader.get(
            "concurrency", DEFAULT_CONCURRENCY, _positive_int(256), "must be an integer"
        ),
    )


_BUILDERS: dict[str, Callable[[_Reader, dict[str, Any]], SinkConfig]] = {
    "stdout": _stdout,
    "file": _file,
    "webhook": _webhook,
}


def parse_sinks(raw: object, path: str = "sinks") -> tuple[list[SinkConfig], list[ConfigProblem]]:
    """The sink configs in ``raw`` (the YAML list) and every problem found, with YAML paths.

    ``None`` (the key is absent) means one stdout sink. Default names are the type for the first
    sink of a type and ``type-N`` for the N-th (``file``, ``file-2``), so adding a sink does not
    rename the ones before it.
    """
    problems: list[ConfigProblem] = []
    if raw is None:
        return [StdoutConfig(type="stdout", name="stdout")], problems
    if not isinstance(raw, list):
        return [], [ConfigProblem(path, "must be a list of sinks")]
    configs: list[SinkConfig] = []
    seen_types: dict[str, int] = {}
    names: dict[str, int] = {}
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(ConfigProblem(item_path, "must be a mapping with a type"))
            continue
        reader = _Reader(item, item_path, problems)
        sink_type = item.get("type")
        if sink_type is None:
            reader.problem("type", "required (stdout, file or webhook)")
            continue
        if sink_type not in _BUILDERS:
            reader.problem("type", f"unknown sink type {sink_type!r} (stdout, file or webhook)")
            continue
        for key in item:
            if key not in _KEYS[sink_type]:
                reader.problem(str(key), "unknown key")
        count = seen_types[sink_type] = seen_types.get(sink_type, 0) + 1
        default_name = sink_type if count == 1 else f"{sink_type}-{count}"
        config = _BUILDERS[sink_type](reader, _common(reader, sink_type, default_name))
        if config.name in names:
            reader.problem(
                "name", f"duplicate sink name {config.name!r} (see {path}[{names[config.name]}])"
            )
        names.setdefault(config.name, index)
        configs.append(config)
    return configs, problems
