"""Logging: JSON lines or console, the level filter, and secrets that never reach the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from duvo_monitor.logs import REDACTED, configure_logging, forget_secrets, register_secret

API_KEY = "duvo_sk_live_4f9a8b7c6d5e"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ODD_SECRET = 'pa"ss\\wörd-42'


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)
    forget_secrets()


@pytest.fixture
def secrets() -> None:
    for secret in (API_KEY, WEBHOOK_SECRET, ODD_SECRET):
        register_secret(secret)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_no_secret(text: str) -> None:
    for secret in (API_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), ODD_SECRET):
        for spelling in (secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]):
            assert spelling not in text


def test_json_lines_when_not_a_terminal() -> None:
    """Without a terminal every line is one JSON object with an ISO UTC timestamp and the level."""
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger().info("run polled", run_id="r-1", requests=3)
    [line] = json_lines(out)
    assert line["event"] == "run polled"
    assert (line["level"], line["run_id"], line["requests"]) == ("info", "r-1", 3)
    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert line["timestamp"].endswith("Z")
    assert stamp.utcoffset() == timedelta(0)


def test_console_with_colours_on_a_terminal() -> None:
    """On a terminal the default is the console renderer, in colour."""
    out = Terminal()
    configure_logging(stream=out)
    structlog.get_logger().warning("sink is retrying", sink="webhook")
    text = out.getvalue()
    assert "sink is retrying" in text
    assert "\x1b[" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_console_forced_without_terminal_has_no_colour_codes() -> None:
    """json=False off a terminal renders readable key=value lines without escape codes."""
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    structlog.get_logger().info("run polled", run_id="r-1")
    assert "run polled" in out.getvalue()
    assert "run_id=r-1" in out.getvalue()
    assert "\x1b[" not in out.getvalue()


def test_json_forced_on_a_terminal() -> None:
    """json=True wins over a terminal."""
    out = Terminal()
    configure_logging(json=True, stream=out)
    structlog.get_logger().info("hello")
    assert json_lines(out)[0]["event"] == "hello"


def test_level_filter() -> None:
    """Events below the configured level are dropped, for structlog and stdlib loggers alike."""
    out = io.StringIO()
    configure_logging("warning", stream=out)
    log = structlog.get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    logging.getLogger("somelib").info("stdlib info")
    logging.getLogger("somelib").error("stdlib error")
    assert [line["event"] for line in json_lines(out)] == ["w", "stdlib error"]
    configure_logging("DEBUG", stream=out)
    log.debug("d2")
    assert json_lines(out)[-1]["event"] == "d2"


def test_unknown_level_is_refused() -> None:
    """A misspelt level is an error, not a silent default."""
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging("verbose")


def test_reconfigure_reaches_existing_loggers_without_duplicates() -> None:
    """A logger taken before a reconfiguration writes to the new stream, once per event."""
    log = structlog.get_logger()
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    configure_logging(stream=second)
    log.info("after")
    logging.getLogger("lib").warning("from stdlib")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["after", "from stdlib"]


def test_context_is_bound() -> None:
    """Context bound through contextvars or bind() appears on every line."""
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.contextvars.bind_contextvars(run_id="r-9")
    structlog.get_logger().bind(agent_id="a-1").info("status changed")
    [line] = json_lines(out)
    assert (line["run_id"], line["agent_id"]) == ("r-9", "a-1")


@pytest.mark.usefixtures("secrets")
@pytest.mark.parametrize("as_json", [True, False])
def test_registered_secrets_redacted_in_fields_and_messages(as_json: bool) -> None:
    """Registered secrets vanish from messages, values, keys and nested data, in both formats."""
    out = io.StringIO()
    configure_logging(json=as_json, stream=out)
    log = structlog.get_logger()
    log.info(f"calling with {API_KEY}", header=f"Bearer {API_KEY}")
    log.info("nested", data={"list": [API_KEY, {"deeper": ODD_SECRET}], API_KEY: 1})
    log.info("webhook", signing="MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", raw=WEBHOOK_SECRET)
    log.info("odd", value=ODD_SECRET, wrapped=(ODD_SECRET,))
    text = out.getvalue()
    assert_no_secret(text)
    assert REDACTED in text
    if as_json:
        lines = json_lines(out)
        assert lines[0]["event"] == f"calling with {REDACTED}"
        assert lines[0]["header"] == f"Bearer {REDACTED}"
        assert lines[1]["data"] == {"list": [REDACTED, {"deeper": REDACTED}], REDACTED: 1}


def test_secret_named_fields_redacted() -> None:
    """Fields named like a key, secret, token or authorization are hidden; counts are not."""
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger().info(
        "request",
        api_key="unregistered-value",
        headers={"Authorization": "Bearer abc", "Accept": "application/json"},
        control_token="t0ken",
        webhook_secret=b"bytes",
        max_tokens=4096,
        token_count=None,
    )
    [line] = json_lines(out)
    assert line["api_key"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert line["control_token"] == REDACTED
    assert line["webhook_secret"] == REDACTED
    assert (line["max_tokens"], line["token_count"]) == (4096, None)


@pytest.mark.usefixtures("secrets")
@pytest.mark.parametrize("as_json", [True, False])
def test_secrets_redacted_in_exceptions(as_json: bool) -> None:
    """A secret in an exception's message or traceback is redacted, in both formats."""
    out = io.StringIO()
    configure_logging(json=as_json, stream=out)
    try:
        raise RuntimeError(f"401 for key {API_KEY} and {ODD_SECRET}")
    except RuntimeError:
        structlog.get_logger().exception("request failed")
    try:
        raise ValueError(WEBHOOK_SECRET)
    except ValueError as exc:
        logging.getLogger("httpx").error("stdlib failure", exc_info=exc)
    text = out.getvalue()
    assert "RuntimeError: 401 for key ***" in text
    assert "ValueError: ***" in text
    assert_no_secret(text)


@pytest.mark.usefixtures("secrets")
def test_secrets_redacted_inside_opaque_objects() -> None:
    """A secret inside an object only its repr shows is caught in the rendered line."""

    class Config:
        def __repr__(self) -> str:
            return f"Config(api_key={API_KEY!r})"

    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger().info("loaded", config=Config(), error=OSError(API_KEY))
    assert_no_secret(out.getvalue())
    assert "Config(api_key='***')" in out.getvalue()


def test_short_values_are_not_registered() -> None:
    """Values too short to be secrets would shred every line, so they are ignored."""
    register_secret("")
    register_secret("ab")
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger().info("about a tab")
    assert json_lines(out)[0]["event"] == "about a tab"


# -- every configured secret, through a world ------------------------------------------------


@pytest.mark.anyio
async def test_no_configured_secret_reaches_debug_logs_of_a_world(tmp_path: Path) -> None:
    """The daemon runs a small world at debug level with every secret configured (API key,
    control token, webhook signing secret, the control webhook path): none of their values is
    in what it logged, nor in a line that quotes each of them outright, as a careless error
    message would; every secret the daemon read is registered for redaction."""
    from simfixtures import PLAIN_AGENT, run_id, scenario
    from sinkkit import Receiver

    from duvo_monitor import httpserver
    from duvo_monitor.clock import Clock
    from duvo_monitor.config import parse_config
    from duvo_monitor.credentials import API_KEY as API_KEY_ID
    from duvo_monitor.credentials import CONTROL_TOKEN, require_secret
    from duvo_monitor.daemon import Monitor
    from duvo_monitor.demo import follow_world, running
    from duvo_monitor.simulator import Simulator

    api_key = "duvo_sk_live_world_9f8e7d6c5b4a"
    token = "ctl-token-0c1d2e3f4a5b6c7d"
    hook_path = "hooks/duvo-3b9d7f1e5c2a4b6d8e0f"
    environ = {
        "DUVO_API_KEY": api_key,
        "DUVO_MONITOR_CONTROL_TOKEN": token,
        "DUVO_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out)
    clock = Clock.scaled(40)
    run = run_id(7)
    sim = Simulator(scenario([{"id": run, "agent": PLAIN_AGENT}]), clock=clock, api_keys={api_key})
    receiver = Receiver()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            bound = await tg.start(sim.serve, "127.0.0.1", 0)
            hooks = await tg.start(
                lambda task_status: httpserver.serve(
                    receiver.handle, "127.0.0.1", 0, name="receiver", task_status=task_status
                )
            )
            config = parse_config(
                {
                    "api": {"base_url": bound.url, "key_env": "DUVO_API_KEY"},
                    "state": {"path": str(tmp_path / "state.db")},
                    "watch": {"runs": [run]},
                    "polling": {"min_interval": "500ms"},
                    "control": {"listen": "127.0.0.1:0", "webhook_path": hook_path},
                    "sinks": [
                        {
                            "type": "webhook",
                            "name": "hook",
                            "url": f"{hooks.url}/events",
                            "secret_env": "DUVO_WEBHOOK_SECRET",
                        }
                    ],
                }
            )
            monitor = Monitor(
                config,
                api_key=require_secret(API_KEY_ID, environ=environ, env_var="DUVO_API_KEY"),
                environ=environ,
                clock=clock,
                handle_signals=False,
                control_token=require_secret(
                    CONTROL_TOKEN, environ=environ, env_var="DUVO_MONITOR_CONTROL_TOKEN"
                ),
            )
            async with running(monitor):
                assert await follow_world(monitor, sim, step=2.0)
                while not receiver.accepted:  # the webhook sink posted, signed
                    await clock.sleep(0.5)
            tg.cancel_scope.cancel()
    assert receiver.accepted[0].headers.get("webhook-signature", "").startswith("v1,")
    world_logged = out.getvalue()
    assert '"level": "debug"' in world_logged or '"level":"debug"' in world_logged
    for value in (api_key, token, WEBHOOK_SECRET, hook_path):
        assert value not in world_logged, f"a secret in the world's logs: {value[:6]}..."
    probe = structlog.get_logger("probe")
    for value in (api_key, token, WEBHOOK_SECRET):
        probe.debug("a careless message", detail=f"it was {value}!", error=ValueError(value))
    logged = out.getvalue()
    for value in (api_key, token, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_")):
        assert value not in logged, f"a secret in the logs: {value[:6]}..."
    assert logged.count(REDACTED) >= 3


def test_capped_keeps_the_first_items_and_counts_the_rest() -> None:
    """A list of any length logs as at most ten items and a count of the others."""
    from duvo_monitor.logs import capped

    ids = [f"id-{n}" for n in range(500)]
    assert capped(ids) == [*ids[:10], "... 490 more"]
    assert capped(ids[:10]) == ids[:10]
    assert capped(iter(ids[:3]), limit=2) == ["id-0", "id-1", "... 1 more"]
