"""The Duvo Runs API client, v1 and v2, over one injected ``httpx.AsyncClient``.

One request, one answer: the client never retries on its own (the scheduler decides what a
failure costs; :func:`~duvo_monitor.retry.with_retries` serves one-shot CLI commands). Around
every request it

* awaits the optional ``gate`` (the daemon's request budget), so nothing bypasses the budget;
* bounds the exchange, request sent to last body byte, by ``deadline`` (wall seconds): past it
  the request is abandoned as a :class:`~duvo_monitor.errors.TransportError` (a timeout), which
  the caller counts and retries like any other;
* reports an :class:`~duvo_monitor.observation.Observation` (endpoint, status, duration, the
  rate-limit headers) to every observer, so the budget can obey the server and metrics can count;
* translates failures into the tree of :mod:`duvo_monitor.errors`, naming the endpoint by its
  route template (``GET /v2/runs/{run_id}``), never by the key or the full URL.

This module owns the wire: the routes, the headers, the deadline and the capped body read. What
an answer means (JSON decoding, status -> error class, key redaction) is the pure
:mod:`duvo_monitor.responses`; bodies are then checked by the ``from_api`` constructors of
:mod:`duvo_monitor.models`. The names other modules imported from here before those splits
(``Observation``, ``Gate``, ``Retry``, ``with_retries``, ``is_uuid``, ``require_uuid``) are
re-exported.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anyio
import httpx
import orjson

from duvo_monitor import __version__
from duvo_monitor.clock import Clock
from duvo_monitor.credentials import Secret
from duvo_monitor.errors import ApiError, MalformedResponse, TransportError
from duvo_monitor.ids import is_uuid, require_uuid
from duvo_monitor.models import (
    HumanRequestRecord,
    HumanResponse,
    Message,
    MessagePage,
    RateLimit,
    Run,
    RunList,
    RunSnapshot,
    StopResult,
    Team,
)
from duvo_monitor.observation import Gate, Observation, Observer
from duvo_monitor.responses import decode_json, describe, expect_object, status_error
from duvo_monitor.retry import Retry, with_retries

ApiVersion = Literal["v1", "v2"]
MESSAGES_PAGE_MAX = 50
RUNS_PAGE_MAX = 100
MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = httpx.Timeout(20.0, connect=10.0)
# httpx's timeouts bound each phase (connect, each read), so a body trickled a byte a second
# never trips them; this bounds the whole exchange, send to last byte, in wall-clock seconds
# (a network wait, not simulated time). Above the read timeout, so a plain stall still reports
# as httpx's own ReadTimeout.
REQUEST_DEADLINE = 30.0
DEFAULT_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=60)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilters:
    """Filters of v2 list runs; None means 'not filtered'."""

    status: str | None = None
    agent_id: str | None = None
    user_id: str | None = None
    case_queue_id: str | None = None
    source: str | None = None
    search: str | None = None
    has_issues: bool | None = None
    issue_severity: str | None = None
    since: str | None = None

    def to_params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        for name in (
            "status",
            "agent_id",
            "user_id",
            "case_queue_id",
            "source",
            "search",
            "issue_severity",
            "since",
        ):
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        if self.has_issues is not None:
            params["has_issues"] = "true" if self.has_issues else "false"
        return params


def make_http_client(
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    limits: httpx.Limits = DEFAULT_LIMITS,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one shared HTTP/1.1 keep-alive client for the Duvo API."""
    return httpx.AsyncClient(
        timeout=timeout,
        limits=limits,
        transport=transport,
        http2=False,
        follow_redirects=False,
        headers={"user-agent": f"duvo-monitor/{__version__}"},
    )


@dataclass(slots=True, kw_only=True)
class DuvoClient:
    http: httpx.AsyncClient
    base_url: str
    api_key: Secret
    version: ApiVersion = "v2"
    team_id: str | None = None
    clock: Clock = field(default_factory=Clock)
    gate: Gate | None = None
    observers: Sequence[Observer] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    urgent: bool = False
    """Whether this client's requests pass the gate as urgent (see :meth:`with_urgency`)."""
    first: bool = False
    """Whether they are a run's first look (see :meth:`with_urgency`)."""
    deadline: float = REQUEST_DEADLINE

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.deadline <= 0:
            raise ValueError(f"the request deadline must be positive, not {self.deadline!r}")
        if self.version not in ("v1", "v2"):
            raise ValueError(f"api version must be v1 or v2, not {self.version!r}")

    def with_urgency(self, urgent: bool, *, first: bool = False) -> DuvoClient:
        """The same client, its requests passing the gate as ``urgent`` (a hinted poll's), and
        as a run's ``first`` look."""
        return replace(self, urgent=urgent, first=first)

    # -- runs ------------------------------------------------------------------------------

    async def start_run(
        self,
        agent_id: str,
        *,
        message: str | None = None,
        sandbox_id: str | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Start a run. The Idempotency-Key makes a retried start start one run, not two."""
        body: dict[str, Any] = {"agent_id": require_uuid(agent_id, "agent id")}
        if message is not None:
            body["message"] = message
        if sandbox_id is not None:
            body["sandbox_id"] = sandbox_id
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        headers = {"idempotency-key": idempotency_key or str(uuid.uuid4())}
        if self.version == "v1":
            endpoint, path = "POST /v1/runs", "/v1/runs"
        else:
            team = await self.resolve_team()
            endpoint, path = "POST /v2/teams/{teamId}/runs", f"/v2/teams/{team}/runs"
        data = await self._request("POST", endpoint, path, json=body, headers=headers, ok=201)
        body_reader = expect_object(data, endpoint)
        if "run" not in body_reader:
            raise MalformedResponse("field run is missing", endpoint=endpoint, field="run")
        return Run.from_api(body_reader["run"], endpoint=endpoint)

    async def get_run(self, run_id: str) -> RunSnapshot:
        run_id = require_uuid(run_id, "run id")
        endpoint = f"GET /{self.version}/runs/{{run_id}}"
        data = await self._request("GET", endpoint, f"/{self.version}/runs/{run_id}")
        return RunSnapshot.from_api(data, endpoint=endpoint)

    async def list_messages(
        self, run_id: str, *, limit: int = MESSAGES_PAGE_MAX, offset: int = 0
    ) -> MessagePage:
        run_id = require_uuid(run_id, "run id")
        if not 1 <= limit <= MESSAGES_PAGE_MAX:
            raise ValueError(f"limit must be 1..{MESSAGES_PAGE_MAX}, not {limit}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        endpoint = f"GET /{self.version}/runs/{{run_id}}/messages"
        data = await self._request(
            "GET",
            endpoint,
            f"/{self.version}/runs/{run_id}/messages",
            params={"limit": str(limit), "offset": str(offset)},
        )
        return MessagePage.from_api(data, endpoint=endpoint)

    async def post_message(self, run_id: str, text: str) -> Message:
        run_id = require_uuid(run_id, "run id")
        if not text:
            raise ValueError("a message must not be empty")
        endpoint = f"POST /{self.version}/runs/{{run_id}}/messages"
        data = await self._request(
            "POST",
            endpoint,
            f"/{self.version}/runs/{run_id}/messages",
            json={"message": text},
            ok=201,
        )
        body = expect_object(data, endpoint)
        if "message" not in body:
            raise MalformedResponse("field message is missing", endpoint=endpoint, field="message")
        return Message.from_api(body["message"], endpoint=endpoint)

    async def respond(
        self, run_id: str, request_id: str, response: HumanResponse
    ) -> HumanRequestRecord:
        run_id = require_uuid(run_id, "run id")
        request_id = require_uuid(request_id, "human request id")
        endpoint = f"POST /{self.version}/runs/{{run_id}}/human-requests/{{request_id}}/respond"
        data = await self._request(
            "POST",
            endpoint,
            f"/{self.version}/runs/{run_id}/human-requests/{request_id}/respond",
            json=response.to_api(),
        )
        return HumanRequestRecord.from_api(data, endpoint=endpoint)

    async def stop_run(self, run_id: str) -> StopResult:
        run_id = require_uuid(run_id, "run id")
        endpoint = f"POST /{self.version}/runs/{{run_id}}/stop"
        data = await self._request("POST", endpoint, f"/{self.version}/runs/{run_id}/stop")
        return StopResult.from_api(data, endpoint=endpoint)

    # -- v2 only ---------------------------------------------------------------------------

    async def list_teams(self) -> list[Team]:
        endpoint = "GET /v2/teams"
        data = await self._request("GET", endpoint, "/v2/teams")
        body = expect_object(data, endpoint)
        teams = body.get("teams")
        if not isinstance(teams, list):
            raise MalformedResponse(
                "field teams is missing or not an array", endpoint=endpoint, field="teams"
            )
        return [
            Team.from_api(t, endpoint=endpoint, where=f"teams[{i}]") for i, t in enumerate(teams)
        ]

    async def resolve_team(self) -> str:
        """The configured team, else the key's only team (``GET /v2/teams``), remembered."""
        if self.team_id:
            return self.team_id
        teams = await self.list_teams()
        if len(teams) != 1:
            names = ", ".join(f"{t.id} ({t.name})" for t in teams) or "none"
            raise ApiError(
                f"the key sees {len(teams)} teams ({names}); set api.team_id",
                endpoint="GET /v2/teams",
            )
        self.team_id = teams[0].id
        return self.team_id

    async def list_runs(
        self,
        filters: RunFilters | None = None,
        *,
        limit: int = 20,
        offset: int = 0,
        sort_order: Literal["asc", "desc"] = "desc",
    ) -> RunList:
        if self.version != "v2":
            raise ValueError("list runs exists only in API v2")
        if not 1 <= limit <= RUNS_PAGE_MAX:
            raise ValueError(f"limit must be 1..{RUNS_PAGE_MAX}, not {limit}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        if sort_order not in ("asc", "desc"):
            raise ValueError(f"sort_order must be asc or desc, not {sort_order!r}")
        team = await self.resolve_team()
        endpoint = "GET /v2/teams/{teamId}/runs"
        params = (filters or RunFilters()).to_params()
        params |= {
            "limit": str(limit),
            "offset": str(offset),
            "sort_by": "created_at",
            "sort_order": sort_order,
        }
        data = await self._request("GET", endpoint, f"/v2/teams/{team}/runs", params=params)
        return RunList.from_api(data, endpoint=endpoint)

    # -- the wire --------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        endpoint: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: int = 200,
    ) -> Any:
        if self.gate is not None:
            await self.gate(endpoint, urgent=self.urgent, first=self.first)
        request_headers = {
            "authorization": f"Bearer {self.api_key.reveal()}",
            "accept": "application/json",
            **(headers or {}),
        }
        content = None
        if json is not None:
            content = orjson.dumps(json)
            request_headers["content-type"] = "application/json"
        started = self.clock.monotonic()
        status: int | None = None
        rate = RateLimit()
        try:
            try:
                with anyio.fail_after(self.deadline):
                    async with self.http.stream(
                        method,
                        self.base_url + path,
                        params=params,
                        content=content,
                        headers=request_headers,
                    ) as response:
                        status = response.status_code
                        rate = RateLimit.from_headers(response.headers, now=self.clock.time())
                        body = await self._read_capped(response, endpoint)
                        content_type = response.headers.get("content-type", "")
            except TimeoutError as exc:
                raise TransportError(
                    f"timed out (no full answer within the {self.deadline:g} s deadline)",
                    endpoint=endpoint,
                    status=status,
                ) from exc
            except httpx.TimeoutException as exc:
                raise TransportError(
                    f"timed out ({type(exc).__name__})", endpoint=endpoint
                ) from exc
            except httpx.HTTPError as exc:
                raise TransportError(describe(exc), endpoint=endpoint, status=status) from exc
        except ApiError as exc:
            self._observe(endpoint, status, started, rate, type(exc).__name__)
            raise
        self._observe(endpoint, status, started, rate, None)
        assert status is not None
        if status != ok and not (200 <= status < 300 and ok in (200, 201)):
            raise status_error(endpoint, status, body, content_type, rate, self.api_key)
        return decode_json(body, content_type, endpoint, status)

    async def _read_capped(self, response: httpx.Response, endpoint: str) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise MalformedResponse(
                f"answer of {int(declared)} bytes is over the {self.max_body_bytes} byte cap",
                endpoint=endpoint,
                status=response.status_code,
            )
        chunks = bytearray()
        async for chunk in response.aiter_bytes():
            chunks.extend(chunk)
            if len(chunks) > self.max_body_bytes:
                raise MalformedResponse(
                    f"answer is over the {self.max_body_bytes} byte cap",
                    endpoint=endpoint,
                    status=response.status_code,
                )
        return bytes(chunks)

    def _observe(
        self, endpoint: str, status: int | None, started: float, rate: RateLimit, error: str | None
    ) -> None:
        observation = Observation(
            endpoint=endpoint,
            status=status,
            seconds=max(0.0, self.clock.monotonic() - started),
            rate=rate,
            at=self.clock.time(),
            error=error,
        )
        for observer in self.observers:
            observer(observation)


__all__ = [
    "MESSAGES_PAGE_MAX",
    "RUNS_PAGE_MAX",
    "ApiVersion",
    "DuvoClient",
    "Gate",
    "Observation",
    "Observer",
    "Retry",
    "RunFilters",
    "is_uuid",
    "make_http_client",
    "require_uuid",
    "with_retries",
]
