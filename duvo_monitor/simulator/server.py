"""The simulator as a server: the Duvo API over HTTP, with auth, rate limits, faults and webhooks.

:class:`Simulator` wires the pure parts (world, API, rate limiter, fault plans) to the wire.
:meth:`Simulator.serve` owns one task group: the HTTP listener (``duvo_monitor.httpserver``), a
ticker that advances the world when its next step is due (so webhooks fire on time even when
nobody polls), and the webhook delivery workers, fed through a bounded stream.

One request goes: rate limit (every answer carries the ``x-ratelimit-*`` headers) -> wire faults
(drop, 5xx, HTML) -> slow -> advance the world -> route -> auth (401) -> world faults -> the
endpoint -> answer faults (extra fields, truncation, malformed JSON) -> the request log. Faulted
requests count against the limit and are logged with the status sent (0 for a dropped one).

``/_sim/...`` is the test-only control surface: no auth, no rate limit, not in the request log.
:meth:`Simulator.mock_transport` serves the same handler to an ``httpx.AsyncClient`` in-process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from duvo_monitor import httpserver
from duvo_monitor.clock import Clock
from duvo_monitor.httpserver import Bound, Request, Response
from duvo_monitor.simulator import faults as faultlib
from duvo_monitor.simulator import webhooks
from duvo_monitor.simulator.api import Answer, Api, error, match
from duvo_monitor.simulator.faults import Faults, Roll
from duvo_monitor.simulator.model import (
    RequestLogEntry,
    Run,
    TruthEntry,
    WebhookDelivery,
    WebhookEvent,
)
from duvo_monitor.simulator.ratelimit import DEFAULT_LIMIT, WINDOW, Decision, RateLimiter
from duvo_monitor.simulator.scenario import LIST_STATUSES, Scenario
from duvo_monitor.simulator.world import Conflict, NotFound, World

log = structlog.get_logger("duvo_monitor.simulator")

DEFAULT_API_KEY = "sim-key"
TICK_MAX = 5.0  # simulated seconds the ticker sleeps at most (it also wakes on every request)
TICK_MIN = 0.005  # simulated seconds: never spin on a step due "now"


class Simulator:
    """An embedded Duvo Runs API. Construct, then ``bound = await tg.start(sim.serve, host, 0)``."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: Clock | None = None,
        rate_limit: int | None = DEFAULT_LIMIT,
        rate_limits: Mapping[str, int] | None = None,
        rate_window: float = WINDOW,
        api_keys: Collection[str] = (DEFAULT_API_KEY,),
        client_clock: Clock | None = None,
        faults: Faults | Sequence[Faults] | None = None,
        webhook_client: httpx.AsyncClient | None = None,
        seed: int | None = None,
        list_stopped_as: str | None = None,
    ) -> None:
        self.scenario = scenario
        self.clock = clock or Clock()
        self.started_at = self.clock.time()
        seed = scenario.seed if seed is None else seed
        self.world = World(scenario, start=self.started_at, seed=seed)
        stopped_as = list_stopped_as or scenario.list_stopped_as
        if stopped_as not in LIST_STATUSES:
            raise ValueError(f"list_stopped_as must be one of {', '.join(LIST_STATUSES)}")
        self.api = Api(self.world, scenario, list_stopped_as=stopped_as)
        self.api_keys = frozenset(api_keys)
        # The clock the clients read the rate-limit headers with, when it is not the world's: a
        # client on the real clock while the world's time is compressed gets x-ratelimit-reset
        # and retry-after in its own time, as a real server's headers would be.
        self.client_clock = client_clock
        self.limiter = RateLimiter(
            limit=rate_limit, window=rate_window, limits=dict(rate_limits or {})
        )
        if faults is None:
            self.faults = scenario.faults
        else:
            self.faults = (faults,) if isinstance(faults, Faults) else tuple(faults)
        self.requests: list[RequestLogEntry] = []
        self.deliveries: list[WebhookDelivery] = []
        self.bound: Bound | None = None
        self._rng = random.Random(seed ^ 0x5EED)
        self._webhook_client = webhook_client
        self._webhook_send: MemoryObjectSendStream[WebhookEvent] | None = None
        self._wake: anyio.Event | None = None

    @property
    def truth(self) -> list[TruthEntry]:
        return self.world.truth

    # -- serving ---------------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: TaskStatus[Bound] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started`` gets the bound address."""
        async with AsyncExitStack() as stack:
            client = self._webhook_client
            if client is None:
                client = httpx.AsyncClient(timeout=webhooks.WEBHOOK_TIMEOUT)
                stack.push_async_callback(_shielded_close, client)
            send, receive = anyio.create_memory_object_stream[WebhookEvent](webhooks.QUEUE)
            with send:
                async with anyio.create_task_group() as tg:
                    with receive:
                        for _ in range(webhooks.WORKERS):
                            tg.start_soon(
                                webhooks.worker,
                                receive.clone(),
                                client,
                                self.clock,
                                self.deliveries.append,
                            )
                    self._webhook_send = send
                    try:
                        tg.start_soon(self._tick)
                        bound = await tg.start(self._listen, host, port)
                        self.bound = bound
                        log.info("simulator listening", url=bound.url)
                        task_status.started(bound)
                        await anyio.sleep_forever()
                    finally:
                        self._webhook_send = None

    async def _listen(
        self, host: str, port: int, *, task_status: TaskStatus[Bound] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await httpserver.serve(self.handle, host, port, name="simulator", task_status=task_status)

    async def _tick(self) -> None:
        """Advance the world when its next step is due, so that webhooks fire on time."""
        while True:
            now = self.clock.time()
            self.world.advance(now)
            await self._flush_webhooks()
            due = self.world.next_event_time()
            delay = TICK_MAX if due is None else min(max(due - now, TICK_MIN), TICK_MAX)
            wake = self._wake = anyio.Event()
            with anyio.move_on_after(self.clock.wall(delay)):
                await wake.wait()

    async def _flush_webhooks(self) -> None:
        if self._webhook_send is None:
            return  # not serving: events wait in the world's outbox
        for event in self.world.drain_webhooks():
            await self._webhook_send.send(event)

    # -- one request -----------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Answer one HTTP request (the handler given to ``httpserver.serve``)."""
        now = self.clock.time()
        if request.path == "/_sim" or request.path.startswith("/_sim/"):
            self.world.advance(now)
            response = self._control(request)
            await self._after_change()
            return response
        token = _bearer(request.headers.get("authorization"))
        key_ok = token is not None and token in self.api_keys
        decision = self.limiter.hit(token if token is not None else f"anon:{request.client}", now)
        headers = self._for_client(decision, now).headers()
        if not decision.allowed:
            answer = error(429, "rate_limited", "rate limit exceeded; retry after the reset")
            return self._finish(request, now, token, self._encode(answer, headers))
        roll = faultlib.roll(self.faults, now - self.started_at, self._rng)
        if roll.wire is not None:
            return self._finish(request, now, token, self._wire_fault(roll.wire, headers))
        if "slow" in roll:
            await self.clock.sleep(roll.slow_delay)
        answer = self._answer(request, self.clock.time(), token, key_ok, roll)
        await self._after_change()
        return self._finish(request, now, token, self._encode(answer, headers, roll))

    def _for_client(self, decision: Decision, now: float) -> Decision:
        if self.client_clock is None:
            return decision
        ratio = self.clock.speed / self.client_clock.speed  # world seconds per client second
        return dataclasses.replace(
            decision,
            reset=math.ceil(self.client_clock.time() + (decision.reset - now) / ratio),
            retry_after=max(1, math.ceil(decision.retry_after / ratio)),
        )

    def _answer(
        self, request: Request, now: float, token: str | None, key_ok: bool, roll: Roll
    ) -> Answer:
        self.world.advance(now)
        route = match(request.method, request.target)
        if isinstance(route, Answer):
            return route
        if not key_ok or token is None:
            return error(401, "unauthorized", "missing or invalid API key")
        if route.run_id is not None and roll.kinds:
            self._world_faults(route.run_id, now, roll)
        return self.api.handle(route, request, now, token)

    def _world_faults(self, run_id: str, now: float, roll: Roll) -> None:
        run = self.world.get_run(run_id)
        if run is None or run.deleted:
            return
        if "unknown_status" in roll:
            status = self._rng.choice(faultlib.UNKNOWN_STATUSES)
            self.world.mask_status(run.id, status, now, roll.unknown_status_duration)
        if "unknown_message_type" in roll:
            self.world.add_unknown_message(run.id, now)
        if "edit_message" in roll:
            self.world.edit_message(run.id, now)

    def _wire_fault(self, kind: str, headers: list[tuple[str, str]]) -> Response:
        if kind == "drop":
            return Response(status=0, drop=True)
        status = {"error_500": 500, "error_502": 502, "error_503": 503, "html": 502}[kind]
        as_html = kind == "html" or (status != 500 and self._rng.random() < 0.5)
        if as_html:
            return Response(
                status=status,
                body=faultlib.html_page(status),
                headers=[("content-type", "text/html; charset=utf-8"), *headers],
            )
        codes = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable"}
        extra = [("retry-after", "2")] if status == 503 else []
        answer = error(status, codes[status], "simulated server failure")
        return self._encode(answer, [*headers, *extra])

    def _encode(
        self, answer: Answer, headers: list[tuple[str, str]], roll: Roll = faultlib.NO_FAULTS
    ) -> Response:
        ok = 200 <= answer.status < 300
        payload = answer.payload
        if ok and "extra_fields" in roll:
            payload = faultlib.add_extra_fields(payload)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        response = Response(
            status=answer.status,
            body=body,
            headers=[("content-type", "application/json"), *answer.headers, *headers],
        )
        if ok and "trickle" in roll:
            response.trickle = roll.trickle_interval
        if ok and "truncate" in roll:
            response.truncate_to = max(1, len(body) // 2)
        elif ok and "malformed" in roll:
            response.body = faultlib.malform(body, self._rng)
        return response

    def _finish(
        self, request: Request, now: float, token: str | None, response: Response
    ) -> Response:
        self.requests.append(
            RequestLogEntry(
                time=now,
                method=request.method,
                path=request.path,
                query=urllib.parse.urlsplit(request.target).query,
                status=0 if response.drop else response.status,
                api_key_ok=token is not None and token in self.api_keys,
                key_id="" if token is None else key_id(token),
            )
        )
        return response

    async def _after_change(self) -> None:
        await self._flush_webhooks()
        if self._wake is not None:
            self._wake.set()

    # -- the control surface ---------------------------------------------------------------------

    def _control(self, request: Request) -> Response:
        now = self.world.now
        parts = request.path.strip("/").split("/")[1:]
        offset = _offset(request)
        if request.method == "GET" and parts == ["truth"]:
            return Response.json(200, [e.to_dict() for e in self.truth[offset:]])
        if request.method == "GET" and parts == ["requests"]:
            return Response.json(200, [e.to_dict() for e in self.requests[offset:]])
        if request.method == "GET" and parts == ["webhooks"]:
            return Response.json(200, [d.to_dict() for d in self.deliveries[offset:]])
        if request.method == "GET" and parts == ["runs"]:
            return Response.json(200, [_run_summary(r) for r in self.world.runs()])
        if request.method == "GET" and parts == ["info"]:
            return Response.json(200, self._info())
        if request.method == "POST" and len(parts) == 3 and parts[0] == "runs":
            return self._control_act(parts[1], parts[2], request, now)
        return Response.json(404, {"error": "not_found", "message": "no such control endpoint"})

    def _control_act(self, run_id: str, act: str, request: Request, now: float) -> Response:
        try:
            if act == "answer":
                answered = self.world.answer_outside(run_id, now)
                if answered is None:
                    return Response.json(400, {"error": "bad_request", "message": "not waiting"})
                return Response.json(200, {"human_request": answered.to_respond_api()})
            if act == "delete":
                return Response.json(200, {"deleted": self.world.delete_run(run_id, now)})
            if act == "messages":
                text = str(json.loads(request.body or b"{}").get("message") or "Outside message")
                message = self.world.post_message(run_id, text, now)
                return Response.json(201, {"message": message.to_api()})
        except (NotFound, Conflict) as exc:
            return Response.json(404, {"error": "not_found", "message": str(exc)})
        except (ValueError, AttributeError):
            return Response.json(400, {"error": "bad_request", "message": "body must be JSON"})
        return Response.json(404, {"error": "not_found", "message": f"unknown action {act!r}"})

    def _info(self) -> dict[str, Any]:
        team = self.scenario.team
        return {
            "url": None if self.bound is None else self.bound.url,
            "started_at": self.started_at,
            "now": self.world.now,
            "speed": self.clock.speed,
            "team": {"id": team.id, "name": team.name},
            "agents": [{"id": a.id, "name": a.name} for a in self.scenario.agents],
            "rate_limit": self.limiter.limit,
        }

    # -- in-process ------------------------------------------------------------------------------

    def mock_transport(self) -> httpx.MockTransport:
        """The same handler for an ``httpx.AsyncClient``, without sockets (no ticker: the world
        advances on requests only, and webhooks wait until :meth:`serve` runs)."""

        async def handler(request: httpx.Request) -> httpx.Response:
            body = await request.aread()
            target = request.url.raw_path.decode("ascii")
            parts = urllib.parse.urlsplit(target)
            response = await self.handle(
                Request(
                    method=request.method,
                    target=target,
                    path=urllib.parse.unquote(parts.path),
                    query=urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    client="mock",
                )
            )
            if response.drop:
                raise httpx.RemoteProtocolError("Server disconnected", request=request)
            if response.truncate_to is not None:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body",
                    request=request,
                )
            return httpx.Response(response.status, headers=response.headers, content=response.body)

        return httpx.MockTransport(handler)


def key_id(key: str) -> str:
    """How the request log names a key: a short digest, so that the log never holds a key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _offset(request: Request) -> int:
    raw = request.query_one("offset") or "0"
    return int(raw) if raw.isdigit() and len(raw) < 19 else 0


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.shown_status,
        "agent_id": run.agent_id,
        "deleted": run.deleted,
        "pending_request_id": None if run.pending is None else run.pending.id,
        "messages": len(run.messages),
        "webhook_url": run.webhook_url,
    }


async def _shielded_close(client: httpx.AsyncClient) -> None:
    with anyio.CancelScope(shield=True):
        await client.aclose()
