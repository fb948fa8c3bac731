"""What the real daemon process tells the outside (issues 6 and 7): sd_notify datagrams on a
socket the test opens, the live ``/metrics`` ``/healthz`` ``/readyz`` listener with values that
match what was emitted, and logs and stdout of a full session free of every secret it holds."""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import standardwebhooks
from anyio.from_thread import start_blocking_portal
from proc import (
    Processes,
    Sim,
    Tail,
    behind,
    caught_up,
    daemon_config,
    free_port,
    read_events,
    tracebacks,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families

from duvo_monitor.httpserver import Request, Response, serve

SPEED = 10.0
# Six runs that start at once and are over within about 50 simulated seconds (5 s here).
SHORT = "generate:runs=6,active=6,duration=30,message_rate=1.0"
SHORT_SEED = 2
TERMINAL = ("completed", "failed", "stopped", "interrupted")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    with Processes(tmp_path) as p:
        yield p


def settle(procs: Processes, sim: Sim, tail: Tail, timeout: float = 20) -> None:
    quiet = sim.quiet_at()
    procs.wait_until(
        lambda: sim.now() > quiet and caught_up(sim.runs(), tail.envelopes()),
        timeout,
        "the world to go quiet and the daemon to catch up",
        why=lambda: (sim.now() - quiet, behind(sim.runs(), tail.envelopes())),
    )


# -- sd_notify --------------------------------------------------------------------------------


@dataclass
class NotifySocket:
    """The datagram socket systemd would hand a ``Type=notify`` service."""

    path: str
    sock: socket.socket
    received: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def poll(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.received.append((time.monotonic(), fields))

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, f) for t, f in self.received if key in f]


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # AF_UNIX paths are capped at 108 bytes: not under pytest's long tmp_path.
    folder = tempfile.mkdtemp(prefix="sd-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.setblocking(False)
        yield NotifySocket(path, sock)
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_sd_notify_ready_status_watchdog_and_stopping(
    procs: Processes, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """Under a NOTIFY_SOCKET with WATCHDOG_USEC=2 s: READY=1 once polling, STATUS= naming the
    runs watched and the budget, WATCHDOG=1 about every second (never 2 s apart), STOPPING=1 on
    SIGTERM, then exit 0."""
    sim = procs.simulator(SHORT, speed=SPEED, seed=SHORT_SEED)
    config = write_config(
        tmp_path / "config.yaml",
        daemon_config(tmp_path, sim, sinks=[{"type": "file", "path": str(tmp_path / "e.jsonl")}]),
    )
    procs.tickers.append(notify_socket.poll)
    daemon = procs.daemon(
        config, sim, env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000"}
    )
    procs.wait_until(lambda: notify_socket.with_key("READY"), 10, "READY=1")
    procs.wait_until(
        lambda: len(notify_socket.with_key("WATCHDOG")) >= 4, 6, "four WATCHDOG=1 pings"
    )
    procs.wait_until(
        lambda: any(
            re.fullmatch(
                r"watching [1-9]\d* runs; \d+/300 requests in the last minute", f["STATUS"]
            )
            for _, f in notify_socket.with_key("STATUS")
        ),
        6,
        "a STATUS= line with runs watched and budget",
        why=lambda: notify_socket.with_key("STATUS"),
    )
    daemon.signal(signal.SIGTERM)
    assert procs.wait_exit(daemon, 5) == 0, daemon.stderr()[-3000:]
    notify_socket.poll()

    ready = notify_socket.with_key("READY")
    assert ready[0][1]["READY"] == "1"
    pings = [t for t, f in notify_socket.with_key("WATCHDOG") if f["WATCHDOG"] == "1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 1.6, gaps  # WATCHDOG_USEC / 2 = 1 s, with room for a busy machine
    assert min(gaps) > 0.5, gaps
    stopping = notify_socket.with_key("STOPPING")
    assert stopping and stopping[0][1]["STOPPING"] == "1"
    assert ready[0][0] < stopping[0][0]
    assert not tracebacks(daemon.stderr())


# -- /metrics /healthz /readyz ------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, ls), v in values.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


def test_metrics_listener_serves_real_values_that_promtool_accepts(
    procs: Processes, tmp_path: Path
) -> None:
    """``metrics.listen`` on a free loopback port: /readyz turns 200 after the first API answer,
    /healthz is 200, and after the runs end /metrics counts exactly the runs, statuses and
    messages that reached the file sink, the API requests the simulator logged, and passes
    ``promtool check metrics``."""
    sim = procs.simulator(SHORT, speed=SPEED, seed=SHORT_SEED)
    port = free_port()
    events = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path / "config.yaml",
        daemon_config(
            tmp_path,
            sim,
            sinks=[{"type": "file", "path": str(events)}],
            metrics={"listen": f"127.0.0.1:{port}"},
        ),
    )
    tail = Tail(events, sim.now)
    procs.tickers.append(tail.poll)
    daemon = procs.daemon(config, sim)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0)
    try:
        readyz: list[int] = []

        def ready() -> bool:
            try:
                answer = http.get("/readyz")
            except httpx.TransportError:
                return False  # not listening yet
            readyz.append(answer.status_code)
            return answer.status_code == 200

        procs.wait_until(ready, 10, "/readyz 200")
        assert http.get("/readyz").json()["status"] == "ready"
        assert http.get("/healthz").status_code == 200
        settle(procs, sim, tail)
        api_before = len(sim.requests())
        scrape = http.get("/metrics")
        api_after = len(sim.requests())
        openmetrics = http.get("/metrics", headers={"accept": "application/openmetrics-text"})
    finally:
        http.close()
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    daemon.signal(signal.SIGTERM)
    assert procs.wait_exit(daemon, 5) == 0

    values = samples(scrape.text)
    envelopes = read_events(events)
    finished = Counter(
        e["data"]["to"]
        for e in envelopes
        if e["type"].startswith("ai.duvo.run.") and e["data"].get("to") in TERMINAL
    )
    assert sum(finished.values()) >= 4, finished
    for status in TERMINAL:
        assert total(values, "duvo_runs_finished_total", status=status) == finished[status]
    agents = {dict(ls)["agent_id"] for n, ls in values if n == "duvo_runs_finished_total"}
    for agent in agents:  # every terminal status exists for every agent, zeros included
        for status in TERMINAL:
            key = ("duvo_runs_finished_total", (("agent_id", agent), ("status", status)))
            assert key in values, key
    messages = sum(1 for e in envelopes if e["type"] == "ai.duvo.message.created")
    assert total(values, "duvo_messages_total") == messages
    assert total(values, "duvo_run_duration_seconds_count") == sum(finished.values())
    requests = total(values, "duvo_monitor_api_requests_total")
    workers = 16
    assert api_before - workers <= requests <= api_after, (api_before, requests, api_after)
    assert total(values, "duvo_monitor_api_budget_limit") == 300
    assert total(values, "duvo_monitor_events_delivered_total") == len(envelopes)

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape.content,
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert check.returncode == 0, (check.stdout + check.stderr).decode()


# -- secrets ------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A webhook endpoint on the project's own small server: 500 three times, then 204."""

    url: str = ""
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    refused: int = 0

    async def handle(self, request: Request) -> Response:
        if self.refused < 3:
            self.refused += 1
            return Response.json(500, {"error": "try again"})
        self.deliveries.append((request.headers, request.body))
        return Response(status=204)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with start_blocking_portal() as portal:
        future, bound = portal.start_task(serve, r.handle, "127.0.0.1", 0)
        r.url = f"{bound.url}/hook"
        try:
            yield r
        finally:
            future.cancel()
            with contextlib.suppress(BaseException):
                future.result(timeout=5)


def spellings(secret: str) -> set[str]:
    """A secret and the forms it could leak in: a signing key without its prefix, base64."""
    forms = {secret}
    if secret.startswith("whsec_"):
        forms.add(secret.removeprefix("whsec_"))
    forms.add(base64.b64encode(secret.encode()).decode())
    return forms


def test_no_secret_appears_in_the_logs_or_stdout_of_a_full_session(
    procs: Processes, tmp_path: Path, receiver: Receiver
) -> None:
    """A session at debug level with an API key, a signed webhook sink (whose receiver fails
    first), a control API with its token and webhook path, a SIGHUP, refused and accepted
    control calls: none of the four secrets shows in stderr or stdout, while each was used."""
    api_key = "duvo_sk_" + secrets.token_hex(20)
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    control_token = secrets.token_urlsafe(32)
    webhook_path = "hooks/" + secrets.token_urlsafe(24)
    sim = procs.simulator(SHORT, speed=SPEED, seed=SHORT_SEED, api_key=api_key)
    control_port = free_port()
    events = tmp_path / "events.jsonl"
    raw = daemon_config(
        tmp_path,
        sim,
        sinks=[
            {"type": "stdout"},
            {"type": "file", "path": str(events)},
            {
                "type": "webhook",
                "url": receiver.url,
                "secret_env": "DUVO_WEBHOOK_SECRET",
                "max_backoff": "1s",
            },
        ],
        control={"listen": f"127.0.0.1:{control_port}", "webhook_path": webhook_path},
        logging={"level": "debug", "format": "json"},
    )
    config = write_config(tmp_path / "config.yaml", raw)
    tail = Tail(events, sim.now)
    procs.tickers.append(tail.poll)
    daemon = procs.daemon(
        config,
        sim,
        api_key=api_key,
        env={"DUVO_WEBHOOK_SECRET": webhook_secret, "DUVO_MONITOR_CONTROL_TOKEN": control_token},
    )
    control = httpx.Client(base_url=f"http://127.0.0.1:{control_port}", timeout=5.0)
    try:
        procs.wait_until(lambda: len(tail.received) >= 5, 10, "events")
        good = {"authorization": f"Bearer {control_token}"}
        assert control.get("/runs", headers=good).status_code == 200
        for wrong in (f"Bearer {api_key}", f"Bearer {webhook_secret}", control_token, "Basic x"):
            answer = control.get("/runs", headers={"authorization": wrong})
            assert answer.status_code == 401
        run_id = sim.runs()[-1]["id"]  # one that exists: a run id unknown to the API is lost
        assert control.post("/runs", json={"run_ids": [run_id]}, headers=good).status_code < 300
        hook = control.post(f"/{webhook_path}", json={"event": "run_completed", "run_id": run_id})
        assert hook.status_code == 202, hook.text
        assert control.post("/hooks/wrong-path", json={"run_id": run_id}).status_code == 404
        daemon.signal(signal.SIGHUP)
        procs.wait_until(lambda: daemon.events_logged("config reloaded"), 5, "the reload")
        settle(procs, sim, tail)
        procs.wait_until(
            lambda: len(receiver.deliveries) >= len(tail.received), 10, "every webhook delivery"
        )
    finally:
        control.close()
    daemon.signal(signal.SIGTERM)
    assert procs.wait_exit(daemon, 5) == 0, daemon.stderr()[-3000:]

    # Each secret was in use: the key opened the API, the secret signed, the token let us in.
    assert any(r["api_key_ok"] for r in sim.requests())
    headers, body = receiver.deliveries[0]
    standardwebhooks.Webhook(webhook_secret).verify(body, headers)
    output = {"stderr": daemon.stderr(), "stdout": daemon.stdout()}
    assert output["stdout"].count("\n") >= len(tail.received)
    for name, secret in [
        ("API key", api_key),
        ("webhook secret", webhook_secret),
        ("control token", control_token),
        ("webhook path", webhook_path.removeprefix("hooks/")),
    ]:
        for stream, text in output.items():
            for form in spellings(secret):
                assert form not in text, f"the {name} appears in {stream}"
    assert not tracebacks(output["stderr"])
