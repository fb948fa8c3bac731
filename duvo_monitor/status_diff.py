"""The status half of the differ: a GET run answer against the checkpoint -> changes. Pure.

It reports the run's status transitions (a finished run whose ``completed_at`` moved with its
status unchanged was resumed and ended again between two looks: that end is reported too), its
loss (404 or ``run: null``, after a grace period for a run never seen), and the opening and
resolution of its human request, as typed changes (:mod:`duvo_monitor.changes`). A status
transition's key is the checkpoint's transition number, so the same transition keeps its event
id across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from duvo_monitor.changes import (
    RequestOpened,
    RequestResolved,
    RunChange,
    RunLost,
    StatusChanged,
)
from duvo_monitor.checkpoint import Checkpoint, PendingRequest
from duvo_monitor.models import (
    TERMINAL_STATUSES,
    HumanRequest,
    Run,
    RunSnapshot,
    format_time,
    parse_time,
)

NOT_FOUND_GRACE = 10.0
"""A run never seen that answers 404 is given this long to appear (a typo'd id is reported lost;
an id registered right after start, on an API a moment behind, is not). The daemon's
``polling.appear_timeout`` and ``watch --appear-timeout`` default to it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusDiff:
    checkpoint: Checkpoint
    changes: list[RunChange]
    changed: bool
    lost: bool = False
    not_yet: bool = False
    """404 for a run never seen, within its grace period: ask again later."""


def diff_status(
    cp: Checkpoint,
    snapshot: RunSnapshot | None,
    *,
    seen_at: float,
    reason: str = "not_found",
    not_found_grace: float = NOT_FOUND_GRACE,
) -> StatusDiff:
    """Compare a GET run answer (None: 404) with the checkpoint; a run never seen is lost only
    once it has answered 404 for ``not_found_grace`` seconds."""
    changes: list[RunChange] = []
    run = None if snapshot is None else snapshot.run
    if run is None:
        if cp.lost:
            return StatusDiff(checkpoint=cp, changes=[], changed=False, lost=True)
        if cp.status is None:
            since = cp.missing_since if cp.missing_since is not None else seen_at
            if seen_at - since < not_found_grace:
                return StatusDiff(
                    checkpoint=replace(cp, missing_since=since),
                    changes=[],
                    changed=False,
                    not_yet=True,
                )
        seq = cp.status_seq + 1
        changes.append(
            RunLost(
                key=str(seq),
                run_id=cp.run_id,
                agent_id=cp.agent_id,
                time=format_time(seen_at),
                change_time=seen_at,
                data={
                    "run_id": cp.run_id,
                    "agent_id": cp.agent_id,
                    "last_status": cp.status,
                    "reason": "run_null" if snapshot is not None else reason,
                },
            )
        )
        return StatusDiff(
            checkpoint=replace(cp, lost=True, status_seq=seq, pending=None),
            changes=changes,
            changed=True,
            lost=True,
        )

    assert snapshot is not None
    agent_id = run.agent_id
    new = replace(
        cp,
        agent_id=agent_id,
        lost=False,
        missing_since=None,
        updated_at=run.updated_at,
        created_at=run.created_at,
        completed_at=run.completed_at,
    )
    request = snapshot.pending_human_request

    if new.pending is not None and (request is None or request.id != new.pending.id):
        changes.append(_resolved(new, new.pending, seen_at))
        new = replace(new, pending=None)

    again = _ended_again(cp, run)
    changed = run.status != new.status or again
    if changed:
        seq = new.status_seq + 1
        when = _status_time(run, new, seen_at)
        data: dict[str, Any] = {
            "run_id": run.id,
            "agent_id": agent_id,
            "from": new.status,
            "to": run.status,
            "run": run.to_dict(),
        }
        if run.status in TERMINAL_STATUSES:
            data["duration_seconds"] = _duration(run)
        changes.append(
            StatusChanged(
                key=str(seq),
                status=run.status,
                previous=new.status,
                run_id=run.id,
                agent_id=agent_id,
                time=format_time(when),
                change_time=when,
                data=data,
            )
        )
        # A run that ran again has a transcript to drain and verify again.
        verified = new.verified and run.status in TERMINAL_STATUSES and not again
        new = replace(new, status=run.status, status_seq=seq, status_time=when, verified=verified)

    if request is not None and new.pending is None:
        changes.append(_opened(new, request, seen_at))
        new = replace(
            new,
            pending=PendingRequest(
                id=request.id, title=request.title, type=request.type, created_at=request.created_at
            ),
        )
    return StatusDiff(checkpoint=new, changes=changes, changed=changed or bool(changes))


def _ended_again(cp: Checkpoint, run: Run) -> bool:
    """Same terminal status as last seen, but a later ``completed_at``: the run resumed (a
    message posted from outside) and ended again between two looks. Only both times parsed
    count: a run first seen, a checkpoint from before this field, or an unreadable time is not
    evidence."""
    if run.status != cp.status or run.status not in TERMINAL_STATUSES:
        return False
    before, now = parse_time(cp.completed_at), parse_time(run.completed_at)
    return before is not None and now is not None and now > before


def _status_time(run: Run, cp: Checkpoint, seen_at: float) -> float:
    """When the change happened, as far as the API tells; else when it was seen."""
    candidates: list[str | None]
    if cp.status is None and run.status == "pending":
        candidates = [run.created_at]
    elif run.status in TERMINAL_STATUSES:
        candidates = [run.completed_at, run.updated_at]
    elif run.status in ("running", "starting") and cp.status in (None, "pending", "starting"):
        candidates = [run.started_at, run.updated_at]
    else:
        candidates = [run.updated_at]
    for text in candidates:
        when = parse_time(text)
        if when is not None and when <= seen_at + 5.0:
            return when
    return seen_at


def _duration(run: Run) -> float | None:
    end = parse_time(run.completed_at) or parse_time(run.updated_at)
    start = parse_time(run.started_at) or parse_time(run.created_at)
    if end is None or start is None:
        return None
    return round(max(0.0, end - start), 3)


def _opened(cp: Checkpoint, request: HumanRequest, seen_at: float) -> RunChange:
    when = parse_time(request.created_at) or seen_at
    return RequestOpened(
        key=request.id,
        run_id=cp.run_id,
        agent_id=cp.agent_id,
        time=format_time(when),
        change_time=when,
        data={"run_id": cp.run_id, "agent_id": cp.agent_id, "request": request.to_dict()},
    )


def _resolved(cp: Checkpoint, pending: PendingRequest, seen_at: float) -> RunChange:
    opened = parse_time(pending.created_at)
    waited = None if opened is None else round(max(0.0, seen_at - opened), 3)
    return RequestResolved(
        key=pending.id,
        run_id=cp.run_id,
        agent_id=cp.agent_id,
        time=format_time(seen_at),
        change_time=seen_at,
        data={
            "run_id": cp.run_id,
            "agent_id": cp.agent_id,
            "request_id": pending.id,
            "request": {"id": pending.id, "title": pending.title, "type": pending.type},
            "waited_seconds": waited,
        },
    )
