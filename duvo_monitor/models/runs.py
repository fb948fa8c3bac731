"""A run as the Runs API shows it: GET run (v1 and v2), v2 list runs, stop; the run statuses.

Statuses are free strings (a status we have never seen passes through); the sets below are the
ones the monitor acts on. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from duvo_monitor.models.humanrequests import HumanRequest
from duvo_monitor.reader import JsonReader, refuse

TERMINAL_STATUSES = frozenset({"completed", "failed", "stopped", "interrupted"})
RESUMABLE_STATUSES = frozenset({"waiting", "completed", "interrupted"})
KNOWN_STATUSES = frozenset({"pending", "starting", "running", "waiting"}) | TERMINAL_STATUSES


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
class StopResult:
    success: bool
    message: str | None

    @classmethod
    def from_api(cls, data: object, *, endpoint: str) -> StopResult:
        r = JsonReader.of(data, "", refuse(endpoint))
        return cls(success=r.flag("success"), message=r.opt_text("message"))


# The fields a run's ``extra`` leaves out: the ones the dataclass has.
_RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(Run)) - {"extra"}
