"""One watched run as the scheduler sees it (``Track``), the phase its checkpoint puts it in, and
what one poll should ask (``Plan``). Values only: the scheduler (scheduler.py) is the one module
that changes a track; everyone else reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from duvo_monitor.differ import Checkpoint
from duvo_monitor.models import RESUMABLE_STATUSES, TERMINAL_STATUSES
from duvo_monitor.news import Rate

INF = float("inf")
# A run in these has not started its work yet: its next status (it starts) comes within seconds,
# and says nothing about how often the run will change once it runs.
STARTUP_STATUSES = frozenset({"pending", "starting"})
# Finished, and resumable from outside (a message posted from Duvo's web UI): a lingering run.
FINISHED_STATUSES = RESUMABLE_STATUSES & TERMINAL_STATUSES

Phase = Literal["active", "waiting", "ending", "lingering", "retired"]


def stable_phase(run_id: str) -> float:
    """A number in [0, 1) fixed by the run id: where in its interval the run's polls fall."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(slots=True)
class Track:
    """The scheduler's view of one watched run."""

    run_id: str
    cp: Checkpoint
    source: str = "config"
    phase_offset: float = 0.0
    msg_rate: Rate = field(default_factory=Rate)
    status_rate: Rate = field(default_factory=Rate)
    msg_due: float = 0.0
    status_due: float = 0.0
    inflight: bool = False
    failures: int = 0
    retired: bool = False
    linger_until: float | None = None
    swept_at: float | None = None
    swept_updated: float | None = None  # the run's updated_at as the last sweep showed it
    swept_time: float | None = None  # when (clock.time()) that sweep was answered
    due: float = INF
    due_popped: float = 0.0
    # Hints that arrived while the run was being polled: applied when that poll is done,
    # since the poll in flight may have asked before the news it hints at.
    pending_status: bool = False
    pending_messages: bool = False
    last_msg_poll: float | None = None
    urgent: bool = False  # hinted: the next poll goes ahead of routine ones at the budget
    polls: int = 0
    last_status_poll: float | None = None
    looked_status: str | None = None  # the run's status when its poll in flight began

    @property
    def phase(self) -> Phase:
        cp = self.cp
        if self.retired:
            return "retired"
        if cp.lost:
            return "retired"
        if cp.status in TERMINAL_STATUSES:
            if cp.scan_from is not None or not cp.verified:
                return "ending"
            return "lingering" if cp.status in RESUMABLE_STATUSES else "retired"
        if cp.status == "waiting":
            return "waiting"
        return "active"


@dataclass(frozen=True, slots=True)
class Plan:
    status: bool
    messages: bool
    urgent: bool = False
    first: bool = False  # the run's first look: it may spend the window's burst (budget.py)
