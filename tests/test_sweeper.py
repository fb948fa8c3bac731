"""What a v2 sweep's row asks for (``Sweeper._swept_hint``), on the daemon's own context: the
list's ``updated_at`` compared with what the daemon knows, as times."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from duvo_monitor.config import parse_config
from duvo_monitor.credentials import Secret
from duvo_monitor.daemon import Monitor
from duvo_monitor.differ import Checkpoint
from duvo_monitor.scheduler import Track
from duvo_monitor.sweeper import Sweeper

RUN = "11111111-1111-4111-8111-111111111111"
ENDED = "2026-12-07T10:00:00.000Z"


def finished(tmp_path: Path, *, retired: bool) -> tuple[Sweeper, Track]:
    config = parse_config({"api": {"version": "v2"}, "state": {"path": str(tmp_path / "s.db")}})
    monitor = Monitor(config, api_key=Secret("k"), environ={}, handle_signals=False)

    async def add_runs(run_ids: Any) -> list[str]:
        return []

    sweeper = Sweeper(monitor.ctx, client=cast(Any, None), add_runs=add_runs, forgotten={})
    cp = Checkpoint(
        run_id=RUN, status="completed", verified=True, updated_at=ENDED, completed_at=ENDED
    )
    monitor.scheduler.add(cp, 0.0)
    track = monitor.scheduler.tracks[RUN]
    # As after its first look: read, lingering, its next look minutes away.
    track.polls, track.last_status_poll, track.status_due, track.urgent = 1, 0.0, 300.0, False
    track.retired = retired
    return sweeper, track


@pytest.mark.anyio
@pytest.mark.parametrize("retired", [False, True])
async def test_a_finished_run_listed_with_a_newer_updated_at_gets_its_status_read(
    tmp_path: Path, retired: bool
) -> None:
    """Listed `completed` as before, but moved: a resume that ended between two sweeps. Its
    status is read at once (the second end is an event), lingering or retired."""
    sweeper, track = finished(tmp_path, retired=retired)
    sweeper._swept_hint(track, "completed", "2026-12-07T10:00:09.500Z", 10.0)
    assert track.urgent and track.status_due <= 10.0 and not track.retired


@pytest.mark.anyio
@pytest.mark.parametrize("retired", [False, True])
async def test_the_same_instant_written_otherwise_is_not_a_move(
    tmp_path: Path, retired: bool
) -> None:
    """The list may write the instant GET run wrote differently (no milliseconds, an offset):
    not a move, no request spent on it."""
    sweeper, track = finished(tmp_path, retired=retired)
    for same in ("2026-12-07T10:00:00Z", "2026-12-07T12:00:00+02:00"):
        sweeper._swept_hint(track, "completed", same, 10.0)
        assert not track.urgent and track.status_due == 300.0 and track.retired == retired
