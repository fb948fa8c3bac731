"""Scenarios made up from a seed: many runs, a mix of outcomes, activity at a given rate.

:func:`generate_scenario` is deterministic: the same arguments give the same scenario, ids
included. Runs are either *active* (created during the first half of ``duration``, playing out
while the simulator runs) or *historic* (created and finished before the simulator started: the
backlog a monitor finds when it first lists runs).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence

from duvo_monitor.simulator.faults import Faults
from duvo_monitor.simulator.scenario import (
    AgentSpec,
    DeleteStep,
    HumanRequestStep,
    MessageStep,
    PostStep,
    RunSpec,
    Scenario,
    ScenarioError,
    StatusStep,
    Step,
    Team,
)

DEFAULT_OUTCOMES: Mapping[str, float] = {
    "completed": 0.7,
    "failed": 0.15,
    "interrupted": 0.05,
    "stopped": 0.05,
    "lost": 0.03,  # completed, then deleted
    "waiting": 0.02,  # blocked on a human request nobody answers
}
OUTCOMES = frozenset(DEFAULT_OUTCOMES)
_TITLES = (
    "Reconcile invoices for {n}",
    "Triage support ticket #{n}",
    "Draft reply to supplier {n}",
    "Update CRM records batch {n}",
    "Check contract clause {n}",
    "Summarise meeting notes {n}",
)
_SAYINGS = (
    "Reading the input.",
    "Found the relevant records.",
    "Comparing the totals against the ledger.",
    "Two entries do not match; checking why.",
    "Writing the summary.",
    "Everything lines up now.",
)
_TOOLS = ("search", "read_file", "query_db", "send_email", "browser_open")


def generate_scenario(
    *,
    seed: int = 0,
    runs: int = 12,
    active: int | None = None,
    outcomes: Mapping[str, float] | None = None,
    message_rate: float = 0.5,
    human_request_rate: float = 0.3,
    long_history: int = 0,
    duration: float = 120.0,
    agents: int = 3,
    resume_rate: float = 0.05,
    webhook_url: str | None = None,
    faults: Faults | Sequence[Faults] = (),
) -> Scenario:
    """A scenario of ``runs`` runs, ``active`` of them live (default: all).

    ``outcomes`` weighs the final states (keys of :data:`DEFAULT_OUTCOMES`); ``message_rate`` is
    messages per simulated second per run; ``human_request_rate`` the share of runs (of agents
    with human-in-the-loop) that ask a person; ``long_history`` gives the first active run that
    many messages from the start; ``resume_rate`` the share of completed runs somebody posts to
    afterwards (resuming them).
    """
    weights = dict(outcomes if outcomes is not None else DEFAULT_OUTCOMES)
    unknown = set(weights) - OUTCOMES
    if unknown:
        raise ScenarioError("outcomes", f"unknown outcomes {sorted(unknown)}")
    if runs < 0 or duration <= 0 or message_rate <= 0 or sum(weights.values()) <= 0:
        raise ScenarioError("", "runs >= 0, duration > 0, message_rate > 0, some outcome weight")
    live = runs if active is None else max(0, min(active, runs))
    rng = random.Random(seed)
    ids = _Ids(rng)
    team = Team(id=ids.uuid(), name=f"Generated team {seed}", organization_id=ids.uuid())
    agent_specs = tuple(
        AgentSpec(
            id=ids.uuid(),
            name=f"Agent {chr(ord('A') + i % 26)}{i // 26 or ''}",
            build_id=ids.uuid(),
            human_in_the_loop=not (agents > 1 and i == agents - 1),
        )
        for i in range(max(1, agents))
    )
    names, probabilities = zip(*weights.items(), strict=True)
    specs: list[RunSpec] = []
    for i in range(runs):
        agent = agent_specs[rng.randrange(len(agent_specs))]
        outcome = rng.choices(names, probabilities)[0]
        if outcome == "waiting" and not agent.human_in_the_loop:
            agent = agent_specs[0]  # only an agent that may ask can wait on a person
        is_live = i >= runs - live
        hitl = agent.human_in_the_loop and rng.random() < human_request_rate
        work = rng.uniform(0.2, 0.45) * duration
        timeline = _timeline(rng, ids, work, outcome, hitl, message_rate, resume_rate)
        span = timeline[-1].at if timeline else 0.0
        start = rng.uniform(0, duration / 2) if is_live else -(span + rng.uniform(60, 7200))
        first_live = is_live and i == runs - live
        specs.append(
            RunSpec(
                id=ids.uuid(),
                agent_id=agent.id,
                start=round(start, 3),
                title=rng.choice(_TITLES).format(n=1000 + i),
                source=rng.choice(("api", "api", "schedule", "ui")),
                user_id=None,
                webhook_url=webhook_url,
                history=long_history if first_live else 0,
                timeline=timeline,
            )
        )
    specs.sort(key=lambda spec: spec.start)
    return Scenario(
        team=team,
        agents=agent_specs,
        runs=tuple(specs),
        faults=(faults,) if isinstance(faults, Faults) else tuple(faults),
        seed=seed,
        name=f"generated-{seed}",
    )


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def call(self) -> str:
        return f"toolu_{self.rng.getrandbits(80):020x}"


def _timeline(
    rng: random.Random,
    ids: _Ids,
    work: float,
    outcome: str,
    hitl: bool,
    rate: float,
    resume_rate: float,
) -> tuple[Step, ...]:
    steps: list[Step] = []
    t = rng.uniform(0.2, 1.0)
    steps.append(StatusStep(at=round(t, 3), status="starting"))
    t += rng.uniform(0.5, 2.0)
    steps.append(StatusStep(at=round(t, 3), status="running"))
    ask_at = t + work / 2 if hitl or outcome == "waiting" else None
    end = t + work
    while True:
        t += rng.expovariate(rate)
        if ask_at is not None and t >= ask_at:
            at = max(round(ask_at, 3), steps[-1].at)
            steps.append(_human_request(rng, at, answered=outcome != "waiting"))
            if outcome == "waiting":
                return tuple(steps)
            ask_at = None
        if t >= end:
            break
        steps.extend(_activity(rng, ids, round(t, 3), outcome))
        t = steps[-1].at
    final = "completed" if outcome == "lost" else outcome
    t = round(max(t, end), 3)
    steps.append(StatusStep(at=t, status=final))
    if outcome == "lost":
        steps.append(DeleteStep(at=round(t + rng.uniform(5, 20), 3)))
    elif outcome == "completed" and rng.random() < resume_rate:
        steps.append(PostStep(at=round(t + rng.uniform(5, 20), 3), text="One more thing, please."))
    return tuple(steps)


def _activity(rng: random.Random, ids: _Ids, at: float, outcome: str) -> list[Step]:
    roll = rng.random()
    if roll < 0.55:
        return [MessageStep(at=at, role="assistant", type="text", text=rng.choice(_SAYINGS))]
    if roll < 0.65:
        return [MessageStep(at=at, role="assistant", type="thinking", text="Considering options.")]
    if roll < 0.68:
        return [MessageStep(at=at, role="duvo", type="browser_session_created", text="Browser")]
    call = ids.call()
    tool = rng.choice(_TOOLS)
    failed = rng.random() < (0.3 if outcome == "failed" else 0.08)
    result: dict[str, object] = {"tool_call_id": call}
    if failed:
        result["error"] = f"{tool} timed out"
    else:
        result["result"] = {"ok": True, "items": rng.randint(0, 40)}
    return [
        MessageStep(
            at=at,
            role="assistant",
            type="tool_call",
            tool_call={"id": call, "name": tool, "arguments": {"q": f"item {rng.randint(1, 99)}"}},
        ),
        MessageStep(
            at=round(at + rng.uniform(0.3, 3.0), 3),
            role=rng.choice(("tool", "tool", "assistant")),
            type="tool_result",
            tool_result=result,
        ),
    ]


def _human_request(rng: random.Random, at: float, *, answered: bool) -> HumanRequestStep:
    after = round(rng.uniform(3, 30), 3) if answered else None
    if rng.random() < 0.6:
        return HumanRequestStep(
            at=at,
            type="approval",
            title="Approve sending the email?",
            description="The draft is ready to go to the supplier.",
            answer_after=after,
            approved=rng.random() < 0.8,
        )
    question = {
        "question": "Which account should be charged?",
        "header": "Account",
        "options": [{"label": "Operations"}, {"label": "Marketing", "description": "Q3 budget"}],
        "multi_select": False,
    }
    return HumanRequestStep(
        at=at,
        type="question",
        title="Which account?",
        description=None,
        questions=(question,),
        answer_after=after,
        answers={"Which account should be charged?": rng.choice(("Operations", "Marketing"))},
    )
