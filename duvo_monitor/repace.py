"""Bringing probes forward when the share grows (and finished runs' back when it shrinks). Pure.

A probe's due time is set when its poll ends, at the share of that moment (scheduler.py). When
room frees later (runs ended, finished runs read at start while nothing else was known), the
probes set under the lower share would wait one stale interval. Once a second, with no poll due
and no burst in the log to pay back (the ticker decides), :func:`forward` picks the probes whose
new share brings them forward by more than ``SLACK`` of their interval: at most what the rate
serves in ``TICK``, the most overdue under the new share first, spaced at the rate, so that they
fill the idle budget without queueing in a block ahead of probes that fall due meanwhile (the
rest follow at the next ticks while the queue stays idle). A due time is never moved later: the
next poll takes a lower share.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

from duvo_monitor.track import Track

SLACK = 0.25  # move only by more than this share of the interval (no churn, no heap entry)
TICK = 1.0  # seconds of the rate brought forward at once (the ticker's beat)
PHASES = frozenset({"active", "waiting", "lingering"})
INF = math.inf


def linger_grid(track: Track, after: float, interval: float) -> float:
    """A lingering run's next poll after ``after``: at least half an interval away, then on the
    run's own phase of its interval (runs that ended together do not come back together)."""
    offset = track.phase_offset * interval
    return math.ceil((after + interval / 2 - offset) / interval) * interval + offset


def later(track: Track, now: float, interval: float) -> float | None:
    """The other way: a lingering run's status probe popped before its place under the current
    share (set when the share was larger: the budget idle then, busy now) goes to that place, if
    it is more than ``SLACK`` of the interval away; None: poll it now."""
    last = track.last_status_poll
    if last is None:
        return None
    target = linger_grid(track, last, interval)
    return target if target > now + SLACK * interval else None


def forward(
    idle: Iterable[tuple[Track, float, float]], now: float, rate: float
) -> list[tuple[Track, bool, float]]:
    """The moves: (run, status probe or messages, new due time) for the idle runs given with
    their message and status intervals at the new share."""
    moves: list[tuple[float, bool, Track]] = []
    for track, msg_interval, status_interval in idle:
        phase = track.phase
        last = track.last_status_poll
        if last is not None and track.status_due < INF and phase in PHASES:
            if phase == "lingering":
                target = linger_grid(track, last, status_interval)
            else:
                target = last + status_interval
            if max(now, target) < track.status_due - SLACK * status_interval:
                moves.append((target, True, track))
        last = track.last_msg_poll
        if last is not None and track.msg_due < INF and phase in ("active", "waiting"):
            target = last + msg_interval
            if max(now, target) < track.msg_due - SLACK * msg_interval:
                moves.append((target, False, track))
    rate = max(rate, 1e-6)
    room = max(1, math.floor(rate * TICK))
    out: list[tuple[Track, bool, float]] = []
    at = now - 1.0 / rate
    for target, status, track in heapq.nsmallest(room, moves, key=lambda m: m[0]):
        at = max(target, now, at + 1.0 / rate)
        out.append((track, status, at))
    return out
