"""The simulated Duvo account: runs, their transcripts and human requests, driven by time.

:class:`World` is pure: no I/O, no event loop, no clock. Every method takes the simulated ``now``
(unix seconds) it happens at; :meth:`World.advance` plays every scheduled step up to ``now``. The
server calls ``advance`` before each request and from a ticker, so a change becomes visible at the
time it was scheduled for, whoever looks first.

Each run follows a program: the steps of its timeline, at times relative to the run's creation,
shifted by the time the run spent waiting on human requests (a waiting run's program is paused).
One heap holds the next due event of every run, so that ``advance`` costs O(log runs) per step
and a request never walks a transcript: pages are slices.

Every visible change is appended to :attr:`World.truth` with its time, in the order it happened;
``updated_at`` of a run moves with each of them (the simulator's assumption: Duvo documents no
rule for it). Webhooks the changes call for wait in an outbox the server drains.

Behaviour the Duvo docs leave open, decided here (and documented in ``docs/simulator.md``):

- A human request adds an assistant message of type ``human_request``; its answer adds a user
  message and puts the run back to ``running``.
- POST messages always persists the message (201). It resumes a ``waiting`` run (answering its
  pending request with the text), and a ``completed`` or ``interrupted`` run (a short continuation:
  running, two assistant messages, completed). Other statuses only get the message.
- Stop turns an active run (pending, starting, running, waiting) into ``stopped``, cancels its
  pending request and drops the rest of its agent steps; outside steps (post, delete) stay.
- A run that resumes loses its ``completed_at`` until it ends again.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from duvo_monitor.simulator.faults import UNKNOWN_MESSAGE_TYPES
from duvo_monitor.simulator.model import (
    ACTIVE,
    TERMINAL,
    WEBHOOK_EVENTS,
    HumanRequest,
    Message,
    Run,
    TruthEntry,
    TruthKind,
    WebhookEvent,
)
from duvo_monitor.simulator.scenario import (
    OUTSIDE_STEPS,
    AgentSpec,
    DeleteStep,
    HumanRequestStep,
    MessageStep,
    PostStep,
    RunSpec,
    Scenario,
    StatusStep,
    Step,
)

# What a run started through the API does when its agent has no timeline of its own.
DEFAULT_SCRIPT: tuple[Step, ...] = (
    StatusStep(at=0.5, status="starting"),
    StatusStep(at=1.5, status="running"),
    MessageStep(at=2.5, role="assistant", type="text", text="On it: reading the request."),
    MessageStep(
        at=3.5,
        role="assistant",
        type="tool_call",
        tool_call={"id": "toolu_default_1", "name": "search", "arguments": {"query": "request"}},
    ),
    MessageStep(
        at=5.0,
        role="tool",
        type="tool_result",
        tool_result={"tool_call_id": "toolu_default_1", "result": {"hits": 3}},
    ),
    MessageStep(at=7.0, role="assistant", type="text", text="Done. Three matching records."),
    StatusStep(at=7.5, status="completed"),
)
CONTINUATION = (1.5, 3.0, 4.5)  # seconds after a resume: two messages, then completed
_CREATE, _STEP, _UNMASK, _ANSWER = range(4)


class WorldError(Exception):
    """A request the world refuses; ``run_id`` names the run it was about."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class NotFound(WorldError):
    """No such run (never created, not created yet, or deleted), or no such request."""


class Conflict(WorldError):
    """The run is not in a state for this (the API answers 400)."""


@dataclass(slots=True, kw_only=True)
class _Program:
    """The steps a run has left, and where its run-time zero lies (moved by waits)."""

    steps: list[Step]
    cursor: int = 0
    base: float  # absolute time of run-time 0
    paused_at: float | None = None
    token: int = 0  # bumps whenever the scheduled next step changes; older heap entries lapse
    call_suffix: str = ""  # keeps tool call ids of template-started runs unique per run

    def due(self) -> float | None:
        if self.paused_at is not None or self.cursor >= len(self.steps):
            return None
        return self.base + self.steps[self.cursor].at


@dataclass(frozen=True, slots=True, kw_only=True)
class RunQuery:
    """The filters of v2 list runs, already validated."""

    team_id: str
    status: str | None = None
    agent_id: str | None = None
    user_id: str | None = None
    source: str | None = None
    search: str | None = None
    since: float | None = None
    has_issues: bool | None = None
    issue_severity: str | None = None
    case_queue_id: str | None = None
    digest_id: str | None = None
    descending: bool = True
    offset: int = 0
    limit: int = 20

    @property
    def unfiltered(self) -> bool:
        filters = (
            *(self.status, self.agent_id, self.user_id, self.source, self.search),
            *(self.since, self.issue_severity, self.case_queue_id, self.digest_id),
        )
        return all(f is None for f in filters) and not self.has_issues


class World:
    """All state of the simulated account. Not thread-safe; every call is synchronous."""

    def __init__(self, scenario: Scenario, *, start: float, seed: int = 0) -> None:
        self.scenario = scenario
        self.start = start
        self.now = -math.inf  # the latest time played; acts earlier than this happen at it
        self.truth: list[TruthEntry] = []
        self._runs: dict[str, Run] = {}
        self._listed: list[Run] = []  # not deleted, in creation order
        self._programs: dict[str, _Program] = {}
        self._heap: list[tuple[float, int, int, str, int]] = []
        self._seq = itertools.count()
        self._outbox: list[WebhookEvent] = []
        self._rng = random.Random(seed)
        self._run_numbers = itertools.count(1)
        self._masks: dict[str, int] = {}
        for index, spec in enumerate(scenario.runs):
            self._push(start + spec.start, _CREATE, spec.id, index)

    # -- time ------------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Play every step due at or before ``now``, in time order."""
        while self._heap and self._heap[0][0] <= now:
            at, _, kind, key, token = heapq.heappop(self._heap)
            at = max(at, self.now)
            self.now = at
            if kind == _CREATE:
                self._create_from_spec(self.scenario.runs[token], at)
            elif kind == _STEP:
                self._play_step(key, token, at)
            elif kind == _UNMASK:
                self._unmask(key, token, at)
            else:
                self._answer_due(key, at)
        self.now = max(self.now, now)

    def next_event_time(self) -> float | None:
        """When something is next due (possibly a lapsed entry: waking early is harmless)."""
        return self._heap[0][0] if self._heap else None

    def drain_webhooks(self) -> list[WebhookEvent]:
        out, self._outbox = self._outbox, []
        return out

    # -- reading ---------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        """A created run, deleted ones included (``run.deleted``); None if there is none."""
        return self._runs.get(run_id.lower())

    def live_run(self, run_id: str) -> Run:
        run = self.get_run(run_id)
        if run is None or run.deleted:
            raise NotFound("run not found", run_id=run_id)
        return run

    def runs(self) -> Sequence[Run]:
        """Every created run, deleted ones included, in creation order."""
        return list(self._runs.values())

    def query_runs(self, query: RunQuery) -> tuple[list[Run], int]:
        """One page of v2 list runs and the total matching (``since`` is against created_at)."""
        listed = self._listed
        if query.team_id != self.scenario.team.id:
            return [], 0
        if query.unfiltered:
            total = len(listed)
            if query.descending:
                stop = max(0, total - query.offset)
                page = listed[max(0, stop - query.limit) : stop][::-1]
            else:
                page = listed[query.offset : query.offset + query.limit]
            return page, total
        matching = [run for run in listed if _matches(run, query)]
        if query.descending:
            matching.reverse()
        return matching[query.offset : query.offset + query.limit], len(matching)

    # -- acts through the API --------------------------------------------------------------------

    def start_run(
        self,
        *,
        agent: AgentSpec,
        now: float,
        message: str | None = None,
        sandbox_id: str | None = None,
        webhook_url: str | None = None,
        source: str | None = "api",
    ) -> Run:
        """A run started now, following the agent's timeline (or the default script)."""
        now = self._at(now)
        number = next(self._run_numbers)
        lines = (message or "").strip().splitlines()
        title = lines[0][:80] if lines else f"{agent.name} run"
        run = self._create(
            run_id=self._uuid(),
            agent=agent,
            number=number,
            title=title,
            source=source,
            user_id=None,
            sandbox_id=sandbox_id,
            status="pending",
            hitl=agent.human_in_the_loop,
            webhook_url=webhook_url,
            at=now,
        )
        if message:
            self._append(run, self._message("user", "text", now), now, message)
            run.submitted_prompt_count += 1
        steps = list(agent.timeline if agent.timeline is not None else DEFAULT_SCRIPT)
        self._install(run, steps, now, call_suffix=f"_{number}")
        return run

    def post_message(self, run_id: str, text: str, now: float) -> Message:
        """A user message; resumes a waiting, completed or interrupted run (see the module doc)."""
        run = self.live_run(run_id)
        now = self._at(now)
        message = self._message("user", "text", now)
        self._append(run, message, now, text)
        run.submitted_prompt_count += 1
        if run.status == "waiting" and run.pending is not None:
            self._resolve(run, run.pending, now, response=text, reply=None)
        elif run.status == "waiting":
            self._set_status(run, "running", now)
        elif run.status in ("completed", "interrupted"):
            self._set_status(run, "running", now)
            self._continue(run, now)
        return message

    def respond(
        self,
        run_id: str,
        request_id: str,
        *,
        now: float,
        approved: bool | None = None,
        answers: Mapping[str, str] | None = None,
    ) -> HumanRequest:
        """Answer the pending request through the API: ``approved`` or ``answers`` by its type."""
        run = self.live_run(run_id)
        request = run.requests.get(request_id.lower())
        if request is None:
            raise NotFound("human request not found", run_id=run.id)
        if run.status != "waiting" or not request.pending:
            raise Conflict(
                f"human request is not pending (run status: {run.status})", run_id=run.id
            )
        if request.type == "approval":
            if approved is None:
                raise Conflict("an approval request needs 'approved'", run_id=run.id)
            response, reply = ("approved", "Approved") if approved else ("rejected", "Rejected")
        else:
            if answers is None:
                raise Conflict("a question request needs 'answers'", run_id=run.id)
            response = json.dumps(dict(answers), ensure_ascii=False)
            reply = "\n".join(f"{q}: {a}" for q, a in answers.items()) or "(no answers)"
        self._resolve(run, request, self._at(now), response=response, reply=reply)
        return request

    def stop(self, run_id: str, now: float) -> tuple[bool, str]:
        """Stop an active run; ``(False, why)`` is the documented no-op for any other."""
        run = self.live_run(run_id)
        if run.status not in ACTIVE:
            return False, f"Run is not running (status: {run.status}); nothing to stop"
        now = self._at(now)
        if run.pending is not None:
            self._cancel(run, now)
        program = self._programs[run.id]
        self._resume_program(program, now)
        rest = program.steps[program.cursor :]
        program.steps = [s for s in rest if isinstance(s, OUTSIDE_STEPS)]
        program.cursor = 0
        self._set_status(run, "stopped", now)
        self._schedule(run.id)
        return True, "Run stopped"

    # -- acts outside the API (tests and scenario steps) -----------------------------------------

    def answer_outside(self, run_id: str, now: float) -> HumanRequest | None:
        """Answer the pending request as a person in the web UI would (its scripted answer)."""
        run = self.live_run(run_id)
        request = run.pending
        if request is None:
            return None
        now = self._at(now)
        if request.type == "approval":
            response = "approved" if request.approved else "rejected"
            reply = "Approved" if request.approved else "Rejected"
        else:
            answers = dict(request.answers or _default_answers(request.questions))
            response = json.dumps(answers, ensure_ascii=False)
            reply = "\n".join(f"{q}: {a}" for q, a in answers.items())
        self._resolve(run, request, now, response=response, reply=reply)
        return request

    def delete_run(self, run_id: str, now: float) -> bool:
        """The run disappears: v2 GET answers ``run: null``; truth ``run_lost``."""
        run = self.get_run(run_id)
        if run is None or run.deleted:
            return False
        now = self._at(now)
        if run.pending is not None:
            run.pending.cancelled = True
            run.pending = None
        run.deleted = True
        self._listed.remove(run)
        program = self._programs[run.id]
        program.steps, program.cursor, program.paused_at = [], 0, None
        program.token += 1
        self._record(run, "run_lost", now)
        return True

    # -- world faults ----------------------------------------------------------------------------

    def mask_status(self, run_id: str, status: str, now: float, duration: float) -> bool:
        """Show ``status`` (an unknown one) instead of the real status for ``duration``."""
        run = self.get_run(run_id)
        if run is None or run.deleted or run.mask is not None:
            return False
        now = self._at(now)
        before = run.shown_status
        run.mask = status
        token = self._masks.get(run.id, 0) + 1
        self._masks[run.id] = token
        run.updated_at = now
        self._record(run, "status", now, status_from=before, status_to=status)
        self._push(now + duration, _UNMASK, run.id, token)
        return True

    def add_unknown_message(self, run_id: str, now: float) -> Message | None:
        """A message of a type Duvo never documented."""
        run = self.get_run(run_id)
        if run is None or run.deleted:
            return None
        now = self._at(now)
        kind = self._rng.choice(UNKNOWN_MESSAGE_TYPES)
        message = self._message("assistant", kind, now)
        self._append(run, message, now, f"[{kind}] something new")
        return message

    def edit_message(self, run_id: str, now: float) -> Message | None:
        """Change the text of one of the last visible text messages, in place (same id)."""
        run = self.get_run(run_id)
        if run is None or run.deleted:
            return None
        recent = [
            (i, m)
            for i, m in enumerate(run.messages[-20:], start=max(0, len(run.messages) - 20))
            if m.text_content is not None
        ]
        if not recent:
            return None
        now = self._at(now)
        index, message = self._rng.choice(recent)
        message.text_content = f"{message.text_content} (edited)"
        run.updated_at = now
        self._record(run, "message_updated", now, message_id=message.id, index=index)
        return message

    # -- internals: creation ---------------------------------------------------------------------

    def _create_from_spec(self, spec: RunSpec, at: float) -> None:
        agent = self.scenario.agent(spec.agent_id)
        assert agent is not None  # the scenario parser resolved it
        run = self._create(
            run_id=spec.id,
            agent=agent,
            number=next(self._run_numbers),
            title=spec.title,
            source=spec.source,
            user_id=spec.user_id,
            sandbox_id=spec.sandbox_id,
            status=spec.status,
            hitl=agent.human_in_the_loop
            if spec.human_in_the_loop is None
            else spec.human_in_the_loop,
            webhook_url=spec.webhook_url,
            at=at,
        )
        for i in range(spec.history):
            stamp = at - (spec.history - i) / max(spec.history, 1)
            self._append(run, self._history_message(i, stamp), at)
        self._install(run, list(spec.timeline), at)

    def _create(
        self,
        *,
        run_id: str,
        agent: AgentSpec,
        number: int,
        title: str,
        source: str | None,
        user_id: str | None,
        sandbox_id: str | None,
        status: str,
        hitl: bool,
        webhook_url: str | None,
        at: float,
    ) -> Run:
        run = Run(
            id=run_id,
            team_id=self.scenario.team.id,
            agent_id=agent.id,
            agent_name=agent.name,
            build_id=agent.build_id,
            user_id=user_id,
            source=source,
            sandbox_id=sandbox_id,
            title=title,
            run_number=number,
            human_in_the_loop_enabled=hitl,
            webhook_url=webhook_url,
            created_at=at,
            updated_at=at,
            status=status,
            started_at=at if status not in ("pending", "starting") else None,
            completed_at=at if status in TERMINAL else None,
        )
        self._runs[run.id] = run
        self._listed.append(run)
        self._record(run, "status", at, status_from=None, status_to=status)
        return run

    def _install(self, run: Run, steps: list[Step], at: float, call_suffix: str = "") -> None:
        self._programs[run.id] = _Program(steps=steps, base=at, call_suffix=call_suffix)
        self._schedule(run.id)

    def _history_message(self, i: int, stamp: float) -> Message:
        if i % 3 == 1:
            call_id = f"toolu_hist_{i:06d}"
            return self._message(
                "assistant",
                "tool_call",
                stamp,
                tool_call={"id": call_id, "name": "lookup", "arguments": {"page": i}},
            )
        if i % 3 == 2:
            return self._message(
                "tool",
                "tool_result",
                stamp,
                tool_result={"tool_call_id": f"toolu_hist_{i - 1:06d}", "result": {"row": i}},
            )
        return self._message("assistant", "text", stamp, text=f"History entry {i}")

    # -- internals: the program ------------------------------------------------------------------

    def _play_step(self, run_id: str, token: int, at: float) -> None:
        program = self._programs.get(run_id)
        if program is None or program.token != token or program.due() is None:
            return
        step = program.steps[program.cursor]
        program.cursor += 1
        run = self._runs[run_id]
        if isinstance(step, StatusStep):
            self._set_status(run, step.status, at)
        elif isinstance(step, MessageStep):
            self._append(run, self._message_from_step(step, at, program.call_suffix), at)
            if step.role == "user" and step.type == "text":
                run.submitted_prompt_count += 1
        elif isinstance(step, HumanRequestStep):
            if run.human_in_the_loop_enabled and run.pending is None:
                self._open(run, step, at)
        elif isinstance(step, PostStep):
            self.post_message(run.id, step.text, at)
        elif isinstance(step, DeleteStep):
            self.delete_run(run.id, at)
            return
        self._schedule(run_id)

    def _schedule(self, run_id: str) -> None:
        program = self._programs[run_id]
        program.token += 1
        due = program.due()
        if due is not None:
            self._push(due, _STEP, run_id, program.token)

    def _resume_program(self, program: _Program, now: float) -> None:
        if program.paused_at is not None:
            program.base += now - program.paused_at
            program.paused_at = None

    def _continue(self, run: Run, now: float) -> None:
        """The short continuation of a resumed run, before whatever its timeline still holds."""
        program = self._programs[run.id]
        self._resume_program(program, now)
        elapsed = now - program.base
        texts = ("Picking this up again.", "Updated the result with your message.")
        new: list[Step] = [
            MessageStep(at=elapsed + CONTINUATION[0], role="assistant", type="text", text=texts[0]),
            MessageStep(at=elapsed + CONTINUATION[1], role="assistant", type="text", text=texts[1]),
            StatusStep(at=elapsed + CONTINUATION[2], status="completed"),
        ]
        rest = program.steps[program.cursor :]
        for step in new:
            bisect.insort_right(rest, step, key=lambda s: s.at)
        program.steps, program.cursor = rest, 0
        self._schedule(run.id)

    # -- internals: changes ----------------------------------------------------------------------

    def _set_status(self, run: Run, status: str, at: float) -> None:
        before, real_before = run.shown_status, run.status
        run.status = status
        run.mask = None
        if status == "running" and run.started_at is None:
            run.started_at = at
        if status in TERMINAL:
            run.completed_at = at
        elif status in ACTIVE:
            run.completed_at = None
        if before == run.shown_status:
            return
        run.updated_at = at
        self._record(run, "status", at, status_from=before, status_to=status)
        event = WEBHOOK_EVENTS.get(status)
        if event is not None and real_before != status and run.webhook_url:
            self._webhook(run, event, at)

    def _append(self, run: Run, message: Message, at: float, text: str | None = None) -> None:
        if text is not None:
            message.text_content = text
        run.messages.append(message)
        run.updated_at = at
        self._record(run, "message_created", at, message_id=message.id, index=len(run.messages) - 1)

    def _open(self, run: Run, step: HumanRequestStep, at: float) -> None:
        request = HumanRequest(
            id=self._uuid(),
            run_id=run.id,
            type=step.type,
            title=step.title,
            description=step.description,
            created_at=at,
            questions=tuple(dict(q) for q in step.questions),
            answer_after=step.answer_after,
            approved=step.approved,
            answers=None if step.answers is None else dict(step.answers),
        )
        run.requests[request.id] = request
        message = self._message("assistant", "human_request", at)
        self._append(run, message, at, step.title)
        run.pending = request
        self._set_status(run, "waiting", at)
        self._record(run, "human_request_opened", at, request_id=request.id)
        program = self._programs[run.id]
        program.paused_at = at
        if step.answer_after is not None:
            self._push(at + step.answer_after, _ANSWER, run.id, 0)
        if run.webhook_url:
            self._webhook(run, "human_request", at)

    def _resolve(
        self, run: Run, request: HumanRequest, at: float, *, response: str, reply: str | None
    ) -> None:
        request.response = response
        request.responded_at = at
        run.pending = None
        run.updated_at = at
        self._record(run, "human_request_resolved", at, request_id=request.id)
        if reply is not None:
            self._append(run, self._message("user", "text", at), at, reply)
        self._set_status(run, "running", at)
        self._resume_program(self._programs[run.id], at)
        self._schedule(run.id)

    def _cancel(self, run: Run, at: float) -> None:
        assert run.pending is not None
        request = run.pending
        request.cancelled = True
        run.pending = None
        run.updated_at = at
        self._record(run, "human_request_resolved", at, request_id=request.id)

    def _answer_due(self, run_id: str, at: float) -> None:
        run = self._runs.get(run_id)
        if run is None or run.deleted or run.pending is None:
            return
        after = run.pending.answer_after
        if after is not None and run.pending.created_at + after <= at:
            self.answer_outside(run_id, at)

    def _unmask(self, run_id: str, token: int, at: float) -> None:
        run = self._runs.get(run_id)
        if run is None or run.mask is None or self._masks.get(run_id) != token:
            return
        before = run.mask
        run.mask = None
        if run.deleted:
            return
        run.updated_at = at
        self._record(run, "status", at, status_from=before, status_to=run.status)

    # -- internals: plumbing ---------------------------------------------------------------------

    def _record(
        self,
        run: Run,
        kind: TruthKind,
        at: float,
        *,
        status_from: str | None = None,
        status_to: str | None = None,
        message_id: str | None = None,
        index: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.truth.append(
            TruthEntry(
                time=at,
                run_id=run.id,
                kind=kind,
                agent_id=run.agent_id,
                status_from=status_from,
                status_to=status_to,
                message_id=message_id,
                index=index,
                request_id=request_id,
            )
        )

    def _webhook(self, run: Run, event: str, at: float) -> None:
        assert run.webhook_url is not None
        self._outbox.append(
            WebhookEvent(
                time=at, url=run.webhook_url, event=event, run_id=run.id, status=run.status
            )
        )

    def _push(self, at: float, kind: int, key: str, token: int) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), kind, key, token))

    def _at(self, now: float) -> float:
        """``now`` after everything already played (the truth log stays in time order)."""
        self.now = max(self.now, now)
        return self.now

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _message(
        self,
        role: str,
        kind: str,
        at: float,
        *,
        text: str | None = None,
        tool_call: dict[str, Any] | None = None,
        tool_result: dict[str, Any] | None = None,
    ) -> Message:
        return Message(
            id=f"msg_{self._rng.getrandbits(96):024x}",
            type=kind,
            role=role,
            timestamp=at,
            text_content=text,
            tool_call=tool_call,
            tool_result=tool_result,
        )

    def _message_from_step(self, step: MessageStep, at: float, suffix: str) -> Message:
        tool_call = None if step.tool_call is None else dict(step.tool_call)
        tool_result = None if step.tool_result is None else dict(step.tool_result)
        if suffix and tool_call is not None:
            tool_call["id"] = f"{tool_call['id']}{suffix}"
        if suffix and tool_result is not None:
            tool_result["tool_call_id"] = f"{tool_result['tool_call_id']}{suffix}"
        return self._message(
            step.role, step.type, at, text=step.text, tool_call=tool_call, tool_result=tool_result
        )


def _default_answers(questions: Sequence[Mapping[str, object]]) -> dict[str, str]:
    answers: dict[str, str] = {}
    for q in questions:
        options = q.get("options")
        first = options[0] if isinstance(options, list) and options else None
        label = first.get("label") if isinstance(first, dict) else None
        answers[str(q["question"])] = str(label) if label is not None else "ok"
    return answers


def _matches(run: Run, q: RunQuery) -> bool:
    if run.team_id != q.team_id:
        return False
    if q.status is not None:
        status = run.shown_status
        if q.status == "needs_attention":
            if status != "waiting":
                return False
        elif status != q.status:
            return False
    if q.agent_id is not None and run.agent_id != q.agent_id:
        return False
    if q.user_id is not None and run.user_id != q.user_id:
        return False
    if q.source is not None and run.source != q.source:
        return False
    if q.search is not None and q.search.lower() not in run.title.lower():
        return False
    if q.since is not None and run.created_at < q.since:
        return False
    # The simulator has no evaluations, queues or digests: those filters match nothing.
    return not (q.has_issues or q.issue_severity or q.case_queue_id or q.digest_id)
