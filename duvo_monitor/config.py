"""The config file, read once into a frozen tree; every problem reported with its YAML path.

``load_config(path, environ)`` either returns a :class:`Config` or raises :class:`ConfigError`
listing *all* problems (unknown keys, wrong types, bad uuids, bad durations), so ``check-config``
and a refused SIGHUP reload can show them at once. Nothing else in the package reads YAML or the
environment for settings: the daemon gets this tree. Sink sections are parsed by
:mod:`duvo_monitor.sinks.config`, which owns their keys. Both read through
:class:`duvo_monitor.reader.Reader` with a report that collects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from duvo_monitor.errors import ConfigError, ConfigProblem
from duvo_monitor.httpserver import parse_listen
from duvo_monitor.ids import is_uuid
from duvo_monitor.reader import Reader, type_name
from duvo_monitor.sinks.config import SinkConfig, parse_sinks
from duvo_monitor.status_diff import NOT_FOUND_GRACE
from duvo_monitor.units import parse_duration

DEFAULT_BASE_URL = "https://api.duvo.ai"
DEFAULT_KEY_ENV = "DUVO_API_KEY"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    base_url: str = DEFAULT_BASE_URL
    version: Literal["v1", "v2"] = "v2"
    team_id: str | None = None
    requests_per_minute: int = 300
    key_env: str = DEFAULT_KEY_ENV
    key_file: str | None = None
    timeout: float = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoverConfig:
    agents: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: float = 3600.0
    interval: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchConfig:
    runs: tuple[str, ...] = ()
    runs_file: str | None = None
    discover: DiscoverConfig | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    path: str = "duvo-monitor.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    listen: str | None = None
    agent_label: bool = True
    tool_cap: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class PollingConfig:
    """How the request budget is spent. See docs/scheduling.md."""

    policy: Literal["adaptive", "round_robin", "fixed"] = "adaptive"
    min_interval: float = 1.0
    max_interval: float = 60.0
    waiting_interval: float = 30.0
    fixed_interval: float = 10.0
    linger: float = 3600.0
    linger_interval: float = 300.0
    forget_after: float = 600.0
    sweep: Literal["auto", "on", "off"] = "auto"
    sweep_interval: float = 1.0
    workers: int = 16
    tail_window: int = 5
    final_verify: Literal["full", "tail"] = "full"
    reserve: float = 0.1
    appear_timeout: float = NOT_FOUND_GRACE


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig:
    listen: str | None = None
    token_env: str = "DUVO_MONITOR_CONTROL_TOKEN"
    token_file: str | None = None
    webhook_path: str | None = None
    public_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    api: ApiConfig = field(default_factory=ApiConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    state: StateConfig = field(default_factory=StateConfig)
    sinks: tuple[SinkConfig, ...] = ()
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    polling: PollingConfig = field(default_factory=PollingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    source: str = "<defaults>"

    @property
    def state_dir(self) -> Path:
        return Path(self.state.path).resolve().parent


def _string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {type_name(value)} {value!r}")
    return value.strip()


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number >= 1, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _choice(*options: str) -> Callable[[object], Any]:
    def convert(value: object) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    return convert


def _uuid(value: object) -> str:
    if not isinstance(value, str) or not is_uuid(value.strip()):
        raise ValueError(f"not a uuid: {value!r}")
    return value.strip().lower()


def _listen(value: object) -> str:
    text = _string(value)
    parse_listen(text)
    return text


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"expected a number from 0 to below 1, got {value!r}")
    return float(value)


def _url(value: object) -> str:
    text = _string(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {text!r}")
    return text.rstrip("/")


def parse_config(raw: object, *, source: str = "config") -> Config:
    problems: list[ConfigProblem] = []

    def report(path: str, message: str) -> None:
        problems.append(ConfigProblem(path, message))

    root = Reader.of(raw, "", report)

    api = ApiConfig()
    if (s := root.section("api")) is not None:
        api = ApiConfig(
            base_url=s.get("base_url", api.base_url, _url),
            version=s.get("version", api.version, _choice("v1", "v2")),
            team_id=s.get("team_id", None, _uuid),
            requests_per_minute=s.get("requests_per_minute", 300, _positive_int),
            key_env=s.get("key_env", DEFAULT_KEY_ENV, _string),
            key_file=s.get("key_file", None, _string),
            timeout=s.get("timeout", api.timeout, parse_duration),
        )
        s.finish()

    watch = WatchConfig()
    if (s := root.section("watch")) is not None:
        discover = None
        if (d := s.section("discover")) is not None:
            discover = DiscoverConfig(
                agents=d.items("agents", _uuid),
                sources=d.items("sources", _string),
                statuses=d.items("statuses", _string),
                since=d.get("since", 3600.0, parse_duration),
                interval=d.get("interval", 30.0, parse_duration),
            )
            d.finish()
            if api.version != "v2":
                d.problem("", "discovery needs api.version v2 (v1 has no list-runs endpoint)")
        watch = WatchConfig(
            runs=s.items("runs", _uuid),
            runs_file=s.get("runs_file", None, _string),
            discover=discover,
        )
        s.finish()

    state = StateConfig()
    if (s := root.section("state")) is not None:
        state = StateConfig(path=s.get("path", state.path, _string))
        s.finish()

    sink_configs, sink_problems = parse_sinks(root.value("sinks"), "sinks")
    problems.extend(sink_problems)

    metrics = MetricsConfig()
    if (s := root.section("metrics")) is not None:
        metrics = MetricsConfig(
            listen=s.get("listen", None, _listen),
            agent_label=s.get("agent_label", True, _bool),
            tool_cap=s.get("tool_cap", 50, _positive_int),
        )
        s.finish()

    polling = PollingConfig()
    if (s := root.section("polling")) is not None:
        p = PollingConfig()
        polling = PollingConfig(
            policy=s.get("policy", p.policy, _choice("adaptive", "round_robin", "fixed")),
            min_interval=s.get("min_interval", p.min_interval, parse_duration),
            max_interval=s.get("max_interval", p.max_interval, parse_duration),
            waiting_interval=s.get("waiting_interval", p.waiting_interval, parse_duration),
            fixed_interval=s.get("fixed_interval", p.fixed_interval, parse_duration),
            linger=s.get("linger", p.linger, parse_duration),
            linger_interval=s.get("linger_interval", p.linger_interval, parse_duration),
            forget_after=s.get("forget_after", p.forget_after, parse_duration),
            sweep=s.get("sweep", p.sweep, _choice("auto", "on", "off")),
            sweep_interval=s.get("sweep_interval", p.sweep_interval, parse_duration),
            workers=s.get("workers", p.workers, _positive_int),
            tail_window=s.get("tail_window", p.tail_window, _positive_int),
            final_verify=s.get("final_verify", p.final_verify, _choice("full", "tail")),
            reserve=s.get("reserve", p.reserve, _fraction),
            appear_timeout=s.get("appear_timeout", p.appear_timeout, parse_duration),
        )
        if polling.min_interval > polling.max_interval:
            s.problem("min_interval", "must not be above polling.max_interval")
        if polling.tail_window >= 50:
            s.problem("tail_window", "must be below the page size (50)")
        s.finish()

    logging = LoggingConfig()
    if (s := root.section("logging")) is not None:
        logging = LoggingConfig(
            level=s.get("level", "info", _choice("debug", "info", "warning", "error")),
            format=s.get("format", "auto", _choice("auto", "json", "console")),
        )
        s.finish()

    control = ControlConfig()
    if (s := root.section("control")) is not None:
        control = ControlConfig(
            listen=s.get("listen", None, _listen),
            token_env=s.get("token_env", control.token_env, _string),
            token_file=s.get("token_file", None, _string),
            webhook_path=s.get("webhook_path", None, _string),
            public_url=s.get("public_url", None, _url),
        )
        s.finish()

    root.finish()
    if api.version == "v1" and polling.sweep == "on":
        problems.append(ConfigProblem("polling.sweep", "sweeps need api.version v2"))
    if problems:
        raise ConfigError(problems, source=source)
    return Config(
        api=api,
        watch=watch,
        state=state,
        sinks=tuple(sink_configs),
        metrics=metrics,
        polling=polling,
        logging=logging,
        control=control,
        source=source,
    )


def load_config(path: str | Path) -> Config:
    """Read and check a YAML config file; relative paths in it are relative to the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem("", f"cannot read: {exc.strerror}")], source=str(path)
        ) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [ConfigProblem("", f"{where}not valid YAML: {problem}")], source=str(path)
        ) from exc
    if raw is None:
        raw = {}
    return parse_config(_relative_to(raw, path.resolve().parent), source=str(path))


def _relative_to(raw: object, base: Path) -> object:
    """Make the file paths of a config relative to the config file's folder."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)

    def fix(section: object, key: str) -> None:
        if isinstance(section, dict) and isinstance(section.get(key), str):
            value = section[key]
            if value and not Path(value).is_absolute():
                section[key] = str(base / value)

    for name, keys in (
        ("state", ("path",)),
        ("watch", ("runs_file",)),
        ("api", ("key_file",)),
        ("control", ("token_file",)),
    ):
        if isinstance(raw.get(name), dict):
            raw[name] = dict(raw[name])
            for key in keys:
                fix(raw[name], key)
    if isinstance(raw.get("sinks"), list):
        sinks = []
        for sink in raw["sinks"]:
            if isinstance(sink, dict):
                sink = dict(sink)
                for key in ("path", "spool_path", "dead_letter_path", "secret_file"):
                    fix(sink, key)
            sinks.append(sink)
        raw["sinks"] = sinks
    return raw


def read_runs_file(path: str) -> tuple[list[str], list[ConfigProblem]]:
    """One uuid a line, ``#`` comments and blank lines allowed."""
    runs: list[str] = []
    problems: list[ConfigProblem] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [], [ConfigProblem("watch.runs_file", f"cannot read {path}: {exc.strerror}")]
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        if is_uuid(value):
            runs.append(value.lower())
        else:
            problems.append(ConfigProblem(f"{path}:{number}", f"not a uuid: {value!r}"))
    return runs, problems
