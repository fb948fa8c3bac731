"""The simulator over HTTP: both API versions, validation, auth, rate limits, faults, webhooks,
the truth and request logs, the control surface and the CLI entry point.

Most tests serve a simulator on a loopback port with a hand-set clock (state is then exact);
the ones about time passing use a scaled clock.
"""

from __future__ import annotations

import io
import json
import socket
import time
from typing import Any

import anyio
import httpx
import pytest
from simfixtures import (
    AGENT,
    KEY,
    PLAIN_AGENT,
    QUIET_AGENT,
    T0,
    TEAM,
    manual_clock,
    receiving,
    run_id,
    scenario,
    serving,
    wait_until,
)

from duvo_monitor.clock import Clock
from duvo_monitor.simulator import Faults, Simulator, Window
from duvo_monitor.simulator.cli import load_scenario, run_simulate, simulate_main
from duvo_monitor.simulator.faults import UNKNOWN_STATUSES
from duvo_monitor.simulator.server import key_id


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


RUN_FIELDS = {
    "id",
    "agent_id",
    "build_id",
    "status",
    "source",
    "sandbox_id",
    "started_at",
    "completed_at",
    "created_at",
    "updated_at",
    "human_in_the_loop_enabled",
}
LIST_FIELDS = {
    "id",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "status",
    "source",
    "title",
    "run_number",
    "agent_id",
    "agent_name",
    "build_id",
    "user_id",
    "case_queue_item_id",
    "case_queue_id",
    "case_queue_name",
    "case_title",
    "postponed_to",
    "submitted_prompt_count",
}
DONE, APPROVAL, QUESTION, RUNNING, LONG, STOPPED, DELETED = (run_id(i) for i in range(1, 8))

RUNS: list[dict[str, Any]] = [
    {
        "id": DONE,
        "agent": PLAIN_AGENT,
        "start": "-60s",
        "title": "Done run",
        "timeline": [
            {"at": "1s", "status": "running"},
            {"at": "2s", "user": "please"},
            {"at": "3s", "tool_call": {"name": "search", "arguments": {"q": 1}}},
            {"at": "4s", "tool_result": {"result": {"hits": 1}}},
            {"at": "5s", "status": "completed"},
        ],
    },
    {
        "id": APPROVAL,
        "agent": AGENT,
        "start": "-30s",
        "title": "Needs approval",
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
        "id": QUESTION,
        "agent": AGENT,
        "start": "-30s",
        "title": "Has a question",
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
                            "multi_select": False,
                            "options": [{"label": "S"}, {"label": "L", "description": "large"}],
                        },
                    ],
                },
            },
            {"after": "1s", "status": "completed"},
        ],
    },
    {
        "id": RUNNING,
        "agent": PLAIN_AGENT,
        "start": "-10s",
        "title": "Still running",
        "source": "schedule",
        "timeline": [
            {"at": "1s", "status": "running"},
            {"at": "2s", "say": "working"},
            {"at": "1h", "status": "completed"},
        ],
    },
    {
        "id": LONG,
        "agent": PLAIN_AGENT,
        "start": "-100s",
        "title": "Long history",
        "history": 5000,
        "timeline": [{"at": "1s", "status": "completed"}],
    },
    {
        "id": STOPPED,
        "agent": PLAIN_AGENT,
        "start": "-50s",
        "title": "Stopped one",
        "timeline": [{"at": "1s", "status": "running"}, {"at": "2s", "status": "stopped"}],
    },
    {
        "id": DELETED,
        "agent": PLAIN_AGENT,
        "start": "-40s",
        "title": "Deleted one",
        "timeline": [{"at": "1s", "status": "completed"}, {"at": "5s", "delete": True}],
    },
]


def make_sim(**kwargs: Any) -> Simulator:
    kwargs.setdefault("clock", manual_clock())
    return Simulator(scenario(RUNS), **kwargs)


def is_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The answer is ``status`` with Duvo's {error, message} envelope and the rate-limit headers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "message"}
    assert isinstance(body["error"], str)
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert name in response.headers
    return dict(body)


# -- the endpoints -------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_get_run_shows_the_run_and_its_pending_request(version: str) -> None:
    """GET run: every documented field, and the pending approval / question request."""
    async with serving(make_sim()) as client:
        response = await client.get(f"/{version}/runs/{APPROVAL}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"run", "pending_human_request"}
        assert set(body["run"]) == RUN_FIELDS
        assert body["run"]["status"] == "waiting"
        assert body["run"]["human_in_the_loop_enabled"] is True
        assert body["run"]["created_at"].endswith("Z")
        assert len(body["run"]["created_at"]) == 24
        pending = body["pending_human_request"]
        assert set(pending) == {"id", "title", "description", "created_at", "type"}
        assert (pending["type"], pending["title"], pending["description"]) == (
            "approval",
            "Pay?",
            "EUR 5",
        )
        question = (await client.get(f"/{version}/runs/{QUESTION}")).json()["pending_human_request"]
        assert question["type"] == "question"
        assert question["questions"][0]["options"][1] == {"label": "L", "description": "large"}
        done = (await client.get(f"/{version}/runs/{DONE}")).json()
        assert done["pending_human_request"] is None
        assert done["run"]["status"] == "completed"


@pytest.mark.anyio
async def test_start_run_in_both_versions() -> None:
    """POST /v1/runs and POST /v2/teams/{team}/runs answer 201 with a pending run."""
    sim = make_sim()
    async with serving(sim) as client:
        one = await client.post("/v1/runs", json={"agent_id": PLAIN_AGENT, "message": "hi"})
        two = await client.post(
            f"/v2/teams/{TEAM}/runs", json={"agent_id": PLAIN_AGENT, "sandbox_id": "sb1"}
        )
        for response in (one, two):
            assert response.status_code == 201
            run = response.json()["run"]
            assert set(response.json()) == {"run"}
            assert set(run) == RUN_FIELDS
            assert (run["status"], run["agent_id"], run["source"]) == (
                "pending",
                PLAIN_AGENT,
                "api",
            )
        assert two.json()["run"]["sandbox_id"] == "sb1"
        again = await client.get(f"/v1/runs/{one.json()['run']['id']}/messages")
        assert [m["text_content"] for m in again.json()["messages"]] == ["hi"]
    created = [e for e in sim.truth if e.kind == "status" and e.status_from is None]
    assert [e.status_to for e in created[-2:]] == ["pending", "pending"]


@pytest.mark.anyio
async def test_list_runs_filters_sorts_and_pages() -> None:
    """v2 list runs: newest first, offset/limit, filters, total, items without pending requests."""
    async with serving(make_sim()) as client:
        url = f"/v2/teams/{TEAM}/runs"
        body = (await client.get(url)).json()
        assert set(body) == {"data", "total"}
        assert body["total"] == 6
        assert all(set(item) == LIST_FIELDS for item in body["data"])
        assert [i["id"] for i in body["data"]][:3] == [RUNNING, QUESTION, APPROVAL]
        asc = (await client.get(url, params={"sort_order": "asc", "limit": 2, "offset": 1})).json()
        assert [i["id"] for i in asc["data"]] == [DONE, STOPPED]
        assert asc["total"] == 6
        by_status = (await client.get(url, params={"status": "waiting"})).json()
        assert {i["id"] for i in by_status["data"]} == {APPROVAL, QUESTION}
        assert (await client.get(url, params={"status": "needs_attention"})).json()["total"] == 2
        assert (await client.get(url, params={"agent_id": AGENT})).json()["total"] == 2
        assert (await client.get(url, params={"source": "schedule"})).json()["data"][0][
            "id"
        ] == RUNNING
        assert (await client.get(url, params={"search": "long hist"})).json()["total"] == 1
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 - 35))
        assert (await client.get(url, params={"since": since})).json()["total"] == 3
        assert (await client.get(url, params={"has_issues": "true"})).json()["total"] == 0
        stopped = (await client.get(url, params={"status": "stopped"})).json()["data"]
        assert [i["status"] for i in stopped] == ["stopped"]


@pytest.mark.anyio
async def test_list_can_show_stopped_as_another_status() -> None:
    """list_stopped_as maps 'stopped' (missing from the item enum) to a status it has."""
    async with serving(make_sim(list_stopped_as="interrupted")) as client:
        body = (await client.get(f"/v2/teams/{TEAM}/runs", params={"status": "stopped"})).json()
        assert [i["status"] for i in body["data"]] == ["interrupted"]
        assert (await client.get(f"/v2/runs/{STOPPED}")).json()["run"]["status"] == "stopped"


@pytest.mark.anyio
async def test_teams_lists_the_keys_team() -> None:
    """GET /v2/teams: the one team the key is pinned to."""
    async with serving(make_sim()) as client:
        body = (await client.get("/v2/teams")).json()
        assert body == {
            "teams": [
                {
                    "id": TEAM,
                    "name": "Test team",
                    "organization_id": body["teams"][0]["organization_id"],
                }
            ]
        }


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_messages_page_through_a_5000_message_run(version: str) -> None:
    """5000 messages page by 50 in order, each page cheap; total, limit and offset echoed."""
    async with serving(make_sim()) as client:
        ids: list[str] = []
        started = time.perf_counter()
        for offset in range(0, 5000, 50):
            body = (
                await client.get(
                    f"/{version}/runs/{LONG}/messages", params={"limit": 50, "offset": offset}
                )
            ).json()
            assert (body["total"], body["limit"], body["offset"]) == (5000, 50, offset)
            ids.extend(m["id"] for m in body["messages"])
        elapsed = time.perf_counter() - started
        assert len(ids) == len(set(ids)) == 5000
        last = (
            await client.get(f"/{version}/runs/{LONG}/messages", params={"offset": 4990})
        ).json()
        assert len(last["messages"]) == 10
        assert last["limit"] == 20
        past = (
            await client.get(f"/{version}/runs/{LONG}/messages", params={"offset": 9000})
        ).json()
        assert past["messages"] == []
        assert past["total"] == 5000
        assert elapsed < 10


@pytest.mark.anyio
async def test_message_shapes_follow_the_schema() -> None:
    """Messages: id/type/role/timestamp always; tool calls and results linked by id."""
    async with serving(make_sim()) as client:
        messages = (await client.get(f"/v2/runs/{DONE}/messages")).json()["messages"]
        user, call, result = messages
        assert (user["role"], user["type"], user["text_content"]) == ("user", "text", "please")
        assert set(call) == {"id", "type", "role", "timestamp", "tool_call"}
        assert call["tool_call"]["arguments"] == {"q": 1}
        assert result["tool_result"] == {
            "tool_call_id": call["tool_call"]["id"],
            "result": {"hits": 1},
        }


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_post_message_resumes_a_completed_run(version: str) -> None:
    """POST messages: 201 with the user message; a completed run goes back to running."""
    sim = make_sim()
    async with serving(sim) as client:
        response = await client.post(f"/{version}/runs/{DONE}/messages", json={"message": "more"})
        assert response.status_code == 201
        message = response.json()["message"]
        assert set(message) == {"id", "type", "role", "timestamp", "text_content"}
        assert (message["role"], message["text_content"]) == ("user", "more")
        assert (await client.get(f"/{version}/runs/{DONE}")).json()["run"]["status"] == "running"
        sim.clock.forward(10)  # type: ignore[attr-defined]
        run = (await client.get(f"/{version}/runs/{DONE}")).json()["run"]
        assert run["status"] == "completed"
        assert (await client.get(f"/{version}/runs/{DONE}/messages")).json()["total"] == 6


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_respond_answers_and_resumes(version: str) -> None:
    """respond: 200 with the answered request; the run resumes; a second answer is a 400."""
    sim = make_sim()
    async with serving(sim) as client:
        pending = (await client.get(f"/{version}/runs/{APPROVAL}")).json()["pending_human_request"]
        url = f"/{version}/runs/{APPROVAL}/human-requests/{pending['id']}/respond"
        response = await client.post(url, json={"approved": True})
        assert response.status_code == 200
        answered = response.json()["human_request"]
        assert set(answered) == {
            "id",
            "run_id",
            "title",
            "description",
            "response",
            "responded_at",
            "created_at",
        }
        assert (answered["id"], answered["run_id"], answered["response"]) == (
            pending["id"],
            APPROVAL,
            "approved",
        )
        assert answered["responded_at"].endswith("Z")
        run = (await client.get(f"/{version}/runs/{APPROVAL}")).json()
        assert run["run"]["status"] == "running"
        assert run["pending_human_request"] is None
        is_error(await client.post(url, json={"approved": True}), 400)
        question = (await client.get(f"/{version}/runs/{QUESTION}")).json()["pending_human_request"]
        qurl = f"/{version}/runs/{QUESTION}/human-requests/{question['id']}/respond"
        is_error(await client.post(qurl, json={"approved": True}), 400)  # questions want answers
        answered = (await client.post(qurl, json={"answers": {"Size?": "L"}})).json()[
            "human_request"
        ]
        assert json.loads(answered["response"]) == {"Size?": "L"}
        sim.clock.forward(5)  # type: ignore[attr-defined]
        assert (await client.get(f"/{version}/runs/{QUESTION}")).json()["run"][
            "status"
        ] == "completed"


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_stop_stops_running_runs_only(version: str) -> None:
    """stop: a running run becomes stopped; stopping a finished run is a successful no-op."""
    async with serving(make_sim()) as client:
        response = await client.post(f"/{version}/runs/{RUNNING}/stop")
        assert response.status_code == 200
        assert response.json() == {
            "success": True,
            "message": "Run stopped",
        }
        assert (await client.get(f"/{version}/runs/{RUNNING}")).json()["run"]["status"] == "stopped"
        noop = (await client.post(f"/{version}/runs/{DONE}/stop")).json()
        assert noop["success"] is True
        assert "not running" in noop["message"]


@pytest.mark.anyio
async def test_deleted_runs_are_null_in_v2_and_404_elsewhere() -> None:
    """A deleted run: v2 GET answers 200 with run null; v1 GET and everything else 404."""
    async with serving(make_sim()) as client:
        v2 = await client.get(f"/v2/runs/{DELETED}")
        assert v2.status_code == 200
        assert v2.json() == {"run": None, "pending_human_request": None}
        is_error(await client.get(f"/v1/runs/{DELETED}"), 404)
        is_error(await client.get(f"/v2/runs/{DELETED}/messages"), 404)
        is_error(await client.post(f"/v2/runs/{DELETED}/messages", json={"message": "x"}), 404)
        is_error(await client.post(f"/v1/runs/{DELETED}/stop"), 404)


# -- refusals ------------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("GET", "/v1/runs/not-a-uuid", None),
    ("GET", f"/v2/runs/{DONE[:-1]}/messages", None),
    ("GET", f"/v1/runs/{DONE}/messages?limit=0", None),
    ("GET", f"/v1/runs/{DONE}/messages?limit=51", None),
    ("GET", f"/v2/runs/{DONE}/messages?limit=1.5", None),
    ("GET", f"/v2/runs/{DONE}/messages?limit=ten", None),
    ("GET", f"/v2/runs/{DONE}/messages?offset=-1", None),
    ("GET", f"/v2/teams/{TEAM}/runs?limit=101", None),
    ("GET", f"/v2/teams/{TEAM}/runs?limit=0", None),
    ("GET", f"/v2/teams/{TEAM}/runs?offset=-2", None),
    ("GET", f"/v2/teams/{TEAM}/runs?sort_order=up", None),
    ("GET", f"/v2/teams/{TEAM}/runs?sort_by=title", None),
    ("GET", f"/v2/teams/{TEAM}/runs?status=done", None),
    ("GET", f"/v2/teams/{TEAM}/runs?agent_id=bob", None),
    ("GET", f"/v2/teams/{TEAM}/runs?since=yesterday", None),
    ("GET", f"/v2/teams/{TEAM}/runs?since=0001-01-01T00:00:00%2B01:00", None),
    ("GET", f"/v2/runs/{DONE}/messages?offset={'9' * 5000}", None),
    ("GET", f"/v2/teams/{TEAM}/runs?limit=1e999", None),
    ("GET", f"/v2/teams/{TEAM}/runs?has_issues=yes", None),
    ("POST", "/v1/runs", {}),
    ("POST", "/v1/runs", {"agent_id": "nope"}),
    ("POST", "/v1/runs", {"agent_id": PLAIN_AGENT, "colour": "red"}),
    ("POST", "/v1/runs", {"agent_id": PLAIN_AGENT, "webhook_url": "not a uri"}),
    ("POST", "/v1/runs", {"agent_id": PLAIN_AGENT, "message": 5}),
    ("POST", "/v1/runs", [PLAIN_AGENT]),
    ("POST", "/v1/runs", b"[" * 100_000 + b"]" * 100_000),
    ("POST", f"/v1/runs/{DONE}/messages", {"message": ""}),
    ("POST", f"/v1/runs/{DONE}/messages", {"message": "x", "extra": 1}),
    ("POST", f"/v2/runs/{DONE}/messages", {}),
    ("POST", f"/v1/runs/{APPROVAL}/human-requests/{DONE}/respond", {"approved": "yes"}),
    ("POST", f"/v1/runs/{APPROVAL}/human-requests/{DONE}/respond", {"approved": True, "x": 1}),
    ("POST", f"/v2/runs/{APPROVAL}/human-requests/{DONE}/respond", {"answers": {"a": 1}}),
    ("POST", f"/v2/runs/{APPROVAL}/human-requests/bad/respond", {"approved": True}),
]


@pytest.mark.anyio
async def test_bad_input_is_a_400_with_the_error_envelope() -> None:
    """Bad uuids, limits out of range, non-integers, bad enums, bad or unknown body fields: 400."""
    async with serving(make_sim(rate_limit=None)) as client:
        for method, url, body in BAD_REQUESTS:
            if isinstance(body, bytes):
                response = await client.request(method, url, content=body)
            else:
                response = await client.request(method, url, json=body)
            assert response.status_code == 400, (method, url, body, response.text)
            is_error(response, 400)
        raw = await client.post(
            "/v1/runs", content=b"{not json", headers={"content-type": "application/json"}
        )
        is_error(raw, 400)


@pytest.mark.anyio
async def test_v2_bodies_ignore_unknown_fields() -> None:
    """v2 body schemas do not forbid extra properties: they are accepted and ignored."""
    async with serving(make_sim()) as client:
        response = await client.post(
            f"/v2/teams/{TEAM}/runs", json={"agent_id": PLAIN_AGENT, "colour": "red"}
        )
        assert response.status_code == 201
        blank = await client.post("/v1/runs", json={"agent_id": PLAIN_AGENT, "message": " \n "})
        assert blank.status_code == 201  # a blank message still starts a run (titled by agent)
        posted = await client.post(f"/v2/runs/{DONE}/messages", json={"message": "x", "extra": 1})
        assert posted.status_code == 201


@pytest.mark.anyio
async def test_numbers_in_range_are_accepted_by_list_runs() -> None:
    """List runs' limit/offset are 'number' in the document: 2.5 is taken as 2."""
    async with serving(make_sim()) as client:
        body = (
            await client.get(f"/v2/teams/{TEAM}/runs", params={"limit": "2.5", "offset": "1e0"})
        ).json()
        assert len(body["data"]) == 2


@pytest.mark.anyio
async def test_missing_or_bad_keys_are_401() -> None:
    """No bearer key, an unknown key or another scheme: 401, logged as api_key_ok false."""
    sim = make_sim()
    async with serving(sim, key=None) as client:
        is_error(await client.get(f"/v1/runs/{DONE}"), 401)
        is_error(await client.get("/v2/teams", headers={"authorization": "Bearer wrong"}), 401)
        is_error(await client.get("/v2/teams", headers={"authorization": f"Basic {KEY}"}), 401)
        ok = await client.get("/v2/teams", headers={"authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
    assert [(e.status, e.api_key_ok) for e in sim.requests] == [(401, False)] * 3 + [(200, True)]


@pytest.mark.anyio
async def test_unknown_things_are_404_and_other_teams_403() -> None:
    """Unknown run, request, agent or endpoint: 404; a team other than the key's: 403."""
    async with serving(make_sim()) as client:
        is_error(await client.get(f"/v1/runs/{run_id(99)}"), 404)
        is_error(await client.get(f"/v2/runs/{run_id(99)}"), 404)
        is_error(
            await client.post(
                f"/v2/runs/{APPROVAL}/human-requests/{run_id(99)}/respond", json={"approved": True}
            ),
            404,
        )
        is_error(await client.post("/v1/runs", json={"agent_id": run_id(99)}), 404)
        is_error(await client.get("/v3/runs"), 404)
        is_error(await client.get(f"/v2/teams/{run_id(50)}/runs"), 403)
        is_error(
            await client.post(f"/v2/teams/{run_id(50)}/runs", json={"agent_id": PLAIN_AGENT}), 403
        )
        not_allowed = await client.delete(f"/v1/runs/{DONE}")
        assert not_allowed.status_code == 405
        assert not_allowed.headers["allow"] == "GET"


@pytest.mark.anyio
async def test_idempotency_key_returns_the_same_run() -> None:
    """Same Idempotency-Key and body within 24 h: the same run (201), not a second one."""
    sim = make_sim()
    async with serving(sim) as client:
        body = {"agent_id": PLAIN_AGENT, "message": "once"}
        headers = {"idempotency-key": "abc"}
        first = await client.post("/v1/runs", json=body, headers=headers)
        second = await client.post("/v1/runs", json=body, headers=headers)
        assert first.status_code == second.status_code == 201
        assert first.json()["run"]["id"] == second.json()["run"]["id"]
        is_error(
            await client.post("/v1/runs", json={**body, "message": "twice"}, headers=headers), 400
        )
        third = await client.post("/v1/runs", json=body, headers={"idempotency-key": "def"})
        assert third.json()["run"]["id"] != first.json()["run"]["id"]
    assert len(sim.world.runs()) == len(RUNS) + 2


# -- rate limits ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limit_headers_429_and_retry_after() -> None:
    """Every answer carries the x-ratelimit-* headers; past the limit 429 with retry-after."""
    clock = manual_clock()
    sim = make_sim(clock=clock, rate_limit=3)
    async with serving(sim) as client:
        seen = []
        for _ in range(3):
            response = await client.get(f"/v1/runs/{run_id(99)}")  # 404s count too
            seen.append(response.headers["x-ratelimit-remaining"])
            assert response.headers["x-ratelimit-limit"] == "3"
            assert response.headers["x-ratelimit-reset"] == str(int(T0 // 60 * 60 + 60))
        assert seen == ["2", "1", "0"]
        limited = await client.get("/v2/teams")
        assert is_error(limited, 429)["error"] == "rate_limited"
        assert limited.headers["retry-after"] == "30"
        assert (await client.get("/_sim/runs")).status_code == 200  # the control surface is free
        clock.forward(30)
        assert (await client.get("/v2/teams")).status_code == 200
    assert [e.status for e in sim.requests] == [404, 404, 404, 429, 200]


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_server_error_faults() -> None:
    """error_500 answers the JSON envelope; 502/503 come as JSON or as an HTML page."""
    for kind, status in (("error_500", 500), ("error_502", 502), ("error_503", 503), ("html", 502)):
        sim = make_sim(faults=Faults(**{kind: 1.0}))
        async with serving(sim) as client:
            for _ in range(6):
                response = await client.get(f"/v1/runs/{DONE}")
                assert response.status_code == status
                assert "x-ratelimit-remaining" in response.headers
                if response.headers["content-type"].startswith("text/html"):
                    assert kind != "error_500"
                    assert response.text.startswith("<!DOCTYPE html>")
                else:
                    assert kind != "html"
                    assert set(response.json()) == {"error", "message"}
        assert [e.status for e in sim.requests] == [status] * 6


@pytest.mark.anyio
async def test_dropped_and_truncated_answers() -> None:
    """drop closes the connection (logged as status 0); truncate cuts the body short."""
    sim = make_sim(faults=Faults(drop=1.0))
    async with serving(sim) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/v1/runs/{DONE}")
    assert sim.requests[0].status == 0
    async with serving(make_sim(faults=Faults(truncate=1.0))) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/v1/runs/{DONE}")


@pytest.mark.anyio
async def test_malformed_and_extra_field_answers() -> None:
    """malformed: 200 whose body is not JSON; extra_fields: unknown keys in every object."""
    async with serving(make_sim(faults=Faults(malformed=1.0))) as client:
        response = await client.get(f"/v1/runs/{DONE}")
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)
    async with serving(make_sim(faults=Faults(extra_fields=1.0))) as client:
        body = (await client.get(f"/v2/runs/{DONE}/messages")).json()
        assert "x_sim_extra" in body
        assert all("x_sim_extra" in m for m in body["messages"])


@pytest.mark.anyio
async def test_slow_answers_wait() -> None:
    """slow: the answer comes slow_delay (simulated seconds) late."""
    async with serving(make_sim(faults=Faults(slow=1.0, slow_delay=0.3))) as client:
        started = time.perf_counter()
        assert (await client.get(f"/v1/runs/{DONE}")).status_code == 200
        assert time.perf_counter() - started >= 0.29


@pytest.mark.anyio
async def test_world_faults_show_up_and_are_in_the_truth() -> None:
    """unknown_status, unknown_message_type and edit_message change the run, in the truth log."""
    sim = make_sim(faults=Faults(unknown_status=1.0, unknown_status_duration=5))
    async with serving(sim) as client:
        assert (await client.get(f"/v2/runs/{DONE}")).json()["run"]["status"] in UNKNOWN_STATUSES
        sim.clock.forward(6)  # type: ignore[attr-defined]
        await client.get("/_sim/runs")
        assert sim.world.get_run(DONE).shown_status == "completed"  # type: ignore[union-attr]
    masked = [e for e in sim.truth if e.run_id == DONE and e.kind == "status"][-2:]
    assert masked[0].status_to in UNKNOWN_STATUSES
    assert masked[1].status_to == "completed"

    sim = make_sim(faults=Faults(unknown_message_type=1.0))
    async with serving(sim) as client:
        body = (await client.get(f"/v2/runs/{DONE}/messages")).json()
        assert body["total"] == 4
        assert body["messages"][-1]["type"] not in (
            "text",
            "tool_call",
            "tool_result",
        )

    sim = make_sim(faults=Faults(edit_message=1.0))
    async with serving(sim) as client:
        first = (await client.get(f"/v1/runs/{DONE}/messages")).json()["messages"][0]
    assert first["text_content"] == "please (edited)"
    assert sim.truth[-1].kind == "message_updated"
    assert sim.truth[-1].message_id == first["id"]


@pytest.mark.anyio
async def test_faults_respect_their_window() -> None:
    """A fault with a window only hits inside it (simulated seconds since the start)."""
    clock = manual_clock()
    sim = make_sim(clock=clock, faults=[Faults(error_500=1.0, window=Window(start=10, end=20))])
    async with serving(sim) as client:
        codes = []
        for t in (0, 12, 25):
            clock.set(T0 + t)
            codes.append((await client.get(f"/v1/runs/{DONE}")).status_code)
    assert codes == [200, 500, 200]


# -- time passing, webhooks ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_lifecycle_and_webhooks_over_time() -> None:
    """A run started with webhook_url: human_request, then (after respond) run_completed."""
    sim = Simulator(scenario(), clock=Clock.scaled(100))
    async with receiving() as receiver, serving(sim) as client:
        started = await client.post(
            "/v1/runs", json={"agent_id": AGENT, "webhook_url": receiver.url}
        )
        rid = started.json()["run"]["id"]
        await receiver.wait_for(lambda bodies: len(bodies) >= 1)
        assert receiver.bodies == [{"event": "human_request", "run_id": rid, "status": "waiting"}]
        pending = (await client.get(f"/v1/runs/{rid}")).json()["pending_human_request"]
        await client.post(
            f"/v1/runs/{rid}/human-requests/{pending['id']}/respond", json={"approved": False}
        )
        await receiver.wait_for(lambda bodies: len(bodies) >= 2)
        assert receiver.bodies[1] == {
            "event": "run_completed",
            "run_id": rid,
            "status": "completed",
        }
    seen = [
        (e.status_from, e.status_to) for e in sim.truth if e.run_id == rid and e.kind == "status"
    ]
    assert seen == [
        (None, "pending"),
        ("pending", "running"),
        ("running", "waiting"),
        ("waiting", "running"),
        ("running", "completed"),
    ]
    assert [d.status for d in sim.deliveries] == [200, 200]


@pytest.mark.anyio
async def test_runs_without_human_in_the_loop_complete_over_http() -> None:
    """An agent with human_in_the_loop false never waits; a failed run sends run_failed."""
    sc = scenario(
        [
            {
                "id": run_id(1),
                "agent": PLAIN_AGENT,
                "start": "1s",
                "webhook_url": "http://127.0.0.1:9/x",
                "timeline": [{"at": "1s", "status": "failed"}],
            }
        ]
    )
    sim = Simulator(sc, clock=Clock.scaled(100))
    async with receiving() as receiver, serving(sim) as client:
        rid = (
            await client.post(
                "/v2/teams/" + TEAM + "/runs",
                json={"agent_id": QUIET_AGENT, "webhook_url": receiver.url},
            )
        ).json()["run"]["id"]
        await receiver.wait_for(lambda bodies: len(bodies) >= 1)
        assert receiver.bodies == [{"event": "run_completed", "run_id": rid, "status": "completed"}]
        assert (await client.get(f"/v2/runs/{rid}")).json()["run"][
            "human_in_the_loop_enabled"
        ] is False
        await wait_until(lambda: any(d.event == "run_failed" for d in sim.deliveries))
    assert "waiting" not in {e.status_to for e in sim.truth if e.run_id == rid}


@pytest.mark.anyio
async def test_failed_webhook_deliveries_are_recorded_not_fatal() -> None:
    """A receiver answering 500, or nobody listening: recorded with the error; serving goes on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    sim = Simulator(scenario(), clock=Clock.scaled(200))
    async with receiving(status=500) as receiver, serving(sim) as client:
        for url in (receiver.url, dead):
            await client.post("/v1/runs", json={"agent_id": PLAIN_AGENT, "webhook_url": url})
        await wait_until(lambda: len(sim.deliveries) >= 2)
        assert (await client.get("/v2/teams")).status_code == 200
    errors = sorted(d.error or "" for d in sim.deliveries)
    assert errors[0].startswith("ConnectError")
    assert errors[1] == "receiver answered 500"


@pytest.mark.anyio
async def test_scheduled_steps_advance_without_requests() -> None:
    """The ticker plays the timeline even when nobody polls (webhooks must fire on time)."""
    sc = scenario(
        [
            {
                "id": run_id(1),
                "agent": PLAIN_AGENT,
                "start": "1s",
                "timeline": [{"at": "1s", "status": "completed"}],
            }
        ]
    )
    sim = Simulator(sc, clock=Clock.scaled(100))
    async with serving(sim):
        await wait_until(lambda: any(e.status_to == "completed" for e in sim.truth))
    assert sim.requests == []


# -- the logs and the control surface ------------------------------------------------------------


@pytest.mark.anyio
async def test_control_surface_answers_deletes_and_reports() -> None:
    """/_sim: truth, requests, runs, outside answers and deletes; no auth, not logged."""
    sim = make_sim(rate_limit=1)
    async with serving(sim, key=None) as client:
        await client.get(f"/v1/runs/{DONE}", headers={"authorization": f"Bearer {KEY}"})
        answered = await client.post(f"/_sim/runs/{APPROVAL}/answer")
        assert answered.status_code == 200
        assert answered.json()["human_request"]["response"] == "approved"
        assert (await client.post(f"/_sim/runs/{APPROVAL}/answer")).status_code == 400
        assert (await client.post(f"/_sim/runs/{RUNNING}/delete")).json() == {"deleted": True}
        posted = await client.post(f"/_sim/runs/{DONE}/messages", json={"message": "from Slack"})
        assert posted.status_code == 201
        runs = {r["id"]: r for r in (await client.get("/_sim/runs")).json()}
        assert runs[RUNNING]["deleted"]
        assert runs[APPROVAL]["status"] == "running"
        truth = (await client.get("/_sim/truth")).json()
        assert truth == [e.to_dict() for e in sim.truth]
        assert {"human_request_resolved", "run_lost"} <= {e["kind"] for e in truth}
        requests = (await client.get("/_sim/requests")).json()
        assert requests == [
            {
                "time": T0,
                "method": "GET",
                "path": f"/v1/runs/{DONE}",
                "query": "",
                "status": 200,
                "api_key_ok": True,
                "key_id": key_id(KEY),
            }
        ]
        info = (await client.get("/_sim/info")).json()
        assert info["team"]["id"] == TEAM
        assert info["url"].startswith("http://127.0.0.1:")
        assert (await client.get("/_sim/nothing")).status_code == 404


@pytest.mark.anyio
async def test_request_log_keeps_path_query_and_status() -> None:
    """Each API request is logged with its sim time, path without query, the query, status."""
    clock = manual_clock()
    sim = make_sim(clock=clock)
    async with serving(sim) as client:
        await client.get(f"/v2/runs/{DONE}/messages", params={"limit": 5})
        clock.forward(1.5)
        await client.get("/v2/runs/nope")
    first, second = sim.requests
    assert (first.time, first.path, first.query, first.status) == (
        T0,
        f"/v2/runs/{DONE}/messages",
        "limit=5",
        200,
    )
    assert (second.time, second.status) == (T0 + 1.5, 400)


@pytest.mark.anyio
async def test_mock_transport_serves_in_process() -> None:
    """Simulator.mock_transport: the same API for an httpx client, without sockets."""
    sim = make_sim(faults=[Faults(drop=1.0, window=Window(start=100))])
    transport = sim.mock_transport()
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sim", headers={"authorization": f"Bearer {KEY}"}
    ) as client:
        assert (await client.get(f"/v2/runs/{DONE}")).json()["run"]["status"] == "completed"
        assert (await client.get(f"/v2/teams/{TEAM}/runs", params={"limit": 1})).json()[
            "total"
        ] == 6
        sim.clock.forward(200)  # type: ignore[attr-defined]
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/v2/runs/{DONE}")


# -- the CLI entry points ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_simulate_prints_url_and_key_and_serves_the_demo() -> None:
    """run_simulate: URL and key on the given stream; the demo answers like the seed's curl."""
    out = io.StringIO()
    async with anyio.create_task_group() as tg:
        bound = await tg.start(
            lambda task_status: run_simulate(
                "127.0.0.1:0", None, 0, 50.0, api_key="k1", out=out, task_status=task_status
            )
        )
        async with httpx.AsyncClient(
            base_url=bound.url, headers={"authorization": "Bearer k1"}
        ) as client:
            run = (await client.get("/v1/runs/d0000000-0000-4000-8000-000000000001")).json()
            assert run["run"]["status"] == "completed"
            assert (await client.get("/v2/teams")).json()["teams"][0]["name"] == "Demo team"
        tg.cancel_scope.cancel()
    text = out.getvalue()
    assert bound.url in text
    assert "api key: k1" in text
    assert "DUVO_MONITOR_CLOCK=speed=50.0" in text


def test_load_scenario_accepts_files_builtins_and_generate_specs(tmp_path: Any) -> None:
    """--scenario: a file, a built-in name, or generate:key=value,..."""
    assert load_scenario(None, 0).name == "demo"
    assert load_scenario("demo", 0).name == "demo"
    generated = load_scenario("generate:runs=5,active=2,duration=60", 3)
    assert len(generated.runs) == 5
    assert generated.seed == 3
    with pytest.raises(ValueError, match="unknown option"):
        load_scenario("generate:colour=red", 0)


def test_simulate_main_refuses_bad_input(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """simulate_main exits 2 with a one-line reason for a bad scenario or listen address."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nagents: []\n")

    class Args:
        listen = "127.0.0.1:0"
        scenario = str(bad)
        seed = 0
        speed = 1.0

    assert simulate_main(Args(), environ={}) == 2
    assert "agents: at least one agent is needed" in capsys.readouterr().err
    Args.scenario = None  # type: ignore[assignment]
    Args.listen = "nowhere"
    assert simulate_main(Args(), environ={}) == 2


@pytest.mark.anyio
async def test_trickled_answers_come_a_byte_at_a_time() -> None:
    """trickle: the headers at once, then the body one byte every trickle_interval seconds,
    so no single read waits long (httpx's read timeout never fires) yet the body is late."""
    sim = make_sim(faults=Faults(trickle=1.0, trickle_interval=0.005))
    async with serving(sim) as client:
        started = time.perf_counter()
        async with client.stream("GET", f"/v1/runs/{DONE}") as response:
            assert response.status_code == 200
            chunks = [chunk async for chunk in response.aiter_raw()]
        took = time.perf_counter() - started
    body = b"".join(chunks)
    assert json.loads(body)["run"]["id"] == DONE
    assert len(chunks) > 1
    assert took >= len(body) * 0.005 * 0.9  # a lower bound: each byte waited its interval


def test_trickle_interval_must_be_positive() -> None:
    """A zero interval would be no trickle at all: refused."""
    with pytest.raises(ValueError, match="trickle_interval"):
        Faults(trickle=1.0, trickle_interval=0)
