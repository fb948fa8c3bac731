"""Test helpers for the sink tests: events, a recording sink (a fake), a webhook receiver.

The receiver is a real HTTP server on 127.0.0.1 (``duvo_monitor.httpserver``) whose answers a
test scripts per request: down, 500, slow, 429 with ``Retry-After``, 4xx, 410, or 200.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus

from duvo_monitor.events import Change, Event
from duvo_monitor.httpserver import Request, Response
from duvo_monitor.sinks.base import SinkState
from duvo_monitor.sinks.config import StdoutConfig

RUN_A = "11111111-1111-4111-8111-111111111111"
RUN_B = "22222222-2222-4222-8222-222222222222"
AGENT = "33333333-3333-4333-8333-333333333333"


def make_event(
    n: int,
    *,
    run: str = RUN_A,
    type: str = "ai.duvo.message.created",
    agent: str | None = AGENT,
    size: int = 0,
) -> Event:
    return Event.build(
        kind=Change.MESSAGE_CREATED,
        key=f"{run}-{n}",
        type=type,
        run_id=run,
        agent_id=agent,
        time="2025-01-01T00:00:00Z",
        change_time=None,
        data={"n": n, "run_id": run, "pad": "x" * size},
    )


def events(count: int, *, run: str = RUN_A, start: int = 0, **kwargs: Any) -> list[Event]:
    return [make_event(start + i, run=run, **kwargs) for i in range(count)]


class RecordingSink:
    """A fake sink: remembers what it got and when; an optional gate holds each batch."""

    backlog = 0

    def __init__(self, name: str, *, buffer: int = 1000, on_full: str = "block", **filters: Any):
        self.name = name
        self.config = StdoutConfig(
            type="stdout",
            name=name,
            buffer=buffer,
            on_full=on_full,
            **filters,  # type: ignore[arg-type]
        )
        self.received: list[Event] = []
        self.times: list[float] = []
        self.gate: anyio.Event | None = None
        self.fail_next = 0
        self.opened = self.closed = False
        self.reopened = 0
        self.state: SinkState = "ok"
        self.delay = 0.0

    async def open(self) -> None:
        self.opened = True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async def deliver(self, batch: Sequence[Event]) -> None:
        from duvo_monitor.sinks.base import SinkUnavailable

        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await anyio.sleep(self.delay * len(batch))
        if self.fail_next:
            self.fail_next -= 1
            raise SinkUnavailable("injected", sink=self.name, kind="test")
        now = time.monotonic()
        self.received.extend(batch)
        self.times.extend(now for _ in batch)

    async def close(self) -> None:
        self.closed = True

    def reopen(self) -> None:
        self.reopened += 1


@dataclass
class Hit:
    body: bytes
    headers: dict[str, str]
    at: float


Behaviour = Callable[[Request], Awaitable[Response]]


@dataclass
class Receiver:
    """A webhook receiver; ``answer`` decides each response. ``hits`` lists every request."""

    answer: Behaviour | None = None
    hits: list[Hit] = field(default_factory=list)
    accepted: list[Hit] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        hit = Hit(body=request.body, headers=request.headers, at=time.monotonic())
        self.hits.append(hit)
        response = await self.answer(request) if self.answer else Response(status=204)
        if 200 <= response.status < 300 and not response.drop:
            self.accepted.append(hit)
        return response


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``condition()`` holds (polling: the fakes and sinks expose counters, not
    events); fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polling a counter is the point
            await anyio.sleep(0.002)


async def ok(_: Request) -> Response:
    return Response(status=200, body=b"ok")


class Observed:
    """A SinkObserver that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def sink_delivered(self, sink: str, type: str, count: int = 1) -> None:
        self.calls.append(("delivered", sink, type, str(count)))

    def sink_queue(self, sink: str, depth: int) -> None:
        pass

    def sink_error(self, sink: str, kind: str) -> None:
        self.calls.append(("error", sink, kind))

    def sink_dropped(self, sink: str, reason: str, count: int = 1) -> None:
        self.calls.append(("dropped", sink, reason, str(count)))

    def sink_health(self, sink: str, state: str) -> None:
        self.calls.append(("health", sink, state))

    def count(self, kind: str, sink: str, label: str) -> int:
        return sum(int(c[3]) for c in self.calls if c[:3] == (kind, sink, label))
