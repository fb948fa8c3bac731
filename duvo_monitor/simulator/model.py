"""The simulated world's entities and its two records: what changed (truth) and what was asked.

:class:`Run`, :class:`Message` and :class:`HumanRequest` are the mutable state the
:class:`~duvo_monitor.simulator.world.World` owns; nothing outside the world mutates them. They
know how to render themselves as the Duvo API's JSON objects, so that the API layer never builds
a run's JSON by hand.

:class:`TruthEntry` and :class:`RequestLogEntry` are the records tests and benchmarks measure a
monitor against: every visible change with the (simulated) time it became visible, and every API
request with the status it got. :class:`WebhookEvent` is what the world asks the server to POST.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

TERMINAL = frozenset({"completed", "failed", "stopped", "interrupted"})
ACTIVE = frozenset({"pending", "starting", "running", "waiting"})
STATUSES = ACTIVE | TERMINAL
# POST messages resumes a run in one of these (Duvo's documented "resumable state").
RESUMABLE = frozenset({"waiting", "completed", "interrupted"})
# A webhook event for each of these terminal statuses; Duvo sends none for "stopped".
WEBHOOK_EVENTS = {
    "completed": "run_completed",
    "failed": "run_failed",
    "interrupted": "run_interrupted",
}

TruthKind = Literal[
    "status",
    "message_created",
    "message_updated",
    "human_request_opened",
    "human_request_resolved",
    "run_lost",
]


def iso(ts: float) -> str:
    """``2025-11-29T02:25:00.123Z``: ISO 8601, UTC, milliseconds, as Duvo writes timestamps."""
    millis = round(ts * 1000)
    moment = dt.datetime.fromtimestamp(millis // 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


@dataclass(slots=True, kw_only=True, eq=False)
class Message:
    id: str
    type: str
    role: str
    timestamp: float
    text_content: str | None = None
    tool_call: dict[str, Any] | None = None
    tool_result: dict[str, Any] | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "role": self.role,
            "timestamp": iso(self.timestamp),
        }
        if self.text_content is not None:
            out["text_content"] = self.text_content
        if self.tool_call is not None:
            out["tool_call"] = self.tool_call
        if self.tool_result is not None:
            out["tool_result"] = self.tool_result
        return out


@dataclass(slots=True, kw_only=True, eq=False)
class HumanRequest:
    id: str
    run_id: str
    type: str  # "approval" | "question"
    title: str
    description: str | None
    created_at: float
    questions: tuple[dict[str, Any], ...] = ()
    # What an "outside" answer (web UI, Slack ...) says, and after how long it comes (None: never).
    answer_after: float | None = None
    approved: bool = True
    answers: dict[str, str] | None = None
    response: str | None = None
    responded_at: float | None = None
    cancelled: bool = False  # the run was stopped or deleted while it waited

    @property
    def pending(self) -> bool:
        return self.responded_at is None and not self.cancelled

    def to_pending_api(self) -> dict[str, Any]:
        """The ``pending_human_request`` object of GET run."""
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "created_at": iso(self.created_at),
            "type": self.type,
        }
        if self.type == "question":
            out["questions"] = [dict(q) for q in self.questions]
        return out

    def to_respond_api(self) -> dict[str, Any]:
        """The ``human_request`` object of the respond endpoint's answer."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "title": self.title,
            "description": self.description,
            "response": self.response,
            "responded_at": None if self.responded_at is None else iso(self.responded_at),
            "created_at": iso(self.created_at),
        }


@dataclass(slots=True, kw_only=True, eq=False)
class Run:
    """One run's state. ``status`` is the real status; ``shown_status`` may mask it (a fault)."""

    id: str
    team_id: str
    agent_id: str
    agent_name: str
    build_id: str
    user_id: str | None
    source: str | None
    sandbox_id: str | None
    title: str
    run_number: int
    human_in_the_loop_enabled: bool
    webhook_url: str | None
    created_at: float
    updated_at: float
    status: str
    started_at: float | None = None
    completed_at: float | None = None
    messages: list[Message] = field(default_factory=list)
    requests: dict[str, HumanRequest] = field(default_factory=dict)
    pending: HumanRequest | None = None
    deleted: bool = False
    submitted_prompt_count: int = 0
    # A made-up status shown instead of ``status`` until ``masked_until`` (unknown_status fault).
    mask: str | None = None

    @property
    def shown_status(self) -> str:
        return self.mask if self.mask is not None else self.status

    def to_api(self) -> dict[str, Any]:
        """The ``run`` object of GET run and start run (both versions)."""
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "build_id": self.build_id,
            "status": self.shown_status,
            "source": self.source,
            "sandbox_id": self.sandbox_id,
            "started_at": None if self.started_at is None else iso(self.started_at),
            "completed_at": None if self.completed_at is None else iso(self.completed_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "human_in_the_loop_enabled": self.human_in_the_loop_enabled,
        }

    def to_list_item(self, *, stopped_as: str) -> dict[str, Any]:
        """An item of v2 list runs: no pending request; ``stopped`` shown as ``stopped_as``."""
        status = self.shown_status
        return {
            "id": self.id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": None if self.started_at is None else iso(self.started_at),
            "completed_at": None if self.completed_at is None else iso(self.completed_at),
            "status": stopped_as if status == "stopped" else status,
            "source": self.source,
            "title": self.title,
            "run_number": self.run_number,
            "agent_id": self.agent_id,
            "agent_name": self.agent_name,
            "build_id": self.build_id,
            "user_id": self.user_id,
            "case_queue_item_id": None,
            "case_queue_id": None,
            "case_queue_name": None,
            "case_title": None,
            "postponed_to": None,
            "submitted_prompt_count": self.submitted_prompt_count,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TruthEntry:
    """One change, at the simulated time it became visible through the API."""

    time: float
    run_id: str
    kind: TruthKind
    agent_id: str
    status_from: str | None = None
    status_to: str | None = None
    message_id: str | None = None
    index: int | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestLogEntry:
    """One API request: when it arrived (sim time), what it asked, what it got (0: dropped)."""

    time: float
    method: str
    path: str
    query: str
    status: int
    api_key_ok: bool
    key_id: str = ""  # which key asked: a digest of it (never the key), "" when none was sent

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookEvent:
    """A webhook the world wants POSTed: ``{"event", "run_id", "status"}`` to ``url``."""

    time: float
    url: str
    event: str
    run_id: str
    status: str

    def body(self) -> dict[str, Any]:
        return {"event": self.event, "run_id": self.run_id, "status": self.status}


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDelivery:
    """What became of one webhook POST: the receiver's status, or the error."""

    time: float
    url: str
    event: str
    run_id: str
    status: int | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
