"""The scenario format: the team, its agents, the runs and what each run does over time.

A scenario is plain data (YAML or JSON; see ``docs/simulator.md``), parsed once into frozen
dataclasses by :meth:`Scenario.from_dict`. Every problem is reported as a :class:`ScenarioError`
carrying its path in the document (``runs[3].timeline[2].at: not a duration``), the first one
found. Ids left out are derived from the position in the document, so that a scenario file
always yields the same ids.

A run's timeline is a list of steps, each at a time relative to the run's creation (``at``) or
to the step before (``after``). Agent steps (status changes, messages, tool calls and results,
human requests) are what the agent does; outside steps (``post``, ``delete``) are what people do
elsewhere. A human request pauses the timeline until it is answered: every later step moves by
the time the request waited.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from duvo_monitor.simulator.faults import FAULT_FIELDS, KINDS, Faults, Window
from duvo_monitor.simulator.model import STATUSES

LIST_STATUSES = (
    *("not_started", "pending", "starting", "running", "waiting"),
    *("completed", "failed", "interrupted", "stopped"),
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


HITL = "human_in_the_loop"


class ScenarioError(ValueError):
    """A scenario document that cannot be used; ``path`` locates the problem in it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def parse_duration(value: object, *, allow_negative: bool = False) -> float:
    """Seconds from ``250ms``, ``10s``, ``2m``, ``1h``, ``1m30s`` or a number. ValueError if not."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-")
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in parts)
        else:
            try:
                seconds = sign * float(text)
            except ValueError:
                raise ValueError("not a duration (use 250ms, 10s, 2m, 1h or seconds)") from None
    else:
        raise ValueError("not a duration (use 250ms, 10s, 2m, 1h or seconds)")
    if not math.isfinite(seconds):
        raise ValueError("not a finite duration")
    if seconds < 0 and not allow_negative:
        raise ValueError("a duration cannot be negative here")
    return seconds


def stable_uuid(*parts: object) -> str:
    """A version-4-shaped UUID determined by ``parts``."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


# -- steps ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusStep:
    at: float
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageStep:
    at: float
    role: str
    type: str
    text: str | None = None
    tool_call: Mapping[str, Any] | None = None
    tool_result: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanRequestStep:
    at: float
    type: str
    title: str
    description: str | None = None
    questions: tuple[Mapping[str, Any], ...] = ()
    answer_after: float | None = None  # answered "outside" after this long; None: never
    approved: bool = True
    answers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PostStep:
    """Somebody posts a message outside the API (web UI, Slack): it resumes a resumable run."""

    at: float
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteStep:
    """The run is deleted: v2 GET run answers ``run: null``, everything else 404."""

    at: float


Step = StatusStep | MessageStep | HumanRequestStep | PostStep | DeleteStep
OUTSIDE_STEPS = (PostStep, DeleteStep)


# -- the document --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    id: str
    name: str
    organization_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    id: str
    name: str
    build_id: str
    human_in_the_loop: bool = True
    # What a run started through the API does (None: a short default script).
    timeline: tuple[Step, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    id: str
    agent_id: str
    start: float  # seconds after the simulator's start (negative: a run from before)
    title: str
    source: str | None = "api"
    user_id: str | None = None
    sandbox_id: str | None = None
    status: str = "pending"
    human_in_the_loop: bool | None = None  # None: the agent's setting
    webhook_url: str | None = None
    history: int = 0  # messages already in the transcript when the run appears
    timeline: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    team: Team
    agents: tuple[AgentSpec, ...]
    runs: tuple[RunSpec, ...] = ()
    faults: tuple[Faults, ...] = ()
    list_stopped_as: str = "stopped"
    seed: int = 0
    name: str = "scenario"
    _agents_by_id: dict[str, AgentSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._agents_by_id.update({agent.id: agent for agent in self.agents})

    def agent(self, agent_id: str) -> AgentSpec | None:
        return self._agents_by_id.get(agent_id.lower())

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """A scenario from a YAML or JSON file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError("", f"cannot read {path}: {exc.strerror or exc}") from exc
        return cls.from_text(text, name=path.stem, json_only=path.suffix == ".json")

    @classmethod
    def builtin(cls, name: str = "demo") -> Scenario:
        """A scenario shipped in the package (``simulator/scenarios/<name>.yaml``)."""
        ref = resources.files("duvo_monitor.simulator").joinpath("scenarios", f"{name}.yaml")
        try:
            text = ref.read_text(encoding="utf-8")
        except (OSError, FileNotFoundError) as exc:
            raise ScenarioError("", f"no built-in scenario named {name!r}") from exc
        return cls.from_text(text, name=name)

    @classmethod
    def from_text(cls, text: str, *, name: str = "scenario", json_only: bool = False) -> Scenario:
        try:
            data = json.loads(text) if json_only else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ScenarioError("", f"not valid {'JSON' if json_only else 'YAML'}: {exc}") from exc
        return cls.from_dict(data, name=name)

    @classmethod
    def from_dict(cls, data: object, *, name: str = "scenario") -> Scenario:
        """A scenario from its plain-data form; :class:`ScenarioError` names the first problem."""
        return _Parser().scenario(data, name)


# -- parsing -------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


class _Parser:
    def scenario(self, data: object, name: str) -> Scenario:
        doc = self.mapping(
            data,
            "",
            {"version", "name", "seed", "team", "agents", "runs"} | {"faults", "list_stopped_as"},
        )
        version = doc.get("version", 1)
        if version != 1:
            raise ScenarioError("version", f"unsupported scenario version {version!r} (only 1)")
        seed = self.integer(doc.get("seed", 0), "seed")
        team = self.team(doc.get("team", {}), seed)
        agents_raw = self.sequence(doc.get("agents"), "agents", required=True)
        agents = tuple(self.agent(a, f"agents[{i}]", seed, i) for i, a in enumerate(agents_raw))
        if not agents:
            raise ScenarioError("agents", "at least one agent is needed")
        self._check_unique([a.id for a in agents], "agents", "id")
        by_key = {a.id: a for a in agents} | {a.name: a for a in agents}
        runs_raw = self.sequence(doc.get("runs", []), "runs")
        runs = tuple(
            self.run(r, f"runs[{i}]", seed, i, by_key, agents[0]) for i, r in enumerate(runs_raw)
        )
        self._check_unique([r.id for r in runs], "runs", "id")
        faults = self.faults(doc.get("faults"), "faults")
        stopped_as = doc.get("list_stopped_as", "stopped")
        if stopped_as not in LIST_STATUSES:
            raise ScenarioError("list_stopped_as", f"not a list status: {stopped_as!r}")
        return Scenario(
            team=team,
            agents=agents,
            runs=runs,
            faults=faults,
            list_stopped_as=stopped_as,
            seed=seed,
            name=str(doc.get("name", name)),
        )

    # containers and scalars

    def mapping(self, value: object, path: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ScenarioError(path, f"expected a mapping, got {_type_name(value)}")
        for key in value:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise ScenarioError(_join(path, str(key)), f"unknown key (known: {known})")
        return value

    def sequence(self, value: object, path: str, *, required: bool = False) -> list[Any]:
        if value is None and required:
            raise ScenarioError(path, "required")
        if not isinstance(value, list):
            raise ScenarioError(path, f"expected a list, got {_type_name(value)}")
        return value

    def string(self, value: object, path: str, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise ScenarioError(path, f"expected a non-empty string, got {value!r}")
        return value

    def opt_string(self, value: object, path: str) -> str | None:
        return None if value is None else self.string(value, path, empty=True)

    def integer(self, value: object, path: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ScenarioError(path, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def boolean(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise ScenarioError(path, f"expected true or false, got {value!r}")
        return value

    def duration(self, value: object, path: str, *, allow_negative: bool = False) -> float:
        try:
            return parse_duration(value, allow_negative=allow_negative)
        except ValueError as exc:
            raise ScenarioError(path, f"{exc}: {value!r}") from None

    def uuid(self, value: object, path: str) -> str:
        text = self.string(value, path)
        if not _UUID.match(text):
            raise ScenarioError(path, f"not a UUID: {text!r}")
        return text.lower()

    def _check_unique(self, ids: Sequence[str], path: str, key: str) -> None:
        seen: set[str] = set()
        for i, item in enumerate(ids):
            if item in seen:
                raise ScenarioError(f"{path}[{i}].{key}", f"duplicate id {item!r}")
            seen.add(item)

    # sections

    def team(self, value: object, seed: int) -> Team:
        doc = self.mapping(value, "team", {"id", "name", "organization_id"})
        org = doc.get("organization_id", stable_uuid(seed, "organization"))
        return Team(
            id=self.uuid(doc.get("id", stable_uuid(seed, "team")), "team.id"),
            name=self.string(doc.get("name", "Simulated team"), "team.name"),
            organization_id=None if org is None else self.uuid(org, "team.organization_id"),
        )

    def agent(self, value: object, path: str, seed: int, index: int) -> AgentSpec:
        doc = self.mapping(value, path, {"id", "name", "build_id", "human_in_the_loop", "timeline"})
        name = self.string(doc.get("name", f"Agent {index + 1}"), f"{path}.name")
        timeline = None
        if "timeline" in doc:
            timeline = self.timeline(doc["timeline"], f"{path}.timeline", f"{seed}:{name}")
        return AgentSpec(
            id=self.uuid(doc.get("id", stable_uuid(seed, "agent", name)), f"{path}.id"),
            name=name,
            build_id=self.uuid(
                doc.get("build_id", stable_uuid(seed, "build", name)), f"{path}.build_id"
            ),
            human_in_the_loop=self.boolean(
                doc.get("human_in_the_loop", True), f"{path}.human_in_the_loop"
            ),
            timeline=timeline,
        )

    def run(
        self,
        value: object,
        path: str,
        seed: int,
        index: int,
        agents: Mapping[str, AgentSpec],
        default_agent: AgentSpec,
    ) -> RunSpec:
        allowed = {"id", "agent", "start", "title", "source", "user_id", "sandbox_id", "status"}
        allowed |= {"human_in_the_loop", "webhook_url", "history", "timeline"}
        doc = self.mapping(value, path, allowed)
        agent = default_agent
        if "agent" in doc:
            key = self.string(doc["agent"], f"{path}.agent")
            found = agents.get(key) or agents.get(key.lower())
            if found is None:
                raise ScenarioError(f"{path}.agent", f"unknown agent {key!r} (an id or a name)")
            agent = found
        status = doc.get("status", "pending")
        if status not in STATUSES:
            raise ScenarioError(f"{path}.status", f"unknown status {status!r}")
        run_id = self.uuid(doc.get("id", stable_uuid(seed, "run", index)), f"{path}.id")
        hitl = doc.get("human_in_the_loop")
        user_id = doc.get("user_id")
        return RunSpec(
            id=run_id,
            agent_id=agent.id,
            start=self.duration(doc.get("start", 0), f"{path}.start", allow_negative=True),
            title=self.string(doc.get("title", f"Run {index + 1}"), f"{path}.title"),
            source=self.opt_string(doc.get("source", "api"), f"{path}.source"),
            user_id=None if user_id is None else self.uuid(user_id, f"{path}.user_id"),
            sandbox_id=self.opt_string(doc.get("sandbox_id"), f"{path}.sandbox_id"),
            status=status,
            human_in_the_loop=None if hitl is None else self.boolean(hitl, f"{path}.{HITL}"),
            webhook_url=self.opt_string(doc.get("webhook_url"), f"{path}.webhook_url"),
            history=self.integer(doc.get("history", 0), f"{path}.history"),
            timeline=self.timeline(doc.get("timeline", []), f"{path}.timeline", run_id),
        )

    def timeline(self, value: object, path: str, salt: str) -> tuple[Step, ...]:
        steps: list[Step] = []
        calls: list[str] = []  # tool call ids seen so far
        answered: set[str] = set()
        previous = 0.0
        for i, raw in enumerate(self.sequence(value, path)):
            step_path = f"{path}[{i}]"
            step = self.step(raw, step_path, previous, f"{salt}:{i}", calls, answered)
            if step.at < previous:
                raise ScenarioError(
                    f"{step_path}.at",
                    f"earlier than the step before ({step.at:g}s < {previous:g}s)",
                )
            previous = step.at
            steps.append(step)
        return tuple(steps)

    def step(
        self,
        value: object,
        path: str,
        previous: float,
        salt: str,
        calls: list[str],
        answered: set[str],
    ) -> Step:
        actions = {"status", "say", "user", "thinking", "message", "tool_call", "tool_result"}
        actions |= {"human_request", "post", "delete"}
        doc = self.mapping(value, path, actions | {"at", "after"})
        if ("at" in doc) == ("after" in doc):
            raise ScenarioError(
                path, "needs exactly one of 'at' (since the run's start) or 'after'"
            )
        if "at" in doc:
            at = self.duration(doc["at"], f"{path}.at")
        else:
            at = previous + self.duration(doc["after"], f"{path}.after")
        present = [key for key in doc if key in actions]
        if len(present) != 1:
            raise ScenarioError(path, f"needs exactly one action of {', '.join(sorted(actions))}")
        action = present[0]
        body = doc[action]
        where = f"{path}.{action}"
        if action == "status":
            if body not in STATUSES:
                raise ScenarioError(where, f"unknown status {body!r}")
            return StatusStep(at=at, status=body)
        if action in ("say", "user", "thinking"):
            role = "user" if action == "user" else "assistant"
            kind = "thinking" if action == "thinking" else "text"
            return MessageStep(at=at, role=role, type=kind, text=self.string(body, where))
        if action == "message":
            m = self.mapping(body, where, {"role", "type", "text"})
            return MessageStep(
                at=at,
                role=self.string(m.get("role", "assistant"), f"{where}.role"),
                type=self.string(m.get("type", "text"), f"{where}.type"),
                text=self.opt_string(m.get("text"), f"{where}.text"),
            )
        if action == "tool_call":
            return self.tool_call(body, where, at, salt, calls)
        if action == "tool_result":
            return self.tool_result(body, where, at, calls, answered)
        if action == "human_request":
            return self.human_request(body, where, at)
        if action == "post":
            return PostStep(at=at, text=self.string(body, where))
        if body is not True:
            raise ScenarioError(where, "write 'delete: true'")
        return DeleteStep(at=at)

    def tool_call(self, body: object, where: str, at: float, salt: str, calls: list[str]) -> Step:
        m = self.mapping(body, where, {"id", "name", "arguments", "text"})
        call_id = self.string(
            m.get("id", "toolu_" + hashlib.sha256(salt.encode()).hexdigest()[:20]), f"{where}.id"
        )
        arguments = m.get("arguments", {})
        if not isinstance(arguments, dict):
            raise ScenarioError(f"{where}.arguments", "expected a mapping")
        if call_id in calls:
            raise ScenarioError(f"{where}.id", f"duplicate tool call id {call_id!r}")
        calls.append(call_id)
        call = {
            "id": call_id,
            "name": self.string(m.get("name"), f"{where}.name"),
            "arguments": arguments,
        }
        return MessageStep(
            at=at,
            role="assistant",
            type="tool_call",
            text=self.opt_string(m.get("text"), f"{where}.text"),
            tool_call=call,
        )

    def tool_result(
        self, body: object, where: str, at: float, calls: list[str], answered: set[str]
    ) -> Step:
        m = self.mapping(body, where, {"call", "result", "error", "role"})
        if "call" in m:
            call_id = self.string(m["call"], f"{where}.call")
            if call_id not in calls:
                raise ScenarioError(f"{where}.call", f"no earlier tool_call with id {call_id!r}")
        else:
            open_calls = [c for c in calls if c not in answered]
            if not open_calls:
                raise ScenarioError(where, "no earlier tool_call without a result")
            call_id = open_calls[-1]
        answered.add(call_id)
        result: dict[str, Any] = {"tool_call_id": call_id}
        if "result" in m:
            result["result"] = m["result"]
        if "error" in m:
            result["error"] = self.string(m["error"], f"{where}.error")
        return MessageStep(
            at=at,
            role=self.string(m.get("role", "tool"), f"{where}.role"),
            type="tool_result",
            tool_result=result,
        )

    def human_request(self, body: object, where: str, at: float) -> HumanRequestStep:
        allowed = {"type", "title", "description", "questions", "answer_after", "approved"}
        m = self.mapping(body, where, allowed | {"answers"})
        kind = m.get("type", "approval")
        if kind not in ("approval", "question"):
            raise ScenarioError(f"{where}.type", f"expected approval or question, got {kind!r}")
        questions: list[dict[str, Any]] = []
        for j, q in enumerate(self.sequence(m.get("questions", []), f"{where}.questions")):
            questions.append(self.question(q, f"{where}.questions[{j}]"))
        if kind == "question" and not questions:
            raise ScenarioError(f"{where}.questions", "a question request needs questions")
        if kind == "approval" and questions:
            raise ScenarioError(f"{where}.questions", "an approval request has no questions")
        answers = m.get("answers")
        if answers is not None:
            a = self.mapping(answers, f"{where}.answers", {q["question"] for q in questions})
            answers = {k: self.string(v, f"{where}.answers.{k}", empty=True) for k, v in a.items()}
        after = m.get("answer_after")
        return HumanRequestStep(
            at=at,
            type=kind,
            title=self.string(m.get("title", "Approval needed"), f"{where}.title"),
            description=self.opt_string(m.get("description"), f"{where}.description"),
            questions=tuple(questions),
            answer_after=None if after is None else self.duration(after, f"{where}.answer_after"),
            approved=self.boolean(m.get("approved", True), f"{where}.approved"),
            answers=answers,
        )

    def question(self, value: object, path: str) -> dict[str, Any]:
        q = self.mapping(value, path, {"question", "header", "options", "multi_select"})
        out: dict[str, Any] = {"question": self.string(q.get("question"), f"{path}.question")}
        if "header" in q:
            out["header"] = self.string(q["header"], f"{path}.header")
        if "options" in q:
            options = []
            for k, o in enumerate(self.sequence(q["options"], f"{path}.options")):
                op = self.mapping(o, f"{path}.options[{k}]", {"label", "description"})
                option = {"label": self.string(op.get("label"), f"{path}.options[{k}].label")}
                if "description" in op:
                    option["description"] = self.string(
                        op["description"], f"{path}.options[{k}].description"
                    )
                options.append(option)
            out["options"] = options
        if "multi_select" in q:
            out["multi_select"] = self.boolean(q["multi_select"], f"{path}.multi_select")
        return out

    def faults(self, value: object, path: str) -> tuple[Faults, ...]:
        if value is None:
            return ()
        if isinstance(value, dict):
            return (self.fault(value, path),)
        items = self.sequence(value, path)
        return tuple(self.fault(item, f"{path}[{i}]") for i, item in enumerate(items))

    def fault(self, value: object, path: str) -> Faults:
        doc = self.mapping(value, path, set(FAULT_FIELDS))
        kwargs: dict[str, Any] = {}
        for key, raw in doc.items():
            where = f"{path}.{key}"
            if key in KINDS:
                if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 1:
                    raise ScenarioError(where, f"expected a probability within 0..1, got {raw!r}")
                kwargs[key] = float(raw)
            elif key == "window":
                w = self.mapping(raw, where, {"start", "end"})
                start = self.duration(w.get("start", 0), f"{where}.start")
                end = self.duration(w["end"], f"{where}.end") if "end" in w else math.inf
                if end <= start:
                    raise ScenarioError(f"{where}.end", "the window ends before it starts")
                kwargs["window"] = Window(start=start, end=end)
            else:
                kwargs[key] = self.duration(raw, where)
        return Faults(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
