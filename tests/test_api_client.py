"""The Duvo API client on the wire: what it sends for each endpoint, how it fails, what observers
and the gate see, and that the key never leaks.

The core runs over ``httpx.MockTransport`` handlers written here (they answer exactly the bytes a
test needs); dropped connections and truncated bodies also go over a real loopback socket through
``duvo_monitor.httpserver``, and a few end-to-end tests use the embedded simulator.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import orjson
import pytest

from duvo_monitor import __version__, httpserver
from duvo_monitor.api import (
    MESSAGES_PAGE_MAX,
    RUNS_PAGE_MAX,
    DuvoClient,
    Observation,
    Retry,
    RunFilters,
    make_http_client,
    with_retries,
)
from duvo_monitor.clock import Clock
from duvo_monitor.credentials import Secret
from duvo_monitor.errors import (
    ApiError,
    ApiStatusError,
    BadRequest,
    Conflict,
    Forbidden,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    UnexpectedStatus,
)
from duvo_monitor.models import HumanResponse, RateLimit

pytestmark = pytest.mark.anyio

KEY = "duvo_sk_live_7f3a9c1e5b2d4f6a8c0e"
BASE = "https://api.duvo.test"
TEAM = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
RUN = "3f1c2a9e-0b7d-4c41-9a55-6d2f1e8b7c01"
AGENT = "a0000000-0000-4000-8000-000000000001"
REQ = "c0000000-0000-4000-8000-000000000001"
MIB = 1024 * 1024
VERSIONS = ["v1", "v2"]

Answer = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- fakes -------------------------------------------------------------------------------------


class Wire:
    """A MockTransport handler that records every request and answers with ``answer``."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer or route

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self, i: int = -1) -> Any:
        return orjson.loads(self.requests[i].content)


def run_payload(**overrides: Any) -> dict[str, Any]:
    return {
        "id": RUN,
        "agent_id": AGENT,
        "build_id": "b0000000-0000-4000-8000-000000000001",
        "status": "running",
        "source": "api",
        "sandbox_id": None,
        "started_at": "2025-11-01T10:00:01.000Z",
        "completed_at": None,
        "created_at": "2025-11-01T10:00:00.000Z",
        "updated_at": "2025-11-01T10:00:02.000Z",
        "human_in_the_loop_enabled": True,
    } | overrides


def message_payload(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "m1",
        "type": "text",
        "role": "user",
        "timestamp": "2025-11-01T10:00:03.000Z",
        "text_content": "hi",
    } | overrides


def summary_payload() -> dict[str, Any]:
    return {
        "id": RUN,
        "created_at": "2025-11-01T10:00:00.000Z",
        "updated_at": "2025-11-01T10:00:02.000Z",
        "started_at": None,
        "completed_at": None,
        "status": "pending",
        "source": None,
        "title": "Reconcile invoices",
        "run_number": 7,
        "agent_id": AGENT,
        "agent_name": "Invoice reconciler",
        "build_id": "b0000000-0000-4000-8000-000000000001",
        "user_id": None,
        "case_queue_item_id": None,
        "case_queue_id": None,
        "case_queue_name": None,
        "case_title": None,
        "postponed_to": None,
        "submitted_prompt_count": 1,
    }


def teams_payload(n: int) -> dict[str, Any]:
    team = "{i}0000000-0000-4000-8000-00000000000{i}"
    return {
        "teams": [
            {"id": team.format(i=i), "name": f"Team {i}", "organization_id": None}
            for i in range(1, n + 1)
        ]
    }


def route(request: httpx.Request) -> httpx.Response:
    """A well-behaved Duvo API: the documented answer for every endpoint."""
    path, method = request.url.path, request.method
    parts = path.split("/")
    if method == "GET" and path == "/v2/teams":
        return httpx.Response(200, json={"teams": teams_one()})
    if method == "GET" and path.endswith("/runs") and parts[2] == "teams":
        return httpx.Response(200, json={"data": [summary_payload()], "total": 1})
    if method == "POST" and path.endswith("/runs"):
        return httpx.Response(201, json={"run": run_payload(status="pending")})
    if method == "GET" and path.endswith("/messages"):
        page = {"messages": [message_payload()], "total": 1, "limit": 50, "offset": 0}
        return httpx.Response(200, json=page)
    if method == "POST" and path.endswith("/messages"):
        return httpx.Response(201, json={"message": message_payload()})
    if method == "POST" and path.endswith("/respond"):
        record = {
            "id": REQ,
            "run_id": RUN,
            "title": "Pay?",
            "description": None,
            "response": "approved",
            "responded_at": "2025-11-01T10:01:00.000Z",
            "created_at": "2025-11-01T10:00:00.000Z",
        }
        return httpx.Response(200, json={"human_request": record})
    if method == "POST" and path.endswith("/stop"):
        return httpx.Response(200, json={"success": True, "message": "stopping"})
    if method == "GET" and len(parts) == 4 and parts[2] == "runs":
        return httpx.Response(200, json={"run": run_payload(), "pending_human_request": None})
    return httpx.Response(404, json={"error": "not_found", "message": f"no route {path}"})


def teams_one() -> list[dict[str, Any]]:
    return [{"id": TEAM, "name": "Ops", "organization_id": None}]


def answer(status: int, body: Any = None, **kwargs: Any) -> Answer:
    """An Answer that always returns the same status and JSON body (or raw bytes)."""

    def respond(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes | str):
            return httpx.Response(status, content=body, **kwargs)
        return httpx.Response(status, json=body, **kwargs)

    return respond


def raising(exc_type: type[httpx.TransportError], text: str = "boom") -> Answer:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type(text, request=request)

    return respond


Factory = Callable[..., DuvoClient]


@pytest.fixture
async def connect() -> AsyncIterator[Factory]:
    """Build DuvoClients over MockTransports; their HTTP clients are closed after the test."""
    opened: list[httpx.AsyncClient] = []

    def make(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> DuvoClient:
        http = make_http_client(transport=httpx.MockTransport(handler))
        opened.append(http)
        kwargs.setdefault("team_id", TEAM)
        return DuvoClient(http=http, base_url=BASE + "/", api_key=Secret(KEY), **kwargs)

    yield make
    for http in opened:
        await http.aclose()


# -- every endpoint ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_get_run_sends_bearer_user_agent_and_decodes(connect: Factory, version: str) -> None:
    """GET run: the version's path, bearer auth, User-Agent duvo-monitor/<version>, no body."""
    wire = Wire()
    snap = await connect(wire, version=version).get_run(RUN)
    (req,) = wire.requests
    assert req.method == "GET"
    assert str(req.url) == f"{BASE}/{version}/runs/{RUN}"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["user-agent"] == f"duvo-monitor/{__version__}"
    assert req.headers["accept"] == "application/json"
    assert req.content == b""
    assert "idempotency-key" not in req.headers
    assert snap.run is not None
    assert snap.run.id == RUN
    assert snap.pending_human_request is None


async def test_run_ids_are_normalised_to_lower_case(connect: Factory) -> None:
    """An upper-case run id is accepted and sent in lower case."""
    wire = Wire()
    await connect(wire).get_run(RUN.upper())
    assert wire.last.url.path == f"/v2/runs/{RUN}"


@pytest.mark.parametrize("version", VERSIONS)
async def test_list_messages_sends_limit_and_offset(connect: Factory, version: str) -> None:
    """List messages: GET with limit (default 50) and offset query parameters."""
    wire = Wire()
    client = connect(wire, version=version)
    page = await client.list_messages(RUN)
    await client.list_messages(RUN, limit=7, offset=21)
    first, second = wire.requests
    assert first.url.path == f"/{version}/runs/{RUN}/messages"
    assert dict(first.url.params) == {"limit": str(MESSAGES_PAGE_MAX), "offset": "0"}
    assert dict(second.url.params) == {"limit": "7", "offset": "21"}
    assert first.method == "GET"
    assert [m.id for m in page.messages] == ["m1"]
    assert page.total == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_post_message_sends_json_and_accepts_201(connect: Factory, version: str) -> None:
    """Post message: POST {"message": text} as JSON; the 201 answer decodes to the Message."""
    wire = Wire()
    msg = await connect(wire, version=version).post_message(RUN, "Go on, please")
    req = wire.last
    assert (req.method, req.url.path) == ("POST", f"/{version}/runs/{RUN}/messages")
    assert req.headers["content-type"] == "application/json"
    assert wire.body() == {"message": "Go on, please"}
    assert (msg.id, msg.text_content) == ("m1", "hi")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("response", "sent"),
    [
        (HumanResponse(approved=True), {"approved": True}),
        (HumanResponse(approved=False), {"approved": False}),
        (
            HumanResponse(answers={"Which ledger?": "EU, US"}),
            {"answers": {"Which ledger?": "EU, US"}},
        ),
    ],
)
async def test_respond_sends_approval_or_answers(
    connect: Factory, version: str, response: HumanResponse, sent: dict[str, Any]
) -> None:
    """Respond: POST the approval or the answers to .../human-requests/{id}/respond."""
    wire = Wire()
    record = await connect(wire, version=version).respond(RUN, REQ.upper(), response)
    req = wire.last
    assert req.method == "POST"
    assert req.url.path == f"/{version}/runs/{RUN}/human-requests/{REQ}/respond"
    assert wire.body() == sent
    assert (record.id, record.response) == (REQ, "approved")


@pytest.mark.parametrize("version", VERSIONS)
async def test_stop_run_posts_without_body(connect: Factory, version: str) -> None:
    """Stop: POST .../stop with no body; the answer decodes to StopResult."""
    wire = Wire()
    result = await connect(wire, version=version).stop_run(RUN)
    req = wire.last
    assert (req.method, req.url.path, req.content) == ("POST", f"/{version}/runs/{RUN}/stop", b"")
    assert "content-type" not in req.headers
    assert (result.success, result.message) == (True, "stopping")


async def test_start_run_v1_sends_body_and_a_fresh_idempotency_key(connect: Factory) -> None:
    """v1 start: POST /v1/runs with every given field and a new uuid Idempotency-Key per call."""
    wire = Wire()
    client = connect(wire, version="v1", team_id=None)
    run = await client.start_run(
        AGENT,
        message="Reconcile October",
        sandbox_id="sbx-1",
        webhook_url="https://hooks.example/duvo",
    )
    await client.start_run(AGENT)
    first = wire.requests[0]
    assert (first.method, first.url.path) == ("POST", "/v1/runs")
    assert wire.body(0) == {
        "agent_id": AGENT,
        "message": "Reconcile October",
        "sandbox_id": "sbx-1",
        "webhook_url": "https://hooks.example/duvo",
    }
    assert wire.body(1) == {"agent_id": AGENT}
    keys = [r.headers["idempotency-key"] for r in wire.requests]
    assert all(uuid.UUID(k).version == 4 for k in keys)
    assert keys[0] != keys[1]
    assert run.status == "pending"


async def test_start_run_reuses_the_callers_idempotency_key(connect: Factory) -> None:
    """A caller-given Idempotency-Key is sent unchanged on every attempt."""
    wire = Wire()
    client = connect(wire, version="v1")
    await client.start_run(AGENT, idempotency_key="start-42")
    await client.start_run(AGENT, idempotency_key="start-42")
    assert [r.headers["idempotency-key"] for r in wire.requests] == ["start-42", "start-42"]


async def test_start_run_v2_uses_the_configured_team(connect: Factory) -> None:
    """v2 start: POST /v2/teams/{team}/runs with the configured team, no GET /v2/teams."""
    wire = Wire()
    await connect(wire, team_id=TEAM).start_run(AGENT, message="hi")
    (req,) = wire.requests
    assert (req.method, req.url.path) == ("POST", f"/v2/teams/{TEAM}/runs")
    assert wire.body() == {"agent_id": AGENT, "message": "hi"}
    assert "idempotency-key" in req.headers


async def test_team_is_resolved_once_from_the_keys_only_team(connect: Factory) -> None:
    """Without a configured team, the key's only team (GET /v2/teams) is used and remembered."""
    wire = Wire()
    client = connect(wire, team_id=None)
    await client.start_run(AGENT)
    await client.list_runs()
    paths = [(r.method, r.url.path) for r in wire.requests]
    assert paths == [
        ("GET", "/v2/teams"),
        ("POST", f"/v2/teams/{TEAM}/runs"),
        ("GET", f"/v2/teams/{TEAM}/runs"),
    ]
    assert client.team_id == TEAM


@pytest.mark.parametrize("n", [0, 2, 3])
async def test_team_resolution_fails_naming_the_teams(connect: Factory, n: int) -> None:
    """A key that sees 0 or several teams is an error naming them; nothing is started."""
    wire = Wire(answer(200, teams_payload(n)))
    with pytest.raises(ApiError) as info:
        await connect(wire, team_id=None).start_run(AGENT)
    exc = info.value
    assert exc.endpoint == "GET /v2/teams"
    assert f"the key sees {n} teams" in str(exc)
    assert "team_id" in str(exc)
    for team in teams_payload(n)["teams"]:
        assert f"{team['id']} ({team['name']})" in str(exc)
    if n == 0:
        assert "(none)" in str(exc)
    assert [r.url.path for r in wire.requests] == ["/v2/teams"]


async def test_list_teams_decodes(connect: Factory) -> None:
    """GET /v2/teams decodes every team."""
    wire = Wire(answer(200, teams_payload(2)))
    teams = await connect(wire).list_teams()
    assert [t.name for t in teams] == ["Team 1", "Team 2"]
    assert wire.last.url.path == "/v2/teams"


async def test_list_runs_sends_paging_sort_and_filters(connect: Factory) -> None:
    """List runs: limit, offset, sort_by=created_at, sort_order and every set filter."""
    wire = Wire()
    filters = RunFilters(
        status="waiting",
        agent_id=AGENT,
        user_id="u0000000-0000-4000-8000-000000000001",
        case_queue_id="q0000000-0000-4000-8000-000000000001",
        source="api",
        search="invoice",
        has_issues=True,
        issue_severity="critical",
        since="2025-11-01T00:00:00Z",
    )
    runs = await connect(wire).list_runs(filters, limit=100, offset=200, sort_order="asc")
    req = wire.last
    assert (req.method, req.url.path) == ("GET", f"/v2/teams/{TEAM}/runs")
    assert dict(req.url.params) == {
        "status": "waiting",
        "agent_id": AGENT,
        "user_id": "u0000000-0000-4000-8000-000000000001",
        "case_queue_id": "q0000000-0000-4000-8000-000000000001",
        "source": "api",
        "search": "invoice",
        "has_issues": "true",
        "issue_severity": "critical",
        "since": "2025-11-01T00:00:00Z",
        "limit": "100",
        "offset": "200",
        "sort_by": "created_at",
        "sort_order": "asc",
    }
    assert runs.total == 1
    assert runs.data[0].status == "pending"


async def test_list_runs_defaults_and_unset_filters(connect: Factory) -> None:
    """Unset filters are not sent; has_issues=False is sent as 'false'; defaults 20/0/desc."""
    wire = Wire()
    client = connect(wire)
    await client.list_runs()
    await client.list_runs(RunFilters(has_issues=False))
    assert dict(wire.requests[0].url.params) == {
        "limit": "20",
        "offset": "0",
        "sort_by": "created_at",
        "sort_order": "desc",
    }
    assert wire.requests[1].url.params["has_issues"] == "false"


async def test_any_2xx_is_success(connect: Factory) -> None:
    """201 where 200 is documented (and 200 where 201 is) is still success."""
    run_200 = Wire(answer(200, {"run": run_payload()}))
    assert (await connect(run_200).start_run(AGENT)).id == RUN
    get_201 = Wire(answer(201, {"run": run_payload()}))
    snap = await connect(get_201).get_run(RUN)
    assert snap.run is not None


async def test_unknown_fields_statuses_and_types_pass_through(connect: Factory) -> None:
    """Extra fields, unknown statuses and unknown message types reach the caller unchanged."""

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages"):
            msg = message_payload(type="session_paused", role="duvo", mood="calm")
            return httpx.Response(
                200, json={"messages": [msg], "total": 1, "limit": 50, "offset": 0, "next": None}
            )
        body = {"run": run_payload(status="queued_for_gpu", cost=3), "pending_human_request": None}
        return httpx.Response(200, json=body | {"trace_id": "t"})

    client = connect(Wire(respond))
    snap = await client.get_run(RUN)
    assert snap.run is not None
    assert (snap.run.status, snap.run.extra) == ("queued_for_gpu", {"cost": 3})
    page = await client.list_messages(RUN)
    assert (page.messages[0].type, page.messages[0].extra) == ("session_paused", {"mood": "calm"})


# -- argument validation -------------------------------------------------------------------------


BAD_CALLS: list[tuple[str, Callable[[DuvoClient], Any]]] = [
    ("get_run bad id", lambda c: c.get_run("not-a-uuid")),
    ("get_run empty", lambda c: c.get_run("")),
    ("get_run None", lambda c: c.get_run(None)),
    ("get_run path", lambda c: c.get_run(f"{RUN}/../../teams")),
    ("messages bad id", lambda c: c.list_messages("x")),
    ("messages limit 0", lambda c: c.list_messages(RUN, limit=0)),
    ("messages limit 51", lambda c: c.list_messages(RUN, limit=MESSAGES_PAGE_MAX + 1)),
    ("messages offset -1", lambda c: c.list_messages(RUN, offset=-1)),
    ("post bad id", lambda c: c.post_message("x", "hi")),
    ("post empty", lambda c: c.post_message(RUN, "")),
    ("respond bad run", lambda c: c.respond("x", REQ, HumanResponse(approved=True))),
    ("respond bad request", lambda c: c.respond(RUN, "x", HumanResponse(approved=True))),
    ("stop bad id", lambda c: c.stop_run(RUN[:-1])),
    ("start bad agent", lambda c: c.start_run("agent-1")),
    ("runs limit 0", lambda c: c.list_runs(limit=0)),
    ("runs limit 101", lambda c: c.list_runs(limit=RUNS_PAGE_MAX + 1)),
    ("runs offset -1", lambda c: c.list_runs(offset=-1)),
    ("runs sort", lambda c: c.list_runs(sort_order="up")),
]


@pytest.mark.parametrize("call", [c for _, c in BAD_CALLS], ids=[n for n, _ in BAD_CALLS])
async def test_bad_arguments_raise_value_error_before_any_request(
    connect: Factory, call: Callable[[DuvoClient], Any]
) -> None:
    """Bad ids, limits, offsets and sort orders are ValueErrors; no gate, no request."""
    wire = Wire()
    gated: list[str] = []

    async def gate(endpoint: str, *, urgent: bool, first: bool = False) -> None:
        gated.append(endpoint)

    with pytest.raises(ValueError, match=r"uuid|limit|offset|sort_order|empty"):
        await call(connect(wire, gate=gate))
    assert wire.requests == []
    assert gated == []


async def test_list_runs_is_v2_only(connect: Factory) -> None:
    """list_runs on a v1 client is a ValueError, not a request to a path v1 lacks."""
    wire = Wire()
    with pytest.raises(ValueError, match="v2"):
        await connect(wire, version="v1").list_runs()
    assert wire.requests == []


async def test_page_limits_at_the_bounds_are_accepted(connect: Factory) -> None:
    """limit 1 and the maxima (50 messages, 100 runs) are valid."""
    wire = Wire()
    client = connect(wire)
    await client.list_messages(RUN, limit=1)
    await client.list_messages(RUN, limit=MESSAGES_PAGE_MAX)
    await client.list_runs(limit=1)
    await client.list_runs(limit=RUNS_PAGE_MAX)
    limits = [r.url.params["limit"] for r in wire.requests]
    assert limits == ["1", "50", "1", "100"]


async def test_unknown_api_version_is_refused(connect: Factory) -> None:
    """Only v1 and v2 exist."""
    with pytest.raises(ValueError, match="v1 or v2"):
        connect(Wire(), version="v3")


# -- error classes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, BadRequest, False),
        (401, Unauthorized, False),
        (403, Forbidden, False),
        (404, NotFound, False),
        (409, Conflict, False),
        (429, RateLimited, True),
        (500, ServerError, True),
        (502, ServerError, True),
        (503, ServerError, True),
        (418, UnexpectedStatus, False),
        (301, UnexpectedStatus, False),
    ],
)
async def test_status_errors_carry_endpoint_status_error_and_message(
    connect: Factory, status: int, cls: type[ApiStatusError], retryable: bool
) -> None:
    """Each HTTP error status maps to its class with endpoint, status, error and message."""
    wire = Wire(answer(status, {"error": "some_code", "message": "what went wrong"}))
    with pytest.raises(cls) as info:
        await connect(wire).get_run(RUN)
    exc = info.value
    assert type(exc) is cls
    assert isinstance(exc, ApiStatusError)
    assert exc.endpoint == "GET /v2/runs/{run_id}"
    assert exc.status == status
    assert exc.error == "some_code"
    assert exc.server_message == "what went wrong"
    assert exc.retryable is retryable
    assert str(exc) == f"GET /v2/runs/{{run_id}}: HTTP {status} (some_code: what went wrong)"
    assert RUN not in str(exc)


async def test_each_endpoint_names_its_route_template(connect: Factory) -> None:
    """Errors name the route template of the endpoint that failed, never the concrete URL."""
    wire = Wire(answer(404, {"error": "not_found"}))
    client = connect(wire)
    calls: list[tuple[Callable[[], Any], str]] = [
        (lambda: client.get_run(RUN), "GET /v2/runs/{run_id}"),
        (lambda: client.list_messages(RUN), "GET /v2/runs/{run_id}/messages"),
        (lambda: client.post_message(RUN, "x"), "POST /v2/runs/{run_id}/messages"),
        (
            lambda: client.respond(RUN, REQ, HumanResponse(approved=True)),
            "POST /v2/runs/{run_id}/human-requests/{request_id}/respond",
        ),
        (lambda: client.stop_run(RUN), "POST /v2/runs/{run_id}/stop"),
        (lambda: client.start_run(AGENT), "POST /v2/teams/{teamId}/runs"),
        (lambda: client.list_runs(), "GET /v2/teams/{teamId}/runs"),
        (lambda: client.list_teams(), "GET /v2/teams"),
    ]
    for call, endpoint in calls:
        with pytest.raises(NotFound) as info:
            await call()
        assert info.value.endpoint == endpoint
        assert str(info.value).startswith(endpoint + ": HTTP 404 (not_found)")


async def test_error_body_without_error_code(connect: Factory) -> None:
    """An error body without `error` (or a non-string one) still raises, saying so."""
    for body in ({}, {"error": 5, "message": "m"}, b"", b"null"):
        with pytest.raises(BadRequest) as info:
            await connect(Wire(answer(400, body))).get_run(RUN)
        assert info.value.error is None
        assert "HTTP 400 (no error code" in str(info.value)


async def test_html_502_page_is_a_server_error(connect: Factory) -> None:
    """A proxy's HTML 502 page is a retryable ServerError describing the non-JSON body."""
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    wire = Wire(answer(502, page, headers={"content-type": "text/html"}))
    with pytest.raises(ServerError) as info:
        await connect(wire).stop_run(RUN)
    exc = info.value
    assert (exc.status, exc.error, exc.retryable) == (502, None, True)
    assert exc.server_message == f"non-JSON error body (text/html, {len(page)} bytes)"
    assert "<html>" not in str(exc)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("12", 12.0),
        ("0.5", 0.5),
        (None, None),
        ("whenever", None),
    ],
)
async def test_429_carries_retry_after_seconds(
    connect: Factory, retry_after: str | None, expected: float | None
) -> None:
    """429 is RateLimited with the server's retry-after in seconds (None when absent or junk)."""
    headers = {} if retry_after is None else {"retry-after": retry_after}
    wire = Wire(answer(429, {"error": "rate_limited"}, headers=headers))
    with pytest.raises(RateLimited) as info:
        await connect(wire).get_run(RUN)
    assert info.value.status == 429
    assert info.value.retry_after == expected


async def test_429_carries_retry_after_http_date(connect: Factory) -> None:
    """A retry-after HTTP date becomes seconds from now on the client's clock."""
    when = time.time() + 90
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when))
    wire = Wire(answer(429, {"error": "rate_limited"}, headers={"retry-after": date}))
    with pytest.raises(RateLimited) as info:
        await connect(wire).get_run(RUN)
    assert info.value.retry_after == pytest.approx(90, abs=2)


@pytest.mark.parametrize(
    ("exc_type", "text"),
    [
        (httpx.ConnectError, "ConnectError: [Errno 111] Connection refused"),
        (httpx.RemoteProtocolError, "RemoteProtocolError: [Errno 111] Connection refused"),
        (httpx.ReadError, "ReadError: [Errno 111] Connection refused"),
        (httpx.ReadTimeout, "timed out (ReadTimeout)"),
        (httpx.ConnectTimeout, "timed out (ConnectTimeout)"),
        (httpx.PoolTimeout, "timed out (PoolTimeout)"),
    ],
)
async def test_transport_failures_become_transport_error(
    connect: Factory, exc_type: type[httpx.TransportError], text: str
) -> None:
    """Refused, reset and timed-out requests are retryable TransportErrors with no status."""
    wire = Wire(raising(exc_type, "[Errno 111] Connection refused"))
    with pytest.raises(TransportError) as info:
        await connect(wire).list_messages(RUN)
    exc = info.value
    assert exc.status is None
    assert exc.retryable
    assert exc.endpoint == "GET /v2/runs/{run_id}/messages"
    assert str(exc) == f"GET /v2/runs/{{run_id}}/messages: {text}"
    assert isinstance(exc.__cause__, exc_type)


class CutOff(httpx.AsyncByteStream):
    """A body that sends some bytes and then fails like a reset connection."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"run": {"id": "'
        raise httpx.ReadError("connection reset by peer")


async def test_failure_while_reading_the_body_is_a_transport_error(connect: Factory) -> None:
    """A reset in the middle of the body is a TransportError that keeps the status seen."""
    wire = Wire(lambda request: httpx.Response(200, stream=CutOff()))
    with pytest.raises(TransportError) as info:
        await connect(wire).get_run(RUN)
    assert info.value.status == 200
    assert "connection reset by peer" in str(info.value)


# -- malformed answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (
            b'{"run": {"id": "3f1c',
            "application/json",
            "body is not valid JSON (20 bytes, unexpected end of data",
        ),
        (
            b"<!DOCTYPE html><html><body>Maintenance</body></html>",
            "text/html; charset=utf-8",
            "expected JSON, got a text/html; charset=utf-8 page (HTTP 200)",
        ),
        (b"<html>oops</html>", "application/json", "body is not valid JSON"),
        (b"", "application/json", "body is not valid JSON (0 bytes"),
        (b"", "", "expected JSON, got an empty body (HTTP 200)"),
        (b"OK", "text/plain", "body is not valid JSON (2 bytes"),
        (b"[]", "application/json", "body is an array, expected an object"),
        (b'"run"', "application/json", "body is a string, expected an object"),
        (b"null", "application/json", "body is null, expected an object"),
        (b"{}", "application/json", "field run is missing"),
        (b'{"run": []}', "application/json", "run is an array, expected an object"),
        (b'{"run": {"id": 1}}', "application/json", "field run.human_in_the_loop_enabled"),
        (b'{"run": null, "pending_human_request": 3}', "application/json", "pending_human"),
        (b'\xff\xfe{"run": null}', "application/json", "body is not valid JSON"),
    ],
    ids=[
        "truncated",
        "html",
        "html-as-json",
        "empty-json",
        "empty-untyped",
        "text",
        "array",
        "string",
        "null",
        "no-run",
        "run-array",
        "run-incomplete",
        "bad-pending",
        "not-utf8",
    ],
)
async def test_malformed_get_run_answers(
    connect: Factory, body: bytes, content_type: str, message: str
) -> None:
    """Each kind of malformed 200 answer is a MalformedResponse with a clear message."""
    headers = {"content-type": content_type} if content_type else {}
    wire = Wire(answer(200, body, headers=headers))
    with pytest.raises(MalformedResponse) as info:
        await connect(wire).get_run(RUN)
    exc = info.value
    assert exc.endpoint == "GET /v2/runs/{run_id}"
    assert message in str(exc)
    assert exc.retryable


async def test_get_run_null_is_not_an_error(connect: Factory) -> None:
    """GET run answering `run: null` (the run no longer exists) gives a snapshot with run None."""
    wire = Wire(answer(200, {"run": None, "pending_human_request": None}))
    snap = await connect(wire).get_run(RUN)
    assert snap.run is None


@pytest.mark.parametrize(
    ("call", "body", "field"),
    [
        (lambda c: c.start_run(AGENT), {"run": None}, "run"),
        (lambda c: c.start_run(AGENT), {}, "run"),
        (lambda c: c.start_run(AGENT), {"run": run_payload(status=None)}, "run.status"),
        (lambda c: c.post_message(RUN, "x"), {}, "message"),
        (lambda c: c.post_message(RUN, "x"), {"message": message_payload(id=7)}, "message.id"),
        (
            lambda c: c.list_messages(RUN),
            {
                "messages": [message_payload(), message_payload(), message_payload(role=None)],
                "total": 3,
                "limit": 50,
                "offset": 0,
            },
            "messages[2].role",
        ),
        (lambda c: c.list_messages(RUN), {"messages": [], "total": "0"}, "total"),
        (
            lambda c: c.respond(RUN, REQ, HumanResponse(approved=True)),
            {"human_request": None},
            "human_request",
        ),
        (lambda c: c.stop_run(RUN), {"success": None}, "success"),
        (lambda c: c.list_runs(), {"data": [{}], "total": 1}, "data[0]."),
        (lambda c: c.list_teams(), {"teams": [{"id": "t"}]}, "teams[0].name"),
    ],
)
async def test_wrong_shapes_name_the_field(
    connect: Factory, call: Callable[[DuvoClient], Any], body: Any, field: str
) -> None:
    """Missing fields, wrong types and nulls raise MalformedResponse naming the field path."""
    with pytest.raises(MalformedResponse) as info:
        await call(connect(Wire(answer(200 if "run" not in body else 201, body))))
    assert (info.value.field or "").startswith(field)
    assert field in str(info.value)


async def test_list_teams_without_teams_is_malformed(connect: Factory) -> None:
    """GET /v2/teams without a `teams` array is malformed, naming the field."""
    for body in ({}, {"teams": None}, {"teams": {}}):
        with pytest.raises(MalformedResponse) as info:
            await connect(Wire(answer(200, body))).list_teams()
        assert "teams" in str(info.value)
        assert info.value.field == "teams"


class Endless(httpx.AsyncByteStream):
    """An unsized body that never ends, one MiB at a time."""

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b" " * MIB
        while True:
            self.sent += len(chunk)
            yield chunk


async def test_huge_declared_body_is_refused_before_reading(connect: Factory) -> None:
    """A Content-Length over the 16 MiB cap is refused without reading the body."""
    stream = Endless()
    headers = {"content-length": str(16 * MIB + 1), "content-type": "application/json"}
    wire = Wire(lambda request: httpx.Response(200, headers=headers, stream=stream))
    with pytest.raises(MalformedResponse) as info:
        await connect(wire).get_run(RUN)
    assert f"answer of {16 * MIB + 1} bytes is over the {16 * MIB} byte cap" in str(info.value)
    assert info.value.status == 200
    assert stream.sent == 0


async def test_huge_unsized_body_is_cut_at_the_cap(connect: Factory) -> None:
    """A body without Content-Length is read only until it passes the 16 MiB cap."""
    stream = Endless()
    wire = Wire(lambda request: httpx.Response(200, stream=stream))
    with pytest.raises(MalformedResponse, match="answer is over the 16777216 byte cap"):
        await connect(wire).list_messages(RUN)
    assert stream.sent == 17 * MIB


async def test_huge_real_body_is_refused(connect: Factory) -> None:
    """A real 16 MiB + 1 byte JSON body is refused as over the cap."""
    body = b'{"run": null, "pad": "' + b"x" * (16 * MIB - 23) + b'"}'
    assert len(body) == 16 * MIB + 1
    with pytest.raises(MalformedResponse, match="over the 16777216 byte cap"):
        await connect(Wire(answer(200, body))).get_run(RUN)


async def test_body_exactly_at_the_cap_is_read(connect: Factory) -> None:
    """The cap is inclusive: a body of exactly max_body_bytes decodes."""
    body = orjson.dumps({"run": None, "pending_human_request": None})
    body += b" " * (200 - len(body))
    client = connect(Wire(answer(200, body)), max_body_bytes=200)
    assert (await client.get_run(RUN)).run is None
    over = connect(Wire(answer(200, body + b" ")), max_body_bytes=200)
    with pytest.raises(MalformedResponse, match="201 bytes is over the 200 byte cap"):
        await over.get_run(RUN)


# -- observers and rate-limit headers ------------------------------------------------------------


async def test_observers_get_status_timing_and_rate_limit_headers(connect: Factory) -> None:
    """Every observer gets the endpoint template, status and parsed x-ratelimit-* headers."""
    first: list[Observation] = []
    second: list[Observation] = []
    reset = int(time.time()) + 30

    def respond(request: httpx.Request) -> httpx.Response:
        response = route(request)
        response.headers.update(
            {
                "x-ratelimit-limit": "300",
                "x-ratelimit-remaining": "299",
                "x-ratelimit-reset": str(reset),
            }
        )
        return response

    client = connect(Wire(respond), observers=[first.append, second.append])
    before = time.time()
    await client.get_run(RUN)
    assert first == second
    (obs,) = first
    assert obs.endpoint == "GET /v2/runs/{run_id}"
    assert obs.status == 200
    assert obs.error is None
    assert obs.seconds >= 0
    assert before - 1 <= obs.at <= time.time() + 1
    assert obs.rate == RateLimit(limit=300, remaining=299, reset=float(reset))


async def test_observers_see_failures_too(connect: Factory) -> None:
    """Transport failures (status None), error statuses and malformed answers are observed."""
    seen: list[Observation] = []
    answers: list[Answer] = [
        raising(httpx.ConnectError),
        answer(429, {"error": "rate_limited"}, headers={"retry-after": "3"}),
        answer(200, b"<html>", headers={"content-type": "text/html"}),
        answer(200, b" " * 300),
    ]

    def respond(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)(request)

    client = connect(Wire(respond), observers=[seen.append], max_body_bytes=100)
    for expected in (TransportError, RateLimited, MalformedResponse, MalformedResponse):
        with pytest.raises(expected):
            await client.get_run(RUN)
    statuses = [(o.status, o.error) for o in seen]
    assert statuses[0] == (None, "TransportError")
    assert statuses[1][0] == 429
    assert seen[1].rate.retry_after == 3.0
    assert statuses[2][0] == 200
    assert statuses[3] == (200, "MalformedResponse")
    assert all(o.endpoint == "GET /v2/runs/{run_id}" for o in seen)


async def test_rate_limit_headers_of_error_answers_are_observed(connect: Factory) -> None:
    """The headers of a 429 reach observers, so the budget can obey them."""
    seen: list[Observation] = []
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "60", "retry-after": "60"}
    wire = Wire(answer(429, {"error": "rate_limited"}, headers=headers))
    with pytest.raises(RateLimited):
        await connect(wire, observers=[seen.append]).list_runs()
    (obs,) = seen
    assert obs.rate.remaining == 0
    assert obs.rate.retry_after == 60.0
    assert obs.rate.reset == pytest.approx(obs.at + 60, abs=1)


# -- the gate ------------------------------------------------------------------------------------


async def test_gate_is_awaited_before_every_request(connect: Factory) -> None:
    """The gate is awaited with the endpoint before each request, team resolution included;
    a client bound to urgency passes it on, the client it came from stays routine."""
    events: list[str] = []

    async def gate(endpoint: str, *, urgent: bool, first: bool = False) -> None:
        await anyio.lowlevel.checkpoint()
        events.append(f"gate {endpoint}{' urgent' if urgent else ''}")

    def respond(request: httpx.Request) -> httpx.Response:
        events.append(f"send {request.method} {request.url.path}")
        return route(request)

    client = connect(respond, gate=gate, team_id=None)
    await client.start_run(AGENT)
    await client.get_run(RUN)
    await client.stop_run(RUN)
    await client.with_urgency(True).get_run(RUN)
    await client.get_run(RUN)
    assert events[-4:] == [
        "gate GET /v2/runs/{run_id} urgent",
        f"send GET /v2/runs/{RUN}",
        "gate GET /v2/runs/{run_id}",
        f"send GET /v2/runs/{RUN}",
    ]
    assert events[:-4] == [
        "gate GET /v2/teams",
        "send GET /v2/teams",
        "gate POST /v2/teams/{teamId}/runs",
        f"send POST /v2/teams/{TEAM}/runs",
        "gate GET /v2/runs/{run_id}",
        f"send GET /v2/runs/{RUN}",
        "gate POST /v2/runs/{run_id}/stop",
        f"send POST /v2/runs/{RUN}/stop",
    ]


async def test_a_gate_that_refuses_stops_the_request(connect: Factory) -> None:
    """An exception from the gate propagates and nothing is sent or observed."""
    seen: list[Observation] = []

    class BudgetExhausted(Exception):
        pass

    async def gate(endpoint: str, *, urgent: bool, first: bool = False) -> None:
        raise BudgetExhausted(endpoint)

    wire = Wire()
    with pytest.raises(BudgetExhausted):
        await connect(wire, gate=gate, observers=[seen.append]).get_run(RUN)
    assert wire.requests == []
    assert seen == []


# -- the key never leaks -------------------------------------------------------------------------


def leaks(text: str) -> bool:
    return KEY in text or KEY[8:] in text


LEAK_ANSWERS: list[Answer] = [
    answer(401, {"error": "unauthorized", "message": "invalid key"}),
    answer(429, {"error": "rate_limited"}, headers={"retry-after": "1"}),
    answer(503, b"<html>down</html>", headers={"content-type": "text/html"}),
    answer(200, b"{broken"),
    answer(200, {"run": {"id": 5}}),
    raising(httpx.ConnectError),
    raising(httpx.ReadTimeout),
]


@pytest.mark.parametrize("respond", LEAK_ANSWERS)
async def test_key_never_appears_in_errors_or_reprs(connect: Factory, respond: Answer) -> None:
    """No str()/repr() of an error, its cause, the client or an observation holds the key."""
    seen: list[Observation] = []
    client = connect(Wire(respond), observers=[seen.append])
    with pytest.raises(ApiError) as info:
        await client.get_run(RUN)
    exc = info.value
    texts = [str(exc), repr(exc), repr(client), repr(client.api_key), str(client.api_key)]
    texts += [repr(vars(exc)), repr(seen)]
    texts += [str(exc.__cause__), repr(exc.__cause__)]
    assert not any(leaks(t) for t in texts)


async def test_key_echoed_by_the_server_is_redacted(connect: Factory) -> None:
    """A server that echoes the key in its error body does not get it into our exception."""
    body = {"error": f"bad_key_{KEY}", "message": f"API key {KEY} was revoked"}
    with pytest.raises(Unauthorized) as info:
        await connect(Wire(answer(401, body))).get_run(RUN)
    exc = info.value
    assert not leaks(str(exc))
    assert not leaks(repr(vars(exc)))
    assert "was revoked" in str(exc)


# -- with_retries ------------------------------------------------------------------------------


def test_retry_delay_honours_retry_after_within_a_bound() -> None:
    """A 429's retry-after is the delay, capped at four times the backoff cap."""
    retry = Retry(cap=30.0)
    rng = random.Random(1)
    assert retry.delay(0, RateLimited(endpoint="e", retry_after=7.0), rng) == 7.0
    assert retry.delay(3, RateLimited(endpoint="e", retry_after=0.0), rng) == 0.0
    assert retry.delay(0, RateLimited(endpoint="e", retry_after=10_000.0), rng) == 120.0


def test_retry_delay_backs_off_exponentially_with_jitter() -> None:
    """Without retry-after the delay is backoff * 2**attempt, jittered to 50-100 %, capped."""
    retry = Retry(backoff=0.5, cap=30.0)
    rng = random.Random(7)
    error = TransportError("reset", endpoint="e")
    for attempt in range(8):
        full = min(30.0, 0.5 * 2**attempt)
        for _ in range(20):
            assert full / 2 <= retry.delay(attempt, error, rng) <= full
    no_hint = RateLimited(endpoint="e", retry_after=None)
    assert 0.25 <= retry.delay(0, no_hint, rng) <= 0.5


class Script:
    """An async call that raises the scripted errors in turn, then returns 'done'."""

    def __init__(self, *errors: ApiError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


FAST = Clock.scaled(1000)


async def test_with_retries_retries_retryable_errors() -> None:
    """Transport, 5xx, 429 and malformed answers are retried until the call succeeds."""
    script = Script(
        TransportError("reset", endpoint="e"),
        ServerError(endpoint="e", status=503),
        MalformedResponse("truncated", endpoint="e"),
    )
    assert await with_retries(script, retry=Retry(attempts=4), clock=FAST) == "done"
    assert script.calls == 4


@pytest.mark.parametrize(
    "error",
    [
        BadRequest(endpoint="e", status=400),
        Unauthorized(endpoint="e", status=401),
        Forbidden(endpoint="e", status=403),
        NotFound(endpoint="e", status=404),
        Conflict(endpoint="e", status=409),
        UnexpectedStatus(endpoint="e", status=418),
    ],
)
async def test_with_retries_does_not_retry_client_errors(error: ApiError) -> None:
    """4xx answers other than 429 are raised at once."""
    script = Script(error)
    with pytest.raises(type(error)):
        await with_retries(script, clock=FAST)
    assert script.calls == 1


async def test_with_retries_gives_up_after_the_attempts() -> None:
    """After `attempts` failures the last error is raised."""
    errors = [ServerError(endpoint="e", status=500 + i) for i in range(5)]
    script = Script(*errors)
    with pytest.raises(ServerError) as info:
        await with_retries(script, retry=Retry(attempts=3), clock=FAST)
    assert script.calls == 3
    assert info.value is errors[2]


async def test_with_retries_waits_the_servers_retry_after() -> None:
    """A 429's retry-after is waited on the injected clock (60 s at speed 1000 = 60 ms)."""
    script = Script(RateLimited(endpoint="e", retry_after=60.0))
    started = time.monotonic()
    assert await with_retries(script, retry=Retry(backoff=0.001), clock=FAST) == "done"
    elapsed = time.monotonic() - started
    assert 0.055 <= elapsed < 2.0


async def test_retried_start_sends_the_same_idempotency_key(connect: Factory) -> None:
    """with_retries around start_run with a key: a 503 then 201 starts one run with one key."""
    statuses = [503, 201]

    def respond(request: httpx.Request) -> httpx.Response:
        status = statuses.pop(0)
        if status == 503:
            return httpx.Response(503, json={"error": "unavailable"})
        return route(request)

    wire = Wire(respond)
    client = connect(wire)
    run = await with_retries(lambda: client.start_run(AGENT, idempotency_key="k-1"), clock=FAST)
    assert run.id == RUN
    assert [r.headers["idempotency-key"] for r in wire.requests] == ["k-1", "k-1"]


# -- over a real loopback socket -----------------------------------------------------------------


async def test_dropped_connection_and_truncated_body_over_real_http() -> None:
    """Over a real socket, a dropped connection and a cut-off body are TransportErrors."""
    full = orjson.dumps({"run": run_payload(), "pending_human_request": None})
    seen: list[Observation] = []

    async def handler(request: httpserver.Request) -> httpserver.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.headers["user-agent"] == f"duvo-monitor/{__version__}"
        kind = request.path.rsplit("/", 1)[-1]
        ok = {"content-type": "application/json"}
        if request.path.endswith("/stop"):
            return httpserver.Response(status=200, drop=True)
        if request.path.endswith("/messages"):
            return httpserver.Response(
                status=200, body=full, headers=list(ok.items()), truncate_to=20
            )
        if kind == RUN:
            headers = [*ok.items(), ("x-ratelimit-remaining", "41"), ("retry-after", "2")]
            return httpserver.Response(status=200, body=full, headers=headers)
        return httpserver.Response.text(502, "<html>Bad Gateway</html>", "text/html")

    with anyio.fail_after(10):
        await over_loopback(handler, seen)
    assert [o.status for o in seen] == [200, None, 200, 502, 200]
    assert seen[0].rate.remaining == 41
    assert seen[0].rate.retry_after == 2.0


async def over_loopback(handler: httpserver.Handler, seen: list[Observation]) -> None:
    async with anyio.create_task_group() as tg:
        bound = await tg.start(httpserver.serve, handler, "127.0.0.1", 0)
        async with make_http_client() as http:
            client = DuvoClient(
                http=http,
                base_url=bound.url,
                api_key=Secret(KEY),
                team_id=TEAM,
                observers=[seen.append],
            )
            snap = await client.get_run(RUN)
            assert snap.run is not None
            with pytest.raises(TransportError) as dropped:
                await client.stop_run(RUN)
            assert dropped.value.status is None
            assert isinstance(dropped.value.__cause__, httpx.RemoteProtocolError)
            with pytest.raises(TransportError) as truncated:
                await client.list_messages(RUN)
            assert truncated.value.status == 200
            assert isinstance(truncated.value.__cause__, httpx.RemoteProtocolError)
            with pytest.raises(ServerError, match="non-JSON error body"):
                await client.list_teams()
            assert (await client.get_run(RUN)).run is not None
        tg.cancel_scope.cancel()


async def test_refused_connection_is_a_transport_error() -> None:
    """Nothing listening on the port: a TransportError (ConnectError), status None."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with anyio.fail_after(10):
        async with make_http_client() as http:
            url = f"http://127.0.0.1:{port}"
            client = DuvoClient(http=http, base_url=url, api_key=Secret(KEY))
            with pytest.raises(TransportError) as info:
                await client.get_run(RUN)
    assert info.value.status is None
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert not leaks(str(info.value))


# -- end to end against the embedded simulator ---------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_client_against_the_simulator(version: Any) -> None:
    """The client talks to the embedded simulator over loopback: team, runs, run, messages."""
    from duvo_monitor.simulator import Scenario, Simulator

    clock = Clock.scaled(20)
    sim = Simulator(Scenario.builtin("demo"), clock=clock, api_keys={"sim-key"})
    with anyio.fail_after(10):
        await against(sim, clock, version)
    assert sim.requests, "the client's requests reached the simulator"
    assert any(r.api_key_ok and r.status == 200 for r in sim.requests)


async def against(sim: Any, clock: Clock, version: Any) -> None:
    async with anyio.create_task_group() as tg:
        bound = await tg.start(sim.serve, "127.0.0.1", 0)
        async with make_http_client() as http:
            v2 = DuvoClient(http=http, base_url=bound.url, api_key=Secret("sim-key"), clock=clock)
            team = await v2.resolve_team()
            assert team == sim.scenario.team.id
            runs = await v2.list_runs(limit=RUNS_PAGE_MAX)
            assert runs.total == len(runs.data) > 0
            client = DuvoClient(
                http=http,
                base_url=bound.url,
                api_key=Secret("sim-key"),
                clock=clock,
                version=version,
            )
            for summary in runs.data:
                snap = await client.get_run(summary.id)
                assert snap.run is not None
                assert snap.run.id == summary.id
                page = await client.list_messages(summary.id)
                assert page.total >= len(page.messages)
            wrong = DuvoClient(http=http, base_url=bound.url, api_key=Secret("wrong-key"))
            with pytest.raises(Unauthorized) as info:
                await wrong.get_run(runs.data[0].id)
            assert "wrong-key" not in str(info.value)
        tg.cancel_scope.cancel()


async def test_a_trickled_answer_is_abandoned_at_the_deadline_and_retried() -> None:
    """A body sent one byte a second beats every per-phase timeout of httpx; the request
    deadline abandons it as a timeout (observed like one), and the retry gets the answer."""
    from simfixtures import manual_clock, run_id, scenario

    from duvo_monitor.simulator import Simulator
    from duvo_monitor.simulator.faults import Faults, Window

    clock = manual_clock()
    run = run_id(1)
    sim = Simulator(
        scenario([{"id": run, "agent": "a0000000-0000-4000-8000-000000000003"}]),
        clock=clock,
        api_keys={"sim-key"},
        faults=Faults(trickle=1.0, trickle_interval=1.0, window=Window(end=60)),
    )
    seen: list[Observation] = []

    def observe(observation: Observation) -> None:
        seen.append(observation)
        if observation.error is not None:
            clock.forward(120)  # the trickling stops for the retry: past the fault's window

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            bound = await tg.start(sim.serve, "127.0.0.1", 0)
            async with make_http_client(timeout=httpx.Timeout(5.0)) as http:
                client = DuvoClient(
                    http=http,
                    base_url=bound.url,
                    api_key=Secret("sim-key"),
                    clock=clock,
                    observers=(observe,),
                    deadline=1.5,
                )
                snap = await with_retries(
                    lambda: client.get_run(run), retry=Retry(attempts=3), clock=FAST
                )
            tg.cancel_scope.cancel()
    assert snap.run is not None and snap.run.id == run
    assert [o.error for o in seen] == ["TransportError", None]
    assert seen[0].status == 200  # the headers came in time; the body did not


async def test_the_request_deadline_must_be_positive() -> None:
    """A zero deadline would abandon every request: refused when the client is built."""
    async with make_http_client() as http:
        with pytest.raises(ValueError, match="deadline"):
            DuvoClient(http=http, base_url=BASE, api_key=Secret(KEY), deadline=0)
