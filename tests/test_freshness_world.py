"""Freshness in worlds unlike the benchmark's, over real HTTP: the budget is spent on news.

Outcomes only (every change emitted, the budget kept, the order of first looks); how fast is a
figure for ``benchmarks/``. Each world is set up so that the schedule before the freshness work
could not pass it within the test's bound: finished runs were read only every
``linger_interval`` (here 30 minutes of simulated time, far past the test's wall bound).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from harness import WorldResult, run_world
from test_daemon_world import AGENT, TEAM, assert_within_budget

from duvo_monitor.simulator import Scenario

SLOW_LINGER = {"linger_interval": "30m", "min_interval": "1s"}


def run(index: int, start: str, timeline: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": f"f0000000-0000-4000-8000-{index:012d}",
        "agent": "Agent",
        "start": start,
        "title": f"run {index}",
        "timeline": timeline,
        **extra,
    }


def finished(index: int, *after: dict[str, Any]) -> dict[str, Any]:
    timeline = [
        {"at": "1s", "status": "running"},
        {"at": "2s", "say": f"Run {index} did its work."},
        {"at": "3s", "status": "completed"},
        *after,
    ]
    return run(index, "-10m", timeline)


def world(runs: list[dict[str, Any]]) -> Scenario:
    return Scenario.from_dict(
        {"version": 1, "team": TEAM, "agents": [AGENT], "runs": runs}, name="freshness"
    )


def resume_world() -> Scenario:
    """Finished runs resumed from outside, one deleted, a human request answered outside, two
    busy runs that keep the budget partly in use."""
    busy = [
        run(
            20 + k,
            "0s",
            [
                {"at": "1s", "status": "running"},
                *({"at": f"{2 + 2 * i}s", "say": f"step {i}"} for i in range(15)),
                {"at": "35s", "status": "completed"},
            ],
        )
        for k in range(2)
    ]
    waiting = run(
        30,
        "0s",
        [
            {"at": "1s", "status": "running"},
            {
                "at": "3s",
                "human_request": {"type": "approval", "title": "Go?", "answer_after": "12s"},
            },
            {"after": "1s", "say": "Approved; going on."},
            {"after": "1s", "status": "completed"},
        ],
    )
    return world(
        [
            finished(1, {"at": "10m10s", "post": "One more thing, please."}),
            finished(2, {"at": "10m20s", "post": "And the totals, please."}),
            finished(3, {"at": "10m15s", "delete": True}),
            *(finished(k) for k in range(4, 10)),
            *busy,
            waiting,
        ]
    )


def assert_each_ended_twice(result: WorldResult, runs: int) -> None:
    """Every message emitted once, no status invented, and each of the ``runs`` resumed runs'
    two ends (`completed` before and after its continuation) reported."""
    s = result.score(transient=3.0)
    assert result.settled, (s.summary(), result.explain_missed(s))
    assert s.perfect_messages and not s.duplicate_event_ids, result.explain_missed(s)
    assert not s.status_invented, s.summary()
    completed = Counter(
        e.envelope["subject"]
        for e in result.sink.received
        if e.envelope["type"] == "ai.duvo.run.completed"
    )
    assert sorted(completed.values()) == [2] * runs, completed


@pytest.mark.anyio
async def test_v1_resumes_and_deletions_of_finished_runs_are_seen_without_linger(
    tmp_path: Path,
) -> None:
    """v1 has no list endpoint: only polling a finished run finds that it resumed or was deleted.
    With budget to spare it is polled every few seconds, not every linger_interval: the resumed
    runs' messages and second completion, the deleted run's loss and the human request answered
    outside are all emitted, once, within the budget."""
    result = await run_world(
        resume_world(),
        tmp_path,
        speed=10,
        version="v1",
        polling=SLOW_LINGER,
        api={"requests_per_minute": 600},
        rate_limit=600,
        wall_timeout=30.0,
    )
    s = result.score(transient=3.0)
    assert result.settled, (s.summary(), result.explain_missed(s))
    assert s.perfect_messages, (s.summary(), result.explain_missed(s))
    assert not s.status_missed and not s.status_invented and not s.final_mismatch, s.summary()
    assert not s.requests_missed and not s.lost_missed, s.summary()
    assert not s.duplicate_event_ids
    assert_within_budget(result.sim.requests, 600)
    completed = [t for t in result.types() if t.endswith("run.completed")]
    assert len(completed) >= 12 + 2  # every run once, and the two resumed runs once more
    # The first looks found 9 runs finished ~10 minutes ago, unchanged since: that quiet counts
    # for the finished runs' pool (decayed over the play, and the resumes still found above).
    assert result.monitor.scheduler.linger_news.span > 9 * 590 * 0.5


@pytest.mark.anyio
async def test_v2_resumes_and_deletions_are_seen_without_linger(tmp_path: Path) -> None:
    """The same world on v2: sweeps show the resumed runs and miss the deleted one."""
    result = await run_world(
        resume_world(),
        tmp_path,
        speed=10,
        version="v2",
        discover=False,
        polling=SLOW_LINGER,
        api={"requests_per_minute": 600},
        rate_limit=600,
        wall_timeout=30.0,
    )
    s = result.score(transient=3.0)
    assert result.settled, (s.summary(), result.explain_missed(s))
    assert s.perfect_messages, (s.summary(), result.explain_missed(s))
    assert not s.status_missed and not s.lost_missed and not s.requests_missed, s.summary()
    assert_within_budget(result.sim.requests, 600)


@pytest.mark.anyio
async def test_v1_resume_and_end_between_two_looks_is_reported(tmp_path: Path) -> None:
    """A finished run resumed from outside runs its short continuation (4.5 s) and ends again;
    with finished runs looked at only every 20 s, most of these fall between two looks, where
    the status reads `completed` both times and only its moved `completed_at` tells. Every
    second completion is emitted, the continuation's messages once, and the finished-runs
    counter says how many runs ended."""
    resumed = [
        finished(k, {"at": f"{10 * 60 + 3 + 7 * k}s", "post": f"Once more, {k}."}) for k in range(6)
    ]
    result = await run_world(
        world(resumed),
        tmp_path,
        speed=10,
        version="v1",
        polling={"linger_interval": "30m", "min_interval": "20s"},
        api={"requests_per_minute": 600},
        rate_limit=600,
        wall_timeout=30.0,
    )
    assert_each_ended_twice(result, 6)
    sample = result.monitor.registry.get_sample_value
    finished_total = {"agent_id": AGENT["id"], "status": "completed"}
    assert sample("duvo_runs_finished_total", finished_total) == 12
    assert_within_budget(result.sim.requests, 600)


@pytest.mark.anyio
async def test_v2_a_retired_run_resumed_and_ended_between_two_sweeps_is_reported(
    tmp_path: Path,
) -> None:
    """v2, finished runs retired (``linger`` 5 s) and followed by sweeps only, 8 s apart. Each
    run is resumed from outside and ends again 4.5 s later: most of these fall between two
    sweeps, which list the run `completed` both times with only its ``updated_at`` moved. That
    is enough: each continuation's messages and second completion are emitted, once."""
    resumed = [
        finished(k, {"at": f"{10 * 60 + 20 + 7 * k}s", "post": f"Once more, {k}."})
        for k in range(6)
    ]
    result = await run_world(
        world(resumed),
        tmp_path,
        speed=10,
        version="v2",
        discover=False,
        polling={
            "linger": "5s",
            "linger_interval": "30m",
            "min_interval": "1s",
            "sweep_interval": "8s",
        },
        wall_timeout=30.0,
    )
    assert_each_ended_twice(result, 6)
    assert_within_budget(result.sim.requests, 300)


@pytest.mark.anyio
async def test_every_run_gets_its_first_look_before_any_gets_a_second(tmp_path: Path) -> None:
    """150 finished runs watched at once on v1: the first look at every one of them (GET run)
    comes before the second look at any, so the last run added is not left waiting behind
    routine polls of the first; the budget is kept."""
    runs = [finished(k) for k in range(150)]
    late = [{"at": "1s", "status": "running"}, {"at": "2s", "status": "completed"}]
    runs.append(run(999, "90s", late))  # keeps the world going while the first looks are made
    result = await run_world(
        world(runs),
        tmp_path,
        speed=10,
        version="v1",
        polling=SLOW_LINGER,
        wall_timeout=30.0,
    )
    watched = {r["id"] for r in runs[:150]}
    looks: dict[str, list[float]] = defaultdict(list)
    for request in result.sim.requests:
        parts = request.path.rstrip("/").split("/")
        if request.method == "GET" and parts[-2] == "runs":
            looks[parts[-1]].append(request.time)
    first_looks = {run_id: times for run_id, times in looks.items() if run_id in watched}
    assert len(first_looks) == 150
    last_first = max(times[0] for times in first_looks.values())
    seconds = [times[1] for times in first_looks.values() if len(times) > 1]
    assert seconds, "the idle budget should have looked at finished runs again"
    assert last_first <= min(seconds)
    assert_within_budget(result.sim.requests, 300)


@pytest.mark.anyio
async def test_pending_runs_that_start_together_are_all_followed(tmp_path: Path) -> None:
    """A wake-up: most runs pending when the daemon starts, starting within seconds of each
    other in bursts. Every start, every message and every ending is emitted once (v1)."""
    runs = [finished(k) for k in range(10)]
    for k in range(14):
        start = 8 + (k * 5) % 15
        timeline = [
            {"at": f"{start}s", "status": "running"},
            *({"at": f"{start + 1 + i}.{(i % 3) * 3}s", "say": f"burst {i}"} for i in range(9)),
            {"at": f"{start + 12}s", "status": "completed"},
        ]
        runs.append(run(100 + k, "0s", timeline))  # pending until its start
    result = await run_world(
        world(runs),
        tmp_path,
        speed=10,
        version="v1",
        api={"requests_per_minute": 600},
        rate_limit=600,
        wall_timeout=30.0,
    )
    s = result.score(transient=3.0)
    assert result.settled, (s.summary(), result.explain_missed(s))
    assert s.perfect_messages, (s.summary(), result.explain_missed(s))
    assert not s.status_missed and not s.final_mismatch, s.summary()
    assert_within_budget(result.sim.requests, 600)


@pytest.mark.anyio
async def test_discovery_with_one_live_run_finds_every_new_run(tmp_path: Path) -> None:
    """v2 discovery when almost nothing is live (no change-detecting sweeps): runs created one
    by one during the run are all discovered and followed to their end."""
    runs = [finished(k) for k in range(3)]
    for k in range(6):
        at = 2 + 4 * k
        runs.append(
            run(
                200 + k,
                f"{at}s",
                [
                    {"at": "1s", "status": "running"},
                    {"at": "2s", "say": f"new run {k} working"},
                    {"at": "3s", "status": "completed"},
                ],
            )
        )
    result = await run_world(
        world(runs),
        tmp_path,
        speed=10,
        version="v2",
        discover=True,
        polling={"linger_interval": "30m"},
        extra_config={"watch": {"discover": {"since": "30d", "interval": "10m"}}},
        wall_timeout=30.0,
    )
    s = result.score(transient=3.0)
    assert result.settled, (s.summary(), result.explain_missed(s))
    assert s.perfect_messages, (s.summary(), result.explain_missed(s))
    assert not s.status_missed, s.summary()
    discovered = {e.envelope["subject"] for e in result.sink.received}
    assert {r["id"] for r in runs[3:]} <= discovered


def busy_world(runs: int, seconds: int) -> Scenario:
    """``runs`` runs, all running from the start and saying something twice a second for
    ``seconds`` seconds: more news than the sustained rate can read, for less than a minute."""
    return world(
        [
            run(
                200 + k,
                "0s",
                [
                    {"at": "1s", "status": "running"},
                    *(
                        {"at": f"{2 + i / 2 + k / 100:.2f}s", "say": f"step {i}"}
                        for i in range(2 * seconds)
                    ),
                    {"at": f"{3 + seconds}s", "status": "completed"},
                ],
            )
            for k in range(runs)
        ]
    )


@pytest.mark.anyio
async def test_a_world_busier_than_the_sustained_rate_is_read_from_the_windows_stock(
    tmp_path: Path,
) -> None:
    """The sliding window is a stock as well as a rate: 12 runs that each say something twice
    a second for 40 s, on a budget of 300 a minute (5 a second, 4.5 after the reserve). While
    the polls find news the daemon spends the window's surplus above the sustained rate, so
    some 20 s after the first looks hold more requests than the budget's rate could ever
    send, and still no 60 s window holds more than the budget; every message arrives once."""
    result = await run_world(
        busy_world(12, 40),
        tmp_path,
        speed=10,
        version="v1",
        api={"requests_per_minute": 300},
        rate_limit=300,
        wall_timeout=30.0,
    )
    s = result.score(transient=3.0)
    assert result.settled, (s.summary(), result.explain_missed(s))
    assert s.perfect_messages, (s.summary(), result.explain_missed(s))
    assert not s.duplicate_event_ids
    assert_within_budget(result.sim.requests, 300)
    times = sorted(r.time for r in result.sim.requests)
    start = times[0]
    after_first_looks = [t - start for t in times if t - start >= 5.0]
    busiest = max(
        sum(1 for t in after_first_looks if at <= t < at + 20.0) for at in after_first_looks
    )
    assert busiest > 20.0 * 300 / 60, f"{busiest} requests in the busiest 20 s"
    # What an operator sees of it: the pace, never below the sustained rate (300 over the
    # window of 60 s and its margin of at least 1 s, less the reserve), at most SPEND_CAP
    # times that.
    pace = result.monitor.registry.get_sample_value("duvo_monitor_api_pace_requests_per_second")
    sustained = result.monitor.budget.sustained
    assert 0.9 * 300 / 71 <= sustained <= 0.9 * 300 / 61
    assert pace is not None and sustained - 1e-9 <= pace <= 4 * sustained + 1e-9
