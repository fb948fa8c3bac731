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
from dataclasses import dataclass, replace

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


# -- the benchmark family of worlds (issue 11) --------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneratedWorld:
    """A scenario and what the benchmark needs to know about it.

    ``budget`` is the requests a minute each contender's key may send; ``versions`` the API
    versions the world is played on; ``discover``: on v2 the daemon finds the runs created
    during the run itself (``watch.discover``) instead of being told of them; ``duration`` the
    simulated seconds after the start by which every scripted change has been played (human
    request waits included), a bound for the runner's timeout.
    """

    name: str
    seed: int
    scenario: Scenario
    budget: int
    versions: tuple[str, ...]
    discover: bool
    duration: float


def generate_world(
    name: str, *, seed: int, quick: bool = False, scale: float = 1.0
) -> GeneratedWorld:
    """One world of the family by name (:data:`WORLDS`); ``quick`` gives a shorter one.

    ``scale``: simulated seconds per second of the clients' clock (``speed`` for clients on the
    real clock while the world's time is compressed). The reference world's warm-up, which lets
    the first look at its 80 finished runs end before the live traffic starts, is a span of the
    clients' time, so it lasts ``scale`` times longer in the world's.
    """
    try:
        make = WORLDS[name]
    except KeyError:
        raise ScenarioError("", f"unknown world {name!r} (known: {', '.join(WORLDS)})") from None
    return make(seed, quick, scale)


def reference_world(seed: int, quick: bool, scale: float = 1.0) -> GeneratedWorld:
    """100 runs, about 10 active at once, 300 requests a minute: 80 finished before the start,
    20 live ones that begin ``warmup`` seconds in: 40 s of the clients' time, after the first
    look at the finished ones (160 requests at 5 a second, 32 s)."""
    duration = 80.0 if quick else 120.0
    warmup = 40.0 * scale
    base = generate_scenario(
        seed=seed, runs=100, active=20, duration=duration, message_rate=0.5, human_request_rate=0.3
    )
    runs = tuple(
        replace(spec, start=round(spec.start + warmup, 3)) if spec.start >= 0 else spec
        for spec in base.runs
    )
    return GeneratedWorld(
        name="reference",
        seed=seed,
        scenario=replace(base, runs=runs, name=f"reference-{seed}"),
        budget=300,
        versions=("v1", "v2"),
        discover=False,
        duration=warmup + duration + 60.0,
    )


def wakeup_world(seed: int, quick: bool, scale: float = 1.0) -> GeneratedWorld:
    """50 runs, 600 a minute: 30% finished before the start, the rest ``pending`` at the start and
    starting at random within ~20 s, then ~10 s of bursty messages each; some pause for a human
    request that is answered from outside a few seconds later."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    team, agents = _team(ids, seed, "Wake-up")
    runs: list[RunSpec] = []
    total = 30 if quick else 50
    for i in range(total):
        if i < total * 3 // 10:
            runs.append(_finished(rng, ids, agents, i))
            continue
        created = rng.uniform(1.0, 5.0)  # it exists, pending, when the monitor starts
        t = created + rng.uniform(0.0, 20.0)
        steps: list[Step] = [StatusStep(at=round(t, 3), status="starting")]
        t += rng.uniform(0.3, 1.5)
        steps.append(StatusStep(at=round(t, 3), status="running"))
        ask = rng.random() < 0.3
        end = t + rng.uniform(8.0, 12.0)
        steps.extend(_bursts(rng, ids, t, end, ask=ask, answer=(3.0, 10.0)))
        steps.append(StatusStep(at=round(max(end, steps[-1].at), 3), status="completed"))
        runs.append(_spec(rng, ids, agents[0], -created, i, tuple(steps)))
    return GeneratedWorld(
        name="wakeup",
        seed=seed,
        scenario=_scenario(team, agents, runs, seed, "wakeup"),
        budget=600,
        versions=("v1", "v2"),
        discover=False,
        duration=60.0,
    )


def resume_world(seed: int, quick: bool, scale: float = 1.0) -> GeneratedWorld:
    """20 runs, 600 a minute: 12 finished before the start, of which some are resumed by a
    message posted from outside (as from Duvo's web UI) and some deleted, during the run; 8 live
    runs, each asking a person, who answers from outside a few seconds later."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    team, agents = _team(ids, seed, "Resume")
    runs: list[RunSpec] = []
    window = 30.0 if quick else 45.0
    for i in range(12):
        spec = _finished(rng, ids, agents, i)
        created_ago = -spec.start
        act: PostStep | DeleteStep | None = None
        if i % 3 == 0:
            act = PostStep(at=0.0, text="One more thing, please.")
        elif i % 3 == 1:
            act = DeleteStep(at=0.0)
        if act is not None:
            at = round(created_ago + rng.uniform(3.0, window), 3)
            spec = replace(spec, timeline=(*spec.timeline, replace(act, at=at)))
        runs.append(spec)
    for i in range(12, 20):
        start = rng.uniform(0.0, window / 2)
        t = 0.5
        steps: list[Step] = [StatusStep(at=t, status="starting")]
        t += 1.0
        steps.append(StatusStep(at=t, status="running"))
        end = t + rng.uniform(8.0, 15.0)
        steps.extend(_bursts(rng, ids, t, end, ask=True, answer=(3.0, 8.0)))
        steps.append(StatusStep(at=round(max(end, steps[-1].at), 3), status="completed"))
        runs.append(_spec(rng, ids, agents[0], start, i, tuple(steps)))
    return GeneratedWorld(
        name="resume",
        seed=seed,
        scenario=_scenario(team, agents, runs, seed, "resume"),
        budget=600,
        versions=("v1", "v2"),
        discover=False,
        duration=window + 40.0,
    )


def discovery_world(seed: int, quick: bool, scale: float = 1.0) -> GeneratedWorld:
    """v2, 300 a minute: 30 runs finished before the start, and runs created during the run (one
    every few seconds, a short life each), which the daemon must discover by listing."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    team, agents = _team(ids, seed, "Discovery")
    runs = [_finished(rng, ids, agents, i) for i in range(30)]
    created = 8 if quick else 15
    window = 40.0 if quick else 75.0
    for i in range(created):
        start = 3.0 + rng.uniform(0.0, window)
        steps: list[Step] = [
            StatusStep(at=0.5, status="starting"),
            StatusStep(at=1.5, status="running"),
        ]
        end = 1.5 + rng.uniform(5.0, 12.0)
        steps.extend(_bursts(rng, ids, 1.5, end, ask=False, answer=(3.0, 8.0)))
        steps.append(StatusStep(at=round(max(end, steps[-1].at), 3), status="completed"))
        runs.append(_spec(rng, ids, agents[0], start, 30 + i, tuple(steps)))
    return GeneratedWorld(
        name="discovery",
        seed=seed,
        scenario=_scenario(team, agents, runs, seed, "discovery"),
        budget=300,
        versions=("v2",),
        discover=True,
        duration=window + 30.0,
    )


def quiet_world(seed: int, quick: bool, scale: float = 1.0) -> GeneratedWorld:
    """A few live runs (3) among many finished ones (60), 300 a minute: almost all the budget is
    spare, and what it buys is the live runs' freshness."""
    duration = 50.0 if quick else 60.0
    base = generate_scenario(
        seed=seed,
        runs=63,
        active=3,
        duration=duration,
        message_rate=0.3,
        human_request_rate=0.5,
        resume_rate=0.0,
    )
    return GeneratedWorld(
        name="quiet",
        seed=seed,
        scenario=replace(base, name=f"quiet-{seed}"),
        budget=300,
        versions=("v1", "v2"),
        discover=False,
        duration=duration + 60.0,
    )


def _team(ids: _Ids, seed: int, name: str) -> tuple[Team, tuple[AgentSpec, ...]]:
    team = Team(id=ids.uuid(), name=f"{name} team {seed}", organization_id=ids.uuid())
    agents = (
        AgentSpec(id=ids.uuid(), name="Asker", build_id=ids.uuid(), human_in_the_loop=True),
        AgentSpec(id=ids.uuid(), name="Worker", build_id=ids.uuid(), human_in_the_loop=False),
    )
    return team, agents


def _scenario(
    team: Team, agents: tuple[AgentSpec, ...], runs: list[RunSpec], seed: int, name: str
) -> Scenario:
    runs.sort(key=lambda spec: spec.start)
    return Scenario(team=team, agents=agents, runs=tuple(runs), seed=seed, name=f"{name}-{seed}")


def _spec(
    rng: random.Random, ids: _Ids, agent: AgentSpec, start: float, i: int, steps: tuple[Step, ...]
) -> RunSpec:
    return RunSpec(
        id=ids.uuid(),
        agent_id=agent.id,
        start=round(start, 3),
        title=rng.choice(_TITLES).format(n=1000 + i),
        source="api",
        timeline=steps,
    )


def _finished(rng: random.Random, ids: _Ids, agents: Sequence[AgentSpec], i: int) -> RunSpec:
    """A run that did its work and completed well before the start (30 s to 10 min ago)."""
    timeline = _timeline(rng, ids, rng.uniform(5.0, 20.0), "completed", False, 0.5, 0.0)
    span = timeline[-1].at
    agent = agents[i % len(agents)]
    return _spec(rng, ids, agent, -(span + rng.uniform(30.0, 600.0)), i, timeline)


def _bursts(
    rng: random.Random,
    ids: _Ids,
    start: float,
    end: float,
    *,
    ask: bool,
    answer: tuple[float, float],
) -> list[Step]:
    """Messages in bursts (2-5 within half a second, then a pause of 0.5-3 s) from ``start`` to
    ``end``; with ``ask``, a human request halfway, answered from outside after ``answer``."""
    steps: list[Step] = []
    t = start
    ask_at = (start + end) / 2 if ask else None
    while t < end:
        t += rng.uniform(0.5, 3.0)
        if ask_at is not None and t >= ask_at:
            after = round(rng.uniform(*answer), 3)
            steps.append(
                HumanRequestStep(
                    at=round(max(ask_at, steps[-1].at if steps else start), 3),
                    type="approval",
                    title="Approve sending the email?",
                    answer_after=after,
                )
            )
            ask_at = None
        for _ in range(rng.randint(2, 5)):
            t += rng.uniform(0.02, 0.15)
            text = rng.choice(_SAYINGS)
            steps.append(MessageStep(at=round(t, 3), role="assistant", type="text", text=text))
    return steps


WORLDS = {
    "reference": reference_world,
    "wakeup": wakeup_world,
    "resume": resume_world,
    "discovery": discovery_world,
    "quiet": quiet_world,
}
