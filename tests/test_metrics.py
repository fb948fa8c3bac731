"""Telemetry: what each method does to the registry, label bounds, and the live listener."""

from __future__ import annotations

import json
from functools import partial

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from duvo_monitor import models
from duvo_monitor.clock import Clock
from duvo_monitor.httpserver import Bound
from duvo_monitor.metrics import (
    KNOWN_STATUSES,
    OTHER,
    TERMINAL_STATUSES,
    LabelCap,
    Telemetry,
    serve_metrics,
)

AGENT = "5f0c1b9e-0000-4000-8000-000000000001"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def telemetry(registry: CollectorRegistry) -> Telemetry:
    return Telemetry(registry, process_metrics=False)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [s.labels for m in registry.collect() for s in m.samples if s.name == name]


class FrozenClock:
    """A clock that says what the test tells it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = now


# Runs.


def test_finished_statuses_exist_at_zero_per_agent_once_seen(
    registry: CollectorRegistry, telemetry: Telemetry
) -> None:
    """With the agent label on, an agent's four terminal statuses exist at 0 once it is seen."""
    assert series(registry, "duvo_runs_finished_total") == []
    telemetry.run_status("run-1", AGENT, "running")
    for status in TERMINAL_STATUSES:
        assert value(registry, "duvo_runs_finished_total", agent_id=AGENT, status=status) == 0


def test_finished_statuses_exist_at_zero_for_configured_agents(registry: CollectorRegistry) -> None:
    """Agents named at construction get their zero series before any run is seen."""
    Telemetry(registry, agents=["a", "b"], process_metrics=False)
    assert len(series(registry, "duvo_runs_finished_total")) == 8
    assert value(registry, "duvo_runs_finished_total", agent_id="b", status="failed") == 0


def test_finished_statuses_exist_at_zero_from_start_without_agent_label(
    registry: CollectorRegistry,
) -> None:
    """With the agent label off, the four terminal statuses exist at 0 before anything happens:
    exactly the statuses the models call terminal, each once."""
    Telemetry(registry, agent_label=False, process_metrics=False)
    labels = [s["status"] for s in series(registry, "duvo_runs_finished_total")]
    assert sorted(labels) == sorted(models.TERMINAL_STATUSES)
    assert set(labels) == {"completed", "failed", "stopped", "interrupted"}


def test_run_finished_counts_and_observes_duration(
    registry: CollectorRegistry, telemetry: Telemetry
) -> None:
    """A finished run increments its counter and lands in the hour-scale duration histogram."""
    telemetry.run_finished(AGENT, "failed", 1500.0)
    telemetry.run_finished(AGENT, "completed", None)
    assert value(registry, "duvo_runs_finished_total", agent_id=AGENT, status="failed") == 1
    assert value(registry, "duvo_runs_finished_total", agent_id=AGENT, status="completed") == 1
    labels = {"agent_id": AGENT, "status": "failed"}
    assert value(registry, "duvo_run_duration_seconds_bucket", le="1200.0", **labels) == 0
    assert value(registry, "duvo_run_duration_seconds_bucket", le="1800.0", **labels) == 1
    assert value(registry, "duvo_run_duration_seconds_bucket", le="28800.0", **labels) == 1
    assert value(registry, "duvo_run_duration_seconds_sum", **labels) == 1500
    assert (
        value(registry, "duvo_run_duration_seconds_count", agent_id=AGENT, status="completed")
        is None
    )


def test_agent_label_off_omits_the_label(registry: CollectorRegistry) -> None:
    """Without the agent label the run metrics carry only the status."""
    telemetry = Telemetry(registry, agent_label=False, process_metrics=False)
    telemetry.run_status("run-1", AGENT, "running")
    telemetry.run_finished(AGENT, "completed", 30.0)
    assert value(registry, "duvo_runs_finished_total", status="completed") == 1
    assert value(registry, "duvo_run_duration_seconds_count", status="completed") == 1
    for name in ("duvo_runs_finished_total", "duvo_run_duration_seconds_bucket"):
        assert all("agent_id" not in labels for labels in series(registry, name))


def test_run_status_tracks_watched_runs_per_status(
    registry: CollectorRegistry, telemetry: Telemetry
) -> None:
    """The watched gauge follows each run's current status; None stops watching it."""
    for status in KNOWN_STATUSES:
        assert value(registry, "duvo_runs_watched", status=status) == 0
    telemetry.run_status("r1", AGENT, "running")
    telemetry.run_status("r2", AGENT, "running")
    telemetry.run_status("r1", AGENT, "waiting")
    telemetry.run_status("r1", AGENT, "waiting")
    assert value(registry, "duvo_runs_watched", status="running") == 1
    assert value(registry, "duvo_runs_watched", status="waiting") == 1
    telemetry.run_status("r1", AGENT, None)
    telemetry.run_status("r1", AGENT, None)
    assert value(registry, "duvo_runs_watched", status="waiting") == 0
    assert value(registry, "duvo_runs_watched", status="running") == 1


def test_unknown_statuses_kept_by_name_then_capped(registry: CollectorRegistry) -> None:
    """New statuses keep their name until the cap, then fold into 'other'; known ones never do."""
    telemetry = Telemetry(registry, label_cap=2, process_metrics=False)
    for i, status in enumerate(["paused", "queued", "frozen", "thawed", "running"]):
        telemetry.run_status(f"r{i}", None, status)
    assert value(registry, "duvo_runs_watched", status="paused") == 1
    assert value(registry, "duvo_runs_watched", status="queued") == 1
    assert value(registry, "duvo_runs_watched", status=OTHER) == 2
    assert value(registry, "duvo_runs_watched", status="running") == 1
    assert value(registry, "duvo_runs_watched", status="frozen") is None


def test_run_ids_never_become_labels(registry: CollectorRegistry, telemetry: Telemetry) -> None:
    """No label value anywhere is a run id, however many runs are watched."""
    for i in range(200):
        telemetry.run_status(f"run-{i}", AGENT, "running")
        telemetry.human_request_opened(f"run-{i}")
    values = {v for m in registry.collect() for s in m.samples for v in s.labels.values()}
    assert not any(v.startswith("run-") for v in values)


def test_human_requests_pending_and_wait(
    registry: CollectorRegistry,
) -> None:
    """Opened requests count once per run; resolving observes the wait and ages the oldest."""
    clock = FrozenClock(1000.0)
    telemetry = Telemetry(registry, clock=clock, process_metrics=False)
    telemetry.human_request_opened("r1")
    telemetry.human_request_opened("r1")
    clock.set(1100.0)
    telemetry.human_request_opened("r2")
    assert value(registry, "duvo_human_requests_pending") == 2
    clock.set(1600.0)
    assert value(registry, "duvo_human_request_oldest_pending_age_seconds") == 600
    telemetry.human_request_resolved("r1", 590.0)
    assert value(registry, "duvo_human_requests_pending") == 1
    assert value(registry, "duvo_human_request_oldest_pending_age_seconds") == 500
    assert value(registry, "duvo_human_request_wait_seconds_bucket", le="600.0") == 1
    assert value(registry, "duvo_human_request_wait_seconds_bucket", le="300.0") == 0
    assert value(registry, "duvo_human_request_wait_seconds_bucket", le="86400.0") == 1
    telemetry.run_status("r2", AGENT, "running")
    telemetry.run_status("r2", AGENT, None)
    assert value(registry, "duvo_human_requests_pending") == 0
    assert value(registry, "duvo_human_request_oldest_pending_age_seconds") == 0
    telemetry.human_request_resolved("r3", None)
    assert value(registry, "duvo_human_requests_pending") == 0


def test_messages_and_roles_capped(registry: CollectorRegistry) -> None:
    """Messages count by role and type; unknown roles and types are bounded."""
    telemetry = Telemetry(registry, label_cap=2, process_metrics=False)
    telemetry.message("assistant", "text")
    telemetry.message("assistant", "text")
    telemetry.message("robot", "tool_use")
    telemetry.message("alien", "text")
    telemetry.message("martian", "weird")
    assert value(registry, "duvo_messages_total", role="assistant", type="text") == 2
    assert value(registry, "duvo_messages_total", role="robot", type="tool_use") == 1
    assert value(registry, "duvo_messages_total", role="alien", type="text") == 1
    assert value(registry, "duvo_messages_total", role=OTHER, type=OTHER) == 1


def test_tool_calls_by_outcome_with_cap(registry: CollectorRegistry) -> None:
    """Tool calls count by outcome (both 0 on first sight); tools beyond the cap become 'other'."""
    telemetry = Telemetry(registry, tool_cap=2, process_metrics=False)
    telemetry.tool_call("search", "ok", 0.2)
    assert value(registry, "duvo_tool_calls_total", tool="search", outcome="error") == 0
    telemetry.tool_call("search", "error", 30.0)
    telemetry.tool_call("browse", "ok", None)
    telemetry.tool_call("email", "ok", 1.0)
    telemetry.tool_call("sms", "weird", 1.0)
    assert value(registry, "duvo_tool_calls_total", tool="search", outcome="ok") == 1
    assert value(registry, "duvo_tool_calls_total", tool="search", outcome="error") == 1
    assert value(registry, "duvo_tool_calls_total", tool=OTHER, outcome="ok") == 1
    assert value(registry, "duvo_tool_calls_total", tool=OTHER, outcome=OTHER) == 1
    assert value(registry, "duvo_tool_call_duration_seconds_count", tool="search") == 2
    assert value(registry, "duvo_tool_call_duration_seconds_bucket", tool="search", le="0.25") == 1
    assert value(registry, "duvo_tool_call_duration_seconds_count", tool="browse") is None
    assert {labels["tool"] for labels in series(registry, "duvo_tool_calls_total")} == {
        "search",
        "browse",
        OTHER,
    }


def test_label_cap_maps_empty_to_unknown() -> None:
    """None and empty strings become 'unknown' and do not use up the cap."""
    cap = LabelCap(("a",), 1)
    assert [cap(None), cap(""), cap("a"), cap("b"), cap("c"), cap("b")] == [
        "unknown",
        "unknown",
        "a",
        "b",
        OTHER,
        "b",
    ]


# The API and the monitor.


def test_api_metrics(registry: CollectorRegistry, telemetry: Telemetry) -> None:
    """Requests count by route and code, 429s and the budget gauges follow what is reported."""
    route = "GET /v2/runs/{run_id}/messages"
    telemetry.api_request(route, 200, 0.12)
    telemetry.api_request(route, 200, 0.3)
    telemetry.api_request(route, "error", 10.0)
    telemetry.rate_limited(7.0)
    telemetry.rate_limited(None)
    telemetry.budget(300, 12.5, 287, 9.25)
    telemetry.api_answered(1_764_380_000.0)
    telemetry.malformed_answer(route)
    telemetry.poll_lag(0.7)
    telemetry.state_commit(0.003)
    assert value(registry, "duvo_monitor_api_requests_total", endpoint=route, code="200") == 2
    assert value(registry, "duvo_monitor_api_requests_total", endpoint=route, code="error") == 1
    assert value(registry, "duvo_monitor_api_request_duration_seconds_count", endpoint=route) == 3
    assert value(registry, "duvo_monitor_api_rate_limited_total") == 2
    assert value(registry, "duvo_monitor_api_retry_after_seconds") == 7
    assert value(registry, "duvo_monitor_api_budget_limit") == 300
    assert value(registry, "duvo_monitor_api_budget_remaining") == 12.5
    assert value(registry, "duvo_monitor_api_budget_used") == 287
    assert value(registry, "duvo_monitor_api_pace_requests_per_second") == 9.25
    assert value(registry, "duvo_monitor_api_last_success_timestamp_seconds") == 1_764_380_000
    assert value(registry, "duvo_monitor_api_malformed_answers_total", endpoint=route) == 1
    assert value(registry, "duvo_monitor_poll_lag_seconds_bucket", le="1.0") == 1
    assert value(registry, "duvo_monitor_state_commit_duration_seconds_count") == 1


def test_event_and_sink_metrics(registry: CollectorRegistry, telemetry: Telemetry) -> None:
    """Lag, deliveries, queue depth, errors, drops and sink state are recorded per sink."""
    telemetry.event_emitted("ai.duvo.message.created", 1.5)
    telemetry.event_emitted("ai.duvo.message.created", -2.0)
    telemetry.sink_delivered("webhook", "ai.duvo.message.created", 5)
    telemetry.sink_delivered("webhook", "ai.duvo.message.created")
    telemetry.sink_queue("webhook", 42)
    telemetry.sink_error("webhook", "timeout")
    assert (
        value(registry, "duvo_monitor_events_dropped_total", sink="webhook", reason="queue_full")
        == 0
    )
    telemetry.sink_dropped("webhook", "queue_full", 3)
    telemetry.sink_health("webhook", "retry")
    lag = {"type": "ai.duvo.message.created"}
    assert value(registry, "duvo_monitor_event_lag_seconds_bucket", le="0.05", **lag) == 1
    assert value(registry, "duvo_monitor_event_lag_seconds_bucket", le="2.5", **lag) == 2
    assert value(registry, "duvo_monitor_events_delivered_total", sink="webhook", **lag) == 6
    assert value(registry, "duvo_monitor_sink_queue_depth", sink="webhook") == 42
    assert value(registry, "duvo_monitor_sink_errors_total", sink="webhook", kind="timeout") == 1
    assert (
        value(registry, "duvo_monitor_events_dropped_total", sink="webhook", reason="queue_full")
        == 3
    )
    assert value(registry, "duvo_monitor_sink_up", sink="webhook") == 0
    assert value(registry, "duvo_monitor_sink_state", sink="webhook", state="retry") == 1
    assert value(registry, "duvo_monitor_sink_state", sink="webhook", state="ok") == 0
    telemetry.sink_health("webhook", "ok")
    assert value(registry, "duvo_monitor_sink_up", sink="webhook") == 1
    assert value(registry, "duvo_monitor_sink_state", sink="webhook", state="retry") == 0


def test_build_info(registry: CollectorRegistry) -> None:
    """The build-info gauge carries the version and the Python version."""
    Telemetry(registry, version="9.9.9", python="3.11.0", process_metrics=False)
    assert value(registry, "duvo_monitor_build_info", version="9.9.9", python="3.11.0") == 1


def test_registry_is_injected(registry: CollectorRegistry) -> None:
    """Two Telemetry objects on two registries coexist: nothing goes to the global registry."""
    Telemetry(registry)
    Telemetry(CollectorRegistry())
    assert value(registry, "process_start_time_seconds") is not None


# Readiness.


def test_readiness(telemetry: Telemetry) -> None:
    """Ready only after a recent API answer and while every sink is ok; the body says why not."""
    assert telemetry.readiness(100.0).problems == ("no API answer yet",)
    telemetry.api_answered(100.0)
    telemetry.sink_health("file", "ok")
    assert telemetry.readiness(220.0).ready
    assert telemetry.readiness(221.0).problems == ("no API answer for 121 s (limit 120 s)",)
    telemetry.sink_health("webhook", "failed")
    assert telemetry.readiness(150.0).to_json() == {
        "status": "not_ready",
        "not_ready": ["sink webhook is failed"],
    }


# The listener, over real HTTP.


async def get(client: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    with anyio.fail_after(5):
        return await client.get(url, headers=headers)


@pytest.mark.anyio
async def test_listener_serves_metrics_health_and_readiness() -> None:
    """/metrics in both formats, /healthz, /readyz before and after an API answer, 404 and 405."""
    clock = FrozenClock(1_764_380_000.0)
    telemetry = Telemetry(CollectorRegistry(), clock=clock)
    telemetry.run_finished(AGENT, "completed", 100.0)
    telemetry.sink_health("file", "ok")
    async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
        bound: Bound = await tg.start(
            partial(serve_metrics, clock=clock), telemetry, "127.0.0.1", 0
        )
        assert bound.host == "127.0.0.1"
        base = bound.url

        text = await get(client, f"{base}/metrics")
        assert text.status_code == 200
        assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert f'duvo_runs_finished_total{{agent_id="{AGENT}",status="completed"}} 1.0' in text.text
        assert "_created" not in text.text

        om = await get(client, f"{base}/metrics", accept="application/openmetrics-text")
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.endswith("# EOF\n")
        families = {f.name: f for f in text_string_to_metric_families(om.text)}
        assert families["duvo_runs_finished"].type == "counter"
        assert families["duvo_monitor_build"].type == "info"

        health = await get(client, f"{base}/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})

        ready = await get(client, f"{base}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not_ready", "not_ready": ["no API answer yet"]}
        telemetry.api_answered(clock.time())
        ready = await get(client, f"{base}/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        telemetry.sink_health("file", "failed")
        ready = await get(client, f"{base}/readyz")
        assert ready.status_code == 503
        assert json.loads(ready.content)["not_ready"] == ["sink file is failed"]

        assert (await get(client, f"{base}/")).status_code == 404
        with anyio.fail_after(5):
            post = await client.post(f"{base}/metrics")
        assert post.status_code == 405
        assert post.headers["allow"] == "GET"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_listener_binds_only_the_given_address() -> None:
    """Bound to 127.0.0.1, the listener is not reachable on the machine's other addresses."""
    telemetry = Telemetry(CollectorRegistry(), process_metrics=False)
    async with anyio.create_task_group() as tg:
        serve = partial(serve_metrics, clock=Clock())
        bound: Bound = await tg.start(serve, telemetry, "127.0.0.1", 0)
        # 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not answer there;
        # a listener on all interfaces (the library's helper) would.
        with pytest.raises(OSError, match="connection attempts failed"), anyio.fail_after(5):
            await anyio.connect_tcp("127.0.0.2", bound.port)
        with anyio.fail_after(5):
            stream = await anyio.connect_tcp("127.0.0.1", bound.port)
        await stream.aclose()
        tg.cancel_scope.cancel()
