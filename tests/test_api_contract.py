"""Contract tests: the client against the OpenAPI documents shipped in the package.

Validation is done by real validators from PyPI (``openapi-spec-validator`` for the documents,
``openapi-schema-validator``'s OAS 3.0 validators, built on ``jsonschema``, for instances), not by
our own code:

1. every request the client sends, captured by an ``httpx.MockTransport``, matches a documented
   path template and method, its path and query parameters conform to their schemas, and its JSON
   body validates against the ``requestBody`` schema;
2. the client decodes every response shape the 200/201 schemas allow. ``hypothesis-jsonschema``
   is not a dependency, so :class:`Generator` walks the schemas itself: required-only,
   all-properties, nullables as null and as values, arrays empty and non-empty, plus a bounded
   number of seeded random mixes. Every generated answer is first checked against the schema by
   the validator, so the generator cannot drift from the document;
3. the converse: removing a required field or giving one the wrong type is a MalformedResponse
   naming that field's path, except where the client is deliberately tolerant (listed below).
"""

from __future__ import annotations

import json
import random
import re
import urllib.parse
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx
import pytest
from jsonschema import FormatChecker
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator, oas30_format_checker
from openapi_spec_validator import OpenAPIV30SpecValidator, validate

from duvo_monitor.api import DuvoClient, RunFilters, make_http_client
from duvo_monitor.credentials import Secret
from duvo_monitor.errors import STATUS_ERRORS, ApiStatusError, MalformedResponse, ServerError
from duvo_monitor.models import HumanResponse

pytestmark = pytest.mark.anyio

VERSIONS = ("v1", "v2")
KEY = "contract-test-key"
BASE = "https://api.duvo.test"
TEAM = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
RUN = "3f1c2a9e-0b7d-4c41-9a55-6d2f1e8b7c01"
AGENT = "a0000000-0000-4000-8000-000000000001"
REQ = "c0000000-0000-4000-8000-000000000001"
RANDOM_EXAMPLES = 12  # per operation, on top of the fixed shapes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def load(version: str) -> dict[str, Any]:
    """The document as shipped inside the package (package data, not the repo's seed)."""
    text = resources.files("duvo_monitor").joinpath("openapi", f"{version}.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


DOCS = {v: load(v) for v in VERSIONS}

# The OAS 3.0 format checker knows uuid and date-time but not uri (that needs rfc3987).
FORMATS = FormatChecker(formats=())
FORMATS.checkers = dict(oas30_format_checker.checkers)


@FORMATS.checks("uri", raises=ValueError)
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urllib.parse.urlsplit(value)
    return bool(parts.scheme and parts.netloc)


# -- the documents -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    version: str
    method: str  # upper case
    template: str  # /v2/runs/{run_id}
    spec: dict[str, Any]
    parameters: tuple[dict[str, Any], ...]
    security: list[dict[str, Any]]

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    def success(self) -> tuple[int, dict[str, Any]]:
        """The documented success status and its JSON schema."""
        for code in ("200", "201"):
            if code in self.spec["responses"]:
                content = self.spec["responses"][code]["content"]["application/json"]
                return int(code), resolve(self.version, content["schema"])
        raise AssertionError(f"{self.key} documents no 200/201")

    def matches(self, path: str) -> dict[str, str] | None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        found = re.fullmatch(pattern, path)
        return None if found is None else found.groupdict()


def resolve(version: str, schema: Any) -> Any:
    """Inline local ``$ref``s (the documents have none today; keep working if they gain some)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            target: Any = DOCS[version]
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(version, target)
        return {k: resolve(version, v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolve(version, v) for v in schema]
    return schema


def operations(version: str) -> list[Operation]:
    doc = DOCS[version]
    found = []
    for template, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method, spec in item.items():
            if method not in {"get", "put", "post", "delete", "patch", "head", "options"}:
                continue
            own = spec.get("parameters", [])
            names = {(p["name"], p["in"]) for p in own}
            params = [*own, *(p for p in shared if (p["name"], p["in"]) not in names)]
            found.append(
                Operation(
                    version=version,
                    method=method.upper(),
                    template=template,
                    spec=spec,
                    parameters=tuple(resolve(version, p) for p in params),
                    security=spec.get("security", doc.get("security", [])),
                )
            )
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_shipped_document_is_valid_openapi_3_0(version: str) -> None:
    """The shipped document passes openapi-spec-validator as OpenAPI 3.0."""
    doc = DOCS[version]
    assert doc["openapi"].startswith("3.0.")
    validate(doc, cls=OpenAPIV30SpecValidator)


@pytest.mark.parametrize("version", VERSIONS)
def test_document_covers_the_version_and_bearer_auth(version: str) -> None:
    """Every documented path is under /<version>/ and every operation uses bearer auth."""
    doc = DOCS[version]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for op in operations(version):
        assert op.template.startswith(f"/{version}/")
        assert op.security == [{"bearerAuth": []}], op.key


# -- (1) requests ------------------------------------------------------------------------------


class Generator:
    """Instances of an OAS 3.0 schema (the subset the Duvo documents use).

    ``mode`` is one of ``minimal`` (required properties only, nullables null, arrays empty),
    ``full`` (every property, nullables as values, arrays of two), ``full_null`` (every property,
    nullables null, arrays of one) or ``random`` (each optional property, null and array length
    drawn from the seeded ``rng``). Numbers are whole: see test_counts_must_be_whole_numbers.
    """

    ANY = (None, True, 3, "text", [1, "two"], {"nested": {"k": [None]}})

    def __init__(self, mode: str, rng: random.Random | None = None) -> None:
        self.mode = mode
        self.rng = rng or random.Random(0)
        self.counter = 0

    def __call__(self, schema: dict[str, Any]) -> Any:
        if schema.get("nullable") and self._null():
            return None
        if "enum" in schema:
            return self.rng.choice(schema["enum"]) if self.mode == "random" else schema["enum"][0]
        kind = schema.get("type")
        if kind is None and "properties" in schema:
            kind = "object"
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return [self(schema["items"]) for _ in range(self._length())]
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            low = int(schema.get("minimum", 0))
            high = int(min(schema.get("maximum", low + 1000), low + 1000))
            value = self.rng.randint(low, high)
            return float(value) if kind == "number" and self.rng.random() < 0.3 else value
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind is None:  # {}: any JSON value
            return self.rng.choice(self.ANY)
        raise AssertionError(f"schema type {kind!r} not handled by the generator")

    def _null(self) -> bool:
        if self.mode == "random":
            return self.rng.random() < 0.5
        return self.mode in ("minimal", "full_null")

    def _length(self) -> int:
        if self.mode == "random":
            return self.rng.randint(0, 3)
        return {"minimal": 0, "full": 2, "full_null": 1}[self.mode]

    def _include(self, required: bool) -> bool:
        if required or self.mode in ("full", "full_null"):
            return True
        return self.mode == "random" and self.rng.random() < 0.5

    def _object(self, schema: dict[str, Any]) -> dict[str, Any]:
        required = set(schema.get("required", ()))
        result = {
            name: self(sub)
            for name, sub in schema.get("properties", {}).items()
            if self._include(name in required)
        }
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and self.mode != "minimal":
            for i in range(self._length()):
                result[f"key {i}"] = self(extra)
        return result

    def _string(self, schema: dict[str, Any]) -> str:
        self.counter += 1
        fmt = schema.get("format")
        if fmt == "uuid":
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if fmt == "date-time":
            return f"2025-11-{1 + self.counter % 28:02d}T10:00:{self.counter % 60:02d}.123Z"
        if fmt == "uri":
            return f"https://example.com/hook/{self.counter}"
        return f"text {self.counter}"


MODES = ("minimal", "full", "full_null")


def shapes(schema: dict[str, Any], seed: int) -> Iterator[tuple[str, Any]]:
    """The fixed shapes, then RANDOM_EXAMPLES seeded random ones."""
    for mode in MODES:
        yield mode, Generator(mode)(schema)
    rng = random.Random(seed)
    for i in range(RANDOM_EXAMPLES):
        yield f"random {i}", Generator("random", rng)(schema)


def coerce(text: str, schema: dict[str, Any]) -> Any:
    """A query/path string as the JSON value the parameter schema describes."""
    kind = schema.get("type")
    if kind == "integer":
        assert re.fullmatch(r"-?\d+", text), f"{text!r} is not an integer"
        return int(text)
    if kind == "number":
        assert re.fullmatch(r"-?\d+(\.\d+)?", text), f"{text!r} is not a number"
        return float(text)
    if kind == "boolean":
        assert text in ("true", "false"), f"{text!r} is not a boolean"
        return text == "true"
    return text


def check_request(version: str, request: httpx.Request) -> Operation:
    """Assert that one captured request is what the document describes; return its operation."""
    path = request.url.path
    assert path.startswith("/"), path
    matches = [(op, op.matches(path)) for op in operations(version)]
    matched = [(op, args) for op, args in matches if args is not None]
    assert matched, f"{request.method} {path} matches no documented path"
    by_method = [(op, args) for op, args in matched if op.method == request.method]
    assert by_method, f"{request.method} is not documented for {path}"
    assert len(by_method) == 1, f"{request.method} {path} is ambiguous"
    op, path_args = by_method[0]

    for param in op.parameters:
        if param["in"] == "path":
            value = coerce(urllib.parse.unquote(path_args[param["name"]]), param["schema"])
            errors = list(schema_errors(param["schema"], value, write=True))
            assert not errors, f"{op.key}: path parameter {param['name']}: {errors}"
    documented = {p["name"]: p for p in op.parameters if p["in"] == "query"}
    sent = request.url.params
    for name in sent:
        assert name in documented, f"{op.key}: query parameter {name} is not documented"
        values = sent.get_list(name)
        assert len(values) == 1, f"{op.key}: query parameter {name} sent {len(values)} times"
        value = coerce(values[0], documented[name]["schema"])
        errors = list(schema_errors(documented[name]["schema"], value, write=True))
        assert not errors, f"{op.key}: query parameter {name}={values[0]!r}: {errors}"
    for param in op.parameters:
        if param.get("required") and param["in"] == "query":
            assert param["name"] in sent, f"{op.key}: required {param['name']} missing"
        if param.get("required") and param["in"] == "header":
            assert param["name"] in request.headers, f"{op.key}: header {param['name']} missing"

    body_spec = op.spec.get("requestBody")
    if body_spec is None:
        assert request.content == b"", f"{op.key} documents no body but one was sent"
    else:
        if not request.content:
            assert not body_spec.get("required"), f"{op.key}: required body missing"
        else:
            assert request.headers["content-type"] == "application/json"
            schema = resolve(version, body_spec["content"]["application/json"]["schema"])
            body = json.loads(request.content)
            errors = list(schema_errors(schema, body, write=True))
            assert not errors, f"{op.key}: body {body!r}: {errors}"

    if {"bearerAuth": []} in op.security:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        assert (scheme, token) == ("Bearer", KEY), f"{op.key}: no bearer token"
    return op


def schema_errors(schema: dict[str, Any], instance: Any, *, write: bool) -> Iterator[str]:
    cls = OAS30WriteValidator if write else OAS30ReadValidator
    for error in cls(schema, format_checker=FORMATS).iter_errors(instance):
        where = "".join(f"[{p!r}]" for p in error.absolute_path)
        yield f"{where or 'body'}: {error.message}"


def documented_answer(version: str) -> Callable[[httpx.Request], httpx.Response]:
    """A handler answering each request with a schema-valid, full success body."""

    def respond(request: httpx.Request) -> httpx.Response:
        for op in operations(version):
            if op.method == request.method and op.matches(request.url.path) is not None:
                status, schema = op.success()
                body = Generator("full")(schema)
                if op.template == "/v2/teams":
                    body = {"teams": [{"id": TEAM, "name": "Ops", "organization_id": None}]}
                return httpx.Response(status, json=body)
        return httpx.Response(404, json={"error": "not_found"})

    return respond


Call = Callable[[DuvoClient], Any]

REQUESTS: dict[str, list[Call]] = {
    "common": [
        lambda c: c.start_run(AGENT),
        lambda c: c.start_run(
            AGENT.upper(),
            message="Reconcile October",
            sandbox_id="sbx-1",
            webhook_url="https://hooks.example/duvo?run=1",
            idempotency_key="k-1",
        ),
        lambda c: c.get_run(RUN),
        lambda c: c.get_run(RUN.upper()),
        lambda c: c.list_messages(RUN),
        lambda c: c.list_messages(RUN, limit=1, offset=0),
        lambda c: c.list_messages(RUN, limit=50, offset=12_345),
        lambda c: c.post_message(RUN, "x"),
        lambda c: c.post_message(RUN, 'Unicode ✓ and "quotes" & ?query=1'),
        lambda c: c.respond(RUN, REQ, HumanResponse(approved=True)),
        lambda c: c.respond(RUN, REQ, HumanResponse(approved=False)),
        lambda c: c.respond(RUN, REQ, HumanResponse(answers={"Which?": "EU, US", "Why?": ""})),
        lambda c: c.respond(RUN, REQ, HumanResponse(answers={})),
        lambda c: c.stop_run(RUN),
    ],
    "v2": [
        lambda c: c.list_teams(),
        lambda c: c.list_runs(),
        lambda c: c.list_runs(limit=1, offset=0, sort_order="asc"),
        lambda c: c.list_runs(limit=100, offset=500, sort_order="desc"),
        lambda c: c.list_runs(
            RunFilters(
                status="needs_attention",
                agent_id=AGENT,
                user_id="b1000000-0000-4000-8000-000000000001",
                case_queue_id="c1000000-0000-4000-8000-000000000001",
                source="api",
                search="invoice & co",
                has_issues=True,
                issue_severity="critical",
                since="2025-11-01T00:00:00Z",
            )
        ),
        lambda c: c.list_runs(RunFilters(has_issues=False, issue_severity="low")),
        *(
            (lambda c, s=status: c.list_runs(RunFilters(status=s)))
            for status in ("not_started", "pending", "running", "waiting", "completed", "stopped")
        ),
    ],
}


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., DuvoClient]]:
    opened: list[httpx.AsyncClient] = []

    def make(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> DuvoClient:
        http = make_http_client(transport=httpx.MockTransport(handler))
        opened.append(http)
        return DuvoClient(http=http, base_url=BASE, api_key=Secret(KEY), **kwargs)

    yield make
    for http in opened:
        await http.aclose()


@pytest.mark.parametrize("version", VERSIONS)
async def test_every_request_validates_against_the_document(
    connect: Callable[..., DuvoClient], version: str
) -> None:
    """Every request sent matches a documented path+method, and its params and body validate."""
    captured: list[httpx.Request] = []
    answer = documented_answer(version)

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return answer(request)

    calls = REQUESTS["common"] + (REQUESTS["v2"] if version == "v2" else [])
    # The v2 client first resolves its team through GET /v2/teams.
    client = connect(handler, version=version)
    for call in calls:
        await call(client)
    assert len(captured) == len(calls) + (1 if version == "v2" else 0)
    covered = {check_request(version, request).key for request in captured}
    assert covered == {op.key for op in operations(version)}, "an operation was not exercised"


def test_the_request_checker_rejects_what_the_document_does_not_allow() -> None:
    """The checker itself fails on an undocumented path, query parameter, value or body."""
    ok = httpx.Request(
        "GET",
        f"{BASE}/v2/runs/{RUN}/messages?limit=5&offset=0",
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert check_request("v2", ok).key == "GET /v2/runs/{run_id}/messages"
    bad = [
        httpx.Request("GET", f"{BASE}/v2/runs/{RUN}/events"),
        httpx.Request("DELETE", f"{BASE}/v2/runs/{RUN}"),
        httpx.Request("GET", f"{BASE}/v2/runs/not-a-uuid", headers=ok.headers),
        httpx.Request("GET", f"{BASE}/v2/runs/{RUN}/messages?limit=51", headers=ok.headers),
        httpx.Request("GET", f"{BASE}/v2/runs/{RUN}/messages?limit=5.5", headers=ok.headers),
        httpx.Request("GET", f"{BASE}/v2/runs/{RUN}/messages?page=2", headers=ok.headers),
        httpx.Request("GET", f"{BASE}/v2/runs/{RUN}/messages?limit=1&limit=2", headers=ok.headers),
        httpx.Request("GET", f"{BASE}/v2/runs/{RUN}"),
        httpx.Request(
            "POST", f"{BASE}/v2/runs/{RUN}/messages", headers=ok.headers, json={"message": ""}
        ),
        httpx.Request("POST", f"{BASE}/v1/runs", headers=ok.headers, json={"agent_id": "x"}),
        httpx.Request(
            "POST", f"{BASE}/v1/runs", headers=ok.headers, json={"agent_id": AGENT, "extra": 1}
        ),
        httpx.Request(
            "POST",
            f"{BASE}/v1/runs",
            headers=ok.headers,
            json={"agent_id": AGENT, "webhook_url": "not a uri"},
        ),
        httpx.Request("POST", f"{BASE}/v1/runs/{RUN}/stop", headers=ok.headers, json={"x": 1}),
    ]
    for request in bad:
        version = request.url.path.split("/")[1]
        with pytest.raises(AssertionError):
            check_request(version, request)


# -- (2) responses ---------------------------------------------------------------------------


def call_for(op: Operation) -> Call:
    """The client method that reads ``op``'s answer."""
    calls: dict[str, Call] = {
        "GET /v2/teams": lambda c: c.list_teams(),
        "GET /v2/teams/{teamId}/runs": lambda c: c.list_runs(),
        "POST /v2/teams/{teamId}/runs": lambda c: c.start_run(AGENT),
        "POST /v1/runs": lambda c: c.start_run(AGENT),
        "GET /runs/{run_id}": lambda c: c.get_run(RUN),
        "GET /runs/{run_id}/messages": lambda c: c.list_messages(RUN),
        "POST /runs/{run_id}/messages": lambda c: c.post_message(RUN, "hi"),
        "POST /runs/{run_id}/human-requests/{request_id}/respond": lambda c: c.respond(
            RUN, REQ, HumanResponse(approved=True)
        ),
        "POST /runs/{run_id}/stop": lambda c: c.stop_run(RUN),
    }
    return calls.get(op.key) or calls[op.key.replace(f"/{op.version}/", "/", 1)]


def check_decoded(op: Operation, body: Any, result: Any) -> None:
    """The decoded value says what the body said."""
    template = op.template.removeprefix(f"/{op.version}")
    if template in ("/runs", "/teams/{teamId}/runs") and op.method == "POST":
        assert result.to_dict() == body["run"]
    elif template == "/runs/{run_id}":
        assert (result.run is None) == (body["run"] is None)
        if result.run is not None:
            assert result.run.to_dict() == body["run"]
        pending = body.get("pending_human_request")
        assert (result.pending_human_request is None) == (pending is None)
        if pending is not None:
            questions = [
                {"header": None, "multi_select": None}
                | q
                | {"options": [{"description": None} | o for o in q.get("options", [])]}
                for q in pending.get("questions", [])
            ]
            expected = pending | {"questions": questions}
            assert result.pending_human_request.to_dict() == expected
    elif template == "/runs/{run_id}/messages" and op.method == "GET":
        assert [m.id for m in result.messages] == [m["id"] for m in body["messages"]]
        defaults = {
            "text_content": None,
            "tool_call": None,
            "tool_result": None,
        }
        for message, sent in zip(result.messages, body["messages"], strict=True):
            expected = defaults | sent
            if "tool_call" in sent:
                expected["tool_call"] = {"arguments": None} | sent["tool_call"]
            if "tool_result" in sent:
                expected["tool_result"] = {"result": None, "error": None} | sent["tool_result"]
            assert message.to_dict() == expected
            assert message.extra == {}
        assert (result.total, result.limit, result.offset) == (
            body["total"],
            body["limit"],
            body["offset"],
        )
    elif template == "/runs/{run_id}/messages":
        expected = {"tool_call": None, "tool_result": None} | body["message"]
        assert result.to_dict() == expected
    elif template.endswith("/respond"):
        record = body["human_request"]
        assert (result.id, result.run_id, result.title) == (
            record["id"],
            record["run_id"],
            record["title"],
        )
        assert (result.description, result.response, result.responded_at) == (
            record["description"],
            record["response"],
            record["responded_at"],
        )
    elif template.endswith("/stop"):
        assert (result.success, result.message) == (body["success"], body.get("message"))
    elif template == "/teams":
        assert [(t.id, t.name, t.organization_id) for t in result] == [
            (t["id"], t["name"], t["organization_id"]) for t in body["teams"]
        ]
    elif template == "/teams/{teamId}/runs":
        assert [r.id for r in result.data] == [r["id"] for r in body["data"]]
        assert [r.status for r in result.data] == [r["status"] for r in body["data"]]
        assert result.total == body["total"]
    else:
        raise AssertionError(f"no decode check for {op.key}")


ALL_OPS = [op for v in VERSIONS for op in operations(v)]


def client_for(op: Operation, body: Any, status: int) -> tuple[DuvoClient, httpx.AsyncClient]:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/teams" and op.template != "/v2/teams":
            return httpx.Response(200, json={"teams": [{"id": TEAM, "name": "Ops"}]})
        return httpx.Response(status, json=body)

    http = make_http_client(transport=httpx.MockTransport(respond))
    version: Any = op.version
    client = DuvoClient(
        http=http, base_url=BASE, api_key=Secret(KEY), version=version, team_id=TEAM
    )
    return client, http


@pytest.mark.parametrize("op", ALL_OPS, ids=[f"{op.version}:{op.key}" for op in ALL_OPS])
async def test_client_decodes_every_documented_answer_shape(op: Operation) -> None:
    """Each schema-valid success answer (fixed and random shapes) decodes to what it said."""
    status, schema = op.success()
    for name, body in shapes(schema, seed=zlib.crc32(op.key.encode())):
        errors = list(schema_errors(schema, body, write=False))
        assert not errors, f"generator produced an invalid {name} answer: {errors}"
        client, http = client_for(op, body, status)
        async with http:
            try:
                result = await call_for(op)(client)
            except MalformedResponse as exc:
                raise AssertionError(f"{op.key}: {name} answer refused: {exc}\n{body}") from exc
        check_decoded(op, body, result)


def test_generator_covers_the_shapes() -> None:
    """The generator's fixed modes produce required-only, null and full variants."""
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": True},
            "b": {"type": "array", "items": {"type": "integer"}},
            "c": {"type": "boolean"},
        },
        "required": ["a", "b"],
    }
    assert Generator("minimal")(schema) == {"a": None, "b": []}
    full = Generator("full")(schema)
    assert isinstance(full["a"], str)
    assert len(full["b"]) == 2
    assert "c" in full
    full_null = Generator("full_null")(schema)
    assert full_null["a"] is None
    assert len(full_null["b"]) == 1


# -- (3) strict where the schema is ---------------------------------------------------------------

# Where the client is deliberately more tolerant than the schema, and why.
TOLERATED = {
    # text_content is required in post-message's 201 but optional in list messages: one Message
    # model reads both.
    ("POST /runs/{run_id}/messages", "message.text_content", "missing"),
}
NOT_READ = re.compile(r"^data\[0\]\.eval_summaries")  # list-runs extras the model keeps opaque


def mutations(schema: dict[str, Any], value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, kind, replacement-maker) for each required field and each typed field."""
    if not isinstance(value, dict) or "properties" not in schema:
        return
    for name, sub in schema["properties"].items():
        if name not in value:
            continue
        where = f"{path}.{name}" if path else name
        if name in schema.get("required", ()):
            yield where, "missing", None
        kind = sub.get("type")
        if kind is not None:
            yield where, "wrong type", WRONG[kind]
        child = value[name]
        if isinstance(child, dict):
            yield from mutations(sub, child, where)
        elif isinstance(child, list) and child and "items" in sub:
            yield from mutations(sub["items"], child[0], f"{where}[0]")


WRONG = {
    "string": 12345,
    "integer": "12",
    "number": "12",
    "boolean": "true",
    "array": {"not": "an array"},
    "object": ["not", "an object"],
}


def mutate(body: Any, path: str, replacement: Any, *, delete: bool) -> Any:
    body = json.loads(json.dumps(body))
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    target = body
    for part in parts[:-1]:
        target = target[int(part[1:-1])] if part.startswith("[") else target[part]
    if delete:
        del target[parts[-1]]
    else:
        target[parts[-1]] = replacement
    return body


@pytest.mark.parametrize("op", ALL_OPS, ids=[f"{op.version}:{op.key}" for op in ALL_OPS])
async def test_schema_violations_are_malformed_naming_the_field(op: Operation) -> None:
    """A dropped required field or a mistyped field is a MalformedResponse naming its path."""
    status, schema = op.success()
    full = Generator("full")(schema)
    short_key = op.key.replace(f"/{op.version}/", "/", 1)
    problems = []
    checked = 0
    for path, kind, replacement in mutations(schema, full):
        if NOT_READ.match(path) or (short_key, path, kind) in TOLERATED:
            continue
        body = mutate(full, path, replacement, delete=kind == "missing")
        client, http = client_for(op, body, status)
        async with http:
            try:
                await call_for(op)(client)
            except MalformedResponse as exc:
                checked += 1
                if exc.field != path or path not in str(exc) or op.key not in str(exc):
                    problems.append(f"{path} {kind}: named {exc.field!r}: {exc}")
                continue
        problems.append(f"{path} {kind}: accepted")
    assert not problems, "\n".join(problems)
    assert checked > 0


async def test_counts_must_be_whole_numbers() -> None:
    """total/limit/offset (schema: number) must be whole; list-runs' run_number may not be."""
    (op,) = [o for o in operations("v2") if o.key == "GET /v2/runs/{run_id}/messages"]
    status, schema = op.success()
    body = Generator("minimal")(schema) | {"total": 2.5}
    assert not list(schema_errors(schema, body, write=False))
    client, http = client_for(op, body, status)
    async with http:
        with pytest.raises(MalformedResponse, match=r"total is 2\.5, expected a whole number"):
            await client.list_messages(RUN)

    (runs,) = [o for o in operations("v2") if o.key == "GET /v2/teams/{teamId}/runs"]
    status, schema = runs.success()
    body = Generator("full")(schema)
    body["data"][0]["run_number"] = 7.5
    client, http = client_for(runs, body, status)
    async with http:
        assert (await client.list_runs()).data[0].run_number == 7.5


# -- documented error answers ----------------------------------------------------------------------


@pytest.mark.parametrize("op", ALL_OPS, ids=[f"{op.version}:{op.key}" for op in ALL_OPS])
async def test_documented_error_answers_become_the_right_errors(op: Operation) -> None:
    """Each documented 4xx/5xx answer raises its error class with the server's error/message."""
    for code, response in op.spec["responses"].items():
        if not code.startswith(("4", "5")):
            continue
        schema = resolve(op.version, response["content"]["application/json"]["schema"])
        for name, body in shapes(schema, seed=int(code)):
            assert not list(schema_errors(schema, body, write=False)), name
            client, http = client_for(op, body, int(code))
            async with http:
                with pytest.raises(ApiStatusError) as info:
                    await call_for(op)(client)
            expected = ServerError if int(code) >= 500 else STATUS_ERRORS[int(code)]
            assert type(info.value) is expected
            assert info.value.status == int(code)
            assert info.value.error == body["error"]
            assert info.value.server_message == body.get("message")
            assert info.value.endpoint == op.key
