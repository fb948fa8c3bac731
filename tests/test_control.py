"""The control API and the Duvo webhook receiver, served by the real daemon against the simulator
over loopback HTTP (time compressed); plus the pure parts (body parsing, the run view)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from harness import CollectSink
from simfixtures import wait_until

from duvo_monitor.clock import Clock
from duvo_monitor.config import ControlConfig, parse_config
from duvo_monitor.control import BadDelivery, ControlError, parse_delivery, register_runs
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.demo import running
from duvo_monitor.errors import ConfigError
from duvo_monitor.simulator import DEFAULT_API_KEY, Scenario, Simulator

T = TypeVar("T")

TOKEN = "test-control-token-7f3a9c2e5b814d06"
HOOK = "hooks/6b2f0c8e4d1a4f7bb0c3e9d27a5f1c48"
TEAM = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
PLAIN = "a0000000-0000-4000-8000-000000000003"  # the simulator's default script: done at 7.5 s
SLOW = "a0000000-0000-4000-8000-000000000004"  # runs for a long time
SPEED = 10.0
# A schedule so slow that only a push can explain a prompt detection.
SLOW_SCHEDULE = {"min_interval": "300s", "max_interval": "600s", "sweep": "off"}


def rid(n: int) -> str:
    return f"e0000000-0000-4000-8000-{n:012d}"


def scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "version": 1,
            "team": {"id": TEAM, "name": "Test team"},
            "agents": [
                {"id": PLAIN, "name": "Plain"},
                {
                    "id": SLOW,
                    "name": "Slow",
                    "timeline": [{"at": "1s", "status": "running"}, {"at": "1h", "say": "late"}],
                },
            ],
            "runs": [
                {
                    "id": rid(1),
                    "agent": "Slow",
                    "start": "-10s",
                    "title": "already running",
                    "timeline": [
                        {"at": "1s", "status": "running"},
                        {"at": "2s", "say": "working on it"},
                        {"at": "1h", "status": "completed"},
                    ],
                },
            ],
        }
    )


@dataclass(slots=True)
class Daemon:
    sim: Simulator
    monitor: Monitor
    sink: CollectSink
    control: httpx.AsyncClient  # the control API, with the token
    duvo: httpx.AsyncClient  # the simulator, with its API key

    @property
    def url(self) -> str:
        return self.monitor.bound["control"].url

    @property
    def hook_url(self) -> str:
        return f"{self.url}/{HOOK}"

    async def start_run(self, agent: str, *, webhook: bool) -> str:
        body: dict[str, Any] = {"agent_id": agent, "message": "go"}
        if webhook:
            body["webhook_url"] = self.hook_url
        response = await self.duvo.post("/v1/runs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["run"]["id"])

    def emitted(self, run_id: str, type_: str) -> float | None:
        """When the sink received ``type_`` for ``run_id`` (simulated seconds), if it did."""
        for item in self.sink.received:
            if item.envelope["subject"] == run_id and item.envelope["type"] == type_:
                return item.at
        return None


@asynccontextmanager
async def serving_sim(clock: Clock) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    sim = Simulator(scenario(), clock=clock, rate_limit=None)
    async with anyio.create_task_group() as tg:
        bound = await tg.start(sim.serve, "127.0.0.1", 0)
        headers = {"authorization": f"Bearer {DEFAULT_API_KEY}"}
        async with httpx.AsyncClient(base_url=bound.url, headers=headers, timeout=5.0) as duvo:
            yield sim, duvo
        tg.cancel_scope.cancel()


@asynccontextmanager
async def running_daemon(
    sim: Simulator,
    duvo: httpx.AsyncClient,
    tmp_path: Path,
    *,
    polling: Mapping[str, Any] | None = None,
    control: Mapping[str, Any] | None = None,
) -> AsyncIterator[Daemon]:
    raw = {
        "api": {"base_url": str(duvo.base_url).rstrip("/"), "version": "v2"},
        "state": {"path": str(tmp_path / "state.db")},
        "polling": {"min_interval": "500ms", **(polling or {})},
        "control": {"listen": "127.0.0.1:0", "webhook_path": HOOK, **(control or {})},
    }
    sink = CollectSink(sim.clock)
    monitor = Monitor(
        parse_config(raw),
        api_key=Secret(DEFAULT_API_KEY),
        environ={},
        clock=sim.clock,
        sinks=[sink],
        handle_signals=False,
        control_token=Secret(TOKEN),
    )
    async with running(monitor):
        url = monitor.bound["control"].url
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5.0) as control_client:
            yield Daemon(sim=sim, monitor=monitor, sink=sink, control=control_client, duvo=duvo)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 10.0, interval: float = 0.02
) -> T:
    """Ask ``probe`` until it answers something; fail after ``within`` wall seconds."""
    with anyio.fail_after(within):
        while True:
            value = await probe()
            if value is not None:
                return value
            await anyio.sleep(interval)


@asynccontextmanager
async def world(tmp_path: Path, **kw: Any) -> AsyncIterator[Daemon]:
    """The simulator and the daemon with its control API, under a per-test deadline."""
    with anyio.fail_after(30):
        async with (
            serving_sim(Clock.scaled(SPEED)) as (sim, duvo),
            running_daemon(sim, duvo, tmp_path, **kw) as daemon,
        ):
            yield daemon


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_control_api_refuses_requests_without_the_right_token(tmp_path: Path) -> None:
    """No token, a wrong one, or another scheme: 401 with WWW-Authenticate, and nothing changes."""
    async with world(tmp_path) as d, httpx.AsyncClient(base_url=d.url, timeout=5.0) as bare:
        attempts = [
            bare.get("/runs"),
            bare.get("/runs", headers={"authorization": "Bearer wrong-token"}),
            bare.get("/runs", headers={"authorization": f"Bearer {TOKEN}x"}),
            bare.get("/runs", headers={"authorization": f"Basic {TOKEN}"}),
            bare.get("/runs", headers={"authorization": TOKEN}),
            bare.post("/runs", json={"run_ids": [rid(7)]}),
            bare.delete(f"/runs/{rid(1)}"),
            bare.get(f"/runs/{rid(1)}"),
        ]
        for attempt in attempts:
            response = await attempt
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"] == "unauthorized"
        assert rid(7) not in d.monitor.scheduler.tracks
        ok = await bare.get("/runs", headers={"authorization": f"bearer {TOKEN}"})
        assert ok.status_code == 200


def test_daemon_refuses_a_control_listener_without_a_token(tmp_path: Path) -> None:
    """control.listen without a token is a config error, not an open control API."""
    config = parse_config(
        {"state": {"path": str(tmp_path / "s.db")}, "control": {"listen": "127.0.0.1:0"}}
    )
    with pytest.raises(ConfigError, match=r"control\.listen"):
        Monitor(config, api_key=Secret("k"), environ={}, handle_signals=False)


# -- /runs -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_post_runs_adds_new_runs_and_reports_the_rest(tmp_path: Path) -> None:
    """POST /runs: 201 with what was added, 200 when every id was already watched; ids are
    normalised (lower case, duplicates dropped)."""
    async with world(tmp_path) as d:
        first = await d.control.post("/runs", json={"run_ids": [rid(1), rid(2).upper(), rid(1)]})
        assert first.status_code == 201
        assert first.json() == {"added": [rid(1), rid(2)], "already": []}
        again = await d.control.post("/runs", json={"run_id": rid(2)})
        assert again.status_code == 200
        assert again.json() == {"added": [], "already": [rid(2)]}
        mixed = await d.control.post("/runs", json={"run_ids": [rid(2), rid(3)]})
        assert mixed.status_code == 201
        assert mixed.json() == {"added": [rid(3)], "already": [rid(2)]}
        assert {rid(1), rid(2), rid(3)} <= set(d.monitor.scheduler.tracks)
        assert d.monitor.scheduler.tracks[rid(3)].source == "api"


@pytest.mark.anyio
async def test_post_runs_refuses_bad_bodies_and_names_bad_ids(tmp_path: Path) -> None:
    """Bad uuids are a 400 naming each one, and none of the request is applied."""
    async with world(tmp_path) as d:
        bad = await d.control.post("/runs", json={"run_ids": [rid(5), "nope", "12345"]})
        assert bad.status_code == 400
        body = bad.json()
        assert body["error"] == "bad_request"
        assert body["invalid"] == ["nope", "12345"]
        assert "nope" in body["message"] and "12345" in body["message"]
        assert rid(5) not in d.monitor.scheduler.tracks
        for content in (b"not json", b"[]", b'{"run_ids": "x"}', b'{"run_ids": []}', b"{}"):
            response = await d.control.post("/runs", content=content)
            assert response.status_code == 400, content
            assert set(response.json()) >= {"error", "message"}
        put = await d.control.put("/runs", json={"run_id": rid(5)})
        assert put.status_code == 405
        assert put.headers["allow"] == "GET, POST"
        assert (await d.control.get("/nope")).status_code == 404


@pytest.mark.anyio
async def test_get_runs_shows_each_run_with_its_poll_state(tmp_path: Path) -> None:
    """GET /runs lists every watched run: status, phase, cursor, source, next poll, polls."""
    async with world(tmp_path, polling=SLOW_SCHEDULE) as d:
        await d.control.post("/runs", json={"run_id": rid(1)})

        async def settled() -> dict[str, Any] | None:
            run: dict[str, Any] = (await d.control.get("/runs")).json()["runs"][0]
            steady = run["status"] == "running" and (run["next_poll_in_seconds"] or 0) > 100
            return run if steady else None

        run = await eventually(settled)
        assert set(run) == {
            "run_id",
            "agent_id",
            "status",
            "phase",
            "cursor",
            "source",
            "lost",
            "retired",
            "next_poll_in_seconds",
            "polls",
        }
        sim_run = d.sim.world.get_run(rid(1))
        assert sim_run is not None
        assert run["run_id"] == rid(1) and run["agent_id"] == SLOW
        assert run["phase"] == "active" and run["source"] == "api"
        assert run["cursor"] == len(sim_run.messages)
        assert run["lost"] is False and run["retired"] is False and run["polls"] >= 1
        # The slow schedule: the next look is minutes away (simulated).
        assert 200 <= run["next_poll_in_seconds"] <= 600
        one = await d.control.get(f"/runs/{rid(1)}")
        assert one.status_code == 200 and one.json()["run"]["run_id"] == rid(1)
        assert (await d.control.get(f"/runs/{rid(9)}")).status_code == 404


@pytest.mark.anyio
async def test_delete_runs_stops_watching(tmp_path: Path) -> None:
    """DELETE /runs/{id}: 200 and gone; 404 when not watched; 400 for a bad id."""
    async with world(tmp_path) as d:
        await d.control.post("/runs", json={"run_ids": [rid(1), rid(2)]})
        gone = await d.control.delete(f"/runs/{rid(2)}")
        assert gone.status_code == 200 and gone.json() == {"removed": [rid(2)]}
        runs = (await d.control.get("/runs")).json()["runs"]
        assert [r["run_id"] for r in runs] == [rid(1)]
        assert (await d.control.delete(f"/runs/{rid(2)}")).status_code == 404
        assert (await d.control.delete("/runs/not-a-uuid")).status_code == 400


@pytest.mark.anyio
async def test_runs_added_over_the_api_survive_a_restart(tmp_path: Path) -> None:
    """A run added over the API is still watched by the next daemon on the same state file;
    a deleted one is not."""
    with anyio.fail_after(30):
        async with serving_sim(Clock.scaled(SPEED)) as (sim, duvo):
            async with running_daemon(sim, duvo, tmp_path) as first:
                await first.control.post("/runs", json={"run_ids": [rid(1), rid(2), rid(3)]})
                await first.control.delete(f"/runs/{rid(3)}")
            async with running_daemon(sim, duvo, tmp_path) as second:
                runs = (await second.control.get("/runs")).json()["runs"]
                assert {(r["run_id"], r["source"]) for r in runs} == {
                    (rid(1), "api"),
                    (rid(2), "api"),
                }


# -- the webhook receiver --------------------------------------------------------------------


@pytest.mark.anyio
async def test_webhook_push_gets_the_completion_seen_long_before_the_schedule(
    tmp_path: Path,
) -> None:
    """With a 300-600 s schedule, a run whose completion Duvo pushes is emitted within a couple of
    simulated seconds of the push, while its twin without a webhook stays unseen for minutes."""
    async with world(tmp_path, polling=SLOW_SCHEDULE) as d:
        pushed = await d.start_run(PLAIN, webhook=True)
        quiet = await d.start_run(PLAIN, webhook=False)
        added = await d.control.post("/runs", json={"run_ids": [pushed, quiet]})
        assert added.status_code == 201

        def delivered() -> float | None:
            times = [w.time for w in d.sim.deliveries if w.event == "run_completed"]
            return times[0] if times else None

        pushed_at = await wait_until(delivered, within=10)
        seen_at = await wait_until(lambda: d.emitted(pushed, "ai.duvo.run.completed"), within=5)
        completed_at = next(
            t.time for t in d.sim.truth if t.run_id == pushed and t.status_to == "completed"
        )
        twin = (await d.control.get(f"/runs/{quiet}")).json()["run"]
        # The simulator stamps a delivery once the receiver has answered (our 202).
        print(
            f"\nwebhook: run completed at +0.000 s, delivery answered at "
            f"+{pushed_at - completed_at:.3f} s, completion emitted at "
            f"+{seen_at - completed_at:.3f} s (simulated); the twin without a webhook: "
            f"status {twin['status']}, next poll in {twin['next_poll_in_seconds']} s"
        )
        assert seen_at - completed_at < 2.0
        assert seen_at >= pushed_at - 0.5  # the push, not luck, got it seen
        assert twin["status"] != "completed"
        assert twin["next_poll_in_seconds"] is not None
        assert twin["next_poll_in_seconds"] > 200
        assert d.emitted(quiet, "ai.duvo.run.completed") is None
        assert d.monitor.scheduler.tracks[pushed].polls < 10


@pytest.mark.anyio
async def test_webhook_for_an_unknown_run_starts_watching_it(tmp_path: Path) -> None:
    """A delivery about a run the daemon never heard of adds it (source webhook, persisted) and
    the run's story is emitted from the start."""
    async with world(tmp_path, polling=SLOW_SCHEDULE) as d:
        run_id = await d.start_run(PLAIN, webhook=True)
        assert run_id not in d.monitor.scheduler.tracks
        seen = await wait_until(lambda: d.emitted(run_id, "ai.duvo.run.completed"), within=10)
        assert seen is not None
        assert d.monitor.scheduler.tracks[run_id].source == "webhook"
        # The end is published first; the run's messages follow within the same poll.
        told = await wait_until(lambda: d.emitted(run_id, "ai.duvo.message.created"), within=10)
        assert told is not None
        stored = {r.run_id: r for r in await d.monitor.state.load()}
        assert stored[run_id].watched and stored[run_id].source == "webhook"
        assert [w.status for w in d.sim.deliveries] == [202]


@pytest.mark.anyio
async def test_webhook_reads_duvo_bodies_tolerantly(tmp_path: Path) -> None:
    """Event under event/type/event_type, run id under run_id/runId/run.id/data: all 202, no
    bearer token needed, unknown runs watched and known ones poked."""
    bodies = [
        {"event": "run_completed", "run_id": rid(11), "status": "completed"},
        {"type": "run_failed", "runId": rid(12)},
        {"event_type": "human_request", "run": {"id": rid(13), "status": "waiting"}},
        {"type": "ai.duvo.run_interrupted", "data": {"run_id": rid(14).upper()}},
        {"run_id": rid(15)},  # no event name: still worth a look
        {"event": "something_new", "run_id": rid(16), "extra": [1, 2, {"x": None}]},
    ]
    async with world(tmp_path) as d, httpx.AsyncClient(base_url=d.url, timeout=5.0) as bare:
        for body in bodies:
            response = await bare.post(f"/{HOOK}", json=body)
            assert response.status_code == 202, body
        assert {rid(n) for n in range(11, 17)} <= set(d.monitor.scheduler.tracks)
        again = await bare.post(f"/{HOOK}/", json={"event": "run_completed", "run_id": rid(11)})
        assert again.status_code == 202
        assert d.monitor.scheduler.tracks[rid(11)].source == "webhook"


@pytest.mark.anyio
async def test_webhook_refuses_junk_with_400_and_big_bodies_with_413(tmp_path: Path) -> None:
    """Junk is a 400 with {error, message}, never a 500; over 64 KiB is 413; only the configured
    path is the receiver (404 elsewhere), and it takes POST only."""
    junk: list[bytes] = [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"run_completed"',
        b"null",
        b'{"event": "run_completed"}',
        b'{"run_id": 12}',
        b'{"run_id": "not-a-uuid"}',
        b'{"run": "' + rid(1).encode() + b'"}',
        b"[" * 20_000 + b"]" * 20_000,  # deep nesting: a RecursionError inside json
    ]
    async with world(tmp_path) as d, httpx.AsyncClient(base_url=d.url, timeout=5.0) as bare:
        for body in junk:
            response = await bare.post(f"/{HOOK}", content=body)
            assert response.status_code == 400, body[:40]
            assert set(response.json()) == {"error", "message"}
        big = {"event": "run_completed", "run_id": rid(1), "pad": "x" * (64 * 1024)}
        assert (await bare.post(f"/{HOOK}", json=big)).status_code == 413
        assert (await bare.post(f"/{HOOK[:-1]}", json={"run_id": rid(1)})).status_code == 404
        assert (await bare.post("/hooks", json={"run_id": rid(1)})).status_code == 404
        wrong_method = await bare.get(f"/{HOOK}")
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        assert list(d.monitor.scheduler.tracks) == []
        # The daemon is still serving after all that.
        assert (await d.control.get("/runs")).status_code == 200


@pytest.mark.anyio
async def test_no_receiver_without_a_webhook_path(tmp_path: Path) -> None:
    """Without control.webhook_path there is no receiver: every other path is a 404."""
    async with (
        world(tmp_path, control={"webhook_path": None}) as d,
        httpx.AsyncClient(base_url=d.url, timeout=5.0) as bare,
    ):
        assert (await bare.post(f"/{HOOK}", json={"run_id": rid(1)})).status_code == 404
        assert (await bare.post("/", json={"run_id": rid(1)})).status_code == 404


def test_parse_delivery_shapes() -> None:
    """The pure body reader: where it finds the run id, the event and the status."""
    assert parse_delivery(
        b'{"event":"run_failed","run_id":"%s","status":"failed"}' % rid(1).encode()
    ) == (
        parse_delivery(
            b'{"type":"run_failed","run":{"id":"%s","status":"failed"}}' % rid(1).encode()
        )
    )
    nested = parse_delivery(b'{"data":{"runId":"%s","event_type":"x"}}' % rid(2).upper().encode())
    assert (nested.run_id, nested.event, nested.status) == (rid(2), "x", None)
    long_name = parse_delivery(b'{"event":"%s","run_id":"%s"}' % (b"e" * 500, rid(3).encode()))
    assert long_name.event is not None and len(long_name.event) == 64
    for junk in (b"{", b"[]", b'{"run_id": null}', b'{"run_id": "x"}'):
        with pytest.raises(BadDelivery):
            parse_delivery(junk)


# -- the client ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_register_runs_talks_to_the_running_daemon(tmp_path: Path) -> None:
    """register_runs posts to the daemon at control.listen with the token from the environment
    and returns what was new; refusals and silence are ControlErrors with a clear message."""
    async with world(tmp_path) as d:
        control = ControlConfig(listen=f"127.0.0.1:{d.monitor.bound['control'].port}")
        environ = {"DUVO_MONITOR_CONTROL_TOKEN": TOKEN}
        assert await register_runs(control, environ, [rid(21), rid(22)]) == [rid(21), rid(22)]
        assert await register_runs(control, environ, [rid(21)]) == []
        assert d.monitor.scheduler.tracks[rid(22)].source == "api"

        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        from_file = ControlConfig(listen=control.listen, token_file=str(token_file))
        assert await register_runs(from_file, {}, [rid(23)]) == [rid(23)]

        with pytest.raises(ControlError, match="401") as refused:
            await register_runs(control, {"DUVO_MONITOR_CONTROL_TOKEN": "wrong"}, [rid(24)])
        assert refused.value.status == 401
        with pytest.raises(ControlError, match="400"):
            await register_runs(control, environ, ["nope"])
        with pytest.raises(ControlError, match="no control token"):
            await register_runs(control, {}, [rid(24)])
        with pytest.raises(ControlError, match=r"control\.listen"):
            await register_runs(ControlConfig(), environ, [rid(24)])
        assert rid(24) not in d.monitor.scheduler.tracks


@pytest.mark.anyio
async def test_register_runs_says_so_when_no_daemon_answers() -> None:
    """Nothing listening: a ControlError naming the URL, quickly, not a hang or an httpx error."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # a port that was just free: connection refused
    control = ControlConfig(listen=f"127.0.0.1:{port}")
    with anyio.fail_after(10), pytest.raises(ControlError, match="did not answer") as info:
        await register_runs(control, {"DUVO_MONITOR_CONTROL_TOKEN": TOKEN}, [rid(1)])
    assert info.value.status is None
    assert f"127.0.0.1:{port}" in str(info.value)
    assert TOKEN not in str(info.value)
