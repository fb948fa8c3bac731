"""The simulator's per-key rate limits over HTTP: each key its own counter and its own limit, a
window that may be longer than a simulated minute, and a request log that names the key that
asked by a digest, never by the key itself (the benchmarks run two clients on one simulator)."""

from __future__ import annotations

import httpx
import pytest
from simfixtures import T0, manual_clock, run_id, scenario, serving

from duvo_monitor.simulator import Simulator
from duvo_monitor.simulator.server import key_id

OTHER = "second-key"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_each_key_has_its_own_budget_and_limit() -> None:
    """One key spent to its limit leaves the other's budget whole; a key may have its own limit;
    the request log tells the two apart by digest."""
    clock = manual_clock()
    sim = Simulator(
        scenario(), clock=clock, rate_limit=2, rate_limits={OTHER: 4}, api_keys=("sim-key", OTHER)
    )
    async with serving(sim) as client:
        first = [(await client.get(f"/v1/runs/{run_id(99)}")).status_code for _ in range(3)]
        other = {"authorization": f"Bearer {OTHER}"}
        second = [
            (await client.get(f"/v1/runs/{run_id(99)}", headers=other)).status_code
            for _ in range(5)
        ]
        last = await client.get(f"/v1/runs/{run_id(99)}", headers=other)
    assert first == [404, 404, 429]
    assert second == [404, 404, 404, 404, 429]
    assert last.headers["x-ratelimit-limit"] == "4"
    ids = [e.key_id for e in sim.requests]
    assert ids == [key_id("sim-key")] * 3 + [key_id(OTHER)] * 6
    assert all(OTHER not in repr(e) and "sim-key" not in repr(e) for e in sim.requests)


@pytest.mark.anyio
async def test_a_window_of_several_simulated_minutes() -> None:
    """With ``rate_window=240`` (one real minute of a world compressed x4) the count carries on
    across simulated minutes and resets only at the window's end."""
    clock = manual_clock(T0 // 240 * 240)
    sim = Simulator(scenario(), clock=clock, rate_limit=2, rate_window=240.0)
    async with serving(sim) as client:
        statuses = []
        for step in (0, 70, 130):  # three simulated minutes, one window
            clock.set(T0 // 240 * 240 + step)
            statuses.append((await client.get("/v2/teams")).status_code)
        clock.set(T0 // 240 * 240 + 240)
        reset: httpx.Response = await client.get("/v2/teams")
    assert statuses == [200, 200, 429]
    assert reset.status_code == 200


@pytest.mark.anyio
async def test_rate_headers_in_the_clients_clock() -> None:
    """With ``client_clock`` (a client on the real clock, the world four times faster) the
    reset and retry-after come in the client's time, not the world's."""
    clock = manual_clock(T0 // 240 * 240 + 200, speed=4.0)
    client = manual_clock(5000.0)
    sim = Simulator(scenario(), clock=clock, rate_limit=1, rate_window=240.0, client_clock=client)
    async with serving(sim) as http:
        await http.get("/v2/teams")
        refused = await http.get("/v2/teams")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"  # 40 world seconds left in the window
    assert refused.headers["x-ratelimit-reset"] == "5010"
