"""The webhook sink against a real receiver on 127.0.0.1: outages, order, signatures, dead
letters, 410, Retry-After, the spool across restarts and its bound."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus
from sinkkit import RUN_A, RUN_B, Hit, Observed, Receiver, events, eventually
from standardwebhooks import Webhook

from duvo_monitor.clock import Clock
from duvo_monitor.credentials import Secret
from duvo_monitor.httpserver import Bound, Request, Response, serve
from duvo_monitor.sinks.config import WebhookConfig
from duvo_monitor.sinks.webhook import WebhookSink

pytestmark = pytest.mark.anyio
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
RUN_C = "44444444-4444-4444-8444-444444444444"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def receiving(receiver: Receiver, port: int = 0) -> AsyncIterator[Bound]:
    """Serve ``receiver`` until the block ends (then the port refuses connections)."""
    async with anyio.create_task_group() as tg:

        async def run(*, task_status: TaskStatus[Bound]) -> None:
            await serve(
                receiver.handle, "127.0.0.1", port, name="receiver", task_status=task_status
            )

        bound = await tg.start(run)
        yield bound
        tg.cancel_scope.cancel()


async def free_port() -> int:
    async with receiving(Receiver()) as bound:
        return bound.port


def make_sink(
    tmp_path: Path,
    url: str,
    client: httpx.AsyncClient,
    observer: Observed | None = None,
    secret: str | None = SECRET,
    **overrides: Any,
) -> WebhookSink:
    settings: dict[str, Any] = {
        "max_backoff": 0.05,
        "timeout": 0.5,
        "batch_max_wait": 0.02,
        "concurrency": 4,
        **overrides,
    }
    config = WebhookConfig(type="webhook", name="hook", url=url, **settings)
    return WebhookSink(
        config,
        spool_path=str(tmp_path / "spool"),
        dead_letter_path=str(tmp_path / "dead.jsonl"),
        secret=Secret(secret) if secret else None,
        clock=Clock(),
        observer=observer or Observed(),
        client=client,
    )


@asynccontextmanager
async def running(sink: WebhookSink) -> AsyncIterator[WebhookSink]:
    await sink.open()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(sink.run)
            yield sink
            tg.cancel_scope.cancel()
    finally:
        await sink.close()


def verified(hit: Hit) -> Any:
    """The body, parsed, after standardwebhooks verified its signature."""
    return Webhook(SECRET).verify(hit.body, hit.headers)


def delivered_per_run(receiver: Receiver) -> dict[str, list[int]]:
    """Each run's event numbers in the order they were first accepted (duplicates dropped)."""
    seen: set[str] = set()
    runs: dict[str, list[int]] = {}
    for hit in receiver.accepted:
        body = verified(hit)
        for event in body if isinstance(body, list) else [body]:
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            runs.setdefault(event["subject"], []).append(event["data"]["n"])
    return runs


async def test_outage_500s_and_slowness_then_everything_arrives_in_order(tmp_path: Path) -> None:
    """Receiver down, then answering 500, then too slow, then fine: every event arrives, each
    run's in order, every signature verifies with standardwebhooks."""
    port = await free_port()
    answers = iter(["500"] * 6 + ["slow"] * 3)

    async def answer(_: Request) -> Response:
        match next(answers, "ok"):
            case "500":
                return Response(status=500, body=b"oops")
            case "slow":
                await anyio.sleep(1.0)
                return Response(status=500)
        return Response(status=200)

    receiver = Receiver(answer=answer)
    observed = Observed()
    async with httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, f"http://127.0.0.1:{port}/hook", client, observed, timeout=0.2)
        async with running(sink):
            for i in range(10):
                for run in (RUN_A, RUN_B, RUN_C):
                    await sink.deliver(events(2, run=run, start=2 * i))
            await anyio.sleep(0.2)  # connection refused for a while
            assert sink.state == "retry"
            async with receiving(receiver, port):
                await eventually(lambda: sink.backlog == 0)
            assert sink.state == "ok"
    assert delivered_per_run(receiver) == {run: list(range(20)) for run in (RUN_A, RUN_B, RUN_C)}
    kinds = {c[2] for c in observed.calls if c[0] == "error"}
    assert {"connect", "http_5xx", "timeout"} <= kinds
    assert not (tmp_path / "dead.jsonl").exists()


async def test_batches_are_signed_arrays_in_run_order(tmp_path: Path) -> None:
    """batch_size > 1 posts JSON arrays with a batch webhook-id; order per run holds."""
    receiver = Receiver()
    async with receiving(receiver) as bound, httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, bound.url + "/hook", client, batch_size=5)
        async with running(sink):
            for i in range(8):
                await sink.deliver(
                    events(3, run=RUN_A, start=3 * i) + events(3, run=RUN_B, start=3 * i)
                )
            await eventually(lambda: sink.backlog == 0)
    assert delivered_per_run(receiver) == {RUN_A: list(range(24)), RUN_B: list(range(24))}
    assert all(isinstance(verified(hit), list) for hit in receiver.accepted)
    assert any(len(verified(hit)) > 1 for hit in receiver.accepted)
    ids = {hit.headers["webhook-id"] for hit in receiver.accepted}
    assert len(ids) == len(receiver.accepted)


async def test_4xx_goes_to_the_dead_letter_file(tmp_path: Path) -> None:
    """A 422 is not retried: the event goes to the dead-letter file with reason and status,
    and the other run's events still arrive."""

    async def answer(request: Request) -> Response:
        if json.loads(request.body)["subject"] == RUN_B:
            return Response.json(422, {"error": "unprocessable"})
        return Response(status=204)

    receiver = Receiver(answer=answer)
    observed = Observed()
    async with receiving(receiver) as bound, httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, bound.url, client, observed)
        async with running(sink):
            await sink.deliver(events(3, run=RUN_A) + events(2, run=RUN_B))
            await eventually(lambda: sink.backlog == 0)
    lines = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["status"], d["event"]["subject"], d["event"]["data"]["n"]) for d in lines] == [
        (422, RUN_B, 0),
        (422, RUN_B, 1),
    ]
    assert lines[0]["reason"].startswith("HTTP 422")
    assert "unprocessable" in lines[0]["reason"]
    assert lines[0]["event"] == json.loads(events(1, run=RUN_B)[0].line)
    assert delivered_per_run(receiver) == {RUN_A: [0, 1, 2]}
    assert observed.count("dropped", "hook", "dead_letter") == 2
    assert len(receiver.hits) == 5  # no retries of a 4xx


async def test_410_disables_the_endpoint(tmp_path: Path) -> None:
    """410 Gone: one request, then the sink is failed and every event is dead-lettered."""
    receiver = Receiver(answer=lambda _: _gone())
    async with receiving(receiver) as bound, httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, bound.url, client, concurrency=1)
        async with running(sink):
            await sink.deliver(events(1))
            await eventually(lambda: sink.state == "failed")
            await sink.deliver(events(4, start=1))
            await eventually(lambda: sink.backlog == 0)
    assert len(receiver.hits) == 1
    dead = (tmp_path / "dead.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["event"]["data"]["n"] for line in dead) == [0, 1, 2, 3, 4]


async def _gone() -> Response:
    return Response(status=410)


async def test_429_retry_after_is_honoured(tmp_path: Path) -> None:
    """A 429 with Retry-After: 1 delays the retry by a second, far above max_backoff."""
    answers = iter([Response(status=429, headers=[("retry-after", "1")])])

    async def answer(_: Request) -> Response:
        return next(answers, Response(status=200))

    receiver = Receiver(answer=answer)
    async with receiving(receiver) as bound, httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, bound.url, client)
        async with running(sink):
            await sink.deliver(events(1))
            await eventually(lambda: sink.backlog == 0)
    first, second = receiver.hits
    assert second.at - first.at >= 0.95
    assert second.headers["webhook-id"] == first.headers["webhook-id"]


async def test_spool_survives_a_restart(tmp_path: Path) -> None:
    """Events spooled while the receiver fails stay on disk; a new sink on the same spool
    delivers the rest, in order, and nothing that was acknowledged is sent again."""
    calls = 0

    async def flaky(_: Request) -> Response:
        nonlocal calls
        calls += 1
        return Response(status=200 if calls <= 5 else 503)

    first = Receiver(answer=flaky)
    async with receiving(first) as bound, httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, bound.url, client, concurrency=1)
        async with running(sink):
            await sink.deliver(events(20))
            await eventually(lambda: len(first.hits) >= 8)
        assert sink.backlog == 15
    second = Receiver()
    async with receiving(second) as bound, httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, bound.url, client)
        async with running(sink):
            assert sink.backlog == 15
            await eventually(lambda: sink.backlog == 0)
    assert delivered_per_run(first) == {RUN_A: list(range(5))}
    assert delivered_per_run(second) == {RUN_A: list(range(5, 20))}
    assert len(second.hits) == 15


async def test_full_spool_blocks_then_flows(tmp_path: Path) -> None:
    """spool_max bounds the disk: deliver() waits while it is full and the receiver is down,
    and goes on once the receiver takes events again."""
    port = await free_port()
    async with httpx.AsyncClient() as client:
        sink = make_sink(
            tmp_path, f"http://127.0.0.1:{port}/", client, spool_max=64 * 1024, batch_size=50
        )
        async with running(sink):
            sent = 0
            with anyio.move_on_after(0.5) as blocked:
                while True:
                    await sink.deliver(events(10, start=sent, size=900))
                    sent += 10
            assert blocked.cancelled_caught
            assert 40 <= sent < 200
            spool_bytes = sum(p.stat().st_size for p in (tmp_path / "spool").glob("seg-*"))
            assert spool_bytes <= 64 * 1024 + 10 * 1100
            receiver = Receiver()
            async with receiving(receiver, port):
                with anyio.fail_after(10):
                    await sink.deliver(events(10, start=sent, size=900))
                await eventually(lambda: sink.backlog == 0)
    got = delivered_per_run(receiver)[RUN_A]
    assert got == sorted(got)
    assert sent in got
    assert got[-1] == sent + 9


async def test_full_spool_with_drop_oldest_never_blocks(tmp_path: Path) -> None:
    """on_full: drop_oldest drops whole old segments, counted, instead of waiting."""
    observed = Observed()
    port = await free_port()
    async with httpx.AsyncClient() as client:
        sink = make_sink(
            tmp_path,
            f"http://127.0.0.1:{port}/",
            client,
            observed,
            spool_max=64 * 1024,
            on_full="drop_oldest",
        )
        async with running(sink):
            with anyio.fail_after(5):
                for i in range(40):
                    await sink.deliver(events(10, start=10 * i, size=900))
            dropped = observed.count("dropped", "hook", "spool_full")
            assert dropped > 0
            assert sink.backlog == 400 - dropped
    spool_bytes = sum(p.stat().st_size for p in (tmp_path / "spool").glob("seg-*"))
    assert spool_bytes <= 64 * 1024 + 10 * 1100


async def test_retry_horizon_dead_letters(tmp_path: Path) -> None:
    """An event that cannot be delivered within retry_horizon goes to the dead letters."""
    receiver = Receiver(answer=lambda _: _unavailable())
    async with receiving(receiver) as bound, httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, bound.url, client, retry_horizon=0.2)
        async with running(sink):
            started = time.monotonic()
            await sink.deliver(events(1))
            await eventually(lambda: sink.backlog == 0)
            assert time.monotonic() - started >= 0.2
    (line,) = (tmp_path / "dead.jsonl").read_text().splitlines()
    assert json.loads(line)["reason"].startswith("retry horizon passed")
    assert len(receiver.hits) > 1


async def _unavailable() -> Response:
    return Response(status=503)


async def test_unsigned_without_a_secret(tmp_path: Path) -> None:
    """Without a secret there is no signature header, but id and timestamp are sent."""
    receiver = Receiver()
    async with receiving(receiver) as bound, httpx.AsyncClient() as client:
        sink = make_sink(tmp_path, bound.url, client, secret=None, headers=(("x-team", "a"),))
        async with running(sink):
            await sink.deliver(events(1))
            await eventually(lambda: sink.backlog == 0)
    (hit,) = receiver.hits
    assert "webhook-signature" not in hit.headers
    assert hit.headers["webhook-id"] == events(1)[0].id
    assert hit.headers["x-team"] == "a"
    assert hit.body == events(1)[0].line.rstrip(b"\n")
