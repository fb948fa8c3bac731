"""Every metric of duvo-monitor: its name, its labels, and how the facts reported move it.

:class:`Telemetry` is the only place that knows metric names. The daemon, the API client and the
sinks report facts through its small synchronous methods (each a few dict lookups, safe to call in
any hot path; call them from the event loop thread) and never touch ``prometheus_client`` objects.
The registry is injected, so every test gets a fresh one and nothing lands in the global registry.

Two families of metrics:

- ``duvo_*``: what the watched agents do (runs finished, durations, human requests, tool calls,
  messages). These answer the question users install the daemon for: "what is our failure rate,
  and how long do runs take?".
- ``duvo_monitor_*``: how the monitor itself is doing (API requests and budget, event lag, sinks).

Cardinality is bounded by construction: every label value passes through a
:class:`~duvo_monitor.labels.LabelCap` (known values, then at most ``cap`` others, then
``"other"``), a run id is never a label, and the ``agent_id`` label can be switched off entirely.

Zero initialisation: ``rate()`` and ``increase()`` miss the first increment of a series that
appears at 1, so the series alerts depend on exist at 0 before anything happens. With
``agent_label=False`` the four terminal statuses of ``duvo_runs_finished_total`` exist from the
start. With ``agent_label=True`` a series without ``agent_id`` cannot exist (it would be a
different label set), so the four statuses are created per agent: for the ``agents`` given at
construction (e.g. the config's discovery filter) and for every agent the moment it is first seen
in :meth:`Telemetry.run_status`, which always precedes its first :meth:`Telemetry.run_finished`.

The listener that serves these metrics, ``/healthz`` and ``/readyz`` is :mod:`duvo_monitor.metrics`.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

from duvo_monitor import __version__, models
from duvo_monitor.budget import KINDS
from duvo_monitor.clock import Clock
from duvo_monitor.labels import DEFAULT_LABEL_CAP, LabelCap
from duvo_monitor.readiness import Readiness

# The ordered tuple zero-initialisation walks; the set itself is the models' one.
TERMINAL_STATUSES = tuple(sorted(models.TERMINAL_STATUSES))
KNOWN_STATUSES = (
    "not_started",
    "pending",
    "starting",
    "running",
    "waiting",
    "needs_attention",
    *TERMINAL_STATUSES,
)
KNOWN_ROLES = ("user", "assistant", "tool", "system")
TOOL_OUTCOMES = ("ok", "error")
SINK_STATES = ("ok", "retry", "failed")
PURPOSES = KINDS  # requests by purpose: the budget's kinds
# Drop reasons created at 0 per sink, so that an alert on increase() sees the first drop.
DROP_REASONS = ("queue_full", "spool_full", "dead_letter")

DEFAULT_TOOL_CAP = 50
DEFAULT_AGENT_CAP = 500
DEFAULT_READY_AFTER = 120.0

# Agent runs last seconds to hours; the library's default buckets stop at 10 s.
RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
# A human may answer within seconds or the next day.
HUMAN_WAIT_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
TOOL_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
API_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class TimeSource(Protocol):
    """What telemetry needs of a clock: :class:`duvo_monitor.clock.Clock` or a test's fake."""

    def time(self) -> float: ...


class Telemetry:
    """All metrics of the project, registered in ``registry``.

    ``agent_label=False`` drops the ``agent_id`` label from the run metrics (for teams with many
    agents). ``tool_cap`` bounds distinct tool names, ``label_cap`` the unknown values of every
    other label, ``agent_cap`` distinct agent ids. ``ready_after`` is how recent the last API
    answer must be for ``/readyz``. ``clock`` dates human requests for the oldest-pending gauge.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        agent_label: bool = True,
        tool_cap: int = DEFAULT_TOOL_CAP,
        label_cap: int = DEFAULT_LABEL_CAP,
        agent_cap: int = DEFAULT_AGENT_CAP,
        agents: Iterable[str] = (),
        ready_after: float = DEFAULT_READY_AFTER,
        version: str = __version__,
        python: str | None = None,
        process_metrics: bool = True,
        clock: TimeSource | None = None,
    ) -> None:
        self.registry = registry
        self.agent_label = agent_label
        self.ready_after = ready_after
        self._clock: TimeSource = clock or Clock()

        self._status = LabelCap(KNOWN_STATUSES, label_cap)
        self._agent = LabelCap((), agent_cap)
        self._tool = LabelCap((), tool_cap)
        self._outcome = LabelCap(TOOL_OUTCOMES, 0)
        self._role = LabelCap(KNOWN_ROLES, label_cap)
        self._msg_type = LabelCap((), label_cap)
        self._event_type = LabelCap((), label_cap)
        self._endpoint = LabelCap((), label_cap)
        self._code = LabelCap((), label_cap)
        self._sink = LabelCap((), label_cap)
        self._kind = LabelCap((), label_cap)
        self._reason = LabelCap(DROP_REASONS, label_cap)
        self._state_cap = LabelCap(SINK_STATES, 0)

        self._run_status: dict[str, str] = {}
        self._agents_seen: set[str] = set()
        self._tools_seen: set[str] = set()
        self._sinks: dict[str, str] = {}
        self._pending_human: dict[str, float] = {}
        self._last_api_answer: float | None = None

        run_labels = ["agent_id", "status"] if agent_label else ["status"]
        r = registry

        # Runs.
        self._finished = Counter(
            "duvo_runs_finished", "Runs that entered a terminal status.", run_labels, registry=r
        )
        self._duration = Histogram(
            "duvo_run_duration_seconds",
            "Run duration from start to its terminal status.",
            run_labels,
            buckets=RUN_DURATION_BUCKETS,
            registry=r,
        )
        self._watched = Gauge(
            "duvo_runs_watched",
            "Runs currently watched, by last seen status.",
            ["status"],
            registry=r,
        )
        self._human_pending = Gauge(
            "duvo_human_requests_pending", "Human requests currently open.", registry=r
        )
        self._human_oldest = Gauge(
            "duvo_human_request_oldest_pending_age_seconds",
            "Age of the oldest open human request (0 when none is open).",
            registry=r,
        )
        self._human_oldest.set_function(self._oldest_pending_age)
        self._human_wait = Histogram(
            "duvo_human_request_wait_seconds",
            "How long a human request waited for its answer.",
            buckets=HUMAN_WAIT_BUCKETS,
            registry=r,
        )
        self._tool_calls = Counter(
            "duvo_tool_calls", "Tool calls, by outcome.", ["tool", "outcome"], registry=r
        )
        self._tool_duration = Histogram(
            "duvo_tool_call_duration_seconds",
            "Time from a tool call to its result.",
            ["tool"],
            buckets=TOOL_CALL_BUCKETS,
            registry=r,
        )
        self._messages = Counter(
            "duvo_messages", "Run messages seen.", ["role", "type"], registry=r
        )

        # The monitor: API.
        self._api_requests = Counter(
            "duvo_monitor_api_requests",
            "Requests to the Duvo API, by route and status code ('error': no answer).",
            ["endpoint", "code"],
            registry=r,
        )
        self._api_duration = Histogram(
            "duvo_monitor_api_request_duration_seconds",
            "Duvo API request duration.",
            ["endpoint"],
            buckets=API_DURATION_BUCKETS,
            registry=r,
        )
        self._rate_limited = Counter(
            "duvo_monitor_api_rate_limited", "Answers 429 from the Duvo API.", registry=r
        )
        self._retry_after = Gauge(
            "duvo_monitor_api_retry_after_seconds",
            "Retry-After of the last 429 answer.",
            registry=r,
        )
        self._budget_limit = Gauge(
            "duvo_monitor_api_budget_limit",
            "Effective request budget per 60 s (configured, tightened by server headers).",
            registry=r,
        )
        self._budget_remaining = Gauge(
            "duvo_monitor_api_budget_remaining",
            "Requests left in the current 60 s window.",
            registry=r,
        )
        self._budget_used = Gauge(
            "duvo_monitor_api_budget_used", "Requests spent in the last 60 s.", registry=r
        )
        self._pace = Gauge(
            "duvo_monitor_api_pace_requests_per_second",
            "Requests a second scheduled polls may take now: the budget less the reserve, "
            "more while polls find news and the 60 s window has a surplus.",
            registry=r,
        )
        self._api_success = Gauge(
            "duvo_monitor_api_last_success_timestamp_seconds",
            "When the Duvo API last answered successfully (Unix time).",
            registry=r,
        )
        self._malformed = Counter(
            "duvo_monitor_api_malformed_answers",
            "API answers that could not be understood.",
            ["endpoint"],
            registry=r,
        )
        self._requests_sent = Counter(
            "duvo_monitor_api_requests_sent",
            "Requests let through the budget, by purpose: sweep (list-runs), hinted (a run "
            "known to have news), routine (scheduled probes, catch-up, safety nets).",
            ["purpose"],
            registry=r,
        )
        for purpose in PURPOSES:
            self._requests_sent.labels(purpose)
        self._sweeps_trusted = Gauge(
            "duvo_monitor_sweeps_trusted",
            "1 when v2 sweeps are trusted to announce new messages (they then drive the "
            "message polls), else 0.",
            registry=r,
        )
        self._sweep_interval = Gauge(
            "duvo_monitor_sweep_interval_seconds",
            "Time between the last two sweeps; above polling.sweep_interval when the budget "
            "is saturated.",
            registry=r,
        )
        self._poll_lag = Histogram(
            "duvo_monitor_poll_lag_seconds",
            "How late a poll ran against its due time.",
            buckets=LAG_BUCKETS,
            registry=r,
        )

        # The monitor: events and sinks.
        self._event_lag = Histogram(
            "duvo_monitor_event_lag_seconds",
            "Event emission time minus the time of the change it reports.",
            ["type"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._delivered = Counter(
            "duvo_monitor_events_delivered",
            "Events a sink acknowledged as delivered.",
            ["sink", "type"],
            registry=r,
        )
        self._queue = Gauge(
            "duvo_monitor_sink_queue_depth",
            "Events waiting in a sink's buffer.",
            ["sink"],
            registry=r,
        )
        self._sink_errors = Counter(
            "duvo_monitor_sink_errors", "Sink delivery errors.", ["sink", "kind"], registry=r
        )
        self._dropped = Counter(
            "duvo_monitor_events_dropped",
            "Events a sink dropped (never silently: each is counted and logged).",
            ["sink", "reason"],
            registry=r,
        )
        self._sink_up = Gauge(
            "duvo_monitor_sink_up",
            "1 when the sink's last state is ok, else 0.",
            ["sink"],
            registry=r,
        )
        self._sink_state = Gauge(
            "duvo_monitor_sink_state",
            "The sink's state: 1 for the current one of ok, retry, failed.",
            ["sink", "state"],
            registry=r,
        )
        self._commit = Histogram(
            "duvo_monitor_state_commit_duration_seconds",
            "Duration of a state checkpoint commit.",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        Info("duvo_monitor_build", "Build information.", registry=r).info(
            {"version": version, "python": python or platform.python_version()}
        )
        if process_metrics:
            ProcessCollector(registry=r)
            GCCollector(registry=r)

        for status in KNOWN_STATUSES:
            self._watched.labels(status)
        if agent_label:
            for agent in agents:
                self._seen_agent(agent)
        else:
            for status in TERMINAL_STATUSES:
                self._finished.labels(status)

    # Runs.

    def run_status(self, run_id: str, agent_id: str | None, status: str | None) -> None:
        """The current status of a watched run; ``None``: the run is no longer watched."""
        previous = self._run_status.pop(run_id, None)
        if previous is not None:
            self._watched.labels(previous).dec()
        if status is None:
            self._pending_human.pop(run_id, None)
            self._human_pending.set(len(self._pending_human))
            return
        label = self._status(status)
        self._run_status[run_id] = label
        self._watched.labels(label).inc()
        if self.agent_label and agent_id is not None:
            self._seen_agent(agent_id)

    def run_finished(
        self, agent_id: str | None, status: str, duration_seconds: float | None
    ) -> None:
        """A run entered a terminal status (once per entry)."""
        if self.agent_label:
            labels: tuple[str, ...] = (self._seen_agent(agent_id), self._status(status))
        else:
            labels = (self._status(status),)
        self._finished.labels(*labels).inc()
        if duration_seconds is not None and duration_seconds >= 0:
            self._duration.labels(*labels).observe(duration_seconds)

    def human_request_opened(self, run_id: str, opened_at: float | None = None) -> None:
        """A run has an open human request (repeated calls for the same run count once)."""
        self._pending_human.setdefault(
            run_id, self._clock.time() if opened_at is None else opened_at
        )
        self._human_pending.set(len(self._pending_human))

    def human_request_resolved(self, run_id: str, waited_seconds: float | None) -> None:
        """A run's human request was answered (or disappeared)."""
        self._pending_human.pop(run_id, None)
        self._human_pending.set(len(self._pending_human))
        if waited_seconds is not None and waited_seconds >= 0:
            self._human_wait.observe(waited_seconds)

    def message(self, role: str, type: str) -> None:
        self._messages.labels(self._role(role), self._msg_type(type)).inc()

    def tool_call(self, tool: str, outcome: str, duration_seconds: float | None) -> None:
        """A tool call's result was seen; ``outcome`` is ``ok`` or ``error``."""
        name = self._tool(tool)
        if name not in self._tools_seen:
            self._tools_seen.add(name)
            for o in TOOL_OUTCOMES:
                self._tool_calls.labels(name, o)
        self._tool_calls.labels(name, self._outcome(outcome)).inc()
        if duration_seconds is not None and duration_seconds >= 0:
            self._tool_duration.labels(name).observe(duration_seconds)

    # The API.

    def api_request(self, endpoint: str, code: int | str, seconds: float) -> None:
        """One API request: ``endpoint`` a route template, ``code`` ``"error"`` without answer."""
        route = self._endpoint(endpoint)
        self._api_requests.labels(route, self._code(code)).inc()
        self._api_duration.labels(route).observe(max(0.0, seconds))

    def rate_limited(self, retry_after: float | None) -> None:
        self._rate_limited.inc()
        if retry_after is not None:
            self._retry_after.set(retry_after)

    def budget(self, limit: int, remaining: float, window_used: int, pace: float) -> None:
        self._budget_limit.set(limit)
        self._budget_remaining.set(remaining)
        self._budget_used.set(window_used)
        self._pace.set(pace)

    def requests_sent(self, purpose: str, count: int) -> None:
        if count > 0:
            self._requests_sent.labels(purpose).inc(count)

    def sweeps(self, *, trusted: bool, interval: float | None = None) -> None:
        self._sweeps_trusted.set(1 if trusted else 0)
        if interval is not None:
            self._sweep_interval.set(interval)

    def api_answered(self, now: float) -> None:
        """The API answered successfully at ``now`` (feeds ``/readyz``)."""
        self._last_api_answer = now
        self._api_success.set(now)

    def malformed_answer(self, endpoint: str) -> None:
        self._malformed.labels(self._endpoint(endpoint)).inc()

    def poll_lag(self, seconds: float) -> None:
        self._poll_lag.observe(max(0.0, seconds))

    # Events and sinks.

    def event_emitted(self, type: str, lag_seconds: float) -> None:
        # A negative lag is clock skew between Duvo and us; count it as no lag.
        self._event_lag.labels(self._event_type(type)).observe(max(0.0, lag_seconds))

    def sink_delivered(self, sink: str, type: str, count: int = 1) -> None:
        self._delivered.labels(self._seen_sink(sink), self._event_type(type)).inc(count)

    def sink_queue(self, sink: str, depth: int) -> None:
        self._queue.labels(self._seen_sink(sink)).set(depth)

    def sink_error(self, sink: str, kind: str) -> None:
        self._sink_errors.labels(self._seen_sink(sink), self._kind(kind)).inc()

    def sink_dropped(self, sink: str, reason: str, count: int = 1) -> None:
        self._dropped.labels(self._seen_sink(sink), self._reason(reason)).inc(count)

    def sink_health(self, sink: str, state: str) -> None:
        """A sink's state: ``ok``, ``retry`` or ``failed``; report ``ok`` when a sink starts."""
        name = self._seen_sink(sink)
        current = self._state_cap(state)
        self._sinks[name] = current
        self._sink_up.labels(name).set(1 if current == "ok" else 0)
        for s in SINK_STATES:
            self._sink_state.labels(name, s).set(1 if s == current else 0)

    def state_commit(self, seconds: float) -> None:
        self._commit.observe(max(0.0, seconds))

    # Health.

    def readiness(self, now: float) -> Readiness:
        """Ready when the API answered within ``ready_after`` and every sink's state is ok."""
        problems: list[str] = []
        if self._last_api_answer is None:
            problems.append("no API answer yet")
        elif now - self._last_api_answer > self.ready_after:
            age = now - self._last_api_answer
            problems.append(f"no API answer for {age:.0f} s (limit {self.ready_after:g} s)")
        problems.extend(
            f"sink {name} is {state}"
            for name, state in sorted(self._sinks.items())
            if state != "ok"
        )
        return Readiness(problems=tuple(problems))

    # Internals.

    def _seen_agent(self, agent_id: str | None) -> str:
        label = self._agent(agent_id)
        if label not in self._agents_seen:
            self._agents_seen.add(label)
            for status in TERMINAL_STATUSES:
                self._finished.labels(label, status)
        return label

    def _seen_sink(self, sink: str) -> str:
        name = self._sink(sink)
        if name not in self._sinks:
            self._sinks[name] = "ok"
            self._sink_up.labels(name).set(1)
            for s in SINK_STATES:
                self._sink_state.labels(name, s).set(1 if s == "ok" else 0)
            self._queue.labels(name)
            for reason in DROP_REASONS:
                self._dropped.labels(name, reason)
        return name

    def _oldest_pending_age(self) -> float:
        if not self._pending_human:
            return 0.0
        return max(0.0, self._clock.time() - min(self._pending_human.values()))
