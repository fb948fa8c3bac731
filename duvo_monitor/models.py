"""What the Duvo Runs API returns, as frozen values built by ``from_api`` constructors.

Decoding is strict about what the schema requires and tolerant of what may grow:

* a missing required field, or one of the wrong type, raises :class:`MalformedResponse` naming the
  field path (``run.status``) and the endpoint;
* unknown extra fields are kept in ``extra`` (runs, messages) or ignored;
* ``status``, message ``type`` and ``role`` and human-request ``type`` are free strings: values we
  have never seen pass through unchanged.

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from duvo_monitor.errors import MalformedResponse
from duvo_monitor.reader import JsonReader, Report

TERMINAL_STATUSES = frozenset({"completed", "failed", "stopped", "interrupted"})
RESUMABLE_STATUSES = frozenset({"waiting", "completed", "interrupted"})
KNOWN_STATUSES = frozenset({"pending", "starting", "running", "waiting"}) | TERMINAL_STATUSES


def refuse(endpoint: str) -> Report:
    """The report of an answer from ``endpoint``: refused whole at its first problem."""

    def report(path: str, message: str) -> None:
        raise MalformedResponse(message, endpoint=endpoint, field=path or None)

    return report


def parse_time(text: str | None) -> float | None:
    """ISO 8601 -> unix seconds; None for None or text that is not a timestamp."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def format_time(unix: float) -> str:
    """Unix seconds -> RFC 3339 UTC with milliseconds."""
    return (
        datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


_RUN_FIELDS = frozenset(
    {
        "id",
        "agent_id",
        "build_id",
        "status",
        "source",
        "sandbox_id",
        "started_at",
        "completed_at",
        "created_at",
        "updated_at",
        "human_in_the_loop_enabled",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: str
    agent_id: str
    build_id: str
    status: str
    source: str | None
    sandbox_id: str | None
    started_at: str | None
    completed_at: str | None
    created_at: str
    updated_at: str
    human_in_the_loop_enabled: bool
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_api(cls, data: object, *, endpoint: str, where: str = "run") -> Run:
        r = JsonReader.of(data, where, refuse(endpoint))
        hitl = r.flag("human_in_the_loop_enabled")
        assert hitl is not None
        return cls(
            id=r.text("id"),
            agent_id=r.text("agent_id"),
            build_id=r.text("build_id"),
            status=r.text("status"),
            source=r.nullable_text("source"),
            sandbox_id=r.nullable_text("sandbox_id"),
            started_at=r.nullable_text("started_at"),
            completed_at=r.nullable_text("completed_at"),
            created_at=r.text("created_at"),
            updated_at=r.text("updated_at"),
            human_in_the_loop_enabled=hitl,
            extra=r.extra(_RUN_FIELDS),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "build_id": self.build_id,
            "status": self.status,
            "source": self.source,
            "sandbox_id": self.sandbox_id,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "human_in_the_loop_enabled": self.human_in_the_loop_enabled,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class QuestionOption:
    label: str
    description: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Question:
    question: str
    header: str | None = None
    options: tuple[QuestionOption, ...] = ()
    multi_select: bool | None = None

    @classmethod
    def from_api(cls, data: object, *, endpoint: str, where: str) -> Question:
        r = JsonReader.of(data, where, refuse(endpoint))
        options = []
        for i, raw in enumerate(r.array("options", required=False)):
            o = JsonReader.of(raw, f"{where}.options[{i}]", r.report)
            options.append(
                QuestionOption(label=o.text("label"), description=o.opt_text("description"))
            )
        return cls(
            question=r.text("question"),
            header=r.opt_text("header"),
            options=tuple(options),
            multi_select=r.flag("multi_select", required=False),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "header": self.header,
            "options": [{"label": o.label, "description": o.description} for o in self.options],
            "multi_select": self.multi_select,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanRequest:
    """A pending human-in-the-loop request, as GET run shows it."""

    id: str
    title: str
    description: str | None
    created_at: str
    type: str
    questions: tuple[Question, ...] = ()

    @classmethod
    def from_api(
        cls, data: object, *, endpoint: str, where: str = "pending_human_request"
    ) -> HumanRequest:
        r = JsonReader.of(data, where, refuse(endpoint))
        return cls(
            id=r.text("id"),
            title=r.text("title"),
            description=r.nullable_text("description"),
            created_at=r.text("created_at"),
            type=r.text("type"),
            questions=tuple(
                Question.from_api(q, endpoint=endpoint, where=f"{where}.questions[{i}]")
                for i, q in enumerate(r.array("questions", required=False))
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "created_at": self.created_at,
            "type": self.type,
            "questions": [q.to_dict() for q in self.questions],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSnapshot:
    """GET run: the run (None when it no longer exists) and its pending human request."""

    run: Run | None
    pending_human_request: HumanRequest | None

    @classmethod
    def from_api(cls, data: object, *, endpoint: str) -> RunSnapshot:
        r = JsonReader.of(data, "", refuse(endpoint))
        run = r.field("run")
        pending = r.field("pending_human_request", required=False)
        return cls(
            run=None if run is None else Run.from_api(run, endpoint=endpoint),
            pending_human_request=(
                None if pending is None else HumanRequest.from_api(pending, endpoint=endpoint)
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    tool_call_id: str
    result: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tool_call_id": self.tool_call_id, "result": self.result, "error": self.error}


_MESSAGE_FIELDS = frozenset(
    {"id", "type", "role", "timestamp", "text_content", "tool_call", "tool_result"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: str
    type: str
    role: str
    timestamp: str
    text_content: str | None = None
    tool_call: ToolCall | None = None
    tool_result: ToolResult | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_api(cls, data: object, *, endpoint: str, where: str = "message") -> Message:
        r = JsonReader.of(data, where, refuse(endpoint))
        call = r.obj("tool_call", required=False)
        result = r.obj("tool_result", required=False)
        arguments = None
        if call is not None and call.raw.get("arguments") is not None:
            args = call.obj("arguments")
            arguments = args.raw if args is not None else None
        return cls(
            id=r.text("id"),
            type=r.text("type"),
            role=r.text("role"),
            timestamp=r.text("timestamp"),
            text_content=r.opt_text("text_content"),
            tool_call=(
                None
                if call is None
                else ToolCall(id=call.text("id"), name=call.text("name"), arguments=arguments)
            ),
            tool_result=(
                None
                if result is None
                else ToolResult(
                    tool_call_id=result.text("tool_call_id"),
                    result=result.raw.get("result"),
                    error=result.opt_text("error"),
                )
            ),
            extra=r.extra(_MESSAGE_FIELDS),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "role": self.role,
            "timestamp": self.timestamp,
            "text_content": self.text_content,
            "tool_call": None if self.tool_call is None else self.tool_call.to_dict(),
            "tool_result": None if self.tool_result is None else self.tool_result.to_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagePage:
    messages: tuple[Message, ...]
    total: int
    limit: int
    offset: int

    @classmethod
    def from_api(cls, data: object, *, endpoint: str) -> MessagePage:
        r = JsonReader.of(data, "", refuse(endpoint))
        return cls(
            messages=tuple(
                Message.from_api(m, endpoint=endpoint, where=f"messages[{i}]")
                for i, m in enumerate(r.array("messages"))
            ),
            total=r.whole("total"),
            limit=r.whole("limit"),
            offset=r.whole("offset"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanRequestRecord:
    """The answer to respond: the request as resolved."""

    id: str
    run_id: str
    title: str
    description: str | None
    response: str | None
    responded_at: str | None
    created_at: str

    @classmethod
    def from_api(cls, data: object, *, endpoint: str) -> HumanRequestRecord:
        body = JsonReader.of(data, "", refuse(endpoint))
        r = body.obj("human_request")
        assert r is not None
        return cls(
            id=r.text("id"),
            run_id=r.text("run_id"),
            title=r.text("title"),
            description=r.nullable_text("description"),
            response=r.nullable_text("response"),
            responded_at=r.nullable_text("responded_at"),
            created_at=r.text("created_at"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanResponse:
    """What we send to respond: an approval or answers keyed by question text."""

    approved: bool | None = None
    answers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if (self.approved is None) == (self.answers is None):
            raise ValueError("a human response is either an approval or answers, not both")

    def to_api(self) -> dict[str, Any]:
        if self.approved is not None:
            return {"approved": self.approved}
        return {"answers": dict(self.answers or {})}


@dataclass(frozen=True, slots=True, kw_only=True)
class StopResult:
    success: bool
    message: str | None

    @classmethod
    def from_api(cls, data: object, *, endpoint: str) -> StopResult:
        r = JsonReader.of(data, "", refuse(endpoint))
        success = r.flag("success")
        assert success is not None
        return cls(success=success, message=r.opt_text("message"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    id: str
    name: str
    organization_id: str | None

    @classmethod
    def from_api(cls, data: object, *, endpoint: str, where: str) -> Team:
        r = JsonReader.of(data, where, refuse(endpoint))
        return cls(
            id=r.text("id"), name=r.text("name"), organization_id=r.nullable_text("organization_id")
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """One item of v2 list runs: status and times, no pending human request."""

    id: str
    status: str
    agent_id: str
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    source: str | None
    title: str
    agent_name: str
    build_id: str
    run_number: float
    submitted_prompt_count: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_api(cls, data: object, *, endpoint: str, where: str) -> RunSummary:
        r = JsonReader.of(data, where, refuse(endpoint))
        for name in ("user_id", "case_queue_item_id", "case_queue_id", "case_queue_name"):
            r.nullable_text(name)
        for name in ("case_title", "postponed_to"):
            r.nullable_text(name)
        run_number = r.number("run_number")
        return cls(
            id=r.text("id"),
            status=r.text("status"),
            agent_id=r.text("agent_id"),
            created_at=r.text("created_at"),
            updated_at=r.text("updated_at"),
            started_at=r.nullable_text("started_at"),
            completed_at=r.nullable_text("completed_at"),
            source=r.nullable_text("source"),
            title=r.text("title"),
            agent_name=r.text("agent_name"),
            build_id=r.text("build_id"),
            run_number=run_number,
            submitted_prompt_count=r.whole("submitted_prompt_count"),
            extra=r.extra(frozenset()),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunList:
    data: tuple[RunSummary, ...]
    total: int

    @classmethod
    def from_api(cls, data: object, *, endpoint: str) -> RunList:
        r = JsonReader.of(data, "", refuse(endpoint))
        return cls(
            data=tuple(
                RunSummary.from_api(item, endpoint=endpoint, where=f"data[{i}]")
                for i, item in enumerate(r.array("data"))
            ),
            total=r.whole("total"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """The rate-limit headers of one answer; any of them may be absent."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    retry_after: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, now: float) -> RateLimit:
        return cls(
            limit=_int_header(headers.get("x-ratelimit-limit")),
            remaining=_int_header(headers.get("x-ratelimit-remaining")),
            reset=_reset_header(headers.get("x-ratelimit-reset"), now),
            retry_after=_retry_after(headers.get("retry-after"), now),
        )


def _number_header(value: str | None) -> float | None:
    """A finite number, else None: ``inf``, ``nan`` and junk are ignored, never raised."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _int_header(value: str | None) -> int | None:
    number = _number_header(value)
    if number is None:
        return None
    return int(number) if number >= 0 else None


def _reset_header(value: str | None, now: float) -> float | None:
    """``x-ratelimit-reset``: unix seconds per Duvo's docs; small numbers read as delta seconds."""
    number = _number_header(value)
    if number is None or number < 0:
        return None
    # Tolerate both readings: a delta (some APIs) or an absolute unix time (Duvo's docs).
    return now + number if number < 1_000_000_000 else number


def _retry_after(value: str | None, now: float) -> float | None:
    """``retry-after``: delay seconds, or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    seconds = _number_header(value)
    if seconds is None:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, not the host's local time
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return max(0.0, seconds)
