"""Which run to poll next, which endpoint to ask, and when. Pure: times are passed in.

Every watched run has two *probes*: its messages (``GET .../messages`` from the cursor) and its
status (``GET run``: status and pending human request), each with a news rate λ (news.py: its
own decayed estimate, or pooled over its kind for pending and finished runs; a status change
counts ``STATUS_WEIGHT`` messages). The budget's rate is shared by the square-root rule within
the bounds each run's phase allows (probes.py, news.water_level): an idle budget moves every
probe toward ``min_interval`` in order of expected news, a saturated one stretches the least
promising first.

========== =============================== ======================================
phase      messages                        status
========== =============================== ======================================
active     [min_interval, max_interval]    [min_interval, max_interval]
waiting    [min_interval, waiting_interval] [min_interval, waiting_interval]
ending     now, until drained + verified   —
lingering  —                               [min_interval, linger_interval], for ``linger``
retired    —                               —
========== =============================== ======================================

Hints move a probe to *now*: a status change asks for the messages (final drain), a lifecycle,
human-request or user message asks for the status, a sweep that shows a different status or a
newer ``updated_at`` asks for both, and so does a Duvo webhook. A new run's first look is due at
once. Each run gets a stable phase (from its id) so that linger polls spread, errors back off
per run with jitter, and a run is never polled twice at once. See docs/scheduling.md.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable

from duvo_monitor import probes, repace
from duvo_monitor.config import PollingConfig
from duvo_monitor.differ import Checkpoint
from duvo_monitor.news import Demand, PooledRate, SweepTrust, share, water_level
from duvo_monitor.probes import PENDING_STATUSES, Spec
from duvo_monitor.track import FINISHED_STATUSES, STARTUP_STATUSES, Plan, Track, stable_phase

__all__ = ["Plan", "Scheduler", "SweepTrust", "Track", "stable_phase"]

INF = math.inf
HINT_SPACING = 0.5
MAX_BACKOFF = 120.0
# Pooled priors (events, seconds) for the probes that rarely find news on their own: a pending run
# starts within seconds; a finished run may be resumed from outside or deleted at any time.
PENDING_PRIOR = (1.0, 10.0)
LINGER_PRIOR = (1.0, 300.0)
LIVE_PRIOR = (1.0, 20.0)  # a running run's messages: news.Rate's own prior
NOT_RUNNING = STARTUP_STATUSES | FINISHED_STATUSES | {"waiting"}


class Scheduler:
    def __init__(self, config: PollingConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.tracks: dict[str, Track] = {}
        # Two queues by due time: runs known to have news (hinted) are served before routine
        # probes that are due as well, so the budget's next request buys the likeliest news.
        self._heap: list[tuple[float, int, str]] = []
        self._urgent: list[tuple[float, int, str]] = []
        # First looks go ahead of hinted polls: nothing is known of a new run yet, while a
        # hinted run's news is at most a poll late (and a saturated budget always has hints).
        self._first: list[tuple[float, int, str]] = []
        self._counter = 0
        self._rate = 1.0
        self.sweeping = False
        # Sweeps prove themselves: does updated_at move with every message? (see SweepTrust)
        self.trust = SweepTrust()
        self.pending_news = PooledRate(*PENDING_PRIOR)
        self.linger_news = PooledRate(*LINGER_PRIOR)
        # Messages a second of a running run, over every running run: a run that just started
        # begins at its kind's rate, not at the fixed prior (news.Rate.given).
        self.live_news = PooledRate(*LIVE_PRIOR, half_life=120.0)
        self._level = math.inf  # the share's water level (news.water_level); inf: room to spare
        self._stale = True
        self._live = 0
        self._probes = 0  # requests one round of every live run costs (round_robin, fixed)

    @property
    def rate(self) -> float:
        """Requests a second the scheduled probes may spend (set by the daemon's pacing)."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value != self._rate:
            self._rate = value
            self._stale = True

    # -- membership --------------------------------------------------------------------------

    def add(self, cp: Checkpoint, now: float, *, source: str = "config") -> Track:
        track = self.tracks.get(cp.run_id)
        if track is not None:
            if track.retired and not track.cp.lost:
                track.retired = False
            return track
        track = Track(run_id=cp.run_id, cp=cp, source=source, phase_offset=stable_phase(cp.run_id))
        self.tracks[cp.run_id] = track
        # The first look is due at once and counts as news (nothing is known of the run yet):
        # it goes ahead of routine polls and does not wait for their pace, only for the budget;
        # the runs added first are looked at first.
        track.status_due = now
        track.msg_due = now
        track.urgent = True
        if cp.lost:
            track.retired = True
        else:
            # Incremental, not recompute(): adding 10,000 runs must not cost 10,000 full passes
            # (the ticker recomputes once a second anyway).
            self._live += 1
            self._probes += 2
        self._push(track)
        return track

    def remove(self, run_id: str) -> Track | None:
        track = self.tracks.pop(run_id, None)
        if track is not None:
            track.due = INF
            if not track.retired:
                self._live = max(0, self._live - 1)
                self._probes = max(0, self._probes - 2)
        return track

    def live(self) -> int:
        return self._live

    # -- the queue ---------------------------------------------------------------------------

    def _push(self, track: Track) -> None:
        if track.inflight or track.retired:
            track.due = INF
            return
        due = min(track.msg_due, track.status_due)
        track.due = due
        if due < INF:
            self._counter += 1
            heap = self._first if not track.polls else self._urgent if track.urgent else self._heap
            heapq.heappush(heap, (due, self._counter, track.run_id))

    def _top(self, heap: list[tuple[float, int, str]]) -> float:
        while heap:
            if not self._entry_live(heap[0]):
                heapq.heappop(heap)
                continue
            return heap[0][0]
        return INF

    def next_due(self) -> float:
        return min(self._top(self._first), self._top(self._urgent), self._top(self._heap))

    def pop_due(self, now: float) -> Track | None:
        """The next run to poll, marked in flight; None if none is due. A due first look goes
        first, then a due hinted run; within each (and among the others), the most overdue. A
        finished run's routine look set under a larger share waits for its place under this one
        (repace.later): it does not spend a busy budget at an idle budget's pace."""
        while True:
            heap = next((h for h in (self._first, self._urgent) if self._top(h) <= now), self._heap)
            if self._top(heap) > now:
                return None
            due, _, run_id = heapq.heappop(heap)
            track = self.tracks[run_id]
            if heap is not self._heap or not self._put_back(track, now):
                break
        track.due_popped = due
        track.looked_status = track.cp.status
        track.inflight = True
        track.due = INF
        return track

    def _put_back(self, track: Track, now: float) -> bool:
        """Only a lingering run's look (checked first: this is on every routine pop)."""
        if track.phase != "lingering" or self.config.policy != "adaptive":
            return False
        if track.failures or track.msg_due <= now:
            return False
        at = repace.later(track, now, self._interval(self._status_spec(track)))
        if at is not None:
            track.status_due = at
            self._push(track)
        return at is not None

    def plan(self, track: Track, now: float) -> Plan:
        slack = 0.05
        if self.config.policy != "adaptive":
            return Plan(status=track.phase != "ending", messages=track.phase != "lingering")
        status = track.status_due <= now + slack
        messages = track.msg_due <= now + slack or not status
        urgent, track.urgent = track.urgent, False
        return Plan(status=status, messages=messages, urgent=urgent, first=not track.polls)

    # -- outcomes ----------------------------------------------------------------------------

    def hint(
        self, run_id: str, now: float, *, status: bool = False, messages: bool = False
    ) -> bool:
        """Poll this run now (a sweep, a webhook or another probe says there is news)."""
        track = self.tracks.get(run_id)
        if track is None:
            return False
        # A hint says the run exists and moved: a retired run (a lost one too) is looked at again.
        track.retired = False
        track.urgent = True
        if track.inflight:
            track.pending_status = track.pending_status or status
            track.pending_messages = track.pending_messages or messages
            return True
        if status:
            track.status_due = min(track.status_due, now)
        if messages:
            track.msg_due = min(track.msg_due, self._informed_due(track, now))
        self._push(track)
        return True

    def _informed_due(self, track: Track, now: float) -> float:
        """When a run known to have news may be polled: now, unless that would poll it faster
        than its square-root share. Hints then time the polls (each finds news) without adding
        to them, so the total stays within the budget however busy the runs are."""
        if (
            self.config.policy != "adaptive"
            or track.phase != "active"
            or track.last_msg_poll is None
            or self._trusted(track)
        ):
            # With trusted sweeps, the daemon paces the sweeps so that their hints fit.
            return now
        share = self._interval(self._message_spec(track))
        return max(now, track.last_msg_poll + HINT_SPACING * share)

    def done(
        self,
        track: Track,
        now: float,
        *,
        plan: Plan,
        status_news: int,
        message_news: int,
        status_changed: bool,
        hint_status: bool,
        more_messages: bool,
        error_delay: float | None = None,
        answered: bool = False,
        quiet_for: float | None = None,
        read_messages: bool = False,
    ) -> None:
        """Fold a finished poll into the run's rates and due times. ``read_messages``: the
        poll read the messages though its plan asked only for the status (the status or its
        ``updated_at`` moved): that read is the message probe's too. A failed poll
        (``error_delay`` not None) backs the run off exponentially with the failed polls in a
        row; one that was partly ``answered`` (its status read, then a page failed) starts the
        count again: the API answers, and a run whose final pages wait must not be left for
        tens of seconds because of earlier, unrelated failures."""
        track.inflight = False
        # A first look finds history of unknown length, and a run's start (pending, starting,
        # running within seconds) says nothing of how often it changes: not in its own rates.
        first, before = track.polls == 0, track.looked_status
        track.polls += 1
        if plan.status:
            self._pool(track, status_news, now, quiet_for)
            own = 0 if first or before in STARTUP_STATUSES else status_news
            track.status_rate.observe(own, now)
            track.last_status_poll = now
        messages = plan.messages or read_messages
        if messages:
            if not first and track.last_msg_poll is not None and before not in NOT_RUNNING:
                self.live_news.observe(message_news, now - track.last_msg_poll, now)
            track.msg_rate.observe(0 if first else message_news, now)
            track.last_msg_poll = now
        if error_delay is not None:
            track.failures = 1 if answered else track.failures + 1
            backoff = error_delay or min(MAX_BACKOFF, 2.0 ** min(track.failures, 8))
            backoff *= 0.75 + self.rng.random() / 2
            track.status_due = (
                max(track.status_due, now + backoff) if plan.status else track.status_due
            )
            track.msg_due = max(track.msg_due, now + backoff) if messages else track.msg_due
            self._push(track)
            return
        track.failures = 0
        phase = track.phase
        if phase == "retired":
            track.retired = True
            self._push(track)
            return
        if plan.status:
            track.status_due = (
                self._linger_due(track, now)
                if phase == "lingering" and self.config.policy == "adaptive"
                else now + self.status_interval(track)
            )
        if messages:
            track.msg_due = now + self.message_interval(track)
        # A pending run has no messages yet. A change this poll read them after: again once
        # min_interval has passed (a run that starts, resumes or is answered talks now).
        changed = status_changed and track.cp.status not in PENDING_STATUSES
        if (changed and not messages) or more_messages or phase == "ending":
            track.msg_due = now
        elif changed:
            track.msg_due = min(track.msg_due, now + self.config.min_interval)
        if hint_status or track.pending_status:
            track.status_due = now
            # A finished run's user message is a resume: a hinted look, never put back to the
            # run's place on its linger grid. (A live run's lifecycle messages stay routine:
            # hinted, they went ahead of the sweeps' rounds of message polls.)
            track.urgent = track.urgent or phase == "lingering"
        if track.pending_messages and phase != "lingering":
            track.msg_due = min(track.msg_due, self._informed_due(track, now))
        track.pending_status = track.pending_messages = False
        if phase == "lingering":
            if not plan.status and (track.status_due == INF or track.status_due < now):
                track.status_due = self._linger_due(track, now)
            if track.linger_until is None:
                track.linger_until = now + self.config.linger
            elif now >= track.linger_until:
                track.retired = True
            track.msg_due = INF
        else:
            track.linger_until = None
        self._push(track)

    def _pool(self, track: Track, news: int, now: float, quiet: float | None) -> None:
        """Fold a status poll of a starting or finished run into its kind's pooled news rate, by
        its status when the poll began (a start or a resume counts for the runs awaiting one).
        A first look that finds a run finished and unchanged for ``quiet`` seconds counts that
        span, up to ``linger_interval`` a run (a resume is likelier soon after the end)."""
        if track.last_status_poll is None:
            if quiet is not None and track.cp.status in FINISHED_STATUSES:
                self.linger_news.observe(0, min(quiet, self.config.linger_interval), now)
            return
        exposure, before = now - track.last_status_poll, track.looked_status
        if before in STARTUP_STATUSES:
            self.pending_news.observe(news, exposure, now)
        elif before in FINISHED_STATUSES and not self._status_swept(track):
            self.linger_news.observe(news, exposure, now)

    def _linger_due(self, track: Track, now: float) -> float:
        """The next linger poll (repace.linger_grid: on the run's own phase of its interval,
        ``linger_interval`` when the budget is short, down to ``min_interval`` with room)."""
        return repace.linger_grid(track, now, self.status_interval(track))

    def set_sweeping(self, sweeping: bool, now: float) -> None:
        """Sweeps start or stop. When they stop, the runs they covered get their per-run
        status probes back at once (their safety-net due times may be minutes away)."""
        was, self.sweeping = self.sweeping, sweeping
        if was and not sweeping:
            self.sweep_failed(now)

    def unswept(self, track: Track, now: float) -> None:
        """Sweeps no longer show this run (or failed): its own probes come back, the status
        probe and, where trusted sweeps had made it a far safety net, the message probe."""
        if track.swept_at is None or track.retired:
            track.swept_at = None
            return
        track.swept_at = None
        phase = track.phase
        if phase == "lingering":
            track.status_due = min(track.status_due, self._linger_due(track, now))
        else:
            track.status_due = min(track.status_due, now + self.status_interval(track))
        if phase in ("active", "waiting"):
            track.msg_due = min(track.msg_due, now + self.message_interval(track))
        if not track.inflight:  # else the poll in flight ends with these due times kept
            self._push(track)

    def sweep_failed(self, now: float) -> None:
        """A sweep failed: no run counts as swept until one succeeds (and marks those shown)."""
        for track in self.tracks.values():
            self.unswept(track, now)

    # -- intervals ---------------------------------------------------------------------------

    def recompute(self, now: float | None = None) -> None:
        """Refresh the share over the live probes (call about once a second): the level at
        which the probes' rates fill ``rate``, less what the fixed-interval probes take. Given
        ``now`` and no poll due, idle probes are brought forward to a larger share (repace.py)."""
        demands: dict[tuple[float, float, float], int] = {}
        fixed = 0.0
        live = probes = 0
        adaptive = self.config.policy == "adaptive"
        idle: list[tuple[Track, Spec, Spec]] = []  # probes that _repace may bring forward
        for track in self.tracks.values():
            if track.retired:
                continue
            live += 1
            phase = track.phase
            # The baselines ask a lingering run its status only, an ending one its messages.
            probes += 1 if phase in ("lingering", "ending") else 2
            if not adaptive:
                continue
            specs = (self._message_spec(track), self._status_spec(track))
            for spec in specs:
                if isinstance(spec, tuple):
                    weight, fastest, slowest = spec
                    key = (weight, 1.0 / slowest, 1.0 / fastest)
                    demands[key] = demands.get(key, 0) + 1
                elif 0 < spec < INF:
                    fixed += 1.0 / spec
            if now is not None and track.polls and not track.inflight and not track.failures:
                idle.append((track, *specs))
        self._live = live
        self._probes = probes
        self._stale = False
        if adaptive:
            share_of = [Demand(w, slow, fast, n) for (w, slow, fast), n in demands.items()]
            self._level = water_level(share_of, max(self._rate - fixed, 1e-6))
            if now is not None and self.next_due() > now:
                # Only into an idle queue: with polls already waiting for the budget, probes
                # brought forward would not add a request, only queue ahead of due ones.
                self._repace(now, idle)

    def _repace(self, now: float, idle: list[tuple[Track, Spec, Spec]]) -> None:
        """Bring idle probes forward to a larger share (repace.py); each spec's interval once."""
        intervals = {spec: self._interval(spec) for spec in {x for _, *xs in idle for x in xs}}
        given = ((t, intervals[m], intervals[st]) for t, m, st in idle)
        for track, status, at in repace.forward(given, now, self._rate):
            if status:
                track.status_due = min(track.status_due, at)
            else:
                track.msg_due = min(track.msg_due, at)
            self._push(track)
        if len(self._heap) + len(self._urgent) > 4 * len(self.tracks) + 64:
            # Superseded entries are dropped lazily at the top; rebuild before they pile up.
            for heap in (self._heap, self._urgent):
                heap[:] = [e for e in heap if self._entry_live(e)]
                heapq.heapify(heap)

    def _entry_live(self, entry: tuple[float, int, str]) -> bool:
        """Is this queue entry the run's current one (not superseded, in flight or retired)?"""
        track = self.tracks.get(entry[2])
        return (
            track is not None and track.due == entry[0] and not track.inflight and not track.retired
        )

    def _status_swept(self, track: Track) -> bool:
        return self.sweeping and track.swept_at is not None

    def _trusted(self, track: Track) -> bool:
        return self._status_swept(track) and self.trust.trusted

    def _message_spec(self, track: Track) -> Spec:
        return probes.message_spec(
            self.config, track, trusted=self._trusted(track), live_news=self.live_news.value
        )

    def _status_spec(self, track: Track) -> Spec:
        return probes.status_spec(
            self.config,
            track,
            swept=self._status_swept(track),
            linger_news=self.linger_news.value,
            pending_news=self.pending_news.value,
        )

    def _interval(self, spec: Spec) -> float:
        if not isinstance(spec, tuple):
            return spec
        if self._stale:
            self.recompute()
        weight, fastest, slowest = spec
        return 1.0 / share(self._level, weight, 1.0 / slowest, 1.0 / fastest)

    def message_interval(self, track: Track) -> float:
        return self._policy_interval(self._message_spec, track)

    def status_interval(self, track: Track) -> float:
        return self._policy_interval(self._status_spec, track)

    def _policy_interval(self, spec: Callable[[Track], Spec], track: Track) -> float:
        c = self.config
        if c.policy == "fixed":
            return c.fixed_interval
        return self._round_robin() if c.policy == "round_robin" else self._interval(spec(track))

    def hinted_backlog(self, now: float) -> bool:
        """Is a run known to have news still waiting for its poll?"""
        return min(self._top(self._first), self._top(self._urgent)) <= now

    def first_backlog(self, now: float) -> bool:
        """Is a run's first look due?"""
        return self._top(self._first) <= now

    def _round_robin(self) -> float:
        # Every live run, in turn, at the rate the budget allows: one round asks every live
        # run's probes (both endpoints, or the one its phase needs).
        return max(self.config.min_interval, max(self._probes, 1) / max(self.rate, 1e-6))

    # -- what the pipeline and the sweeper tell the scheduler (tracks change only here) --------

    def checkpointed(self, track: Track, cp: Checkpoint) -> None:
        """The run's events up to ``cp`` are delivered and committed: the run is now there."""
        track.cp = cp

    def swept(self, track: Track, now: float, *, updated: float | None, at: float) -> None:
        """A sweep answered at ``at`` (clock.time()) listed the run, last updated ``updated``."""
        track.swept_at = now
        track.swept_updated = updated
        track.swept_time = at
