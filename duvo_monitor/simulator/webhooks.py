"""Webhook delivery: POST the events the world produces to each run's ``webhook_url``.

One delivery is a named failure boundary: a receiver that refuses, times out or does not exist is
recorded as a :class:`~duvo_monitor.simulator.model.WebhookDelivery` with its error and logged;
it never reaches the simulator. Duvo documents no retries, so there are none. The HTTP client is
injected (``httpx.AsyncClient``); every POST has a deadline.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx
import structlog
from anyio.abc import ObjectReceiveStream

from duvo_monitor.clock import Clock
from duvo_monitor.simulator.model import WebhookDelivery, WebhookEvent

log = structlog.get_logger("duvo_monitor.simulator")

WEBHOOK_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
WEBHOOK_DEADLINE = 10.0  # wall seconds for one delivery, whatever httpx's phases add up to
WORKERS = 4
QUEUE = 1000


async def deliver(client: httpx.AsyncClient, event: WebhookEvent, clock: Clock) -> WebhookDelivery:
    """POST one event; the outcome, never an exception (cancellation aside)."""
    status: int | None = None
    problem: str | None = None
    try:
        with anyio.fail_after(WEBHOOK_DEADLINE):
            response = await client.post(
                event.url,
                json=event.body(),
                headers={"user-agent": "duvo-monitor-simulator"},
                timeout=WEBHOOK_TIMEOUT,
            )
        status = response.status_code
        if status >= 400:
            problem = f"receiver answered {status}"
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        log.warning(
            "webhook delivery failed",
            url=event.url,
            run_id=event.run_id,
            webhook_event=event.event,
            error=problem,
        )
    return WebhookDelivery(
        time=clock.time(),
        url=event.url,
        event=event.event,
        run_id=event.run_id,
        status=status,
        error=problem,
    )


async def worker(
    receive: ObjectReceiveStream[WebhookEvent],
    client: httpx.AsyncClient,
    clock: Clock,
    record: Callable[[WebhookDelivery], None],
) -> None:
    """Deliver events from ``receive`` one by one until the stream closes."""
    async with receive:
        async for event in receive:
            record(await deliver(client, event, clock))
