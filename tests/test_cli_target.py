"""--base-url, --api-version, --team-id, --requests-per-minute and DUVO_API_URL, DUVO_API_VERSION,
DUVO_TEAM_ID through the real commands (``cli.main``) against the simulator on loopback: which
layer wins is seen in what the simulator was asked (its request log), not in our own state."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from test_cli_commands import (
    KEY,
    LONG,
    PLAIN,
    TEAM,
    Served,
    _deadline,  # noqa: F401 (the per-test timeout, autouse)
    cli,
    environ,
    scenario,
    write_config,
)

from duvo_monitor.clock import Clock
from duvo_monitor.simulator import Simulator

SPEED = 20.0
OTHER_TEAM = "0b0e7a6c-5c1e-4e57-9d1e-6a0c3f1f2b9d"


@pytest.fixture
def served() -> Iterator[Served]:
    clock = Clock.scaled(SPEED)
    sim = Simulator(scenario(), clock=clock, rate_limit=None, api_keys={KEY})
    with start_blocking_portal() as portal:
        future, bound = portal.start_task(sim.serve, "127.0.0.1", 0)
        try:
            yield Served(portal=portal, sim=sim, url=bound.url)
        finally:
            future.cancel()


def dead_url() -> str:
    """An address where nothing listens (a port that was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def paths(served: Served, since: int) -> list[str]:
    return served.call(lambda: [r.path for r in served.sim.requests[since:]])


def requests_so_far(served: Served) -> int:
    return served.call(lambda: len(served.sim.requests))


def test_base_url_flag_alone_reaches_the_api(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stop RUN --base-url URL`, with no config file, talks to that URL."""
    run_id = served.start_run(LONG)
    served.wait(run_id, lambda r: r["status"] == "running")
    result = cli(capsys, environ(served), "stop", run_id, "--base-url", served.url)
    assert result.code == 0, result.err
    assert result.json()["success"] is True
    assert served.run(run_id)["status"] == "stopped"


def test_environment_alone_reaches_the_api(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """DUVO_API_URL and DUVO_API_VERSION=v1 point `start` at the simulator's v1 routes."""
    env = environ(served, DUVO_API_URL=served.url, DUVO_API_VERSION="v1")
    before = requests_so_far(served)
    result = cli(capsys, env, "start", "--agent-id", PLAIN)
    assert result.code == 0, result.err
    assert result.json()["run"]["agent_id"] == PLAIN
    assert paths(served, before) == ["/v1/runs"]


def test_flag_beats_environment_beats_config(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the config and the environment pointing elsewhere, the flag decides; with no flag,
    the environment beats the config; each setting on its own (url, version, team)."""
    config = str(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text(f"api: {{base_url: '{dead_url()}', version: v1}}\n")

    # The flag beats a dead environment and a dead config.
    env = environ(served, DUVO_API_URL=dead_url())
    before = requests_so_far(served)
    flags = ["--base-url", served.url, "--api-version", "v2", "--team-id", TEAM]
    result = cli(capsys, env, "start", "--agent-id", PLAIN, "--config", config, *flags)
    assert result.code == 0, result.err
    assert paths(served, before) == [f"/v2/teams/{TEAM}/runs"]

    # No flag: the environment beats the config (url), the config stands where the environment
    # is silent (version v1).
    env = environ(served, DUVO_API_URL=served.url)
    before = requests_so_far(served)
    result = cli(capsys, env, "start", "--agent-id", PLAIN, "--config", config)
    assert result.code == 0, result.err
    assert paths(served, before) == ["/v1/runs"]

    # Team: the flag beats DUVO_TEAM_ID (an unknown team would be refused by the simulator).
    env = environ(served, DUVO_API_URL=served.url, DUVO_API_VERSION="v2", DUVO_TEAM_ID=OTHER_TEAM)
    refused = cli(capsys, env, "start", "--agent-id", PLAIN)
    assert refused.code == 1, refused.err
    before = requests_so_far(served)
    result = cli(capsys, env, "start", "--agent-id", PLAIN, "--team-id", TEAM)
    assert result.code == 0, result.err
    assert paths(served, before) == [f"/v2/teams/{TEAM}/runs"]


def test_config_file_beats_the_default(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With neither flag nor variable, the --config file's api section is used (as before)."""
    config = write_config(tmp_path / "c.yaml", served)
    run_id = served.start_run(LONG)
    result = cli(capsys, environ(served), "send", run_id, "hello", "--config", config)
    assert result.code == 0, result.err


@pytest.mark.parametrize(
    ("argv", "extra", "message"),
    [
        (["--api-version", "v3"], {}, "--api-version: expected v1 or v2, got 'v3'"),
        (["--base-url", "localhost:8080"], {}, "--base-url: expected an http(s) URL"),
        (["--team-id", "my-team"], {}, "--team-id: not a uuid"),
        (["--requests-per-minute", "0"], {}, "--requests-per-minute: expected a whole number"),
        ([], {"DUVO_API_URL": "ftp://x"}, "$DUVO_API_URL: expected an http(s) URL"),
        ([], {"DUVO_API_VERSION": "latest"}, "$DUVO_API_VERSION: expected v1 or v2"),
        ([], {"DUVO_TEAM_ID": "t"}, "$DUVO_TEAM_ID: not a uuid"),
    ],
)
def test_a_bad_value_exits_2_with_one_line(
    served: Served,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    extra: dict[str, str],
    message: str,
) -> None:
    """Every command refuses a bad target value before sending anything: exit 2, one line on
    stderr naming the flag or variable, nothing on stdout."""
    run_id = served.start_run(LONG)
    request = "b0000000-0000-4000-8000-000000000001"
    before = requests_so_far(served)
    commands = [
        ["watch", run_id],
        ["start", "--agent-id", PLAIN],
        ["send", run_id, "hi"],
        ["respond", run_id, request, "--approve"],
        ["stop", run_id],
    ]
    for command in commands:
        result = cli(capsys, environ(served, **extra), *command, *argv)
        assert result.code == 2, (command, result.err)
        assert result.err == f"duvo-monitor: {result.err.removeprefix('duvo-monitor: ')}"
        assert result.err.strip().count("\n") == 0 and message in result.err, result.err
        assert result.out == ""
    assert requests_so_far(served) == before


@pytest.mark.parametrize("command", ["watch", "start", "send", "respond", "stop"])
def test_help_names_the_flags_the_variables_and_the_order(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`COMMAND --help` lists the four flags and says which layer wins, with the variables."""
    with pytest.raises(SystemExit) as exited:
        cli(capsys, {}, command, "--help")
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--base-url", "--api-version", "--team-id", "--requests-per-minute"):
        assert flag in text
    for variable in ("DUVO_API_URL", "DUVO_API_VERSION", "DUVO_TEAM_ID"):
        assert variable in text
    assert "flag > environment > --config > default" in text
