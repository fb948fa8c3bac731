"""The one-shot CLI commands (start, send, respond, stop, watch) through ``cli.main`` against the
simulator served on loopback from a background event loop (the commands call ``anyio.run``
themselves, so they cannot run inside the test's loop); ``watch`` also as a real subprocess whose
stdout is a pipe. Every command's output is checked for the API key."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from anyio.from_thread import BlockingPortal, start_blocking_portal
from harness import CollectSink

from duvo_monitor.cli import main
from duvo_monitor.clock import CLOCK_ENV, Clock
from duvo_monitor.config import parse_config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.simulator import Scenario, Simulator

T = TypeVar("T")

KEY = "sim-key-cli-3f9b27d4c1e84a06"  # distinctive, so that any leak is found by a substring
CONTROL_TOKEN = "control-token-cli-8e1d5a2c7b094f31"
HOOK = "duvo-hooks/4c7e2a9f0b1d4e6a8f3c5b7d9e1a2c4f"
TEAM = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
PLAIN = "a0000000-0000-4000-8000-000000000003"  # the default script: completed at 7.5 s
FAILING = "a0000000-0000-4000-8000-000000000005"
APPROVAL = "a0000000-0000-4000-8000-000000000006"
QUESTION = "a0000000-0000-4000-8000-000000000007"
LONG = "a0000000-0000-4000-8000-000000000008"
SPEED = 20.0
TEST_TIMEOUT = 60  # wall seconds per test
QUESTIONS = [
    {
        "question": "Refund method?",
        "header": "Refund",
        "options": [{"label": "Card"}, {"label": "Store credit"}],
    }
]


def scenario() -> Scenario:
    ask = {"type": "approval", "title": "Go ahead?"}
    return Scenario.from_dict(
        {
            "version": 1,
            "team": {"id": TEAM, "name": "Test team"},
            "agents": [
                {"id": PLAIN, "name": "Plain"},
                {
                    "id": FAILING,
                    "name": "Failing",
                    "timeline": [
                        {"at": "1s", "status": "running"},
                        {"at": "2s", "say": "this will not work"},
                        {"at": "3s", "status": "failed"},
                    ],
                },
                {
                    "id": APPROVAL,
                    "name": "Asks approval",
                    "timeline": [
                        {"at": "1s", "status": "running"},
                        {"at": "2s", "human_request": ask},
                        {"after": "1s", "status": "completed"},
                    ],
                },
                {
                    "id": QUESTION,
                    "name": "Asks a question",
                    "timeline": [
                        {"at": "1s", "status": "running"},
                        {
                            "at": "2s",
                            "human_request": {
                                "type": "question",
                                "title": "Refund?",
                                "questions": QUESTIONS,
                            },
                        },
                        {"after": "1s", "status": "completed"},
                    ],
                },
                {
                    "id": LONG,
                    "name": "Long",
                    "timeline": [{"at": "1s", "status": "running"}, {"at": "2h", "say": "done"}],
                },
            ],
        }
    )


@dataclass(slots=True)
class Served:
    """The simulator on a loopback port, its event loop in a thread (reach it via ``call``)."""

    portal: BlockingPortal
    sim: Simulator
    url: str

    def call(self, fn: Callable[[], T]) -> T:
        return self.portal.call(fn)

    def run(self, run_id: str) -> dict[str, Any]:
        def summary() -> dict[str, Any]:
            run = self.sim.world.get_run(run_id)
            assert run is not None, run_id
            return {
                "status": run.shown_status,
                "pending": None if run.pending is None else run.pending.id,
                "webhook_url": run.webhook_url,
                "messages": [m.to_api() for m in run.messages],
            }

        return self.call(summary)

    def start_run(self, agent: str) -> str:
        response = httpx.post(
            f"{self.url}/v1/runs",
            json={"agent_id": agent, "message": "go"},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=5.0,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["run"]["id"])

    def wait(self, run_id: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            run = self.run(run_id)
            if check(run):
                return run
            assert time.monotonic() < deadline, f"run {run_id} never got there: {run['status']}"
            time.sleep(0.01)


@pytest.fixture(autouse=True)
def _deadline() -> Iterator[None]:
    """A per-test timeout for these synchronous tests: SIGALRM raises in the main thread."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"test took more than {TEST_TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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


def write_config(path: Path, served: Served, **sections: Any) -> str:
    raw = {"api": {"base_url": served.url, "version": "v2"}, **sections}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def environ(served: Served, **extra: str) -> dict[str, str]:
    return {"DUVO_API_KEY": KEY, CLOCK_ENV: served.sim.clock.to_environ(), **extra}


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def split(self) -> tuple[Any, list[dict[str, Any]]]:
        """``start --watch``: the pretty run document, then one event per line."""
        first, end = json.JSONDecoder().raw_decode(self.out)
        return first, [json.loads(line) for line in self.out[end:].splitlines() if line.strip()]


def cli(capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str) -> Result:
    code = main(list(argv), environ=env)
    captured = capsys.readouterr()
    # The API key (and the control token) never reach stdout or stderr, whatever happened.
    for secret in (KEY, CONTROL_TOKEN):
        assert secret not in captured.out and secret not in captured.err
    return Result(code, captured.out, captured.err)


# -- start -----------------------------------------------------------------------------------


def test_start_prints_the_run_and_passes_no_webhook_url_by_default(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """start prints {"run": ...} and exits 0; without public_url/webhook_path, no webhook_url."""
    config = write_config(tmp_path / "c.yaml", served)
    result = cli(capsys, environ(served), "start", "--agent-id", PLAIN, "--config", config)
    assert result.code == 0, result.err
    run = result.json()["run"]
    assert run["agent_id"] == PLAIN and run["status"] == "pending"
    assert served.run(run["id"])["webhook_url"] is None


def test_start_passes_the_receiver_url_and_registers_with_the_daemon(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With control configured, start gives Duvo the daemon's receiver as webhook_url and adds
    the run to the running daemon over the control API; Duvo's push then reaches the daemon."""
    raw = {
        "api": {"base_url": served.url},
        "state": {"path": str(tmp_path / "daemon.db")},
        "control": {"listen": "127.0.0.1:0", "webhook_path": HOOK},
    }
    monitor = Monitor(
        parse_config(raw),
        api_key=Secret(KEY),
        environ={},
        clock=served.sim.clock,
        sinks=[CollectSink(served.sim.clock)],
        handle_signals=False,
        control_token=Secret(CONTROL_TOKEN),
    )
    future, _ = served.portal.start_task(monitor.run)
    try:
        port = served.call(lambda: monitor.bound["control"].port)
        control = {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "webhook_path": HOOK,
        }
        config = write_config(tmp_path / "c.yaml", served, control=control)
        env = environ(served, DUVO_MONITOR_CONTROL_TOKEN=CONTROL_TOKEN)
        result = cli(
            capsys, env, "start", "--agent-id", PLAIN, "--message", "hello", "--config", config
        )
        assert result.code == 0, result.err
        run_id = result.json()["run"]["id"]
        assert served.run(run_id)["webhook_url"] == f"http://127.0.0.1:{port}/{HOOK}"
        track = served.call(lambda: monitor.scheduler.tracks.get(run_id))
        assert track is not None and track.source == "api"
        served.wait(run_id, lambda r: r["status"] == "completed")

        def pushed() -> list[int | None]:
            return [d.status for d in served.sim.deliveries if d.run_id == run_id]

        deadline = time.monotonic() + 5
        while not served.call(pushed):
            assert time.monotonic() < deadline, "no webhook delivery"
            time.sleep(0.01)
        assert served.call(pushed) == [202]
    finally:
        served.call(lambda: monitor.stop(0))
        future.result(timeout=10)


def test_start_survives_a_daemon_that_is_not_running(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configured but absent daemon is a warning; the run is still started (exit 0)."""
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = f"127.0.0.1:{port}"
    control = {"listen": listen, "webhook_path": HOOK, "public_url": f"http://{listen}"}
    config = write_config(tmp_path / "c.yaml", served, control=control)
    env = environ(served, DUVO_MONITOR_CONTROL_TOKEN=CONTROL_TOKEN)
    result = cli(capsys, env, "start", "--agent-id", LONG, "--config", config)
    assert result.code == 0, result.err
    assert "could not register the run with the daemon" in result.err
    assert served.run(result.json()["run"]["id"])["status"] in ("pending", "starting", "running")


@pytest.mark.parametrize(
    ("agent", "code", "last"), [(PLAIN, 0, "completed"), (FAILING, 1, "failed")]
)
def test_start_watch_follows_the_run_to_its_end(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    agent: str,
    code: int,
    last: str,
) -> None:
    """start --watch prints the run, then its events as JSON lines until it ends; exit 0 when it
    completed, 1 when it failed."""
    config = write_config(tmp_path / "c.yaml", served)
    result = cli(
        capsys, environ(served), "start", "--agent-id", agent, "--watch", "--config", config
    )
    assert result.code == code, result.err
    run, events = result.split()
    run_id = run["run"]["id"]
    assert events and all(e["subject"] == run_id for e in events)
    statuses = [e["type"] for e in events if e["type"].startswith("ai.duvo.run.")]
    assert statuses[-1] == f"ai.duvo.run.{last}"
    assert "ai.duvo.message.created" in {e["type"] for e in events}


# -- send, respond, stop ---------------------------------------------------------------------


def test_send_resumes_a_completed_run(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """send posts a message (printed back) and a completed run runs again."""
    config = write_config(tmp_path / "c.yaml", served)
    run_id = served.start_run(PLAIN)
    before = len(served.wait(run_id, lambda r: r["status"] == "completed")["messages"])
    result = cli(capsys, environ(served), "send", run_id, "one more thing", "--config", config)
    assert result.code == 0, result.err
    message = result.json()["message"]
    assert message["role"] == "user" and "one more thing" in json.dumps(message)
    # The simulator's resume: running at once, two replies, completed again.
    served.wait(run_id, lambda r: r["status"] == "completed" and len(r["messages"]) == before + 3)
    truth = served.call(lambda: [(t.status_from, t.status_to) for t in served.sim.truth])
    assert ("completed", "running") in truth


@pytest.mark.parametrize(
    ("agent", "flags", "expected"),
    [
        (APPROVAL, ["--approve"], "approved"),
        (APPROVAL, ["--deny"], "rejected"),
        (QUESTION, ["--answer", "Refund method?=Store credit"], {"Refund method?": "Store credit"}),
    ],
)
def test_respond_answers_the_pending_request(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    agent: str,
    flags: list[str],
    expected: Any,
) -> None:
    """respond --approve/--deny/--answer Q=A answers the run's request; the run goes on."""
    config = write_config(tmp_path / "c.yaml", served)
    run_id = served.start_run(agent)
    request_id = served.wait(run_id, lambda r: r["pending"] is not None)["pending"]
    result = cli(capsys, environ(served), "respond", run_id, request_id, *flags, "--config", config)
    assert result.code == 0, result.err
    answered = result.json()["human_request"]
    assert answered["id"] == request_id and answered["run_id"] == run_id
    response = answered["response"]
    assert (json.loads(response) if isinstance(expected, dict) else response) == expected
    served.wait(run_id, lambda r: r["status"] == "completed")


def test_stop_stops_a_running_run(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stop prints {success, message} and the run ends as stopped; stopping again is harmless."""
    config = write_config(tmp_path / "c.yaml", served)
    run_id = served.start_run(LONG)
    served.wait(run_id, lambda r: r["status"] == "running")
    result = cli(capsys, environ(served), "stop", run_id, "--config", config)
    assert result.code == 0, result.err
    assert result.json()["success"] is True
    assert served.run(run_id)["status"] == "stopped"
    again = cli(capsys, environ(served), "stop", run_id, "--config", config)
    assert again.code == 0 and "nothing to stop" in again.json()["message"]


# -- usage errors ----------------------------------------------------------------------------


def test_usage_errors_exit_2_with_a_clear_message(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad uuids, a missing API key and a bad --answer: exit 2, one clear line, no traceback, and
    nothing sent to Duvo."""
    config = write_config(tmp_path / "c.yaml", served)
    run_id = served.start_run(LONG)
    request = "b0000000-0000-4000-8000-000000000001"
    env = environ(served)
    before = served.call(lambda: len(served.sim.requests))
    cases: list[tuple[dict[str, str], list[str], str]] = [
        (env, ["start", "--agent-id", "nope"], "agent id is not a uuid"),
        (env, ["send", "12345", "hi"], "run id is not a uuid"),
        (env, ["respond", run_id, "x-y", "--approve"], "human request id is not a uuid"),
        (env, ["respond", "r", request, "--deny"], "run id is not a uuid"),
        (env, ["stop", "not-a-run"], "run id is not a uuid"),
        (env, ["watch", run_id, "zzz"], "run id is not a uuid"),
        (env, ["respond", run_id, request, "--answer", "no equals sign"], "QUESTION=ANSWER"),
        (env, ["respond", run_id, request, "--answer", "=orphan"], "QUESTION=ANSWER"),
        ({CLOCK_ENV: env[CLOCK_ENV]}, ["send", run_id, "hi"], "no API key"),
        ({}, ["start", "--agent-id", PLAIN], "no API key"),
        ({}, ["stop", run_id], "DUVO_API_KEY"),
    ]
    for case_env, argv, message in cases:
        result = cli(capsys, case_env, *argv, "--config", config)
        assert result.code == 2, (argv, result.err)
        assert message in result.err, (argv, result.err)
        assert "Traceback" not in result.err and result.out == ""
    assert served.call(lambda: len(served.sim.requests)) == before


def test_api_refusals_exit_1_without_the_key(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What Duvo refuses (an unknown agent, a wrong key) is exit 1 with the server's message."""
    config = write_config(tmp_path / "c.yaml", served)
    unknown = "a0000000-0000-4000-8000-0000000000ff"
    result = cli(capsys, environ(served), "start", "--agent-id", unknown, "--config", config)
    assert result.code == 1 and "404" in result.err
    wrong = environ(served, DUVO_API_KEY="not-the-key")
    refused = cli(capsys, wrong, "stop", served.start_run(LONG), "--config", config)
    assert refused.code == 1 and "401" in refused.err
    assert "not-the-key" not in refused.err


# -- watch on a pipe -------------------------------------------------------------------------


@pytest.mark.parametrize(("second", "code"), [(PLAIN, 0), (FAILING, 1)])
def test_watch_on_a_pipe_prints_json_lines_and_exits_by_outcome(
    served: Served, tmp_path: Path, second: str, code: int
) -> None:
    """duvo-monitor watch in a subprocess, stdout a pipe: one CloudEvent per line for every
    watched run, exit 0 when all completed and 1 when one failed."""
    config = write_config(tmp_path / "c.yaml", served)
    runs = [served.start_run(PLAIN), served.start_run(second)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUVO_")}
    env.update(environ(served))
    proc = subprocess.run(
        [sys.executable, "-m", "duvo_monitor", "watch", *runs, "--config", config],
        env=env,
        capture_output=True,
        text=True,
        timeout=TEST_TIMEOUT - 10,
        check=False,
    )
    assert proc.returncode == code, proc.stderr[-2000:]
    assert KEY not in proc.stdout and KEY not in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {e["subject"] for e in events} == set(runs)
    assert all(e["specversion"] == "1.0" for e in events)
    ends = {e["subject"]: e["type"] for e in events if e["type"].startswith("ai.duvo.run.")}
    assert ends[runs[0]] == "ai.duvo.run.completed"
    assert ends[runs[1]] == ("ai.duvo.run.completed" if code == 0 else "ai.duvo.run.failed")
