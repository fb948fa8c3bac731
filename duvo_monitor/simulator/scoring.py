"""Score what a monitor emitted against the simulator's truth log: misses, duplicates,
inventions and detection latency. Used by the integration tests and the benchmarks. Pure.

A *message* is missed when its id never came as ``message.created``, duplicated when it came
twice, invented when it came but the truth has no such message. A *status change* is detected
when an event for the same run and status came after the change became visible; a change that
was superseded within ``transient`` seconds may be missed by any poller and is counted apart.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from duvo_monitor.simulator.model import TruthEntry

PREFIX = "ai.duvo."


@dataclass(frozen=True, slots=True, kw_only=True)
class Emitted:
    """One event as a sink received it, with the (simulated) time it arrived."""

    envelope: Mapping[str, Any]
    at: float


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


@dataclass(slots=True, kw_only=True)
class Score:
    messages_expected: int = 0
    messages_missed: list[str] = field(default_factory=list)
    messages_duplicated: list[str] = field(default_factory=list)
    messages_invented: list[str] = field(default_factory=list)
    message_latency: list[float] = field(default_factory=list)
    status_expected: int = 0
    status_missed: list[tuple[str, str]] = field(default_factory=list)
    status_missed_transient: list[tuple[str, str]] = field(default_factory=list)
    status_invented: list[tuple[str, str]] = field(default_factory=list)
    status_latency: list[float] = field(default_factory=list)
    final_mismatch: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    requests_expected: int = 0
    requests_missed: list[str] = field(default_factory=list)
    resolved_missed: list[str] = field(default_factory=list)
    lost_expected: int = 0
    lost_missed: list[str] = field(default_factory=list)
    edits_expected: int = 0
    edits_seen: int = 0
    duplicate_event_ids: list[str] = field(default_factory=list)

    @property
    def perfect_messages(self) -> bool:
        return not (self.messages_missed or self.messages_duplicated or self.messages_invented)

    def summary(self) -> dict[str, Any]:
        return {
            "messages": self.messages_expected,
            "messages_missed": len(self.messages_missed),
            "messages_duplicated": len(self.messages_duplicated),
            "messages_invented": len(self.messages_invented),
            "message_p50": percentile(self.message_latency, 50),
            "message_p95": percentile(self.message_latency, 95),
            "status_changes": self.status_expected,
            "status_missed": len(self.status_missed),
            "status_missed_transient": len(self.status_missed_transient),
            "status_invented": len(self.status_invented),
            "status_p50": percentile(self.status_latency, 50),
            "status_p95": percentile(self.status_latency, 95),
            "final_mismatch": len(self.final_mismatch),
            "human_requests_missed": len(self.requests_missed),
            "lost_missed": len(self.lost_missed),
            "edits": f"{self.edits_seen}/{self.edits_expected}",
            "duplicate_event_ids": len(self.duplicate_event_ids),
        }


def score(
    truth: Sequence[TruthEntry],
    emitted: Sequence[Emitted],
    *,
    transient: float = 2.0,
    runs: set[str] | None = None,
    start: float | None = None,
) -> Score:
    """Compare; ``runs`` limits the comparison to these run ids (default: all in the truth).

    ``start`` is when the monitor started: a status superseded before then could not be seen,
    and latency counts from the later of the change and the start.
    """
    origin = float("-inf") if start is None else start
    s = Score()
    wanted = runs if runs is not None else {t.run_id for t in truth}
    truth = [t for t in truth if t.run_id in wanted]
    emitted = [e for e in emitted if e.envelope.get("subject") in wanted]

    ids = Counter(str(e.envelope["id"]) for e in emitted)
    s.duplicate_event_ids = sorted(i for i, n in ids.items() if n > 1)

    created: dict[str, list[float]] = defaultdict(list)
    updated: set[str] = set()
    status_events: dict[str, list[tuple[float, str]]] = defaultdict(list)
    opened: set[str] = set()
    resolved: set[str] = set()
    lost: set[str] = set()
    for e in emitted:
        kind = str(e.envelope["type"]).removeprefix(PREFIX)
        data = e.envelope["data"]
        if kind == "message.created":
            created[data["message"]["id"]].append(e.at)
        elif kind == "message.updated":
            updated.add(data["message"]["id"])
        elif kind == "human_request.opened":
            opened.add(data["request"]["id"])
        elif kind == "human_request.resolved":
            resolved.add(data["request_id"])
        elif kind == "run.lost":
            lost.add(str(e.envelope["subject"]))
        elif kind.startswith("run."):
            status_events[str(e.envelope["subject"])].append((e.at, str(data["to"])))

    truth_messages = {t.message_id: t for t in truth if t.kind == "message_created"}
    s.messages_expected = len(truth_messages)
    for message_id, entry in truth_messages.items():
        assert message_id is not None
        times = created.get(message_id, [])
        if not times:
            s.messages_missed.append(message_id)
            continue
        if len(times) > 1:
            s.messages_duplicated.append(message_id)
        s.message_latency.append(max(0.0, min(times) - max(entry.time, origin)))
    s.messages_invented = sorted(m for m in created if m not in truth_messages)

    by_run: dict[str, list[TruthEntry]] = defaultdict(list)
    for t in truth:
        if t.kind == "status":
            by_run[t.run_id].append(t)
    for run_id, changes in by_run.items():
        seen = sorted(status_events.get(run_id, []))
        truth_statuses = {c.status_to for c in changes}
        used: set[int] = set()
        for _at, status in seen:
            if status not in truth_statuses:
                s.status_invented.append((run_id, status))
        for i, change in enumerate(changes):
            until = changes[i + 1].time if i + 1 < len(changes) else float("inf")
            if until <= origin:
                continue
            s.status_expected += 1
            index = next(
                (
                    k
                    for k, (at, status) in enumerate(seen)
                    if k not in used
                    and status == change.status_to
                    and at >= min(change.time, origin) - 0.5
                ),
                None,
            )
            if index is None:
                if until - change.time < transient:
                    s.status_missed_transient.append((run_id, str(change.status_to)))
                else:
                    s.status_missed.append((run_id, str(change.status_to)))
                continue
            used.add(index)
            s.status_latency.append(max(0.0, seen[index][0] - max(change.time, origin)))
        last_truth = changes[-1].status_to
        last_seen = seen[-1][1] if seen else None
        if run_id not in lost and last_seen != last_truth:
            s.final_mismatch.append((run_id, last_truth, last_seen))

    for t in truth:
        if t.kind == "human_request_opened":
            s.requests_expected += 1
            if t.request_id not in opened:
                s.requests_missed.append(str(t.request_id))
        elif t.kind == "human_request_resolved":
            if t.request_id in opened and t.request_id not in resolved:
                s.resolved_missed.append(str(t.request_id))
        elif t.kind == "run_lost":
            s.lost_expected += 1
            if t.run_id not in lost:
                s.lost_missed.append(t.run_id)
        elif t.kind == "message_updated":
            s.edits_expected += 1
            if t.message_id in updated:
                s.edits_seen += 1
    return s


def mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None
