"""``duvo-monitor simulate``: the simulator as a standalone process.

:func:`simulate_main` takes the parsed arguments (``listen``, ``scenario``, ``seed``, ``speed``,
``rate_limit``, ``api_key``) and returns an exit code; :func:`run_simulate` is the same as a task
for an anyio task group (readiness through ``task_status``).

``--scenario`` names a YAML/JSON file, a built-in scenario (``demo``), or a generated one:
``generate:runs=200,active=20,long_history=5000`` (keyword arguments of
:func:`~duvo_monitor.simulator.generate_scenario`; ``--seed`` seeds it). When the environment has
``DUVO_MONITOR_CLOCK``, the simulator takes that clock's origin, so that a daemon started with the
same variable reads the same simulated time.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio
from anyio.abc import TaskStatus

from duvo_monitor.clock import CLOCK_ENV, Clock
from duvo_monitor.httpserver import Bound, parse_listen
from duvo_monitor.simulator.generator import generate_scenario
from duvo_monitor.simulator.ratelimit import DEFAULT_LIMIT
from duvo_monitor.simulator.scenario import Scenario, ScenarioError
from duvo_monitor.simulator.server import DEFAULT_API_KEY, Simulator

DEFAULT_LISTEN = "127.0.0.1:8765"
_GENERATE_INT = {"runs", "active", "long_history", "agents"}
_GENERATE_FLOAT = {"message_rate", "human_request_rate", "duration", "resume_rate"}


def load_scenario(spec: str | None, seed: int) -> Scenario:
    """The scenario ``--scenario`` names (None: the built-in demo)."""
    if spec is None or spec == "":
        return Scenario.builtin("demo")
    if spec.startswith("generate"):
        _, _, args = spec.partition(":")
        kwargs: dict[str, Any] = {}
        for part in filter(None, args.split(",")):
            key, sep, value = part.partition("=")
            try:
                if key in _GENERATE_INT and sep:
                    kwargs[key] = int(value)
                elif key in _GENERATE_FLOAT and sep:
                    kwargs[key] = float(value)
                else:
                    known = ", ".join(sorted(_GENERATE_INT | _GENERATE_FLOAT))
                    raise ScenarioError("generate", f"unknown option {part!r} (known: {known})")
            except ValueError as exc:
                if isinstance(exc, ScenarioError):
                    raise
                raise ScenarioError(f"generate.{key}", f"not a number: {value!r}") from None
        return generate_scenario(seed=seed, **kwargs)
    if not Path(spec).exists() and "/" not in spec and "." not in spec:
        return Scenario.builtin(spec)
    return Scenario.load(spec)


def make_clock(speed: float, environ: Mapping[str, str]) -> Clock:
    """``Clock.scaled(speed)``, on the origin of ``DUVO_MONITOR_CLOCK`` when that is set."""
    shared = Clock.from_environ(environ) if environ.get(CLOCK_ENV) else None
    if shared is not None and speed == 1.0:
        return shared
    if speed == 1.0:
        return Clock()
    return Clock.scaled(speed, None if shared is None else shared.origin)


async def run_simulate(
    listen: str,
    scenario_path: str | None,
    seed: int,
    speed: float,
    *,
    rate_limit: int | None = DEFAULT_LIMIT,
    api_key: str = DEFAULT_API_KEY,
    clock: Clock | None = None,
    out: TextIO | None = None,
    task_status: TaskStatus[Bound] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a simulator until cancelled, after printing its URL and API key to ``out``."""
    host, port = parse_listen(listen)
    scenario = load_scenario(scenario_path, seed)
    clock = clock or make_clock(speed, os.environ)
    sim = Simulator(scenario, clock=clock, rate_limit=rate_limit, api_keys={api_key}, seed=seed)
    stream = out or sys.stderr
    async with anyio.create_task_group() as tg:
        bound = await tg.start(sim.serve, host, port)
        runs = len(scenario.runs)
        print(f"duvo-monitor simulator: scenario {scenario.name!r}, {runs} runs", file=stream)
        print(f"  url:     {bound.url}", file=stream)
        print(f"  api key: {api_key}", file=stream)
        print(f"  team:    {scenario.team.id}", file=stream)
        if clock.speed != 1.0:
            print(f"  clock:   {CLOCK_ENV}={clock.to_environ()}", file=stream)
        stream.flush()
        task_status.started(bound)


def simulate_main(args: Any, environ: Mapping[str, str] | None = None) -> int:
    """Run ``duvo-monitor simulate`` from parsed arguments; 0 after Ctrl-C, 2 on bad input."""
    environ = os.environ if environ is None else environ
    listen = getattr(args, "listen", None) or DEFAULT_LISTEN
    seed = int(getattr(args, "seed", None) or 0)
    speed = float(getattr(args, "speed", None) or 1.0)
    rate_limit = getattr(args, "rate_limit", None)
    api_key = getattr(args, "api_key", None) or DEFAULT_API_KEY
    try:
        parse_listen(listen)
        load_scenario(getattr(args, "scenario", None), seed)  # fail before binding
        clock = make_clock(speed, environ)
    except (ScenarioError, ValueError) as exc:
        print(f"duvo-monitor simulate: {exc}", file=sys.stderr)
        return 2
    try:
        anyio.run(
            _run_forever,
            listen,
            getattr(args, "scenario", None),
            seed,
            speed,
            DEFAULT_LIMIT if rate_limit is None else (rate_limit or None),
            api_key,
            clock,
        )
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"duvo-monitor simulate: cannot listen on {listen}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run_forever(
    listen: str,
    scenario: str | None,
    seed: int,
    speed: float,
    rate_limit: int | None,
    api_key: str,
    clock: Clock,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (exit code 0)."""
    async with anyio.create_task_group() as tg:
        await tg.start(
            partial(
                run_simulate,
                listen,
                scenario,
                seed,
                speed,
                rate_limit=rate_limit,
                api_key=api_key,
                clock=clock,
            )
        )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                print("duvo-monitor simulator: stopping", file=sys.stderr)
                tg.cancel_scope.cancel()
                break
