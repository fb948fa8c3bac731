"""Delivery pipeline benchmark: events/s through normalize -> encode -> file sink, orjson vs the
standard library's json, and the cost of a webhook delivery per event, batched vs not.

Run: ``python -m benchmarks.bench_pipeline`` (about 25 s). Prints a markdown table.

* The process is pinned to one core (``sched_setaffinity``) for the file pipeline: the figure is
  what one core sustains, worker-thread hops for file writes included.
* normalize = ``Message.from_api`` + ``to_dict`` on a realistic message payload; encode = the
  CloudEvent envelope to a JSON line (``Event.build``: orjson; the stdlib variant builds the same
  bytes with ``json.dumps``); the file sink appends batches of 100 with ``fsync: never`` (CPU
  bound) and ``fsync: batch`` (disk bound).
* Each file figure is the best of three runs.
* Webhook: a receiver answering 204 runs in a separate process; the monitor side spools
  (fsync per batch handed over), signs, POSTs and acks. Reported: wall time and this process's
  CPU time per event.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from typing import Any, Literal

import anyio
import httpx

from duvo_monitor.clock import Clock
from duvo_monitor.credentials import Secret
from duvo_monitor.events import SOURCE, SPECVERSION, Change, Event, event_id
from duvo_monitor.models import Message
from duvo_monitor.sinks.base import NullObserver
from duvo_monitor.sinks.config import FileConfig, WebhookConfig
from duvo_monitor.sinks.file import FileSink
from duvo_monitor.sinks.webhook import WebhookSink

RUN_ID = "7d4f6f0e-2a53-4c8e-9a52-0c8f4b1f7a11"
AGENT_ID = "3e0d3b8a-58a4-4b0b-a0a1-6b1d2f3c4d5e"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BATCH = 100
FILE_EVENTS = 10_000
REPEAT = 3  # best of, to damp noise from other processes
WEBHOOK_EVENTS = 1_500


def raw_message(n: int) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": f"msg_{n:08d}",
        "type": "tool_call" if n % 3 == 0 else "text",
        "role": "assistant",
        "timestamp": "2025-11-28T10:15:30.123Z",
        "text_content": "Looking up the order status in the warehouse system. " * 4,
    }
    if n % 3 == 0:
        raw["tool_call"] = {
            "id": f"call_{n}",
            "name": "lookup_order",
            "arguments": {"order": n, "full": True},
        }
    return raw


def normalize(n: int, raw: dict[str, Any]) -> dict[str, Any]:
    message = Message.from_api(raw, endpoint="GET /v2/runs/{run_id}/messages")
    return {"run_id": RUN_ID, "agent_id": AGENT_ID, "index": n, "message": message.to_dict()}


def build_orjson(n: int, raw: dict[str, Any]) -> Event:
    return Event.build(
        kind=Change.MESSAGE_CREATED,
        key=raw["id"],
        type="ai.duvo.message.created",
        run_id=RUN_ID,
        agent_id=AGENT_ID,
        time=raw["timestamp"],
        change_time=None,
        data=normalize(n, raw),
    )


def build_stdlib(n: int, raw: dict[str, Any]) -> Event:
    data = normalize(n, raw)
    eid = event_id(RUN_ID, "message", raw["id"])
    envelope = {
        "specversion": SPECVERSION,
        "id": eid,
        "source": SOURCE,
        "type": "ai.duvo.message.created",
        "subject": RUN_ID,
        "time": raw["timestamp"],
        "datacontenttype": "application/json",
        "data": data,
    }
    line = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    return Event(
        id=eid,
        type="ai.duvo.message.created",
        subject=RUN_ID,
        time=raw["timestamp"],
        data=data,
        agent_id=AGENT_ID,
        change_time=None,
        line=line,
    )


async def file_pipeline(
    build: Callable[[int, dict[str, Any]], Event], fsync: Literal["batch", "never"]
) -> float:
    """Events per CPU-second (this process, threads included) through build + the file sink.

    CPU time rather than wall time: the figure is what one core sustains, and it does not move
    when other processes share the machine.
    """
    raws = [raw_message(n) for n in range(FILE_EVENTS)]
    with tempfile.TemporaryDirectory() as directory:
        config = FileConfig(
            type="file", name="file", path=os.path.join(directory, "e.jsonl"), fsync=fsync
        )
        sink = FileSink(config, clock=Clock())
        await sink.open()
        started = time.process_time()
        for offset in range(0, FILE_EVENTS, BATCH):
            batch = [build(n, raws[n]) for n in range(offset, offset + BATCH)]
            await sink.deliver(batch)
        elapsed = time.process_time() - started
        await sink.close()
    return FILE_EVENTS / elapsed


def encode_rate(build: Callable[[int, dict[str, Any]], Event]) -> float:
    """Events per CPU-second through normalize + encode alone (best of three)."""
    raws = [raw_message(n) for n in range(FILE_EVENTS)]
    best = 0.0
    for _ in range(REPEAT):
        started = time.process_time()
        for n in range(FILE_EVENTS):
            build(n, raws[n])
        best = max(best, FILE_EVENTS / (time.process_time() - started))
    return best


RECEIVER = textwrap.dedent(
    """
    import anyio, structlog
    from duvo_monitor.httpserver import Response, serve

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())

    async def handle(request):
        return Response(status=204)

    async def main():
        async with anyio.create_task_group() as tg:
            bound = await tg.start(serve, handle, "127.0.0.1", 0)
            print(bound.port, flush=True)
            await anyio.sleep_forever()

    anyio.run(main)
    """
)


async def webhook_cost(port: int, batch_size: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per event for spool + sign + POST + ack."""
    raws = [raw_message(n) for n in range(WEBHOOK_EVENTS)]
    runs = [f"{RUN_ID[:-2]}{r:02d}" for r in range(8)]
    events = [
        Event.build(
            kind=Change.MESSAGE_CREATED,
            key=raw["id"],
            type="ai.duvo.message.created",
            run_id=runs[n % len(runs)],
            agent_id=AGENT_ID,
            time=raw["timestamp"],
            change_time=None,
            data=normalize(n, raw),
        )
        for n, raw in enumerate(raws)
    ]
    with tempfile.TemporaryDirectory() as directory:
        config = WebhookConfig(
            type="webhook",
            name="hook",
            url=f"http://127.0.0.1:{port}/hook",
            batch_size=batch_size,
            batch_max_wait=0.01,
            concurrency=4,
        )
        async with httpx.AsyncClient() as client:
            sink = WebhookSink(
                config,
                spool_path=os.path.join(directory, "spool"),
                dead_letter_path=os.path.join(directory, "dead.jsonl"),
                secret=Secret(SECRET),
                clock=Clock(),
                observer=NullObserver(),
                client=client,
            )
            await sink.open()
            async with anyio.create_task_group() as tg:
                await tg.start(sink.run)
                cpu, wall = time.process_time(), time.perf_counter()
                for offset in range(0, WEBHOOK_EVENTS, BATCH):
                    await sink.deliver(events[offset : offset + BATCH])
                while sink.backlog:  # noqa: ASYNC110 - the spool's count is the thing to watch
                    await anyio.sleep(0.001)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                tg.cancel_scope.cancel()
            await sink.close()
    return wall / WEBHOOK_EVENTS * 1e6, cpu / WEBHOOK_EVENTS * 1e6


async def main() -> None:
    rows: list[tuple[str, str]] = []
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})
    encode = {
        name: encode_rate(build)
        for name, build in (("orjson", build_orjson), ("stdlib json", build_stdlib))
    }
    for name, rate in encode.items():
        rows.append((f"normalize + encode only, {name}", f"{rate:,.0f} events/CPU-s"))
    fsyncs: tuple[Literal["batch", "never"], ...] = ("never", "batch")
    for fsync in fsyncs:
        fast = max([await file_pipeline(build_orjson, fsync) for _ in range(REPEAT)])
        slow = max([await file_pipeline(build_stdlib, fsync) for _ in range(REPEAT)])
        rows.append((f"build + file sink, fsync {fsync}, orjson", f"{fast:,.0f} events/CPU-s"))
        rows.append((f"build + file sink, fsync {fsync}, stdlib json", f"{slow:,.0f} events/CPU-s"))
        rows.append((f"orjson speed-up (fsync {fsync})", f"{fast / slow:.2f}x"))
    os.sched_setaffinity(0, set(cores))
    receiver = await anyio.open_process(
        [sys.executable, "-c", RECEIVER], env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    try:
        assert receiver.stdout is not None
        banner = b""
        while not banner.endswith(b"\n"):
            banner += await receiver.stdout.receive(64)
        port = int(banner)
        os.sched_setaffinity(receiver.pid, {cores[-1]})
        os.sched_setaffinity(0, {cores[0]})
        for size in (1, 50):
            wall, cpu = await webhook_cost(port, size)
            label = "one POST per event" if size == 1 else f"batches of {size}"
            rows.append((f"webhook, {label}: wall per event", f"{wall:,.0f} µs"))
            rows.append((f"webhook, {label}: monitor CPU per event", f"{cpu:,.0f} µs"))
    finally:
        receiver.terminate()
        await receiver.wait()
        await receiver.aclose()
    print(f"Python {sys.version.split()[0]}, {len(cores)} core(s) available, pinned to one\n")
    print("| measurement | result |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    anyio.run(main)
