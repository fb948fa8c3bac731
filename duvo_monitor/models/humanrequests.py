"""Human-in-the-loop requests: the pending one of GET run, the resolved record of respond, and
the response we send. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from duvo_monitor.reader import JsonReader, refuse


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
            multi_select=r.opt_flag("multi_select"),
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
