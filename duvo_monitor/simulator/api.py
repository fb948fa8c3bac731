"""The Duvo Runs API (v1 and v2) over one :class:`~duvo_monitor.simulator.world.World`.

Routing, input validation and the JSON of every answer, faithful to the two OpenAPI documents
shipped in ``duvo_monitor/openapi``. Synchronous and free of I/O: the server authenticates,
rate-limits, injects faults and encodes; this module turns one authenticated request into an
:class:`Answer`.

Decisions where the documents are silent (see ``docs/simulator.md``):

- Paths are split on the raw target and each segment unquoted, so ``%2F`` in a team id stays in
  the segment instead of inventing a route.
- v1 bodies refuse unknown fields (their schemas say ``additionalProperties: false``); v2 bodies
  ignore them (their schemas do not).
- ``limit``/``offset`` of v2 list runs are ``number`` in the document: any finite number in range is
  accepted and truncated to an integer. Those of messages are ``integer``: ``1.5`` is a 400.
- A team id other than the key's is a 403, on listing as on starting (the list document does not
  declare 403; Duvo's own behaviour there is unknown).
- ``since`` keeps runs created at or after it; ``status=needs_attention`` matches waiting runs;
  ``has_issues=true``, ``issue_severity``, ``case_queue_id`` and ``digest_id`` match nothing (the
  simulator has no evaluations, queues or digests).
- An unknown agent on start is a 404. ``Idempotency-Key`` on start: the same key with the same body
  within 24 h answers the first run again (201) without starting another; with another body, 400.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from duvo_monitor.httpserver import Request
from duvo_monitor.simulator.scenario import LIST_STATUSES, Scenario
from duvo_monitor.simulator.world import Conflict, NotFound, RunQuery, World

IDEMPOTENCY_TTL = 24 * 3600.0
MESSAGES_MAX = 50
LIST_MAX = 100
DEFAULT_LIMIT = 20

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$")
_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_SORT_ORDERS = ("asc", "desc")
_SEVERITIES = ("critical", "medium", "low")
_LIST_STATUS_FILTER = (*LIST_STATUSES, "needs_attention")


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    status: int
    payload: Any
    headers: list[tuple[str, str]] = field(default_factory=list)


class BadRequest(Exception):
    """Input the API refuses with a 400."""


def error(status: int, code: str, message: str) -> Answer:
    return Answer(status=status, payload={"error": code, "message": message})


NOT_FOUND_ROUTE = error(404, "not_found", "no such endpoint")


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A matched endpoint: its name, version and path parameters."""

    name: str
    version: int
    params: dict[str, str]

    @property
    def run_id(self) -> str | None:
        return self.params.get("run_id")


# (method, path template) -> endpoint name; ``{x}`` matches one segment.
_ROUTES: dict[tuple[str, ...], dict[str, str]] = {
    ("v1", "runs"): {"POST": "start"},
    ("v1", "runs", "{run_id}"): {"GET": "get_run"},
    ("v1", "runs", "{run_id}", "messages"): {"GET": "list_messages", "POST": "post_message"},
    ("v1", "runs", "{run_id}", "human-requests", "{request_id}", "respond"): {"POST": "respond"},
    ("v1", "runs", "{run_id}", "stop"): {"POST": "stop"},
    ("v2", "teams"): {"GET": "list_teams"},
    ("v2", "teams", "{team_id}", "runs"): {"GET": "list_runs", "POST": "start"},
    ("v2", "runs", "{run_id}"): {"GET": "get_run"},
    ("v2", "runs", "{run_id}", "messages"): {"GET": "list_messages", "POST": "post_message"},
    ("v2", "runs", "{run_id}", "human-requests", "{request_id}", "respond"): {"POST": "respond"},
    ("v2", "runs", "{run_id}", "stop"): {"POST": "stop"},
}


def match(method: str, target: str) -> Route | Answer:
    """The endpoint for ``method target``, or the 404/405 answer if there is none."""
    raw_path = urllib.parse.urlsplit(target).path
    segments = [urllib.parse.unquote(s) for s in raw_path.strip("/").split("/")]
    if raw_path.endswith("/") and raw_path != "/":
        return NOT_FOUND_ROUTE
    for template, methods in _ROUTES.items():
        if len(template) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(template, segments, strict=True):
            if part.startswith("{"):
                if not segment:
                    break
                params[part[1:-1]] = segment
            elif part != segment:
                break
        else:
            name = methods.get(method)
            if name is None:
                answer = error(405, "method_not_allowed", f"{method} is not allowed here")
                answer.headers.append(("allow", ", ".join(sorted(methods))))
                return answer
            return Route(name=name, version=int(template[0][1]), params=params)
    return NOT_FOUND_ROUTE


class Api:
    """The endpoints. ``handle`` never raises for bad input: it answers 4xx."""

    def __init__(self, world: World, scenario: Scenario, *, list_stopped_as: str) -> None:
        self.world = world
        self.scenario = scenario
        self.list_stopped_as = list_stopped_as
        self._idempotent: dict[tuple[str, str], tuple[str, str, float]] = {}
        self._endpoints: dict[str, Callable[[Route, Request, float, str], Answer]] = {
            "start": self.start,
            "get_run": self.get_run,
            "list_messages": self.list_messages,
            "post_message": self.post_message,
            "respond": self.respond,
            "stop": self.stop,
            "list_teams": self.list_teams,
            "list_runs": self.list_runs,
        }

    def handle(self, route: Route, request: Request, now: float, api_key: str) -> Answer:
        try:
            for name in ("run_id", "request_id"):
                if name in route.params:
                    _check_uuid(route.params[name], name)
            return self._endpoints[route.name](route, request, now, api_key)
        except BadRequest as exc:
            return error(400, "bad_request", str(exc))
        except NotFound as exc:
            return error(404, "not_found", str(exc))
        except Conflict as exc:
            return error(400, "bad_request", str(exc))

    # -- endpoints -------------------------------------------------------------------------------

    def list_teams(self, route: Route, request: Request, now: float, key: str) -> Answer:
        team = self.scenario.team
        teams = [{"id": team.id, "name": team.name, "organization_id": team.organization_id}]
        return Answer(status=200, payload={"teams": teams})

    def start(self, route: Route, request: Request, now: float, key: str) -> Answer:
        if route.version == 2 and (denied := self._check_team(route)) is not None:
            return denied
        body = _body(request, required=True)
        fields = {"agent_id", "message", "sandbox_id", "webhook_url"}
        if route.version == 1:
            _refuse_unknown(body, fields)
        agent_id = _check_uuid(_field(body, "agent_id", str, required=True), "agent_id")
        message = _field(body, "message", str)
        sandbox_id = _field(body, "sandbox_id", str)
        webhook_url = _field(body, "webhook_url", str)
        if webhook_url is not None and not _URI.match(webhook_url):
            raise BadRequest("body/webhook_url must be a URI")
        agent = self.scenario.agent(agent_id)
        if agent is None:
            return error(404, "not_found", "agent not found")
        idempotency_key = request.headers.get("idempotency-key")
        digest = hashlib.sha256(request.body).hexdigest()
        if idempotency_key:
            known = self._idempotent.get((key, idempotency_key))
            if known is not None and now - known[2] < IDEMPOTENCY_TTL:
                if known[0] != digest:
                    raise BadRequest("Idempotency-Key already used with a different body")
                run = self.world.get_run(known[1])
                if run is not None:
                    return Answer(status=201, payload={"run": run.to_api()})
        run = self.world.start_run(
            agent=agent, now=now, message=message, sandbox_id=sandbox_id, webhook_url=webhook_url
        )
        if idempotency_key:
            self._idempotent[(key, idempotency_key)] = (digest, run.id, now)
        return Answer(status=201, payload={"run": run.to_api()})

    def get_run(self, route: Route, request: Request, now: float, key: str) -> Answer:
        run = self.world.get_run(route.params["run_id"])
        if run is None or (run.deleted and route.version == 1):
            return error(404, "not_found", "run not found")
        if run.deleted:
            return Answer(status=200, payload={"run": None, "pending_human_request": None})
        pending = None if run.pending is None else run.pending.to_pending_api()
        return Answer(status=200, payload={"run": run.to_api(), "pending_human_request": pending})

    def list_messages(self, route: Route, request: Request, now: float, key: str) -> Answer:
        limit = _integer(request, "limit", DEFAULT_LIMIT, 1, MESSAGES_MAX)
        offset = _integer(request, "offset", 0, 0, None)
        run = self.world.live_run(route.params["run_id"])
        page = [m.to_api() for m in run.messages[offset : offset + limit]]
        payload = {"messages": page, "total": len(run.messages), "limit": limit, "offset": offset}
        return Answer(status=200, payload=payload)

    def post_message(self, route: Route, request: Request, now: float, key: str) -> Answer:
        body = _body(request, required=True)
        if route.version == 1:
            _refuse_unknown(body, {"message"})
        text = _field(body, "message", str, required=True)
        if not text:
            raise BadRequest("body/message must NOT have fewer than 1 characters")
        message = self.world.post_message(route.params["run_id"], text, now)
        out = message.to_api()
        out["text_content"] = text
        return Answer(status=201, payload={"message": out})

    def respond(self, route: Route, request: Request, now: float, key: str) -> Answer:
        body = _body(request, required=False)
        if route.version == 1:
            _refuse_unknown(body, {"answers", "approved"})
        approved = _field(body, "approved", bool)
        answers = _field(body, "answers", dict)
        if answers is not None and not all(isinstance(v, str) for v in answers.values()):
            raise BadRequest("body/answers values must be strings")
        request_obj = self.world.respond(
            route.params["run_id"],
            route.params["request_id"],
            now=now,
            approved=approved,
            answers=answers,
        )
        return Answer(status=200, payload={"human_request": request_obj.to_respond_api()})

    def stop(self, route: Route, request: Request, now: float, key: str) -> Answer:
        _, message = self.world.stop(route.params["run_id"], now)
        return Answer(status=200, payload={"success": True, "message": message})

    def list_runs(self, route: Route, request: Request, now: float, key: str) -> Answer:
        query = self._run_query(request)
        if (denied := self._check_team(route)) is not None:
            return denied
        runs, total = self.world.query_runs(query)
        items = [run.to_list_item(stopped_as=self.list_stopped_as) for run in runs]
        return Answer(status=200, payload={"data": items, "total": total})

    # -- helpers ---------------------------------------------------------------------------------

    def _check_team(self, route: Route) -> Answer | None:
        if route.params["team_id"].lower() != self.scenario.team.id:
            return error(403, "forbidden", "this API key cannot act on that team")
        return None

    def _run_query(self, request: Request) -> RunQuery:
        limit = _number(request, "limit", DEFAULT_LIMIT, 1, LIST_MAX)
        offset = _number(request, "offset", 0, 0, None)
        sort_by = _choice(request, "sort_by", ("created_at",))
        del sort_by  # the only possible order
        sort_order = _choice(request, "sort_order", _SORT_ORDERS) or "desc"
        has_issues = _choice(request, "has_issues", ("true", "false"))
        since = request.query_one("since")
        return RunQuery(
            team_id=self.scenario.team.id,
            status=_choice(request, "status", _LIST_STATUS_FILTER),
            agent_id=_uuid_param(request, "agent_id"),
            user_id=_uuid_param(request, "user_id"),
            case_queue_id=_uuid_param(request, "case_queue_id"),
            digest_id=_uuid_param(request, "digest_id"),
            source=request.query_one("source"),
            search=request.query_one("search"),
            since=None if since is None else _datetime(since, "since"),
            has_issues=None if has_issues is None else has_issues == "true",
            issue_severity=_choice(request, "issue_severity", _SEVERITIES),
            descending=sort_order == "desc",
            offset=offset,
            limit=limit,
        )


def _check_uuid(value: str, name: str) -> str:
    if not _UUID.match(value):
        raise BadRequest(f"{name} must be a UUID")
    return value.lower()


def _uuid_param(request: Request, name: str) -> str | None:
    value = request.query_one(name)
    return None if value is None else _check_uuid(value, f"querystring/{name}")


def _integer(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_one(name)
    if raw is None:
        return default
    if not _INTEGER.match(raw.strip()) or len(raw) > 30:
        raise BadRequest(f"querystring/{name} must be integer (within range)")
    value = int(raw)
    _check_range(value, name, low, high)
    return value


def _number(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_one(name)
    if raw is None:
        return default
    if not _NUMBER.match(raw.strip()):
        raise BadRequest(f"querystring/{name} must be number")
    value = float(raw)
    if not math.isfinite(value):
        raise BadRequest(f"querystring/{name} must be number")
    _check_range(value, name, low, high)
    return int(value)


def _check_range(value: float, name: str, low: int, high: int | None) -> None:
    if value < low:
        raise BadRequest(f"querystring/{name} must be >= {low}")
    if high is not None and value > high:
        raise BadRequest(f"querystring/{name} must be <= {high}")


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_one(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"querystring/{name} must be one of {', '.join(allowed)}")
    return value


def _datetime(value: str, name: str) -> float:
    m = _DATETIME.match(value)
    if m is None:
        raise BadRequest(f"querystring/{name} must match format date-time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = float(m.group(7) or 0)
    zone = m.group(8).upper()
    offset = dt.timedelta(0)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        moment = dt.datetime(year, month, day, hour, minute, min(second, 59), tzinfo=dt.UTC)
        return (moment - offset).timestamp() + fraction
    except (ValueError, OverflowError):
        raise BadRequest(f"querystring/{name} must match format date-time") from None


def _body(request: Request, *, required: bool) -> dict[str, Any]:
    if not request.body.strip():
        if required:
            raise BadRequest("body must be a JSON object")
        return {}
    content_type = request.headers.get("content-type", "application/json").lower()
    if "json" not in content_type:
        raise BadRequest(f"unsupported content-type {content_type!r}; send application/json")
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _refuse_unknown(body: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(body) - known)
    if extra:
        raise BadRequest(f"body must NOT have additional properties ({', '.join(extra)})")


def _field(body: Mapping[str, Any], name: str, kind: type, *, required: bool = False) -> Any:
    if name not in body:
        if required:
            raise BadRequest(f"body must have required property '{name}'")
        return None
    value = body[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise BadRequest(f"body/{name} must be {kind.__name__}")
    return value
