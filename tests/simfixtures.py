"""Helpers for the simulator's tests: small scenarios, a hand-driven clock, a served simulator."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from duvo_monitor import httpserver
from duvo_monitor.clock import Clock
from duvo_monitor.httpserver import Request, Response
from duvo_monitor.simulator import Scenario, Simulator

KEY = "sim-key"
TEAM = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
AGENT = "a0000000-0000-4000-8000-000000000001"  # human in the loop, asks and waits
QUIET_AGENT = "a0000000-0000-4000-8000-000000000002"  # human in the loop disabled
PLAIN_AGENT = "a0000000-0000-4000-8000-000000000003"  # the default script
T0 = 1_764_000_030.0  # the middle of a rate-limit window


def run_id(n: int) -> str:
    return f"d0000000-0000-4000-8000-{n:012d}"


ASKING = [
    {"at": "1s", "status": "running"},
    {"at": "2s", "say": "Need a decision."},
    {"at": "3s", "human_request": {"type": "approval", "title": "Go ahead?"}},
    {"after": "1s", "say": "Going ahead."},
    {"after": "1s", "status": "completed"},
]


def scenario_dict(runs: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A small scenario: three agents (asking, quiet, default script) and ``runs``."""
    return {
        "version": 1,
        "team": {"id": TEAM, "name": "Test team"},
        "agents": [
            {"id": AGENT, "name": "Asker", "timeline": ASKING},
            {"id": QUIET_AGENT, "name": "Quiet", "human_in_the_loop": False, "timeline": ASKING},
            {"id": PLAIN_AGENT, "name": "Plain"},
        ],
        "runs": runs or [],
        **extra,
    }


def scenario(runs: list[dict[str, Any]] | None = None, **extra: Any) -> Scenario:
    return Scenario.from_dict(scenario_dict(runs, **extra))


@dataclass(frozen=True, slots=True, kw_only=True)
class ManualClock(Clock):
    """A clock that reads whatever the test set; sleeps are real but short (speed applies)."""

    cell: list[float] = field(default_factory=lambda: [T0])

    def time(self) -> float:
        return self.cell[0]

    def set(self, t: float) -> None:
        self.cell[0] = t

    def forward(self, seconds: float) -> None:
        self.cell[0] += seconds


def manual_clock(t: float = T0, speed: float = 1.0) -> ManualClock:
    return ManualClock(speed=speed, origin=t, cell=[t])


@asynccontextmanager
async def serving(sim: Simulator, *, key: str | None = KEY) -> AsyncIterator[httpx.AsyncClient]:
    """``sim`` served on a loopback port, and a client for it (authenticated unless key=None)."""
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            bound = await tg.start(sim.serve, "127.0.0.1", 0)
            async with httpx.AsyncClient(
                base_url=bound.url, headers=headers, timeout=10.0
            ) as client:
                yield client
            tg.cancel_scope.cancel()


@dataclass(slots=True)
class Receiver:
    """A webhook receiver: records each POSTed JSON body; answers ``status``."""

    status: int = 200
    bodies: list[Any] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)
    url: str = ""

    async def handle(self, request: Request) -> Response:
        self.bodies.append(request.json())
        self.arrived.set()
        return Response.json(self.status, {"ok": True})

    async def wait_for(self, predicate: Callable[[list[Any]], bool], within: float = 10) -> None:
        with anyio.fail_after(within):
            while not predicate(self.bodies):
                self.arrived = anyio.Event()
                await self.arrived.wait()


@asynccontextmanager
async def receiving(status: int = 200) -> AsyncIterator[Receiver]:
    receiver = Receiver(status=status)
    async with anyio.create_task_group() as tg:
        bound = await tg.start(httpserver.serve, receiver.handle, "127.0.0.1", 0)
        receiver.url = f"{bound.url}/hook"
        yield receiver
        tg.cancel_scope.cancel()


async def wait_until(
    check: Callable[[], Any], *, within: float = 10.0, interval: float = 0.01
) -> Any:
    """Poll ``check`` (sync) until it returns something truthy; fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while True:
            value = check()
            if value:
                return value
            await anyio.sleep(interval)


def close(a: float, b: float, tolerance: float = 1e-6) -> bool:
    return math.isclose(a, b, abs_tol=tolerance)
