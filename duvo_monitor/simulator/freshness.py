"""Freshness scoring of one contender in one world run: when each change reached it, what it
missed, how soon it looked at each run and how much of its budget it spent while news waited.
Used by the benchmarks (``benchmarks/worlds.py``); pure, tested without a loop.

Unlike :mod:`duvo_monitor.simulator.scoring` (the tests' scorer, which clamps), a delivery is
matched to its change by identity (message id, request id, a lost run's id) and a latency below
zero raises :class:`ScoringError`: it means the clocks or the matching are wrong, and a benchmark
that printed it as 0 would hide that. A status event is matched to the latest change of its run
to that status that was visible when the event arrived (a poller reports what it saw).

Times come in simulated seconds (the simulator's truth and request logs, and the moments the
benchmark read each delivery on the simulator's clock); every figure goes out in *report
seconds*: ``scale`` simulated seconds each. A benchmark whose contenders run on a scaled clock
reports simulated seconds (``scale=1``); one whose contenders run on the real clock while the
world's time runs ``speed`` times faster reports real seconds (``scale=speed``). The budget is in
requests per 60 report seconds: the minute the contender's own budget counts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from duvo_monitor.simulator.model import ACTIVE, TERMINAL, RequestLogEntry, TruthEntry
from duvo_monitor.simulator.scoring import Emitted, percentile

PREFIX = "ai.duvo."
TRANSIENT = 2.0  # report seconds: a status superseded sooner may be missed by any poller
MISS_KINDS = ("messages", "statuses", "human_requests", "resolved", "lost")


class ScoringError(ValueError):
    """The figures cannot be right (a change delivered before it happened)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Contest:
    """What one contender was asked to watch, and the limits it ran under.

    ``added``: run id -> simulated time the contender was told of it (or, when it discovers runs
    itself, when the run was created). ``start``/``end``: simulated times of the contender's start
    and of the end of the run.
    """

    start: float
    end: float
    added: Mapping[str, float]
    budget: int  # requests per 60 report seconds
    scale: float = 1.0  # simulated seconds per report second
    first_look_requests: int = 2  # GET run + GET messages


@dataclass(slots=True, kw_only=True)
class Freshness:
    """One contender's figures; latencies in report seconds."""

    message_latency: list[float] = field(default_factory=list)
    status_latency: list[float] = field(default_factory=list)
    resume_latency: list[float] = field(default_factory=list)
    deletion_latency: list[float] = field(default_factory=list)
    discovery_latency: list[float] = field(default_factory=list)
    first_look: dict[str, float | None] = field(default_factory=dict)
    first_look_bound: dict[str, float] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MISS_KINDS, 0))
    requests: int = 0
    due_seconds: int = 0  # report seconds in which some change was still undelivered
    requests_while_due: int = 0
    max_in_60s: int = 0
    budget_per_second: float = 0.0  # requests a report second

    @property
    def missed(self) -> int:
        return sum(self.misses.values())

    @property
    def utilization_while_due(self) -> float | None:
        """Requests sent over the seconds when news waited, as a share of the budget then."""
        if self.due_seconds == 0 or self.budget_per_second <= 0:
            return None
        return self.requests_while_due / (self.due_seconds * self.budget_per_second)

    @property
    def first_look_late(self) -> list[str]:
        """Runs looked at later than their bound, or never."""
        return sorted(
            run
            for run, seen in self.first_look.items()
            if seen is None or seen > self.first_look_bound[run]
        )

    def summary(self) -> dict[str, Any]:
        looks = [v for v in self.first_look.values() if v is not None]
        return {
            "message_p50": percentile(self.message_latency, 50),
            "message_p95": percentile(self.message_latency, 95),
            "messages": len(self.message_latency),
            "status_p95": percentile(self.status_latency, 95),
            "resume_p95": percentile(self.resume_latency, 95),
            "resumes": len(self.resume_latency),
            "deletion_p95": percentile(self.deletion_latency, 95),
            "deletions": len(self.deletion_latency),
            "discovery_p95": percentile(self.discovery_latency, 95),
            "discovered": len(self.discovery_latency),
            "first_look_max": max(looks, default=None),
            "first_look_bound_max": max(self.first_look_bound.values(), default=None),
            "first_look_late": len(self.first_look_late),
            "misses": self.missed,
            "misses_by_kind": dict(self.misses),
            "requests": self.requests,
            "utilization_while_due": self.utilization_while_due,
            "due_seconds": self.due_seconds,
            "max_in_60s": self.max_in_60s,
        }


def observable(truth: Sequence[TruthEntry], since: float) -> list[TruthEntry]:
    """The changes a contender started at ``since`` could have seen: not the messages and
    statuses of runs deleted before then (their loss stays), nor human requests opened *and*
    resolved before then."""
    gone = {t.run_id for t in truth if t.kind == "run_lost" and t.time < since}
    resolved = {
        t.request_id for t in truth if t.kind == "human_request_resolved" and t.time < since
    }
    return [
        t
        for t in truth
        if not (t.run_id in gone and t.kind != "run_lost")
        and not (t.kind.startswith("human_request") and t.request_id in resolved)
    ]


def freshness(
    truth: Sequence[TruthEntry],
    emitted: Sequence[Emitted],
    requests: Sequence[RequestLogEntry],
    contest: Contest,
) -> Freshness:
    """Score one contender: ``emitted`` what reached it and when, ``requests`` the requests its
    key sent (the simulator's request log, filtered by ``key_id``)."""
    c = contest
    out = Freshness(budget_per_second=c.budget / 60)
    changes = [t for t in observable(truth, c.start) if t.run_id in c.added and t.time <= c.end]
    delivered = _deliveries(changes, emitted, c)
    # A change that happened before the start waits from the start.
    for i, t in enumerate(changes):
        at = delivered.get(i)
        if t.kind == "status" and _superseded(changes, i, c):
            continue
        if at is None:
            out.misses[_miss_kind(t)] += 1
            continue
        latency = (at - max(t.time, c.start)) / c.scale
        if latency < 0:
            raise ScoringError(
                f"{t.kind} of run {t.run_id} delivered {-latency:.3f} s before it happened"
            )
        if t.time < c.start:
            continue  # the backlog: counted for misses, not for latency
        if t.kind == "message_created":
            out.message_latency.append(latency)
        elif t.kind == "status":
            out.status_latency.append(latency)
        elif t.kind == "run_lost":
            out.deletion_latency.append(latency)
    _resumes(changes, delivered, c, out)
    _discovery(changes, emitted, c, out)
    deleted = {t.run_id: t.time for t in truth if t.kind == "run_lost"}
    _first_looks(requests, c, out, deleted)
    _budget(changes, delivered, requests, c, out)
    return out


def _deliveries(
    changes: Sequence[TruthEntry], emitted: Sequence[Emitted], c: Contest
) -> dict[int, float]:
    """Index of each change in ``changes`` -> when it first reached the contender."""
    by_key: dict[tuple[str, str], int] = {}
    statuses: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, t in enumerate(changes):
        if t.kind == "message_created":
            by_key[("message", str(t.message_id))] = i
        elif t.kind == "human_request_opened":
            by_key[("opened", str(t.request_id))] = i
        elif t.kind == "human_request_resolved":
            by_key[("resolved", str(t.request_id))] = i
        elif t.kind == "run_lost":
            by_key.setdefault(("lost", t.run_id), i)
        elif t.kind == "status":
            statuses[(t.run_id, str(t.status_to))].append(i)
    out: dict[int, float] = {}
    for e in sorted(emitted, key=lambda e: e.at):
        if e.at > c.end:
            continue
        kind = str(e.envelope["type"]).removeprefix(PREFIX)
        data = e.envelope["data"]
        subject = str(e.envelope.get("subject"))
        hit: int | None
        if kind == "message.created":
            hit = by_key.get(("message", str(data["message"]["id"])))
        elif kind == "human_request.opened":
            hit = by_key.get(("opened", str(data["request"]["id"])))
        elif kind == "human_request.resolved":
            hit = by_key.get(("resolved", str(data["request_id"])))
        elif kind == "run.lost":
            hit = by_key.get(("lost", subject))
        elif kind.startswith("run.") and "to" in data:
            seen = [
                k for k in statuses.get((subject, str(data["to"])), ()) if changes[k].time <= e.at
            ]
            hit = seen[-1] if seen else None
        else:
            hit = None
        if hit is not None:
            out.setdefault(hit, e.at)
    return out


def _superseded(changes: Sequence[TruthEntry], i: int, c: Contest) -> bool:
    """A status change no poller need see: superseded before the start, or within TRANSIENT."""
    t = changes[i]
    nxt = next(
        (u for u in changes[i + 1 :] if u.run_id == t.run_id and u.kind in ("status", "run_lost")),
        None,
    )
    if nxt is None:
        return False
    return nxt.time <= c.start or (nxt.time - t.time) / c.scale < TRANSIENT


def _miss_kind(t: TruthEntry) -> str:
    return {
        "message_created": "messages",
        "status": "statuses",
        "human_request_opened": "human_requests",
        "human_request_resolved": "resolved",
        "run_lost": "lost",
    }.get(t.kind, "messages")


def _resumes(
    changes: Sequence[TruthEntry], delivered: Mapping[int, float], c: Contest, out: Freshness
) -> None:
    """A finished run resumed after the start: from the resume to the first delivery of any
    change of that run made at that moment (the posted message, the new status)."""
    for t in changes:
        if not (
            t.kind == "status"
            and t.time >= c.start
            and t.status_from in TERMINAL
            and t.status_to in ACTIVE
        ):
            continue
        times = [
            at
            for k, at in delivered.items()
            if changes[k].run_id == t.run_id and abs(changes[k].time - t.time) < 1e-6
        ]
        if times:
            out.resume_latency.append((min(times) - t.time) / c.scale)


def _discovery(
    changes: Sequence[TruthEntry], emitted: Sequence[Emitted], c: Contest, out: Freshness
) -> None:
    """Runs created after the start: from creation to the first event about the run."""
    first: dict[str, float] = {}
    for e in emitted:
        subject = str(e.envelope.get("subject"))
        first[subject] = min(e.at, first.get(subject, math.inf))
    for t in changes:
        if t.kind == "status" and t.status_from is None and t.time >= c.start:
            at = first.get(t.run_id)
            if at is None:
                continue  # counted as misses of its changes
            latency = (at - t.time) / c.scale
            if latency < 0:
                raise ScoringError(f"run {t.run_id} reported {-latency:.3f} s before it existed")
            out.discovery_latency.append(latency)


def run_of(path: str) -> tuple[str | None, str]:
    """``(run id, endpoint)`` of a request path: ``run``, ``messages``, ``list`` or ``other``."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[-1] == "messages" and parts[-3] == "runs":
        return parts[-2], "messages"
    if len(parts) >= 2 and parts[-2] == "runs":
        return parts[-1], "run"
    if parts[-1] == "runs" and len(parts) >= 3 and parts[-3] == "teams":
        return None, "list"
    return None, "other"


def _first_looks(
    requests: Sequence[RequestLogEntry],
    c: Contest,
    out: Freshness,
    deleted: Mapping[str, float],
) -> None:
    """From being added to having read the run's status (GET run, or a v2 list-runs request) and
    its messages; bounded by ceil(first-look requests of its batch / budget a second) + 1 s,
    where a batch is every run added at the same moment. For a run deleted by then, the first
    answer about it after its deletion (404, or v2's ``run: null``) is the whole look: there is
    nothing else to read."""
    batch: dict[float, int] = defaultdict(int)
    for at in c.added.values():
        batch[at] += 1
    per_second = c.budget / 60
    status_at: dict[str, float] = {}
    messages_at: dict[str, float] = {}
    lists = sorted(r.time for r in requests if run_of(r.path)[1] == "list" and r.status == 200)
    for r in sorted(requests, key=lambda r: r.time):
        run, endpoint = run_of(r.path)
        if run is None or run not in c.added or r.time < c.added[run]:
            continue
        if run in deleted and r.time >= deleted[run] and r.status in (200, 404):
            if endpoint in ("run", "messages"):
                status_at.setdefault(run, r.time)
                messages_at.setdefault(run, r.time)
            continue
        if r.status != 200:
            continue
        if endpoint == "run":
            status_at.setdefault(run, r.time)
        elif endpoint == "messages":
            messages_at.setdefault(run, r.time)
    for run, added in c.added.items():
        listed = next((t for t in lists if t >= added), None)
        status = min((t for t in (status_at.get(run), listed) if t is not None), default=None)
        messages = messages_at.get(run)
        seen = None if status is None or messages is None else max(status, messages)
        out.first_look[run] = None if seen is None else (seen - added) / c.scale
        out.first_look_bound[run] = math.ceil(c.first_look_requests * batch[added] / per_second) + 1


def _budget(
    changes: Sequence[TruthEntry],
    delivered: Mapping[int, float],
    requests: Sequence[RequestLogEntry],
    c: Contest,
    out: Freshness,
) -> None:
    """Requests in the report seconds when some change was undelivered, and the most in any
    60 report seconds (refused requests included: the server counted them)."""
    seconds = max(0, math.ceil((c.end - c.start) / c.scale))
    due = [False] * seconds
    for i, t in enumerate(changes):
        if t.kind == "status" and _superseded(changes, i, c):
            continue
        lo = max(t.time, c.start)
        hi = delivered.get(i, c.end)
        for s in range(
            int((lo - c.start) / c.scale), min(seconds, math.ceil((hi - c.start) / c.scale))
        ):
            due[s] = True
    counts = [0] * seconds
    times = sorted((r.time - c.start) / c.scale for r in requests)
    for x in times:
        if 0 <= x < seconds:
            counts[int(x)] += 1
    out.requests = len(times)
    out.due_seconds = sum(due)
    out.requests_while_due = sum(n for n, d in zip(counts, due, strict=True) if d)
    lo = 0
    for hi, x in enumerate(times):
        while times[lo] <= x - 60:
            lo += 1
        out.max_in_60s = max(out.max_in_60s, hi - lo + 1)
