"""The ``sinks:`` section of the config: frozen values, parsed with every problem reported.

:func:`parse_sinks` never stops at the first mistake: it returns the configs it could build and
one :class:`~duvo_monitor.errors.ConfigProblem` per problem, each with its YAML path
(``sinks[1].url: required for type webhook``), collected through
:class:`duvo_monitor.reader.Reader`. A sink's keys are its config dataclass's fields. Defaults are
the module constants below and are documented in ``docs/sinks.md``. Paths that depend on the state
directory (spool, dead letters) stay ``None`` here and are resolved by
:func:`duvo_monitor.sinks.build_sinks`. Pure.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from duvo_monitor.errors import ConfigProblem
from duvo_monitor.ids import is_uuid
from duvo_monitor.reader import Reader
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


def _keys(config: type[SinkConfig]) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(config))


# A sink's keys are its config's fields: a field added there is a key here.
_KEYS = {
    "stdout": _keys(StdoutConfig),
    "file": _keys(FileConfig),
    "webhook": _keys(WebhookConfig),
}


def _required_str(reader: Reader, key: str, sink_type: str) -> str:
    value = reader.value(key)
    if value is None or value == "":
        reader.problem(key, f"required for type {sink_type}")
        return ""
    if not isinstance(value, str):
        reader.problem(key, "must be a string")
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


def _string_list(reader: Reader, key: str, item: Callable[[Any], str] = _string) -> tuple[str, ...]:
    return reader.items(
        key, item, what="must be a non-empty string", not_list="must be a list of strings"
    )


def _agent(value: Any) -> str:
    # The uuid check of the whole config (canonical form only): a sink filter of another spelling
    # ("{...}", no hyphens) would never match an event's agent id.
    text = _string(value)
    if not is_uuid(text):
        raise ValueError(f"not a uuid: {text!r}")
    return text.lower()


def _common(reader: Reader, sink_type: str, default_name: str) -> dict[str, Any]:
    name = reader.get("name", default_name, _string, "must be a non-empty string")
    if not _NAME.match(name):
        reader.problem("name", "use letters, digits, '.', '_' and '-' (at most 64)")
    # Each agent is checked where it stands, so that a problem names its own index.
    agents = _string_list(reader, "agents", _agent)
    return {
        "type": sink_type,
        "name": name,
        "types": _string_list(reader, "types"),
        "agents": frozenset(agents),
        "buffer": reader.get(
            "buffer", DEFAULT_BUFFER, _positive_int(10_000_000), "must be an integer"
        ),
        "on_full": reader.get("on_full", "block", _on_full, "must be block or drop_oldest"),
    }


def _stdout(reader: Reader, common: dict[str, Any]) -> StdoutConfig:
    if reader.value("flush") not in (None, "batch"):
        reader.problem("flush", "must be batch")
    return StdoutConfig(**common)


def _file(reader: Reader, common: dict[str, Any]) -> FileConfig:
    return FileConfig(
        **common,
        path=_required_str(reader, "path", "file"),
        fsync=reader.get("fsync", "batch", _fsync, "must be batch, never or a duration"),
        reopen_check=reader.get(
            "reopen_check", DEFAULT_REOPEN_CHECK, _positive_duration, "must be a duration"
        ),
    )


def _url(reader: Reader) -> str:
    url = _required_str(reader, "url", "webhook")
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            reader.problem("url", f"not an http(s) URL: {url!r}")
    return url


def _headers(reader: Reader) -> tuple[tuple[str, str], ...]:
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


def _webhook(reader: Reader, common: dict[str, Any]) -> WebhookConfig:
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
            "batch_max_wait", DEFAULT_BATCH_MAX_WAIT, parse_duration, "must be a duration"
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


_BUILDERS: dict[str, Callable[[Reader, dict[str, Any]], SinkConfig]] = {
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

    def report(path: str, message: str) -> None:
        problems.append(ConfigProblem(path, message))

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
        reader = Reader(item, item_path, report)
        sink_type = item.get("type")
        if sink_type is None:
            reader.problem("type", "required (stdout, file or webhook)")
            continue
        if sink_type not in _BUILDERS:
            reader.problem("type", f"unknown sink type {sink_type!r} (stdout, file or webhook)")
            continue
        reader.finish(_KEYS[sink_type])
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
