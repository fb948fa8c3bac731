"""``watch`` answers fast where the daemon would wait: a run the API never showed, an overall
--timeout, a refused key, an address where nothing listens. Through ``cli.main`` against the
simulator on loopback with a compressed clock (stdout is captured, so not a terminal: JSON
lines), durations given in simulated seconds."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from test_cli_commands import (
    KEY,
    LONG,
    PLAIN,
    Served,
    _deadline,  # noqa: F401 (the per-test timeout, autouse)
    cli,
    environ,
    scenario,
)

from duvo_monitor.clock import Clock
from duvo_monitor.credentials import API_KEY, CREDENTIALS_DIRECTORY_ENV
from duvo_monitor.models import parse_time
from duvo_monitor.simulator import Scenario, Simulator

SPEED = 20.0
NOWHERE = "0b0e7a6c-5c1e-4e57-9d1e-6a0c3f1f2b9d"  # an id the simulator has never had
OLD_GRACE = 120.0  # what a never-seen run got before --appear-timeout


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


def events(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_an_unknown_id_is_not_found_after_the_appear_grace(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped id next to a real run: the real one is followed to its end, the unknown one is
    reported lost on stdout (as before) once its grace is over, and not later than the old
    two-minute grace; exit 1 with `run <id> not found` on stderr."""
    real = served.start_run(PLAIN)
    started = served.sim.clock.time()
    env = environ(served)
    result = cli(
        capsys, env, "watch", real, NOWHERE, "--base-url", served.url, "--appear-timeout", "15s"
    )
    assert result.code == 1, result.err
    assert f"duvo-monitor: run {NOWHERE} not found" in result.err
    assert f"run {real} not found" not in result.err
    out = events(result.out)
    lost = [e for e in out if e["subject"] == NOWHERE]
    assert [e["type"] for e in lost] == ["ai.duvo.run.lost"]
    data = lost[0]["data"]
    assert isinstance(data, dict) and data["last_status"] is None
    when = parse_time(str(lost[0]["time"]))
    assert when is not None and 15.0 <= when - started < OLD_GRACE
    ends = [
        e["type"] for e in out if e["subject"] == real and str(e["type"]).startswith("ai.duvo.run.")
    ]
    assert ends[-1] == "ai.duvo.run.completed"


def test_a_run_that_appears_within_the_grace_is_followed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The grace is what it is for: a run that 404s at first (created 20 s after the simulator
    started) is followed to its own end once it appears, not reported `not found`."""
    late = "e0000000-0000-4000-8000-00000000000a"
    story = Scenario.from_dict(
        {
            "version": 1,
            "agents": [{"id": PLAIN, "name": "Plain"}],
            "runs": [
                {
                    "id": late,
                    "agent": "Plain",
                    "start": "20s",
                    "timeline": [
                        {"at": "1s", "status": "running"},
                        {"at": "3s", "say": "late but here"},
                        {"at": "4s", "status": "failed"},
                    ],
                }
            ],
        }
    )
    sim = Simulator(story, clock=Clock.scaled(SPEED), rate_limit=None, api_keys={KEY})
    with start_blocking_portal() as portal:
        future, bound = portal.start_task(sim.serve, "127.0.0.1", 0)
        try:
            served = Served(portal=portal, sim=sim, url=bound.url)
            args = ["watch", late, "--base-url", served.url, "--appear-timeout", "2m"]
            result = cli(capsys, environ(served), *args)
            looks = served.call(lambda: [r.status for r in sim.requests if late in r.path])
        finally:
            future.cancel()
    assert result.code == 1 and "not found" not in result.err, result.err
    assert looks[0] == 404 and 200 in looks
    out = events(result.out)
    assert [e["type"] for e in out if str(e["type"]).startswith("ai.duvo.run.")][-1] == (
        "ai.duvo.run.failed"
    )
    assert "ai.duvo.run.lost" not in {e["type"] for e in out}


def test_timeout_exits_124_naming_what_was_still_running(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """--timeout bounds the whole watch: a run that goes on for hours is left with exit 124 and a
    line naming it and its status; the one that ended in time is not named."""
    long = served.start_run(LONG)
    plain = served.start_run(PLAIN)
    served.wait(long, lambda r: r["status"] == "running")
    served.wait(plain, lambda r: r["status"] == "completed")
    # 100 simulated seconds (5 s of wall time): ample for the ended run to be seen even on a
    # loaded machine, nothing against the long run's two hours.
    result = cli(
        capsys, environ(served), "watch", long, plain, "--base-url", served.url, "--timeout", "100s"
    )
    assert result.code == 124, result.err
    line = next(x for x in result.err.splitlines() if "timed out after 100s" in x)
    assert f"{long} (running)" in line and plain not in line
    assert {e["subject"] for e in events(result.out)} == {long, plain}


@pytest.mark.parametrize("where", ["env", "file", "credential"])
def test_a_refused_key_exits_2_naming_its_source(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """A key the API refuses (401) ends the watch at once with exit 2 and a line saying where the
    key came from (the variable, the file, the systemd credential), never the key; nothing on
    stdout."""
    wrong = "wrong-key-4a1f9c2e7b3d"
    run_id = served.start_run(LONG)
    env = environ(served)
    del env["DUVO_API_KEY"]
    config = tmp_path / "c.yaml"
    config.write_text(f"api: {{base_url: '{served.url}'}}\n")
    if where == "env":
        env["DUVO_API_KEY"] = wrong
        source = "$DUVO_API_KEY"
    elif where == "file":
        key_file = tmp_path / "key"
        key_file.write_text(wrong + "\n")
        config.write_text(f"api: {{base_url: '{served.url}', key_file: '{key_file}'}}\n")
        source = str(key_file)
    else:
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / API_KEY).write_text(wrong)
        env[CREDENTIALS_DIRECTORY_ENV] = str(creds)
        source = f"systemd credential {API_KEY}"
    result = cli(capsys, env, "watch", run_id, "--config", str(config), "--timeout", "1h")
    assert result.code == 2, result.err
    assert "refused the key" in result.err and source in result.err, result.err
    assert wrong not in result.err and wrong not in result.out
    assert result.out == ""


def test_an_unreachable_api_is_retried_until_the_timeout(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens at --base-url: one stderr line per attempt, numbered, with the backoff
    growing, until --timeout ends it with 124."""
    url = dead_url()
    result = cli(capsys, environ(served), "watch", PLAIN, "--base-url", url, "--timeout", "20s")
    assert result.code == 124, result.err
    attempts = [
        x for x in result.err.splitlines() if x.startswith(f"duvo-monitor: cannot reach {url}")
    ]
    assert len(attempts) >= 2, result.err
    assert all(f"(attempt {n}:" in line for n, line in enumerate(attempts, start=1))
    assert "without reaching" in result.err and PLAIN in result.err.splitlines()[-1]
    assert result.out == ""
