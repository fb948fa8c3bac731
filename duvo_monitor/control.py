"""The control API and the Duvo webhook receiver: how a running daemon learns run ids from outside.

Duvo has no endpoint that lists runs (v1), so operators, the CLI and Duvo itself tell the daemon
what to watch. One listener on ``control.listen`` (loopback by default) serves both:

=============================  ==========  ====================================================
route                          auth        what it does
=============================  ==========  ====================================================
``GET /runs``                  bearer      every watched run: status, phase, cursor, next poll
``GET /runs/{id}``             bearer      one of them, or 404
``POST /runs``                 bearer      watch more runs (persisted in the state store)
``DELETE /runs/{id}``          bearer      stop watching one
``POST /<webhook_path>``       the path    a Duvo ``webhook_url`` delivery: poll that run now
=============================  ==========  ====================================================

Why two kinds of auth: Duvo posts to a bare URL and cannot send our bearer token, so the receiver
is a *capability path* (a long random ``control.webhook_path``) that only Duvo is told. Both the
token and the path are compared with :func:`hmac.compare_digest`, so their bytes do not leak
through response timing. The path is read from the live config at each request, so a SIGHUP can
rotate it; the token is fixed for the life of the process.

A delivery is answered 202 once the run is hinted (an in-memory heap push) or, for a run the
daemon did not know, once it is persisted (one SQLite write): Duvo documents no retries, so a
delivery acknowledged before it is durable could be lost with a crash. Nothing here blocks on the
Duvo API; the daemon's dispatcher does the poll. Bodies are read tolerantly
(:func:`parse_delivery`) because Duvo's payload is documented loosely; a body that is not JSON or
names no run is a 400, never an exception.

:func:`register_runs` is the client side, used by ``duvo-monitor start``. Its failures are
:class:`ControlError` (a :class:`~duvo_monitor.errors.DuvoMonitorError`), translated from httpx
once.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from duvo_monitor import __version__
from duvo_monitor.config import ControlConfig
from duvo_monitor.credentials import CONTROL_TOKEN, Secret, read_secret
from duvo_monitor.errors import DuvoMonitorError
from duvo_monitor.httpserver import Bound, Request, Response, parse_listen, serve
from duvo_monitor.ids import is_uuid

if TYPE_CHECKING:
    from duvo_monitor.scheduler import Track

log = structlog.get_logger("duvo_monitor.control")

MAX_WEBHOOK_BODY = 64 * 1024
MAX_CONTROL_BODY = 1024 * 1024
MAX_RUNS_PER_REQUEST = 10_000
MIN_WEBHOOK_PATH = 16  # characters; a shorter capability path is guessable, so we warn
MAX_EVENT_NAME = 64  # a webhook's event name is logged; bound what a stranger can make us log
WEBHOOK_EVENTS = ("human_request", "run_completed", "run_failed", "run_interrupted")

CLIENT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
CLIENT_DEADLINE = 10.0  # seconds for the whole exchange, whatever httpx's phases add up to


class WatchedRuns(Protocol):
    """What the control API needs of the daemon: the watch list (see watchlist.py)."""

    @property
    def webhook_path(self) -> str | None: ...

    def knows(self, run_id: str) -> bool: ...

    def track(self, run_id: str) -> Track | None: ...

    def tracks(self) -> Iterable[Track]: ...

    def monotonic(self) -> float: ...

    async def add_runs(self, run_ids: Sequence[str], *, source: str) -> list[str]: ...

    async def remove_runs(self, run_ids: Sequence[str]) -> list[str]: ...

    def poke(self, run_id: str) -> bool: ...


class ControlError(DuvoMonitorError):
    """The daemon's control API did not answer, or refused; ``status`` is None without an answer."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One Duvo webhook delivery, as far as the daemon cares: which run, and what happened."""

    run_id: str
    event: str | None = None
    status: str | None = None


class BadDelivery(ValueError):
    """A webhook body the receiver cannot use; the message is safe to send back."""


def parse_delivery(body: bytes) -> Delivery:
    """Read a delivery tolerantly; :class:`BadDelivery` if it is not JSON or names no run.

    The event name may be under ``event``, ``type`` or ``event_type``; the run id under
    ``run_id``, ``runId``, ``run.id`` or ``run.run_id``, at the top or inside a ``data`` object
    (the CloudEvents shape); ``status`` (or ``run.status``) is optional. Unknown event names are
    kept: whatever happened, the run is worth a look.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise BadDelivery("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise BadDelivery("the body is not a JSON object")
    layers = [payload]
    if isinstance(payload.get("data"), dict):
        layers.append(payload["data"])
    run_id = event = status = None
    for layer in layers:
        nested = layer.get("run")
        run: dict[str, Any] = nested if isinstance(nested, dict) else {}
        run_id = run_id or _first_str(layer, "run_id", "runId") or _first_str(run, "id", "run_id")
        event = event or _first_str(layer, "event", "type", "event_type")
        status = status or _first_str(layer, "status") or _first_str(run, "status")
    if run_id is None:
        raise BadDelivery("no run id (looked for run_id, runId and run.id)")
    if not is_uuid(run_id):
        raise BadDelivery("the run id is not a uuid")
    return Delivery(
        run_id=run_id.lower(),
        event=None if event is None else event[:MAX_EVENT_NAME],
        status=None if status is None else status[:MAX_EVENT_NAME],
    )


def _first_str(obj: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def run_view(track: Track, now: float) -> dict[str, Any]:
    """One watched run as ``GET /runs`` shows it; ``now`` on the clock's monotonic scale."""
    if track.inflight:
        next_poll: float | None = 0.0  # being polled right now
    elif track.retired or track.due == float("inf"):
        next_poll = None
    else:
        next_poll = round(max(0.0, track.due - now), 3)
    cp = track.cp
    return {
        "run_id": track.run_id,
        "agent_id": cp.agent_id,
        "status": cp.status,
        "phase": track.phase,
        "cursor": cp.next_index,
        "source": track.source,
        "lost": cp.lost,
        "retired": track.retired,
        "next_poll_in_seconds": next_poll,
        "polls": track.polls,
    }


# -- the server ----------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    headers = [("www-authenticate", 'Bearer realm="duvo-monitor"')] if status == 401 else []
    if status == 405 and "allow" in extra:
        headers.append(("allow", extra.pop("allow")))
    return Response.json(status, {"error": code, "message": message, **extra}, headers)


def _authorized(request: Request, token: Secret | None) -> bool:
    if token is None:
        return False  # fail closed: the daemon refuses to start this way anyway
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.reveal().encode())


def _is_webhook_path(path: str, webhook_path: str | None) -> bool:
    if not webhook_path:
        return False
    return hmac.compare_digest(path.strip("/").encode(), webhook_path.strip("/").encode())


class ControlApi:
    """The request handler: routes, auth, JSON. One per listener; holds no state of its own."""

    def __init__(self, runs: WatchedRuns, token: Secret | None) -> None:
        self.runs = runs
        self.token = token

    async def handle(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["runs"] and len(parts) <= 2:
            if not _authorized(request, self.token):
                log.info("control request refused", client=request.client, method=request.method)
                return _error(401, "unauthorized", "missing or invalid bearer token")
            if len(parts) == 1:
                return await self._runs(request)
            return await self._one_run(request, parts[1])
        if _is_webhook_path(request.path, self.runs.webhook_path):
            if request.method != "POST":
                return _error(405, "method_not_allowed", "the receiver takes POST", allow="POST")
            return await self._webhook(request)
        return _error(404, "not_found", "no such endpoint")

    async def _runs(self, request: Request) -> Response:
        if request.method == "GET":
            now = self.runs.monotonic()
            return Response.json(200, {"runs": [run_view(t, now) for t in self.runs.tracks()]})
        if request.method != "POST":
            return _error(405, "method_not_allowed", "use GET or POST", allow="GET, POST")
        if len(request.body) > MAX_CONTROL_BODY:
            return _error(413, "payload_too_large", f"the body is over {MAX_CONTROL_BODY} bytes")
        try:
            run_ids = _requested_runs(request.body)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        bad = [r for r in run_ids if not is_uuid(r)]
        if bad:
            return _error(400, "bad_request", f"not uuids: {', '.join(bad[:20])}", invalid=bad)
        wanted = list(dict.fromkeys(r.lower() for r in run_ids))
        added = await self.runs.add_runs(wanted, source="api")
        already = [r for r in wanted if r not in set(added)]
        if added:
            log.info("runs added", count=len(added), via="control api")
        return Response.json(201 if added else 200, {"added": added, "already": already})

    async def _one_run(self, request: Request, raw_id: str) -> Response:
        if not is_uuid(raw_id):
            return _error(400, "bad_request", f"not a uuid: {raw_id[:64]!r}")
        run_id = raw_id.lower()
        if request.method == "GET":
            track = self.runs.track(run_id)
            if track is None:
                return _error(404, "not_found", f"run {run_id} is not watched")
            return Response.json(200, {"run": run_view(track, self.runs.monotonic())})
        if request.method != "DELETE":
            return _error(405, "method_not_allowed", "use GET or DELETE", allow="GET, DELETE")
        removed = await self.runs.remove_runs([run_id])
        if not removed:
            return _error(404, "not_found", f"run {run_id} is not watched")
        log.info("run removed", run_id=run_id, via="control api")
        return Response.json(200, {"removed": removed})

    async def _webhook(self, request: Request) -> Response:
        if len(request.body) > MAX_WEBHOOK_BODY:
            return _error(413, "payload_too_large", f"the body is over {MAX_WEBHOOK_BODY} bytes")
        try:
            delivery = parse_delivery(request.body)
        except BadDelivery as exc:
            log.info("webhook delivery refused", client=request.client, reason=str(exc))
            return _error(400, "bad_request", str(exc))
        known = self.runs.knows(delivery.run_id)
        if known:
            self.runs.poke(delivery.run_id)
        else:
            await self.runs.add_runs([delivery.run_id], source="webhook")
        log.info(
            "webhook delivery",
            run_id=delivery.run_id,
            webhook_event=delivery.event,
            status=delivery.status,
            known=known,
        )
        return Response.json(202, {"accepted": True, "run_id": delivery.run_id})


def _requested_runs(body: bytes) -> list[str]:
    """``{"run_ids": [...]}`` or ``{"run_id": "..."}`` -> the ids, unchecked; ValueError else."""
    try:
        payload = json.loads(body) if body else None
    except (ValueError, RecursionError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise ValueError('expected {"run_ids": [...]} or {"run_id": "..."}')
    if "run_ids" in payload:
        ids = payload["run_ids"]
        if not isinstance(ids, list) or not all(isinstance(r, str) for r in ids):
            raise ValueError("run_ids must be a list of strings")
    elif isinstance(payload.get("run_id"), str):
        ids = [payload["run_id"]]
    else:
        raise ValueError('expected {"run_ids": [...]} or {"run_id": "..."}')
    if not ids:
        raise ValueError("run_ids is empty")
    if len(ids) > MAX_RUNS_PER_REQUEST:
        raise ValueError(f"at most {MAX_RUNS_PER_REQUEST} run ids per request")
    return list(ids)


async def serve_control(
    runs: WatchedRuns,
    host: str,
    port: int,
    token: Secret | None,
    *,
    task_status: TaskStatus[Bound] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API (and the receiver, if ``control.webhook_path`` is set) until
    cancelled; ``task_status.started`` gets the bound address."""
    webhook_path = runs.webhook_path
    if webhook_path and len(webhook_path.strip("/")) < MIN_WEBHOOK_PATH:
        log.warning(
            "control.webhook_path is short; anyone who guesses it can make the daemon poll",
            length=len(webhook_path.strip("/")),
            advised=MIN_WEBHOOK_PATH,
        )
    api = ControlApi(runs, token)
    await serve(api.handle, host, port, name="control", task_status=task_status)


# -- the client ----------------------------------------------------------------------------------


def control_url(listen: str) -> str:
    """Where to reach a daemon listening on ``listen``: a wildcard address means this host."""
    host, port = parse_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return Bound(host, port).url


async def register_runs(
    control: ControlConfig,
    environ: Mapping[str, str],
    run_ids: Sequence[str],
    *,
    http: httpx.AsyncClient | None = None,
) -> list[str]:
    """Ask the daemon running with ``control`` to watch ``run_ids``; the ones it did not have.

    :class:`ControlError` if the control API is not configured, the token is missing, or the
    daemon does not answer (within ``CLIENT_DEADLINE`` seconds) or refuses.
    """
    if not control.listen:
        raise ControlError("control.listen is not set: no daemon to register with")
    token = read_secret(
        CONTROL_TOKEN, environ=environ, env_var=control.token_env, file=control.token_file
    )
    if token is None:
        raise ControlError(
            f"no control token: set {control.token_env}, control.token_file, "
            f"or a systemd credential named {CONTROL_TOKEN}"
        )
    url = f"{control_url(control.listen)}/runs"
    own = http is None
    client = http or httpx.AsyncClient(
        timeout=CLIENT_TIMEOUT, headers={"user-agent": f"duvo-monitor/{__version__}"}
    )
    try:
        with anyio.fail_after(CLIENT_DEADLINE):
            response = await client.post(
                url,
                json={"run_ids": list(run_ids)},
                headers={"authorization": f"Bearer {token.reveal()}"},
                timeout=CLIENT_TIMEOUT,
            )
    except (httpx.HTTPError, TimeoutError) as exc:
        raise ControlError(
            f"the daemon's control API at {url} did not answer ({type(exc).__name__})", url=url
        ) from exc
    finally:
        if own:
            with anyio.CancelScope(shield=True):
                await client.aclose()
    return _added(response, url)


def _added(response: httpx.Response, url: str) -> list[str]:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 300:
        detail = payload.get("message") if isinstance(payload, dict) else None
        hint = " (check the control token)" if response.status_code == 401 else ""
        raise ControlError(
            f"the daemon's control API at {url} answered {response.status_code}"
            f"{': ' + str(detail) if detail else ''}{hint}",
            url=url,
            status=response.status_code,
        )
    added = payload.get("added") if isinstance(payload, dict) else None
    if not isinstance(added, list) or not all(isinstance(r, str) for r in added):
        raise ControlError(
            f"the daemon's control API at {url} sent an unexpected answer",
            url=url,
            status=response.status_code,
        )
    return list(added)


__all__ = [
    "WEBHOOK_EVENTS",
    "BadDelivery",
    "ControlApi",
    "ControlError",
    "Delivery",
    "WatchedRuns",
    "control_url",
    "parse_delivery",
    "register_runs",
    "run_view",
    "serve_control",
]
