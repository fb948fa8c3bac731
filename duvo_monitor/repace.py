"""Bringing probes forward when the share grows: which idle probes move, and to when. Pure.

A probe's due time is set when its poll ends, at the share of that moment (scheduler.py). When
room frees later (runs ended, finished runs read at start while nothing else was known), the
probes set under the lower share would wait one stale interval. Once a second, with no poll due
and no burst in the log to pay back (the ticker decides), :func:`moves` (forward) picks those
whose new share brings them forward by more than ``SLACK`` of their interval: at most what the
rate serves in ``TICK``, the most overdue under the new share first, spaced at the rate, so that
they fill the idle budget without queueing in a block ahead of probes that fall due meanwhile
(the rest follow at the next ticks while the queue stays idle).

The other way (back), every second: probes whose share shrank (runs started, the budget
filled) by more than ``SLACK`` of the new interval move later, to their new share. Left where they
were, finished runs read every few seconds while nothing else was known stay due at that pace,
and, served most overdue first, they take the budget ahead of the busy runs that came since. A
due time set by news (a hint, more pages, a final drain: due at its poll's end, or the run
flagged urgent) or by an error's back-off is not moved.
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


def _targets(track: Track, msg_interval: float, status_interval: float) -> list[tuple[float, bool]]:
    """Where the run's share puts its status probe and its message probe (those it has)."""
    out: list[tuple[float, bool]] = []
    phase = track.phase
    last = track.last_status_poll
    if last is not None and track.status_due < INF and phase in PHASES:
        if phase == "lingering":
            out.append((linger_grid(track, last, status_interval), True))
        else:
            out.append((last + status_interval, True))
    last = track.last_msg_poll
    if last is not None and track.msg_due < INF and phase in ("active", "waiting"):
        out.append((last + msg_interval, False))
    return out


def _back(
    idle: Iterable[tuple[Track, float, float]], now: float
) -> list[tuple[Track, bool, float]]:
    """The moves later: (run, status probe or messages, new due time) for the idle runs given
    with their message and status intervals at the new share (see the module's docstring)."""
    out: list[tuple[Track, bool, float]] = []
    for track, msg_interval, status_interval in idle:
        if track.urgent:
            continue
        for target, status in _targets(track, msg_interval, status_interval):
            due, last, interval = (
                (track.status_due, track.last_status_poll, status_interval)
                if status
                else (track.msg_due, track.last_msg_poll, msg_interval)
            )
            if last is not None and due > last and target > max(due, now) + SLACK * interval:
                out.append((track, status, target))
    return out


def _forward(
    idle: Iterable[tuple[Track, float, float]], now: float, rate: float
) -> list[tuple[Track, bool, float]]:
    """The moves: (run, status probe or messages, new due time) for the idle runs given with
    their message and status intervals at the new share."""
    moves: list[tuple[float, bool, Track]] = []
    for track, msg_interval, status_interval in idle:
        for target, status in _targets(track, msg_interval, status_interval):
            due, interval = (
                (track.status_due, status_interval) if status else (track.msg_due, msg_interval)
            )
            if max(now, target) < due - SLACK * interval:
                moves.append((target, status, track))
    rate = max(rate, 1e-6)
    room = max(1, math.floor(rate * TICK))
    out: list[tuple[Track, bool, float]] = []
    at = now - 1.0 / rate
    for target, status, track in heapq.nsmallest(room, moves, key=lambda m: m[0]):
        at = max(target, now, at + 1.0 / rate)
        out.append((track, status, at))
    return out


def moves(
    given: list[tuple[Track, float, float]], now: float, rate: float, *, forward: bool, back: bool
) -> list[tuple[Track, bool, float]]:
    """The due times to set, later ones (``back``) and earlier ones (``forward``), each final:
    a move never goes the other way (a later one never brings a probe forward, and so on)."""
    out: list[tuple[Track, bool, float]] = []
    for way, pick in ((back, max), (forward, min)):
        if way:
            found = _back(given, now) if pick is max else _forward(given, now, rate)
            out += [(t, st, pick(t.status_due if st else t.msg_due, at)) for t, st, at in found]
    return out
