"""The scheduler: square-root allocation, phases, hints, backoff, no double polls. Pure."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

from duvo_monitor import repace
from duvo_monitor.config import PollingConfig
from duvo_monitor.differ import Checkpoint
from duvo_monitor.scheduler import Plan, Scheduler, Track, stable_phase

BOTH = Plan(status=True, messages=True)


def ids(n: int) -> list[str]:
    return [f"{i:08x}-0000-4000-8000-000000000000" for i in range(n)]


def make(n: int = 3, **polling: object) -> Scheduler:
    s = Scheduler(PollingConfig(**polling), rng=random.Random(1))  # type: ignore[arg-type]
    s.rate = 4.0
    for run_id in ids(n):
        s.add(Checkpoint(run_id=run_id, status="running"), 0.0)
    return s


def finish(s: Scheduler, run_id: str, now: float, news: int = 0, **kw: object) -> None:
    track = s.tracks[run_id]
    s.done(
        track,
        now,
        plan=BOTH,
        status_news=0,
        message_news=news,
        status_changed=bool(kw.get("status_changed", False)),
        hint_status=False,
        more_messages=False,
        error_delay=kw.get("error_delay"),  # type: ignore[arg-type]
        answered=bool(kw.get("answered", False)),
    )


def polled(
    s: Scheduler, track: Track, now: float, *, message_news: int = 0, hint_status: bool = False
) -> Plan:
    """Poll ``track`` as the scheduler plans it at ``now`` and fold in a quiet outcome (no status
    change), with ``message_news`` new messages and ``hint_status`` as the pages asked."""
    plan = s.plan(track, now)
    s.done(
        track,
        now,
        plan=plan,
        status_news=0,
        message_news=message_news,
        status_changed=False,
        hint_status=hint_status,
        more_messages=False,
    )
    return plan


STATUS_ONLY = Plan(status=True, messages=False)


def status_polled(
    s: Scheduler, track: Track, now: float, *, read: bool, news: int = 0, changed: bool = False
) -> None:
    """Fold in a poll planned for the status alone that read the messages too (``read``: its
    status or ``updated_at`` moved) and found ``news`` of them; ``changed``: the status did."""
    s.done(
        track,
        now,
        plan=STATUS_ONLY,
        status_news=int(changed),
        message_news=news,
        read_messages=read,
        status_changed=changed,
        hint_status=False,
        more_messages=False,
    )


def test_phase_is_stable_and_spread() -> None:
    """Each run's phase comes from its id, and ids spread over [0, 1)."""
    values = [stable_phase(r) for r in ids(200)]
    assert values == [stable_phase(r) for r in ids(200)]
    assert min(values) < 0.05 and max(values) > 0.95


def test_never_polled_twice_at_once() -> None:
    """A run popped for polling is not due again until its poll is done."""
    s = make(1)
    track = s.pop_due(100.0)
    assert track is not None
    s.hint(track.run_id, 100.0, status=True, messages=True)
    assert s.pop_due(1000.0) is None
    finish(s, track.run_id, 101.0)
    assert s.pop_due(10_000.0) is not None


def test_busy_runs_polled_more_often_by_sqrt_rule() -> None:
    """A run with 16x the news rate gets about 4x the poll rate (the square-root rule)."""
    s = make(2, min_interval=0.01, max_interval=1e6)
    busy, quiet = ids(2)
    for k in range(1, 400):
        finish(s, busy, k * 1.0, news=16)
        finish(s, quiet, k * 1.0, news=1)
    s.recompute()
    ratio = s.message_interval(s.tracks[quiet]) / s.message_interval(s.tracks[busy])
    assert 3.5 < ratio < 4.5


def test_total_probe_rate_matches_budget() -> None:
    """The intervals of all probes add up to the budget the scheduler was given."""
    s = make(20, min_interval=0.001, max_interval=1e6)
    s.recompute()
    total = sum(1 / s.message_interval(t) + 1 / s.status_interval(t) for t in s.tracks.values())
    assert math.isclose(total, s.rate, rel_tol=1e-6)


def test_waiting_runs_slow_down() -> None:
    """A waiting run is polled at waiting_interval when the budget is short, and faster (never
    slower) when it has room."""
    s = make(1, waiting_interval=30.0)
    track = s.tracks[ids(1)[0]]
    track.cp = replace(track.cp, status="waiting")
    s.recompute()
    assert s.status_interval(track) == 1.0  # 4 requests a second for one run: room to spare
    s.rate = 1e-3
    assert s.status_interval(track) == 30.0
    assert s.message_interval(track) == 30.0


def test_terminal_drains_then_lingers_then_retires() -> None:
    """completed: drain now; verified: linger at linger_interval; after linger: retired."""
    s = make(1, linger=100.0, linger_interval=10.0)
    s.rate = 1e-3  # a saturated budget: finished runs are looked at every linger_interval
    track = s.tracks[ids(1)[0]]
    track.cp = replace(track.cp, status="completed", verified=False)
    assert track.phase == "ending"
    assert s.message_interval(track) == 0.0
    track.cp = replace(track.cp, verified=True)
    assert track.phase == "lingering"
    finish(s, track.run_id, 1.0)
    # The next look: at least half an interval away, on the run's own phase of the interval.
    first = track.status_due
    assert 6.0 <= first < 16.0 and track.msg_due == math.inf
    assert math.isclose((first / 10.0) % 1.0, track.phase_offset, abs_tol=1e-9)
    finish(s, track.run_id, first)
    assert math.isclose(track.status_due, first + 10.0)
    finish(s, track.run_id, 200.0)
    assert track.retired


def test_runs_that_end_together_linger_apart() -> None:
    """Runs read at start that had all finished do not come back all at once every
    linger_interval: their linger polls spread over the interval by their stable phases."""
    s = make(200, linger=10_000.0, linger_interval=100.0)
    s.rate = 1e-3
    for track in s.tracks.values():
        track.cp = replace(track.cp, status="completed", verified=True)
        finish(s, track.run_id, 1.0)
    dues = sorted(t.status_due for t in s.tracks.values())
    assert dues[0] >= 51.0 and dues[-1] < 151.0
    per_tenth = [sum(1 for d in dues if 51 + 10 * k <= d < 61 + 10 * k) for k in range(10)]
    assert max(per_tenth) <= 40, per_tenth  # 20 each if perfectly even


def test_failed_runs_retire_after_drain() -> None:
    """failed cannot resume: once drained, it retires at once."""
    s = make(1)
    track = s.tracks[ids(1)[0]]
    track.cp = replace(track.cp, status="failed", verified=True)
    finish(s, track.run_id, 1.0)
    assert track.retired


def test_errors_back_off_with_jitter_per_run() -> None:
    """A failed poll pushes only that run back, more each time."""
    s = make(2, min_interval=1.0, max_interval=1.0)
    bad, good = ids(2)
    finish(s, bad, 10.0, error_delay=0.0)
    first = s.tracks[bad].msg_due - 10.0
    finish(s, bad, 10.0, error_delay=0.0)
    second = s.tracks[bad].msg_due - 10.0
    assert 1.0 < first < second
    finish(s, good, 10.0)
    assert s.tracks[good].msg_due == 11.0


def test_a_partly_answered_poll_starts_the_backoff_again() -> None:
    """Four failed polls in a row back a run off 16 s (give or take the jitter); a poll whose
    status was read before a page failed backs it off as a first failure does (2 s), so a
    flaky API does not leave a run's final pages unread for tens of seconds."""
    s = make(1, min_interval=1.0, max_interval=1.0)
    run = ids(1)[0]
    for _ in range(4):
        finish(s, run, 10.0, error_delay=0.0)
    due = s.tracks[run].msg_due
    assert due - 10.0 >= 16.0 * 0.75
    finish(s, run, due, error_delay=0.0, answered=True)
    assert s.tracks[run].msg_due - due <= 2.0 * 1.25
    finish(s, run, due + 3.0, error_delay=0.0)
    assert s.tracks[run].msg_due - (due + 3.0) >= 4.0 * 0.75


def test_retry_after_is_honoured() -> None:
    """A 429's retry-after is the least a run waits."""
    s = make(1)
    finish(s, ids(1)[0], 0.0, error_delay=30.0)
    assert s.tracks[ids(1)[0]].msg_due >= 0.0 + 30 * 0.75


def test_round_robin_gives_everyone_the_same_interval() -> None:
    """The round-robin baseline: equal intervals sized to the budget."""
    s = make(10, policy="round_robin", min_interval=0.1)
    s.recompute()
    intervals = {s.message_interval(t) for t in s.tracks.values()}
    assert intervals == {2 * 10 / 4.0}


def test_hint_while_polling_is_kept_for_after() -> None:
    """A sweep hint that lands while the run is being polled is applied when the poll ends."""
    s = make(1, min_interval=10.0, max_interval=10.0)
    track = s.pop_due(100.0)
    assert track is not None
    s.hint(track.run_id, 100.5, status=True)
    finish(s, track.run_id, 101.0)
    assert track.status_due == 101.0


def test_hints_time_polls_without_outrunning_the_share() -> None:
    """A run hinted again right after a poll waits part of its share, not a full interval."""
    s = make(1, min_interval=4.0, max_interval=4.0)
    track = s.tracks[ids(1)[0]]
    finish(s, track.run_id, 50.0)
    s.hint(track.run_id, 50.1, messages=True)
    assert 50.1 < track.msg_due < 54.0


def test_sweeps_that_stop_hand_status_probes_back() -> None:
    """When sweeps stop, a swept run's far safety-net status probe comes back to normal."""
    s = make(1, max_interval=60.0)
    track = s.tracks[ids(1)[0]]
    s.set_sweeping(True, 0.0)
    track.swept_at = 0.0
    finish(s, track.run_id, 1.0)
    assert track.status_due > 200.0
    s.set_sweeping(False, 2.0)
    assert track.status_due <= 62.0


def test_sweep_trust_needs_evidence() -> None:
    """Sweeps are trusted to announce messages only after enough consistent samples."""
    from duvo_monitor.scheduler import SweepTrust

    trust = SweepTrust()
    for _ in range(10):
        trust.observe(True)
    assert not trust.trusted
    for _ in range(20):
        trust.observe(True)
    assert trust.trusted
    for _ in range(5):
        trust.observe(False)
    assert not trust.trusted


def trusted(s: Scheduler, track_ids: list[str]) -> None:
    """Sweeps on, trusted, and showing these runs."""
    s.set_sweeping(True, 0.0)
    for _ in range(40):
        s.trust.observe(True)
    for run_id in track_ids:
        s.tracks[run_id].swept_at = 0.0


def test_trusted_sweep_hints_are_served_at_once() -> None:
    """Trusted sweeps: a hinted run is due now (the daemon paces the sweeps instead), and its
    scheduled message probe is only a safety net at max_interval."""
    s = make(1, min_interval=4.0, max_interval=60.0)
    track = s.tracks[ids(1)[0]]
    trusted(s, [track.run_id])
    finish(s, track.run_id, 50.0)
    assert track.msg_due == 110.0
    s.hint(track.run_id, 50.1, messages=True)
    assert track.msg_due == 50.1


def test_hinted_runs_are_served_before_overdue_routine_polls() -> None:
    """Among due runs, the one known to have news goes first, however overdue the others."""
    s = make(3, min_interval=1.0, max_interval=1.0)
    routine = [s.pop_due(10.0) for _ in range(3)]  # the first looks
    assert all(t is not None for t in routine)
    for track in routine:
        assert track is not None
        assert s.plan(track, 10.0).urgent  # a first look goes ahead of routine polls
        finish(s, track.run_id, 11.0)  # all due again at 12.0
    late = ids(3)[2]
    s.hint(late, 15.0, messages=True)  # at 15.0 all three are due, two of them since 12.0
    first = s.pop_due(15.0)
    assert first is not None and first.run_id == late
    assert s.plan(first, 15.0).urgent
    others = {t.run_id for t in (s.pop_due(15.0), s.pop_due(15.0)) if t is not None}
    assert others == set(ids(3)[:2])
    assert s.pop_due(15.0) is None


def test_first_looks_go_ahead_of_hinted_polls() -> None:
    """A run just added is looked at before runs hinted earlier: a saturated budget always has
    hinted polls waiting, and a new run must not queue behind them (its first-look bound)."""
    s = make(2)
    for _ in range(2):
        track = s.pop_due(1.0)
        assert track is not None
        finish(s, track.run_id, 2.0)
    for run_id in ids(2):
        s.hint(run_id, 3.0, messages=True)  # news known since 3.0
    new = "ffffffff-0000-4000-8000-000000000000"
    s.add(Checkpoint(run_id=new), 10.0)  # added at 10.0, behind hints due since 3.0
    assert s.hinted_backlog(10.0)
    first = s.pop_due(10.0)
    assert first is not None and first.run_id == new and s.plan(first, 10.0).urgent
    hinted = {t.run_id for t in (s.pop_due(10.0), s.pop_due(10.0)) if t is not None}
    assert hinted == set(ids(2))


def test_a_swept_lingering_run_is_checked_rarely() -> None:
    """A finished run that sweeps show (a resume would be seen there) keeps only a far
    safety-net status probe; when sweeps stop showing it, the linger interval comes back."""
    s = make(1, linger=100_000.0, linger_interval=10.0)
    s.rate = 1e-3
    track = s.tracks[ids(1)[0]]
    trusted(s, [track.run_id])
    track.cp = replace(track.cp, status="completed", verified=True)
    finish(s, track.run_id, 1.0)
    assert track.status_due >= 1.0 + 25.0
    s.unswept(track, 2.0)
    assert 7.0 <= track.status_due < 17.0


def test_a_failed_sweep_gives_runs_their_own_probes_back() -> None:
    """Trusted sweeps make a busy run's message probe a far safety net; when a sweep fails (and
    the lister backs off), that run must not wait for the safety net: its own message and status
    probes come back at once, until a sweep succeeds again."""
    s = make(1, min_interval=1.0, max_interval=60.0)
    track = s.tracks[ids(1)[0]]
    trusted(s, [track.run_id])
    s.recompute()
    finish(s, track.run_id, 10.0, news=5)
    assert track.msg_due == 70.0 and track.status_due > 70.0
    s.sweep_failed(11.0)
    assert track.swept_at is None
    assert track.msg_due < 30.0 and track.status_due < 30.0
    assert s.next_due() == min(track.msg_due, track.status_due)


def test_an_idle_budget_is_spent_in_order_of_expected_news() -> None:
    """With room to spare every probe runs at min_interval; as the budget shrinks, the finished
    runs stretch toward linger_interval before the busy runs slow down, and the probes' rates
    always add up to the budget they were given (never more)."""
    s = make(4, min_interval=1.0, max_interval=60.0, linger_interval=300.0, linger=1e6)
    busy, *finished = ids(4)
    for k in range(1, 60):
        finish(s, busy, k * 1.0, news=2)
    for run_id in finished:
        track = s.tracks[run_id]
        track.cp = replace(track.cp, status="completed", verified=True)
        finish(s, run_id, 60.0)

    def rates() -> tuple[float, float, float]:
        s.recompute()
        b = s.tracks[busy]
        f = s.tracks[finished[0]]
        total = 1 / s.message_interval(b) + 1 / s.status_interval(b)
        total += sum(1 / s.status_interval(s.tracks[r]) for r in finished)
        return 1 / s.message_interval(b), 1 / s.status_interval(f), total

    s.rate = 100.0
    busy_rate, finished_rate, total = rates()
    assert busy_rate == 1.0 and finished_rate == 1.0 and total <= 100.0
    s.rate = 2.5  # the busy run's messages at full speed, the rest shared
    busy_rate, finished_rate, total = rates()
    assert busy_rate == 1.0 and finished_rate < 0.5
    assert math.isclose(total, 2.5, rel_tol=1e-6)
    s.rate = 0.05  # saturated: finished runs at linger_interval, the busy run still polled
    busy_rate, finished_rate, _ = rates()
    assert math.isclose(finished_rate, 1 / 300.0) and busy_rate > 5 * finished_rate


def test_the_first_look_is_due_at_once_in_the_order_runs_were_added() -> None:
    """10,000 runs added at start are all due at once, oldest first, ahead of routine polls."""
    s = Scheduler(PollingConfig(), rng=random.Random(1))
    many = [f"{i:08x}-0000-4000-8000-000000000001" for i in range(10_000)]
    for run_id in many:
        s.add(Checkpoint(run_id=run_id), 5.0)
    assert s.next_due() == 5.0
    popped = [s.pop_due(5.0) for _ in range(3)]
    assert [t.run_id for t in popped if t is not None] == many[:3]


def test_a_pending_run_is_asked_its_status_not_its_messages() -> None:
    """A pending run's next status is likely news: its status probe is shared more of the
    budget than a running run's, and its message probe waits for the start (a safety net)."""
    s = make(2, min_interval=0.1, max_interval=60.0)
    pending, running = ids(2)
    s.tracks[pending].cp = replace(s.tracks[pending].cp, status="pending")
    s.rate = 0.5
    s.recompute()
    assert s.message_interval(s.tracks[pending]) == 60.0
    assert s.status_interval(s.tracks[pending]) < s.status_interval(s.tracks[running])


def test_probes_set_under_a_lower_share_are_brought_forward_when_room_frees() -> None:
    """A due time is set when a poll ends, with the share of that moment. When budget frees
    (the busy runs end, more rate is given) and no poll is waiting, recompute(now) brings every
    idle probe forward to its new share instead of leaving it one stale interval away; it never
    delays one, and a backed-off run keeps its backoff."""
    s = make(6, min_interval=1.0, max_interval=60.0, linger_interval=300.0, linger=1e6)
    busy, backed_off, *finished = ids(6)
    for k in range(1, 30):
        finish(s, busy, k * 1.0, news=3)
    for run_id in finished:
        track = s.tracks[run_id]
        track.cp = replace(track.cp, status="completed", verified=True)
    s.rate = 1.2  # short: the finished runs are stretched toward linger_interval
    s.recompute()
    for run_id in finished:
        finish(s, run_id, 30.0)
    finish(s, backed_off, 30.0, error_delay=40.0)
    before = {r: s.tracks[r].status_due for r in finished}
    backoff_due = s.tracks[backed_off].status_due
    assert min(before.values()) > 40.0

    s.rate = 100.0  # room to spare: every probe may run at min_interval
    assert s.next_due() <= 31.0  # but the busy run is due: a queue that waits is not reordered
    s.recompute(31.0)
    assert {r: s.tracks[r].status_due for r in finished} == before
    busy_track = s.pop_due(31.0)
    assert busy_track is not None and busy_track.run_id == busy
    s.recompute(31.0)  # now nothing is due: the room goes to the finished runs
    for run_id in finished:
        track = s.tracks[run_id]
        assert track.status_due <= 32.0 < before[run_id], (run_id, track.status_due)
    assert s.tracks[backed_off].status_due == backoff_due
    # The scheduler hands the finished runs out now, not at their old due times.
    popped = {t.run_id for t in iter(lambda: s.pop_due(32.0), None)}
    assert set(finished) <= popped

    s.rate = 0.01  # and a lower share never delays what is already due
    dues = {r: (s.tracks[r].status_due, s.tracks[r].msg_due) for r in ids(6)}
    s.recompute(32.0)
    assert {r: (s.tracks[r].status_due, s.tracks[r].msg_due) for r in ids(6)} == dues


def test_probes_brought_forward_are_at_most_a_ticks_work_spaced_at_the_rate() -> None:
    """Room that frees at once is filled at the rate, not with a block of probes all due now
    that would queue ahead of the live runs' next polls: one recompute brings forward what the
    rate serves in a second, the most overdue first, spaced at the rate."""
    s = make(20, min_interval=1.0, max_interval=60.0, linger_interval=300.0, linger=1e6)
    s.rate = 0.05
    s.recompute()
    for run_id in ids(20):
        track = s.tracks[run_id]
        track.cp = replace(track.cp, status="completed", verified=True)
        finish(s, run_id, 10.0 + int(run_id[:8], 16) * 0.01)
    s.rate = 3.0
    s.recompute(12.0)
    moved = sorted(t.status_due for t in s.tracks.values() if t.status_due < 20.0)
    assert len(moved) == 3
    assert all(b - a >= 1 / 3.0 - 1e-9 for a, b in itertools.pairwise(moved))


def look(
    s: Scheduler,
    run_id: str,
    now: float,
    after: str | None,
    status_news: int,
    quiet_for: float | None = None,
) -> None:
    """One poll of the run (its status and its messages, none new) as the pipeline makes it:
    popped (its status then is kept), its checkpoint committed with the status the poll found
    (``after``, None: unchanged), then done (``quiet_for``: seconds since its updated_at)."""
    track = s.tracks[run_id]
    track.status_due = min(track.status_due, now)
    s._push(track)
    assert s.pop_due(now) is track
    if after is not None:
        s.checkpointed(track, replace(track.cp, status=after))
    s.done(
        track,
        now,
        plan=BOTH,
        status_news=status_news,
        message_news=0,
        status_changed=after is not None,
        hint_status=False,
        more_messages=False,
        quiet_for=quiet_for,
    )


def test_a_pending_runs_start_is_counted_for_the_pending_runs() -> None:
    """A pending run seen started (the checkpoint says running before done() is told) is news
    for the pool of pending runs, by the status it had when the poll began."""
    s = make(1)
    (run_id,) = ids(1)
    look(s, run_id, 0.0, "pending", 1)  # the first look: history, not a rate
    before = s.pending_news.value
    look(s, run_id, 2.0, None, 0)
    look(s, run_id, 4.0, "running", 1)
    assert s.pending_news.value > before
    assert s.pending_news.count == 1.0
    assert math.isclose(s.pending_news.span, 4.0, rel_tol=0.01)  # decayed a little


def test_a_runs_start_is_not_in_its_own_status_rate() -> None:
    """pending -> starting -> running within seconds says nothing of how often the running run
    changes: its own status rate stays at the prior, and so does its status probe's share."""
    started, steady = make(1), make(1)
    (run_id,) = ids(1)
    look(started, run_id, 0.0, "pending", 1)
    look(started, run_id, 1.0, "starting", 1)
    look(started, run_id, 2.0, "running", 1)
    look(steady, run_id, 0.0, None, 1)
    look(steady, run_id, 2.0, None, 0)
    assert started.tracks[run_id].status_rate.count == 0.0
    assert steady.tracks[run_id].status_rate.count == 0.0  # its first look's status: history
    for s in (started, steady):
        s.rate = 0.05
        s.recompute()
    assert math.isclose(
        started.status_interval(started.tracks[run_id]),
        steady.status_interval(steady.tracks[run_id]),
    )
    look(started, run_id, 3.0, "waiting", 1)  # a running run's own change is its own news
    assert started.tracks[run_id].status_rate.count == 1.0


def test_a_finished_runs_resume_is_counted_for_the_lingering_runs() -> None:
    """A completed run seen running again is news for the pool of finished runs: they are then
    looked at more often (the checkpoint already says running when done() is told)."""
    s = make(1, linger=1e6, linger_interval=300.0)
    (run_id,) = ids(1)
    look(s, run_id, 0.0, "completed", 1)
    track = s.tracks[run_id]
    s.checkpointed(track, replace(track.cp, verified=True))
    assert track.phase == "lingering"
    look(s, run_id, 10.0, None, 0)
    quiet = s.linger_news.value
    look(s, run_id, 20.0, "running", 1)
    assert s.linger_news.count == 1.0
    assert math.isclose(s.linger_news.span, 20.0, rel_tol=0.01)
    assert s.linger_news.value > quiet


def test_a_first_looks_backlog_is_not_a_message_rate() -> None:
    """The messages a first look finds were written over an unknown time: they do not make the
    run look busy (a run with a long history is not polled faster for it)."""
    s = make(2)
    old, fresh = ids(2)
    for run_id, news in ((old, 50), (fresh, 0)):
        track = s.tracks[run_id]
        assert s.pop_due(0.0) is track
        finish(s, run_id, 0.0, news=news)
    assert s.tracks[old].msg_rate.count == 0.0
    finish(s, old, 5.0, news=3)  # what it finds later is
    assert s.tracks[old].msg_rate.count == 3.0


def test_a_finished_runs_quiet_since_its_end_counts_for_the_lingering_runs() -> None:
    """A first look that finds a run finished and unchanged for a while is evidence for the pool
    of finished runs (no resume in that span), up to linger_interval a run; a live run's is not.
    Sharing a tight rate with a live run, the finished runs are then looked at less often than
    on the prior alone, and a resume seen later still raises their estimate."""

    def lingering(*quiet: float | None) -> Scheduler:
        s = make(1, linger=1e6, linger_interval=300.0)
        live, *done = ids(4)
        look(s, live, 0.0, None, 0, quiet_for=3600.0)  # running, unchanged
        for run_id in done:  # known finished (from the state file), looked at again
            s.add(Checkpoint(run_id=run_id, status="completed", verified=True), 0.0)
        for run_id, q in zip(done, quiet, strict=True):
            look(s, run_id, 0.0, None, 0, quiet_for=q)
            assert s.tracks[run_id].phase == "lingering"
        s.rate = 0.5
        s.recompute()
        return s

    told, blind = lingering(3600.0, 20.0, 1000.0), lingering(None, None, None)
    assert told.linger_news.count == blind.linger_news.count == 0.0
    assert math.isclose(told.linger_news.span, 300.0 + 20.0 + 300.0)  # capped, not 3600
    assert blind.linger_news.span == 0.0  # looks without an updated_at; the live run's neither
    finished = ids(4)[1]
    assert told.status_interval(told.tracks[finished]) > blind.status_interval(
        blind.tracks[finished]
    )
    quiet = told.linger_news.value
    told.tracks[finished].status_due = -1.0  # the most overdue of the finished runs
    look(told, finished, 30.0, "running", 1)  # resumed from outside
    assert told.linger_news.count == 1.0
    assert told.linger_news.value > quiet


def test_a_finished_runs_look_set_while_idle_waits_for_its_place_when_the_budget_is_busy() -> None:
    """Finished runs looked at while the budget was idle are due again within seconds. When the
    share shrinks (live runs took the budget), such a look is not spent at the idle pace: popped
    before its place under the new share, it goes there (on the run's own linger grid), and is
    polled then. With the budget still idle it is polled when due."""

    def looked() -> Scheduler:
        s = make(0, linger=1e6, linger_interval=300.0, min_interval=1.0)
        for run_id in ids(3):
            s.add(Checkpoint(run_id=run_id, status="completed", verified=True), 0.0)
        s.rate = 10.0  # three probes at min_interval use 3 of it: idle
        s.recompute()
        for _ in ids(3):
            track = s.pop_due(0.0)
            assert track is not None
            polled(s, track, 0.0)
            assert track.phase == "lingering" and track.status_due <= 2.0
        return s

    idle = looked()
    assert idle.pop_due(2.0) is not None

    busy = looked()
    busy.rate = 0.02
    busy.recompute()
    assert busy.pop_due(2.0) is None  # put back, not polled
    for track in busy.tracks.values():
        interval = busy.status_interval(track)
        assert interval > 100.0
        assert track.status_due == repace.linger_grid(track, 0.0, interval)
    first = min(track.status_due for track in busy.tracks.values())
    assert busy.pop_due(first) is not None  # at its place, it is polled


def test_a_finished_runs_status_look_asked_for_by_its_own_messages_is_not_put_back() -> None:
    """A finished run's messages poll that reads a user's message (the run was resumed from
    outside) asks for its status at once: under a busy budget that look is a hinted one, polled
    now, not put back to the run's place on its linger grid (minutes away), where the resume
    and its second end would be seen too late or not at all."""
    s = make(0, linger=1e6, linger_interval=300.0, min_interval=1.0)
    (run_id,) = ids(1)
    s.add(Checkpoint(run_id=run_id, status="completed", verified=True), 0.0)
    s.rate = 10.0
    s.recompute()
    track = s.pop_due(0.0)
    assert track is not None
    polled(s, track, 0.0)
    s.rate = 0.02  # the live runs took the budget
    s.recompute()
    s.hint(run_id, 5.0, messages=True)  # a sweep saw it move
    track = s.pop_due(5.0)
    assert track is not None
    plan = polled(s, track, 5.0, message_news=1, hint_status=True)  # a user's message
    assert plan.messages
    assert track.status_due == 5.0
    popped = s.pop_due(5.0)
    assert popped is track, "the status look was put back to the linger grid"
    assert s.plan(track, 5.0).status


def test_a_live_runs_status_look_asked_for_by_its_messages_stays_routine() -> None:
    """A running run's lifecycle message asks for its status now, but as a routine look: hinted,
    the many starts of a wake-up went ahead of the sweeps' rounds of message polls (v2 wake-up
    world, message p95 1.1 -> 5.0-5.6 s while they were)."""
    s = make(0, min_interval=1.0)
    (run_id,) = ids(1)
    s.add(Checkpoint(run_id=run_id, status="running"), 0.0)
    s.rate = 10.0
    s.recompute()
    track = s.pop_due(0.0)
    assert track is not None
    polled(s, track, 0.0, message_news=1, hint_status=True)
    assert track.status_due == 0.0 and not track.urgent
    assert s.pop_due(0.0) is track and s.plan(track, 0.0).status


def test_messages_read_by_a_status_poll_count_for_the_message_probe() -> None:
    """A status poll that sees the run's ``updated_at`` move reads its messages in the same poll:
    what that read finds is the message probe's news and the read is its poll (before, the
    messages went uncounted, so a busy run read mostly through its status looked as quiet as
    the prior, and its message probe asked again right after)."""
    s = make(1, min_interval=0.5)
    (run_id,) = ids(1)
    track = s.pop_due(0.0)
    assert track is not None
    finish(s, run_id, 0.0)  # the first look
    track.status_due, track.msg_due = 4.0, 50.0
    plan = s.plan(track, 4.0)
    assert plan.status and not plan.messages
    status_polled(s, track, 4.0, read=True, news=12)
    assert track.msg_rate.count == 12.0
    assert track.last_msg_poll == 4.0
    assert track.msg_due == 4.0 + s.message_interval(track)
    quiet = make(1, min_interval=0.5).tracks[run_id]
    assert track.msg_rate.value > 5 * quiet.msg_rate.value


def test_a_status_change_whose_poll_read_the_messages_asks_for_them_after_min_interval() -> None:
    """A status change asks for the run's messages, but the poll that saw it read them right
    after (the poller does): they are due again once ``min_interval`` has passed, not at once
    (a second message read a few milliseconds later found nothing), and not only at the
    share's interval (a run that starts, resumes or is answered talks now: without the early
    read, wake-up v1 message p95 went 3.7 -> 6.1 s). A change seen by a poll whose messages
    stage did not run (the run not yet visible, a failure) still asks for them now."""
    s = make(1, min_interval=0.5)
    (run_id,) = ids(1)
    track = s.pop_due(0.0)
    assert track is not None
    finish(s, run_id, 0.0)  # the first look
    for read, due in ((True, 4.5), (False, 4.0)):
        track.status_due = track.msg_due = 4.0
        status_polled(s, track, 4.0, read=read, changed=True)
        assert track.msg_due == due


def test_a_run_that_just_started_begins_at_the_running_runs_message_rate() -> None:
    """Each running run's message rate starts from a prior. With the fixed one (1 message in
    20 s) a run that just started was read far less often than the busy runs beside it until its
    own polls had shown its pace; the prior is now the pooled rate of the running runs, so a new
    run of a busy team starts as busy as its kind, and of a quiet one as quiet. What a pending,
    waiting or finished run's read finds, and a first look's backlog, are not in the pool."""
    s = make(1, min_interval=0.5)
    (busy_id,) = ids(1)
    busy = s.pop_due(0.0)
    assert busy is not None
    finish(s, busy_id, 0.0, news=40)  # the first look: its backlog is no rate
    assert s.live_news.count == 0.0
    for t in range(1, 11):  # then 4 messages a second
        s.tracks[busy_id].inflight = True
        s.tracks[busy_id].looked_status = "running"
        finish(s, busy_id, float(t), news=4)
    assert s.live_news.value > 1.0  # 4 a second, after 10 s of one run against the prior
    fresh = make(0, min_interval=0.5)
    for sched in (s, fresh):
        sched.add(Checkpoint(run_id="e0000000-0000-4000-8000-000000000000", status="running"), 10)
    new_here = s.tracks["e0000000-0000-4000-8000-000000000000"]
    new_alone = fresh.tracks["e0000000-0000-4000-8000-000000000000"]
    weight_here = s._message_spec(new_here)
    weight_alone = fresh._message_spec(new_alone)
    assert isinstance(weight_here, tuple) and isinstance(weight_alone, tuple)
    assert weight_here[0] > 4 * weight_alone[0]

    waiting = make(1, min_interval=0.5)
    track = waiting.pop_due(0.0)
    assert track is not None
    finish(waiting, track.run_id, 0.0)
    track.inflight, track.looked_status = True, "waiting"
    finish(waiting, track.run_id, 5.0, news=3)  # an answer's messages: not a running rate
    assert waiting.live_news.count == 0.0
