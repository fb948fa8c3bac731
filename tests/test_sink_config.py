"""The ``sinks:`` config section: defaults, every problem with its YAML path, secrets."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from duvo_monitor.clock import Clock
from duvo_monitor.errors import ConfigError
from duvo_monitor.sinks.build import build_sinks
from duvo_monitor.sinks.config import (
    FileConfig,
    StdoutConfig,
    WebhookConfig,
    parse_sinks,
)
from duvo_monitor.sinks.file import FileSink
from duvo_monitor.sinks.stdout import StdoutSink
from duvo_monitor.sinks.webhook import WebhookSink

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def problems_of(raw: object) -> list[str]:
    return [str(p) for p in parse_sinks(raw)[1]]


def test_absent_section_means_one_stdout_sink() -> None:
    """No ``sinks:`` key gives the stdout sink, so the daemon always emits somewhere."""
    configs, problems = parse_sinks(None)
    assert problems == []
    assert configs == [StdoutConfig(type="stdout", name="stdout")]


def test_defaults_and_names() -> None:
    """Defaults are the documented ones; default names are type, then type-N."""
    configs, problems = parse_sinks(
        [
            {"type": "file", "path": "a.jsonl"},
            {"type": "file", "path": "b.jsonl", "fsync": "200ms"},
            {"type": "webhook", "url": "https://example.com/hook"},
        ]
    )
    assert problems == []
    first, second, hook = configs
    assert isinstance(first, FileConfig)
    assert isinstance(second, FileConfig)
    assert (first.name, second.name, hook.name) == ("file", "file-2", "webhook")
    assert first.fsync == "batch"
    assert second.fsync == pytest.approx(0.2)
    assert first.buffer == 1000
    assert first.on_full == "block"
    assert first.reopen_check == 1.0
    assert isinstance(hook, WebhookConfig)
    assert (hook.batch_size, hook.batch_max_wait, hook.timeout) == (1, 0.2, 10.0)
    assert (hook.spool_max, hook.retry_horizon, hook.max_backoff) == (1024**3, 86400.0, 300.0)
    assert hook.concurrency == 4
    assert hook.spool_path is None
    assert hook.dead_letter_path is None


def test_every_problem_is_reported_with_its_path() -> None:
    """All mistakes at once, each with its YAML path: missing, unknown, wrong type, bad value."""
    found = problems_of(
        [
            {"type": "file", "pth": "x"},
            {"type": "webhook", "batch_size": "many", "timeout": "soon", "url": "ftp://x"},
            {"type": "stdout", "buffer": 0, "on_full": "explode", "agents": ["nope"]},
            {"type": "carrier-pigeon"},
            "stdout",
            {"type": "webhook", "url": "http://h", "headers": {"webhook-id": "x"}},
            {"type": "file", "path": "p", "fsync": "sometimes", "name": "bad name!"},
        ]
    )
    assert found == [
        "sinks[0].pth: unknown key",
        "sinks[0].path: required for type file",
        "sinks[1].url: not an http(s) URL: 'ftp://x'",
        "sinks[1].batch_size: must be an integer",
        "sinks[1].timeout: not a duration (use 250ms, 10s, 2m, 1h or seconds): 'soon'",
        "sinks[2].agents[0]: not a uuid: 'nope'",
        "sinks[2].buffer: must be between 1 and 10000000",
        "sinks[2].on_full: must be block or drop_oldest",
        "sinks[3].type: unknown sink type 'carrier-pigeon' (stdout, file or webhook)",
        "sinks[4]: must be a mapping with a type",
        "sinks[5].headers.webhook-id: set by the sink itself",
        "sinks[6].name: use letters, digits, '.', '_' and '-' (at most 64)",
        "sinks[6].fsync: must be batch, never or a duration like 200ms",
    ]


def test_duplicate_names_and_missing_url() -> None:
    """Names must be unique; a webhook needs a url."""
    assert problems_of([{"type": "webhook"}, {"type": "stdout", "name": "webhook"}]) == [
        "sinks[0].url: required for type webhook",
        "sinks[1].name: duplicate sink name 'webhook' (see sinks[0])",
    ]


def test_not_a_list() -> None:
    """The section must be a list."""
    assert problems_of({"type": "stdout"}) == ["sinks: must be a list of sinks"]


def test_build_resolves_paths_and_secret(tmp_path: object) -> None:
    """Spool and dead-letter paths default under the state dir; the secret comes from env."""
    configs, _ = parse_sinks(
        [
            {"type": "stdout"},
            {"type": "file", "path": "out.jsonl"},
            {"type": "webhook", "url": "http://127.0.0.1:9/h", "secret_env": "HOOK_SECRET"},
        ]
    )
    sinks = build_sinks(
        configs, state_dir="/var/lib/dm", environ={"HOOK_SECRET": SECRET}, clock=Clock()
    )
    stdout, file, hook = sinks
    assert isinstance(stdout, StdoutSink)
    assert isinstance(file, FileSink)
    assert isinstance(hook, WebhookSink)
    assert hook.spool_path == "/var/lib/dm/spool-webhook"
    assert hook.dead_letter_path == "/var/lib/dm/dead-letter-webhook.jsonl"


def test_build_refuses_a_configured_but_missing_secret() -> None:
    """secret_env naming an unset variable is an error, not an unsigned webhook."""
    configs, _ = parse_sinks([{"type": "webhook", "url": "http://h/", "secret_env": "NOPE"}])
    with pytest.raises(ConfigError) as caught:
        build_sinks(configs, state_dir="/tmp", environ={}, clock=Clock())
    (problem,) = caught.value.problems
    assert problem.path == "sinks.webhook.secret"
    assert "not found" in problem.message


def test_build_refuses_a_secret_that_is_not_base64() -> None:
    """A secret that cannot be a Standard Webhooks key is refused without echoing it."""
    configs, _ = parse_sinks([{"type": "webhook", "url": "http://h/", "secret_env": "S"}])
    with pytest.raises(ConfigError) as caught:
        build_sinks(configs, state_dir="/tmp", environ={"S": "whsec_!!!not*base64"}, clock=Clock())
    assert "not*base64" not in str(caught.value)


def test_a_bad_agent_is_named_by_its_own_index() -> None:
    """Each entry of ``agents`` is checked where it stands, so a problem names its own index;
    only the canonical uuid form is one (another spelling would never match an event)."""
    hexed = "5f0c1b9e00004000800000000000001a"
    agents = ["", "nope", 3, "5F0C1B9E-0000-4000-8000-000000000001", hexed]
    configs, problems = parse_sinks([{"type": "stdout", "agents": agents, "types": "x"}])
    assert [str(p) for p in problems] == [
        "sinks[0].agents[0]: must be a non-empty string",
        "sinks[0].agents[1]: not a uuid: 'nope'",
        "sinks[0].agents[2]: must be a non-empty string",
        f"sinks[0].agents[4]: not a uuid: {hexed!r}",
        "sinks[0].types: must be a list of strings",
    ]
    assert configs[0].agents == {"5f0c1b9e-0000-4000-8000-000000000001"}


@pytest.mark.parametrize(
    ("sink_type", "config"),
    [("stdout", StdoutConfig), ("file", FileConfig), ("webhook", WebhookConfig)],
)
def test_the_keys_of_a_sink_are_its_config_fields(sink_type: str, config: type) -> None:
    """Every field of a sink's config is a key of its section, and nothing else is."""
    raw: dict[str, object] = {f.name: None for f in dataclasses.fields(config)}
    raw["type"] = sink_type
    raw.update({k: v for k, v in (("path", "p"), ("url", "https://h/")) if k in raw})
    raw["colour"] = "blue"
    assert problems_of([raw]) == ["sinks[0].colour: unknown key"]
