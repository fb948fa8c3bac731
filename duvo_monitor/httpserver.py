"""A small HTTP/1.1 server on anyio and h11, for the simulator, ``/metrics`` and the control API.

Why not a framework: the simulator must misbehave at the wire (drop a connection mid-request,
send half a body under a full ``Content-Length``), every server must run inside the caller's task
group and bind port 0 for tests, and the metrics listener must bind exactly the configured address.
h11 (already httpx's engine) does the protocol; this module only moves bytes.

A handler is ``async (Request) -> Response``. :func:`serve` binds, reports the bound address
through ``task_status.started`` and serves until cancelled.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import anyio
import h11
import structlog
from anyio.abc import SocketStream, TaskStatus

log = structlog.get_logger("duvo_monitor.httpserver")

MAX_BODY = 8 * 1024 * 1024
READ_TIMEOUT = 30.0
KEEPALIVE_TIMEOUT = 75.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client: str

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True, kw_only=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Faults, for the simulator: close the connection without answering, or answer the headers
    # with the full Content-Length and then only this many bytes of the body, or send the body
    # one byte every ``trickle`` seconds.
    drop: bool = False
    truncate_to: int | None = None
    trickle: float | None = None

    @classmethod
    def json(
        cls, status: int, payload: Any, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(
            status=status,
            body=body,
            headers=[("content-type", "application/json"), *(headers or [])],
        )

    @classmethod
    def text(
        cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8"
    ) -> Response:
        return cls(status=status, body=text.encode(), headers=[("content-type", content_type)])


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Bound:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    name: str = "http",
    task_status: TaskStatus[Bound] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled; ``started`` gets the bound address."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    async with listener:
        sockname = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_address)
        bound = Bound(str(sockname[0]), int(sockname[1]))
        log.debug("listening", server=name, url=bound.url)
        task_status.started(bound)

        async def on_connection(stream: SocketStream) -> None:
            await _connection(stream, handler, name)

        await listener.serve(on_connection)


async def _connection(stream: SocketStream, handler: Handler, name: str) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    try:
        remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
        client = str(remote[0]) if isinstance(remote, tuple) else str(remote)
    except Exception:
        client = "?"
    async with stream:
        try:
            while True:
                request = await _read_request(conn, stream, client)
                if request is None:
                    return
                try:
                    response = await handler(request)
                except Exception:
                    log.exception("handler failed", server=name, path=request.path)
                    response = Response.json(500, {"error": "internal_error"})
                if response.drop:
                    return
                keep = await _write_response(conn, stream, response)
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            ConnectionError,
            TimeoutError,
        ):
            return
        except h11.ProtocolError as exc:
            await _send_error(conn, stream, 400, str(exc))


async def _read_request(conn: h11.Connection, stream: SocketStream, client: str) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    first = True
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            timeout = KEEPALIVE_TIMEOUT if first and head is None else READ_TIMEOUT
            with anyio.fail_after(timeout):
                try:
                    data = await stream.receive(65536)
                except anyio.EndOfStream:
                    data = b""
            first = False
            conn.receive_data(data)
            if not data and head is None:
                return None
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body.extend(event.data)
            if len(body) > MAX_BODY:
                await _send_error(conn, stream, 413, "body too large")
                return None
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            target = head.target.decode("latin-1")
            parts = urllib.parse.urlsplit(target)
            return Request(
                method=head.method.decode("ascii").upper(),
                target=target,
                path=urllib.parse.unquote(parts.path),
                query=urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers},
                body=bytes(body),
                client=client,
            )


async def _write_response(conn: h11.Connection, stream: SocketStream, response: Response) -> bool:
    headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
    headers.append(("content-length", str(len(response.body))))
    await stream.send(
        conn.send(
            h11.Response(
                status_code=response.status, headers=headers, reason=_reason(response.status)
            )
        )
    )
    if response.truncate_to is not None:
        await stream.send(response.body[: response.truncate_to])
        return False
    if response.trickle is not None:
        for index in range(len(response.body)):
            await anyio.sleep(response.trickle)
            await stream.send(conn.send(h11.Data(data=response.body[index : index + 1])))
    elif response.body:
        await stream.send(conn.send(h11.Data(data=response.body)))
    await stream.send(conn.send(h11.EndOfMessage()))
    return True


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


async def _send_error(conn: h11.Connection, stream: SocketStream, status: int, text: str) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = json.dumps({"error": "bad_request", "message": text}).encode()
    try:
        await stream.send(
            conn.send(
                h11.Response(
                    status_code=status,
                    headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                        ("connection", "close"),
                    ],
                )
            )
        )
        await stream.send(conn.send(h11.Data(data=body)))
        await stream.send(conn.send(h11.EndOfMessage()))
    except (h11.LocalProtocolError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        return
