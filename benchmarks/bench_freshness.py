"""Freshness: how soon a change in Duvo becomes an event, per polling policy, on one scenario.

The reference scenario (issue 4): 100 watched runs, about 10 of them active at any time, a
budget of 300 requests a minute. ``generate_scenario(runs=100, active=20, duration=600)``
gives 80 runs that finished before the daemon started (the quiet part of a watch list) and 20
live runs whose lives overlap so that about 10 are active at once. The live runs are moved
``WARMUP`` simulated seconds later, so that the daemon has read the finished runs' histories
before the live traffic starts; latency is measured on the changes after the daemon started
(all live), misses and duplicates on everything.

Each policy gets the same scenario and seed, one after the other, each with its own simulator,
daemon and state:

* ``fixed``: every run every ``fixed_interval`` (10 s), both endpoints, no local budget (the
  loop Duvo's docs suggest);
* ``round_robin``: every live run in turn, both endpoints, within the budget;
* ``adaptive``: duvo-monitor's square-root scheduler, v2 sweeps on (the default);
* ``adaptive_nosweep``: the same with ``polling.sweep: off``;
* ``adaptive_webhooks``: the default with Duvo's webhooks delivered to the daemon's receiver
  (only when ``duvo_monitor/control.py`` exists).

The square-root-rule bound is computed from the truth log: each live run's message rate λᵢ is
its messages per active second (status pending..waiting); at each message's arrival the runs
active then give ``(Σ√λᵢ)² / (2·B·Σλᵢ)``, the least mean delay any allocation of B message
polls a second could reach then; the bound is that figure's mean over the messages. B is given
two ways: the whole budget (300/60 = 5 requests/s, the strict reading) and the message polls the
adaptive policy actually spent per second while live runs were active.

Run: ``python -m benchmarks freshness [--quick] [--speed X] [--only adaptive,round_robin]``.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import importlib.util
import json
import math
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from benchmarks.runner import (
    Trial,
    endpoint_of,
    fmt,
    free_port,
    observable,
    quiet_logs,
    run_trial,
    save,
)
from duvo_monitor.simulator import Scenario, TruthEntry, generate_scenario
from duvo_monitor.simulator.model import ACTIVE
from duvo_monitor.simulator.scoring import percentile, score

BUDGET = 300
SEED = 4
RUNS = 100
LIVE = 20
DURATION = 600.0
WARMUP = 120.0
SPEED = 10.0
MESSAGE_RATE = 0.5
HUMAN_REQUEST_RATE = 0.3
WEBHOOK_PATH = "hooks/duvo-benchmark-receiver"

POLICIES: dict[str, dict[str, Any]] = {
    "fixed": {"policy": "fixed"},
    "round_robin": {"policy": "round_robin"},
    "adaptive": {},
    "adaptive_nosweep": {"sweep": "off"},
    "adaptive_webhooks": {},
}
LABELS = {
    "fixed": "(a) fixed 10 s, no budget (Duvo's docs)",
    "round_robin": "(b) round-robin within the budget",
    "adaptive": "(c) adaptive, sweeps on (default)",
    "adaptive_nosweep": "(d) adaptive, sweeps off",
    "adaptive_webhooks": "(e) adaptive + Duvo webhooks",
}


def reference_scenario(
    *,
    seed: int = SEED,
    live: int = LIVE,
    duration: float = DURATION,
    warmup: float = WARMUP,
    message_rate: float = MESSAGE_RATE,
) -> Scenario:
    """100 runs: the finished ones exist when the daemon starts, the live ones ``warmup`` later."""
    base = generate_scenario(
        seed=seed,
        runs=RUNS,
        active=live,
        duration=duration,
        message_rate=message_rate,
        human_request_rate=HUMAN_REQUEST_RATE,
    )
    runs = tuple(
        dataclasses.replace(spec, start=spec.start + warmup) if spec.start >= 0 else spec
        for spec in base.runs
    )
    return dataclasses.replace(base, runs=runs)


def with_webhooks(scenario: Scenario, url: str) -> Scenario:
    return dataclasses.replace(
        scenario,
        runs=tuple(dataclasses.replace(spec, webhook_url=url) for spec in scenario.runs),
    )


# -- the truth: activity, true rates, the bound --------------------------------------------------


def active_intervals(truth: Sequence[TruthEntry], since: float) -> dict[str, list[list[float]]]:
    """Per run, the spans (after ``since``) in which its status was pending..waiting."""
    spans: dict[str, list[list[float]]] = defaultdict(list)
    current: dict[str, bool] = {}
    end = max((t.time for t in truth), default=since)
    for t in truth:
        if t.kind != "status" and t.kind != "run_lost":
            continue
        now_active = t.kind == "status" and t.status_to in ACTIVE
        if now_active and not current.get(t.run_id, False):
            spans[t.run_id].append([max(t.time, since), end])
        elif not now_active and current.get(t.run_id, False):
            spans[t.run_id][-1][1] = max(t.time, since)
        current[t.run_id] = now_active
    return {run: [s for s in ss if s[1] > s[0]] for run, ss in spans.items()}


def true_rates(truth: Sequence[TruthEntry], since: float) -> tuple[dict[str, float], Any]:
    """λᵢ: messages per active second for each run active after ``since``; and the spans."""
    spans = active_intervals(truth, since)
    counts: dict[str, int] = defaultdict(int)
    for t in truth:
        if t.kind == "message_created" and t.time >= since:
            counts[t.run_id] += 1
    rates = {}
    for run, ss in spans.items():
        seconds = sum(b - a for a, b in ss)
        if seconds > 0 and counts[run] > 0:
            rates[run] = counts[run] / seconds
    return rates, spans


def concurrency(spans: dict[str, list[list[float]]]) -> dict[str, float]:
    """Time-averaged and largest number of active runs over the span of activity."""
    edges = sorted((t, d) for ss in spans.values() for a, b in ss for t, d in ((a, 1), (b, -1)))
    if not edges:
        return {"mean": 0.0, "max": 0.0, "seconds": 0.0}
    level = peak = 0
    area = 0.0
    last = edges[0][0]
    for t, d in edges:
        area += level * (t - last)
        level += d
        peak = max(peak, level)
        last = t
    seconds = edges[-1][0] - edges[0][0]
    return {"mean": area / seconds if seconds else 0.0, "max": float(peak), "seconds": seconds}


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """One live message: when, how many runs were active then, and its run's share of polls."""

    message_id: str
    time: float
    active: int
    period_factor: float  # Σ√λ / √λᵢ over the runs active then: the period is this / B


def arrivals(
    truth: Sequence[TruthEntry],
    rates: dict[str, float],
    spans: dict[str, list[list[float]]],
    since: float,
) -> list[Arrival]:
    out = []
    for t in truth:
        if t.kind != "message_created" or t.time < since or t.run_id not in rates:
            continue
        active = {
            run: lam
            for run, lam in rates.items()
            if any(a <= t.time <= b for a, b in spans.get(run, ()))
        }
        active[t.run_id] = rates[t.run_id]
        root = sum(math.sqrt(lam) for lam in active.values())
        out.append(
            Arrival(
                message_id=str(t.message_id),
                time=t.time,
                active=len(active),
                period_factor=root / math.sqrt(rates[t.run_id]),
            )
        )
    return out


def sqrt_bound(messages: Sequence[Arrival], per_second: float) -> dict[str, float] | None:
    """What the square-root rule allows with ``per_second`` message polls, message by message.

    At each message's arrival, the runs active then share the polls in proportion to √λ, so the
    message's run is polled every ``Tᵢ = Σ√λ / (B·√λᵢ)`` and the message waits U[0, Tᵢ]:
    ``mean`` is the average of Tᵢ/2 (the formula (Σ√λ)²/(2B·Σλ), weighted by where messages
    actually fell) and ``p95`` the 95th percentile of that mixture of uniform waits, i.e. what
    an oracle that knows every λᵢ and polls each run on a perfect period would achieve.
    """
    periods = [m.period_factor / per_second for m in messages]
    if not periods:
        return None

    def share_within(x: float) -> float:
        return statistics.fmean(min(1.0, x / period) for period in periods)

    lo, hi = 0.0, max(periods)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if share_within(mid) < 0.95 else (lo, mid)
    return {"mean": statistics.fmean(periods) / 2, "p95": hi}


def first_seen(trial: Trial) -> dict[str, float]:
    """When each message id first reached the sink."""
    seen: dict[str, float] = {}
    for e in trial.sink.received:
        if str(e.envelope["type"]).endswith("message.created"):
            seen.setdefault(str(e.envelope["data"]["message"]["id"]), e.at)
    return seen


def by_concurrency(
    trial: Trial, messages: Sequence[Arrival], split: int = 10
) -> list[dict[str, Any]]:
    """Message latency, and the bound (B = whole budget), for quiet and busy moments."""
    seen = first_seen(trial)
    out = []
    for label, busy in ((f"<= {split} runs active", False), (f"> {split} runs active", True)):
        group = [m for m in messages if (m.active > split) == busy]
        latency = [seen[m.message_id] - m.time for m in group if m.message_id in seen]
        bound = sqrt_bound(group, BUDGET / 60)
        out.append(
            {
                "when": label,
                "messages": len(group),
                "p50": percentile(latency, 50),
                "p95": percentile(latency, 95),
                "mean": statistics.fmean(latency) if latency else None,
                "bound_mean": None if bound is None else bound["mean"],
                "bound_p95": None if bound is None else bound["p95"],
            }
        )
    return out


def detection_path(trial: Trial, full: int = BUDGET - 10) -> dict[str, Any]:
    """Where a live message's latency goes, from the request log and the sink alone.

    ``next sweep``: from the message to the next list-runs request (the first chance to see
    ``updated_at`` move); ``to request``: from the message to the GET messages of its run that
    returned it (the last one that reached the simulator before the event came out);
    ``to emission``: from that request to the sink. Also: latency of messages that came while
    the budget was full (``full`` or more requests in the 60 s before) and while it was not,
    and the share of requests sent while it was full.
    """
    since = trial.started_at
    seen = first_seen(trial)
    times = sorted(r.time for r in trial.sim.requests)
    sweeps = sorted(r.time for r in trial.sim.requests if endpoint_of(r.path) == "list")
    polls: dict[str, list[float]] = defaultdict(list)
    for r in trial.sim.requests:
        if endpoint_of(r.path) == "messages":
            polls[r.path.strip("/").split("/")[-2]].append(r.time)

    def busy(at: float) -> bool:
        return bisect.bisect_right(times, at) - bisect.bisect_left(times, at - 60) >= full

    parts: dict[str, list[float]] = defaultdict(list)
    for t in trial.sim.truth:
        if t.kind != "message_created" or t.time < since or t.message_id not in seen:
            continue
        out = seen[str(t.message_id)]
        parts["budget full" if busy(t.time) else "budget not full"].append(out - t.time)
        i = bisect.bisect_right(sweeps, t.time)
        if i < len(sweeps):
            parts["next sweep"].append(sweeps[i] - t.time)
        run_polls = polls.get(t.run_id, [])
        k = bisect.bisect_right(run_polls, out) - 1
        if k >= 0 and run_polls[k] >= t.time:
            parts["to request"].append(run_polls[k] - t.time)
            parts["to emission"].append(out - run_polls[k])
    summary: dict[str, Any] = {
        name: {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95)}
        for name, v in parts.items()
    }
    live = [x for x in times if x >= since]
    summary["requests_sent_with_budget_full"] = (
        sum(1 for x in live if busy(x)) / len(live) if live else None
    )
    return summary


PUSHED = frozenset({"waiting", "completed", "failed", "interrupted"})  # Duvo sends a webhook


def status_by_push(trial: Trial, transient: float = 2.0) -> dict[str, dict[str, Any]]:
    """Status latency for the changes Duvo pushes a webhook for, and for the others.

    Matched as the scorer does: a change that lasted ``transient`` seconds or more, against the
    first unused event for the same run and status that came after it (less half a second).
    """
    since = trial.started_at
    events: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for e in trial.sink.received:
        data = e.envelope["data"]
        if str(e.envelope["type"]).startswith("ai.duvo.run.") and "to" in data:
            events[str(e.envelope["subject"])].append((e.at, str(data["to"])))
    changes: dict[str, list[TruthEntry]] = defaultdict(list)
    for t in trial.sim.truth:
        if t.kind == "status":
            changes[t.run_id].append(t)
    groups: dict[str, list[float]] = {"pushed": [], "other": []}
    for run_id, runs_changes in changes.items():
        used: set[int] = set()
        seen = sorted(events.get(run_id, []))
        for i, c in enumerate(runs_changes):
            until = runs_changes[i + 1].time if i + 1 < len(runs_changes) else math.inf
            if c.time < since or until - c.time < transient:
                continue
            k = next(
                (
                    k
                    for k, (at, status) in enumerate(seen)
                    if k not in used and status == c.status_to and at >= c.time - 0.5
                ),
                None,
            )
            if k is None:
                continue
            used.add(k)
            groups["pushed" if c.status_to in PUSHED else "other"].append(seen[k][0] - c.time)
    return {
        name: {
            "changes": len(values),
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
        }
        for name, values in groups.items()
    }


# -- one policy ----------------------------------------------------------------------------------


def summarize(name: str, trial: Trial) -> dict[str, Any]:
    truth = trial.sim.truth
    since = trial.started_at
    runs = {r.id for r in trial.sim.world.runs()}
    full = score(observable(truth, since), trial.sink.received, runs=runs, start=since)
    live = score([t for t in truth if t.time >= since], trial.sink.received, runs=runs, start=since)
    requests = trial.requests()
    minutes = (trial.ended_at - trial.started_at) / 60
    messages = live.message_latency
    return {
        "policy": name,
        "settled": trial.settled,
        "simulated_seconds": round(trial.ended_at - trial.started_at, 1),
        "wall_seconds": round(trial.wall_seconds, 1),
        "message_p50": percentile(messages, 50),
        "message_p95": percentile(messages, 95),
        "message_mean": statistics.fmean(messages) if messages else None,
        "message_max": max(messages, default=None),
        "status_p50": percentile(live.status_latency, 50),
        "status_p95": percentile(live.status_latency, 95),
        "status_mean": statistics.fmean(live.status_latency) if live.status_latency else None,
        "messages_measured": len(messages),
        "status_changes_measured": len(live.status_latency),
        "requests": dict(requests),
        "requests_by_kind": {
            f"{kind} {endpoint}": n
            for (kind, endpoint), n in sorted(trial.monitor.budget.sent_by.items())
        },
        "requests_per_minute": requests["total"] / minutes if minutes else None,
        "max_requests_in_60s": trial.max_per_window(),
        "rate_limited_429": requests["429"],
        "misses": {
            "messages": len(full.messages_missed),
            "status": len(full.status_missed),
            "status_transient": len(full.status_missed_transient),
            "human_requests": len(full.requests_missed),
            "resolved": len(full.resolved_missed),
            "lost": len(full.lost_missed),
            "final_status": len(full.final_mismatch),
        },
        "duplicates": {
            "messages": len(full.messages_duplicated),
            "event_ids": len(full.duplicate_event_ids),
        },
        "invented": {
            "messages": len(full.messages_invented),
            "status": len(full.status_invented),
        },
        "score": full.summary(),
        "webhooks": _webhooks(trial),
        "status_by_push": status_by_push(trial),
        "detection_path": detection_path(trial),
    }


def _webhooks(trial: Trial) -> dict[str, int]:
    """Deliveries about live runs, and how many the receiver accepted (the finished runs' ones
    fire at the simulator's first tick, before the daemon listens, and are not counted)."""
    live = {r.id for r in trial.sim.world.runs() if r.created_at >= trial.started_at}
    sent = [d for d in trial.sim.deliveries if d.run_id in live]
    return {"sent": len(sent), "accepted": sum(1 for d in sent if d.status == 202)}


def misses(row: dict[str, Any]) -> int:
    m = row["misses"]
    return int(m["messages"] + m["status"] + m["human_requests"] + m["resolved"] + m["lost"])


def duplicates(row: dict[str, Any]) -> int:
    return int(row["duplicates"]["messages"] + row["duplicates"]["event_ids"])


async def run_policy(
    name: str,
    scenario: Scenario,
    *,
    speed: float,
    wall_timeout: float,
    knobs: dict[str, Any] | None = None,
) -> Trial:
    polling = dict(POLICIES[name])
    if name.startswith("adaptive"):
        polling = {**(knobs or {}), **polling}
    with tempfile.TemporaryDirectory(prefix=f"bench-freshness-{name}-") as tmp:
        if name == "adaptive_webhooks":
            return await _run_with_webhooks(scenario, Path(tmp), speed, polling, wall_timeout)
        return await run_trial(
            scenario,
            state_dir=Path(tmp),
            speed=speed,
            polling=polling,
            rate_limit=BUDGET,
            wall_timeout=wall_timeout,
        )


async def _run_with_webhooks(
    scenario: Scenario, tmp: Path, speed: float, polling: dict[str, Any], wall_timeout: float
) -> Trial:
    """Every run posts Duvo's webhooks to the daemon's receiver on ``control.listen``."""
    port = free_port()
    return await run_trial(
        with_webhooks(scenario, f"http://127.0.0.1:{port}/{WEBHOOK_PATH}"),
        state_dir=tmp,
        speed=speed,
        polling=polling,
        rate_limit=BUDGET,
        wall_timeout=wall_timeout,
        extra_config={"control": {"listen": f"127.0.0.1:{port}", "webhook_path": WEBHOOK_PATH}},
        control_token="bench-control-token",
    )


def webhooks_available() -> bool:
    return importlib.util.find_spec("duvo_monitor.control") is not None


# -- the report ----------------------------------------------------------------------------------


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| policy | msg p50 | msg p95 | msg mean | status p50 | status p95 | requests "
        "| req/min | max in 60 s | 429s | misses | duplicates |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = [
        f"| {LABELS[r['policy']]} | {fmt(r['message_p50'])} | {fmt(r['message_p95'])} "
        f"| {fmt(r['message_mean'])} | {fmt(r['status_p50'])} | {fmt(r['status_p95'])} "
        f"| {r['requests'].get('total', 0)} | {fmt(r['requests_per_minute'], 0)} "
        f"| {r['max_requests_in_60s']} | {r['rate_limited_429']} | {misses(r)} "
        f"| {duplicates(r)} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def verdicts(rows: dict[str, dict[str, Any]], bound: dict[str, Any]) -> list[tuple[str, bool]]:
    """The issue's targets, for the adaptive policy (sweeps on, the default)."""
    out: list[tuple[str, bool]] = []
    a = rows.get("adaptive")
    if a is None or a["message_p95"] is None:
        return out
    p95, mean = a["message_p95"], a["message_mean"]
    out.append(("no misses", misses(a) == 0))
    out.append(("no duplicates", duplicates(a) == 0))
    out.append(("no 429s", a["rate_limited_429"] == 0))
    rr = rows.get("round_robin")
    if rr is not None and rr["message_p95"]:
        quarter = rr["message_p95"] / 4
        out.append(
            (
                f"message p95 {p95:.1f} s <= 1/4 of round-robin's {rr['message_p95']:.1f} s "
                f"(= {quarter:.1f} s)",
                p95 <= quarter,
            )
        )
    for key, label in (("whole_budget", "B = 5 req/s"), ("message_spend", "B = message polls")):
        value = bound.get(key)
        if value is None:
            continue
        out.append(
            (
                f"message p95 {p95:.1f} s <= 1.5 x bound mean {value['mean']:.2f} s "
                f"(= {1.5 * value['mean']:.2f} s; {label}; the literal target)",
                p95 <= 1.5 * value["mean"],
            )
        )
        out.append(
            (
                f"message p95 {p95:.1f} s <= 1.5 x bound p95 {value['p95']:.2f} s "
                f"(= {1.5 * value['p95']:.2f} s; {label})",
                p95 <= 1.5 * value["p95"],
            )
        )
        out.append(
            (
                f"message mean {mean:.2f} s <= 1.5 x bound mean {value['mean']:.2f} s "
                f"(= {1.5 * value['mean']:.2f} s; {label})",
                mean <= 1.5 * value["mean"],
            )
        )
    return out


async def measure(
    *,
    speed: float,
    quick: bool,
    only: Sequence[str] | None,
    seed: int = SEED,
    knobs: dict[str, Any] | None = None,
    message_rate: float = MESSAGE_RATE,
) -> dict[str, Any]:
    duration = 300.0 if quick else DURATION
    warmup = 60.0 if quick else WARMUP
    scenario = reference_scenario(
        seed=seed, duration=duration, warmup=warmup, message_rate=message_rate
    )
    names = list(only or POLICIES)
    notes: list[str] = []
    if "adaptive_webhooks" in names and not webhooks_available():
        names.remove("adaptive_webhooks")
        notes.append("adaptive_webhooks skipped: duvo_monitor/control.py does not exist yet")
    wall_timeout = 3 * (duration + warmup) / speed + 60
    rows: dict[str, dict[str, Any]] = {}
    trials: dict[str, Trial] = {}
    for name in names:
        trial = await run_policy(
            name, scenario, speed=speed, wall_timeout=wall_timeout, knobs=knobs
        )
        trials[name] = trial
        rows[name] = summarize(name, trial)
        r = rows[name]
        print(
            f"  {name}: {r['wall_seconds']} s wall, msg p95 {fmt(r['message_p95'])} s, "
            f"{r['requests'].get('total', 0)} requests, settled={r['settled']}",
            flush=True,
        )
    reference = trials.get("adaptive") or next(iter(trials.values()))
    truth = reference.sim.truth
    since = reference.started_at
    rates, spans = true_rates(truth, since)
    messages = arrivals(truth, rates, spans, since)
    busy = concurrency(spans)
    bound: dict[str, Any] = {
        "runs_with_messages": len(rates),
        "lambda_mean": statistics.fmean(rates.values()) if rates else None,
        "lambda_min": min(rates.values(), default=None),
        "lambda_max": max(rates.values(), default=None),
        "active_mean": busy["mean"],
        "active_max": busy["max"],
        "active_span_seconds": busy["seconds"],
        "whole_budget_per_second": BUDGET / 60,
        "whole_budget": sqrt_bound(messages, BUDGET / 60),
    }
    if "adaptive" in trials:
        spent = _message_polls_per_second(trials["adaptive"], spans)
        bound["message_polls_per_second"] = spent
        bound["message_spend"] = sqrt_bound(messages, spent) if spent else None
        bound["adaptive_by_concurrency"] = by_concurrency(trials["adaptive"], messages)
    return {
        "scenario": {
            "generate_scenario": {
                "seed": seed,
                "runs": RUNS,
                "active": LIVE,
                "duration": duration,
                "message_rate": message_rate,
                "human_request_rate": HUMAN_REQUEST_RATE,
            },
            "live_runs_shifted_by": warmup,
            "messages_after_start": sum(
                1 for t in truth if t.kind == "message_created" and t.time >= since
            ),
            "status_changes_after_start": sum(
                1 for t in truth if t.kind == "status" and t.time >= since
            ),
            "budget_per_minute": BUDGET,
        },
        "speed": speed,
        "adaptive_polling_overrides": knobs or {},
        "rows": rows,
        "bound": bound,
        "verdicts": [{"target": t, "met": ok} for t, ok in verdicts(rows, bound)],
        "notes": notes,
    }


def _message_polls_per_second(trial: Trial, spans: dict[str, list[list[float]]]) -> float | None:
    edges = [t for ss in spans.values() for s in ss for t in s]
    if not edges:
        return None
    lo, hi = min(edges), max(edges)
    polls = sum(
        1 for r in trial.sim.requests if r.path.endswith("/messages") and lo <= r.time <= hi
    )
    return polls / (hi - lo) if hi > lo else None


def report(result: dict[str, Any]) -> str:
    rows = result["rows"]
    b = result["bound"]
    bounds = [
        f"| {label} | {fmt(b[key]['mean'], 2)} | {fmt(b[key]['p95'], 2)} |"
        for key, label in (
            ("whole_budget", f"B = whole budget, {b['whole_budget_per_second']:.1f} req/s"),
            (
                "message_spend",
                f"B = adaptive's message polls, {fmt(b.get('message_polls_per_second'), 2)} req/s",
            ),
        )
        if b.get(key)
    ]
    lines = [
        f"Freshness, speed x{result['speed']:g}; latencies in simulated seconds "
        "(truth log -> sink).\n",
        table([rows[n] for n in POLICIES if n in rows]),
        f"Active runs: mean {b['active_mean']:.1f}, max {b['active_max']:.0f} over "
        f"{b['active_span_seconds']:.0f} s; true λ per live run "
        f"{fmt(b['lambda_min'], 2)}..{fmt(b['lambda_max'], 2)} messages/s "
        f"(mean {fmt(b['lambda_mean'], 2)}).\n",
        "| square-root-rule bound | mean (s) | p95 (s) |\n| --- | ---: | ---: |",
        *bounds,
        "",
        *_concurrency_lines(b.get("adaptive_by_concurrency")),
        *_push_lines(rows),
        *_path_lines(rows),
        "| target (adaptive, sweeps on) | met |\n| --- | --- |",
        *[f"| {v['target']} | {'yes' if v['met'] else 'NO'} |" for v in result["verdicts"]],
    ]
    lines += [f"\nNote: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _concurrency_lines(groups: Sequence[dict[str, Any]] | None) -> list[str]:
    if not groups:
        return []
    return [
        "Adaptive (c) message latency by how many runs were active when the message came, "
        "against the bound (B = whole budget) for the same messages:\n",
        "| when | messages | p50 | p95 | mean | bound mean | bound p95 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {g['when']} | {g['messages']} | {fmt(g['p50'])} | {fmt(g['p95'])} "
            f"| {fmt(g['mean'], 2)} | {fmt(g['bound_mean'], 2)} | {fmt(g['bound_p95'], 2)} |"
            for g in groups
        ],
        "",
    ]


def _push_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    names = [n for n in ("adaptive", "adaptive_webhooks") if n in rows]
    if len(names) < 2:
        return []
    lines = [
        "Status latency for the changes Duvo sends a webhook for (waiting, completed, failed, "
        "interrupted) and for the others:\n",
        "| policy | pushed: changes | p50 | p95 | other: changes | p50 | p95 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in names:
        p, o = rows[n]["status_by_push"]["pushed"], rows[n]["status_by_push"]["other"]
        lines.append(
            f"| {LABELS[n]} | {p['changes']} | {fmt(p['p50'])} | {fmt(p['p95'])} "
            f"| {o['changes']} | {fmt(o['p50'])} | {fmt(o['p95'])} |"
        )
    hooks = rows["adaptive_webhooks"]["webhooks"]
    lines += [
        f"\nWebhooks about live runs: {hooks['sent']} sent, {hooks['accepted']} accepted.",
        "",
    ]
    return lines


def _path_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    names = [n for n in ("adaptive", "adaptive_nosweep", "adaptive_webhooks") if n in rows]
    if not names:
        return []
    keys = ("next sweep", "to request", "to emission", "budget not full", "budget full")
    lines = [
        "Where the adaptive's message latency goes (p50 / p95, simulated s): from a message to "
        "the next sweep, to the GET messages that returned it, from there to the sink; latency "
        f"of messages that came while the budget was full (>= {BUDGET - 10} requests in the "
        "60 s before) or not; share of requests sent while it was full:\n",
        "| policy | " + " | ".join(keys) + " | sent with budget full |",
        "| --- |" + " ---: |" * (len(keys) + 1),
    ]
    for n in names:
        path = rows[n]["detection_path"]
        cells = [
            f"{fmt(path[k]['p50'])} / {fmt(path[k]['p95'])}" if k in path else "n/a" for k in keys
        ]
        share = path["requests_sent_with_budget_full"]
        lines.append(
            f"| {LABELS[n]} | " + " | ".join(cells) + f" | {fmt(100 * (share or 0), 0)} % |"
        )
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks freshness")
    parser.add_argument("--quick", action="store_true", help="a shorter scenario (smoke run)")
    parser.add_argument("--speed", type=float, default=SPEED)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--only", default="", help="comma-separated policies")
    parser.add_argument("--name", default="freshness", help="results file name")
    parser.add_argument(
        "--message-rate",
        type=float,
        default=MESSAGE_RATE,
        help="messages per second of an active run (the reference scenario: 0.5)",
    )
    parser.add_argument(
        "--polling",
        default="{}",
        help="polling.* settings for the adaptive rows, as JSON, e.g. '{\"reserve\": 0}'",
    )
    args = parser.parse_args(argv)
    quiet_logs()
    only = [p for p in args.only.split(",") if p] or None
    knobs = json.loads(args.polling)
    result = anyio.run(
        lambda: measure(
            speed=args.speed,
            quick=args.quick,
            only=only,
            seed=args.seed,
            knobs=knobs,
            message_rate=args.message_rate,
        )
    )
    text = report(result)
    print(text)
    save(f"{args.name}-quick" if args.quick else args.name, result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
