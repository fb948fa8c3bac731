"""Schemathesis against the simulator, for both shipped OpenAPI documents: no deviation allowed.

The simulator runs in a background thread (an anyio blocking portal) on a loopback port, with
a known key, no rate limit (429 is in neither document) and no faults. Generated path parameters
are mixed with the ids of real runs (completed, waiting, stopped, deleted ...), real pending human
requests and the key's team, and start bodies with real agent ids, so that the 200/201 answers are
exercised as well as the 400s and 404s. The team of GET list runs is always the key's own: the
document declares no 403 for it (see ``duvo_monitor/simulator/api.py``).

Checks: no server error, status code, content type and response schema conformance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from simfixtures import AGENT, KEY, PLAIN_AGENT, QUIET_AGENT, TEAM, run_id, scenario

from duvo_monitor.clock import Clock
from duvo_monitor.simulator import Simulator

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
RUNS: list[dict[str, Any]] = [
    {
        "id": run_id(1),
        "agent": PLAIN_AGENT,
        "start": "-60s",
        "timeline": [
            {"at": "1s", "status": "running"},
            {"at": "2s", "tool_call": {"name": "search", "arguments": {"q": "x"}}},
            {"at": "3s", "tool_result": {"error": "boom"}},
            {"at": "4s", "say": "done"},
            {"at": "5s", "status": "completed"},
        ],
    },
    {
        "id": run_id(2),
        "agent": AGENT,
        "start": "-50s",
        "timeline": [
            {"at": "1s", "status": "running"},
            {
                "at": "2s",
                "human_request": {"type": "approval", "title": "Pay?", "description": "EUR 5"},
            },
            {"after": "1s", "status": "completed"},
        ],
    },
    {
        "id": run_id(3),
        "agent": AGENT,
        "start": "-50s",
        "timeline": [
            {"at": "1s", "status": "running"},
            {
                "at": "2s",
                "human_request": {
                    "type": "question",
                    "title": "Which?",
                    "questions": [
                        {
                            "question": "Size?",
                            "header": "Size",
                            "multi_select": True,
                            "options": [{"label": "S"}, {"label": "L", "description": "large"}],
                        },
                    ],
                },
            },
            {"after": "1s", "status": "failed"},
        ],
    },
    {
        "id": run_id(4),
        "agent": PLAIN_AGENT,
        "start": "-40s",
        "history": 60,
        "timeline": [{"at": "1s", "status": "running"}, {"at": "1h", "status": "completed"}],
    },
    {
        "id": run_id(5),
        "agent": QUIET_AGENT,
        "start": "-30s",
        "timeline": [{"at": "1s", "status": "running"}, {"at": "2s", "status": "stopped"}],
    },
    {
        "id": run_id(6),
        "agent": PLAIN_AGENT,
        "start": "-20s",
        "timeline": [{"at": "1s", "status": "interrupted"}, {"at": "2s", "delete": True}],
    },
]
RUN_IDS = [run_id(i) for i in range(1, 7)]


@dataclass(slots=True)
class Live:
    sim: Simulator
    url: str
    request_ids: list[str]


_live: list[Live] = []  # the hooks below read the running simulator's ids from here


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    """The simulator, served from a background thread for the synchronous schemathesis calls."""
    hooks = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(204)))
    sim = Simulator(
        scenario(RUNS),
        clock=Clock(),
        rate_limit=None,
        api_keys={KEY},
        webhook_client=hooks,
        list_stopped_as="interrupted",
    )
    with start_blocking_portal(backend="asyncio") as portal:
        future, bound = portal.start_task(sim.serve, "127.0.0.1", 0)
        pending = portal.call(_pending_request_ids, sim)  # on the loop's thread, not ours
        _live.append(Live(sim=sim, url=bound.url, request_ids=pending))
        try:
            yield _live[-1]
        finally:
            _live.clear()
            future.cancel()
            portal.call(hooks.aclose)


def _pending_request_ids(sim: Simulator) -> list[str]:
    sim.world.advance(sim.clock.time())
    return [r.pending.id for r in sim.world.runs() if r.pending is not None]


def _document(version: str) -> dict[str, Any]:
    ref = resources.files("duvo_monitor").joinpath("openapi", f"{version}.json")
    return dict(json.loads(ref.read_text(encoding="utf-8")))


def _real_ids(context: Any, params: dict[str, Any]) -> Any:
    """Keep the generated path parameters, or swap in real ids (runs, requests, the team)."""
    if not params:
        return st.just(params)
    choices = [params]
    if "run_id" in params:
        choices += [{**params, "run_id": rid} for rid in RUN_IDS]
    if "request_id" in params and _live:
        for rid, request in zip((run_id(2), run_id(3)), _live[-1].request_ids, strict=False):
            choices.append({**params, "run_id": rid, "request_id": request})
    if "teamId" in params:
        if context.operation.method.upper() == "GET":
            return st.just({**params, "teamId": TEAM})
        choices.append({**params, "teamId": TEAM})
    return st.sampled_from(choices)


def _real_agents(context: Any, body: Any) -> Any:
    """Start bodies: often a real agent, so that runs get created (201)."""
    if isinstance(body, dict) and "agent_id" in body and context.operation.method.upper() == "POST":
        return st.sampled_from(
            [body, {**body, "agent_id": PLAIN_AGENT}, {**body, "agent_id": AGENT}]
        )
    return st.just(body)


def _schema(version: str) -> Any:
    schema = schemathesis.openapi.from_dict(_document(version))
    schema.hook("flatmap_path_parameters")(_real_ids)
    schema.hook("flatmap_body")(_real_agents)
    return schema


V1 = _schema("v1")
V2 = _schema("v2")
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def _call(case: Any, live: Live) -> set[str]:
    """Call the live simulator and validate the answer against the document (schemathesis's
    checks raise on any violation); return the answer's header names, lower-cased."""
    if case.method == "GET" and "teamId" in (case.path_parameters or {}):
        # Not every generation phase goes through the hooks; list runs keeps the key's team.
        case.path_parameters["teamId"] = TEAM
    response = case.call_and_validate(
        base_url=live.url, headers={"authorization": f"Bearer {KEY}"}, checks=CHECKS
    )
    return {k.lower() for k in response.headers}


@V1.parametrize()
@SETTINGS
def test_v1_document(case: Any, live: Live) -> None:
    """Every v1 operation answers as the v1 document says, for generated valid and invalid input."""
    headers = _call(case, live)
    # Beyond the document: every answer carries Duvo's rate-limit headers.
    assert "x-ratelimit-remaining" in headers


@V2.parametrize()
@SETTINGS
def test_v2_document(case: Any, live: Live) -> None:
    """Every v2 operation answers as the v2 document says, for generated valid and invalid input."""
    headers = _call(case, live)
    # Beyond the document: every answer carries Duvo's rate-limit headers.
    assert "x-ratelimit-remaining" in headers


def test_conformance_runs_reached_the_real_runs(live: Live) -> None:
    """The fuzzing above got 2xx answers from real runs, not only 400s and 404s."""
    ok = {(e.method, e.path.split("/")[1]) for e in live.sim.requests if e.status in (200, 201)}
    assert {("GET", "v1"), ("GET", "v2"), ("POST", "v1"), ("POST", "v2")} <= ok
    assert any(e.status == 400 for e in live.sim.requests)
    assert any(e.status == 404 for e in live.sim.requests)
