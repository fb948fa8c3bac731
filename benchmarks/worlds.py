"""Freshness in every world (issue 11): the daemon and two round-robin baselines, each its own
process with its own API key, polling one simulator at the same time, in a family of generated
worlds, several seeds each, v1 and v2, scored alike.

One *play* is one world x version x seed x mode: one simulator (in this process), three
contenders (subprocesses), ended when every contender has delivered everything or ``GRACE`` wall
seconds after the world has played its last step. Contenders:

* ``daemon``: ``duvo-monitor run`` with its defaults (``polling.*`` untouched), a stdout sink,
  the world's budget as ``api.requests_per_minute``, the control API on, through which it is told
  of runs created later (as ``duvo-monitor start`` would), except in the discovery world, where
  ``watch.discover`` must find them;
* ``rr_all``: :mod:`benchmarks.round_robin`, every run in turn forever, finished ones included;
* ``rr_skip``: the same, skipping runs it has seen finished (the stronger baseline).

Every contender's stdout lines are stamped on the simulator's clock as they are read, and scored
by :func:`duvo_monitor.simulator.freshness.freshness` against the truth log; its requests are the
simulator's request log entries of its key.

Modes. ``wall``: the contenders run on the real clock, as in production (no
``DUVO_MONITOR_CLOCK``), the world's time runs ``speed`` times faster. The simulator's limiter
counts each key's requests over one *real* minute (its window is ``60 x speed`` simulated
seconds) and its rate headers come in real time, so the daemon's budget and the server's agree
on the minute; latencies are reported in real seconds. The world is then ``speed`` times busier
against the budget than its description says (its messages come that much faster per real
second): the comparison between contenders is fair, the absolute figures are not those of the
scaled mode. ``scaled``: every contender on the simulator's scaled clock (``DUVO_MONITOR_CLOCK``),
budgets per simulated minute, latencies in simulated seconds; the daemon's own delays (start-up,
dispatch, pacing) shrink by ``speed``.

``python -m benchmarks worlds [--quick] [--seeds 1,2,3] [--worlds reference,wakeup]
[--versions v1,v2] [--mode auto|wall|scaled|both] [--speed 4]``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from benchmarks.runner import fmt, free_port, quiet_logs, save
from duvo_monitor.clock import Clock
from duvo_monitor.simulator import Simulator
from duvo_monitor.simulator.freshness import Contest, Freshness, freshness
from duvo_monitor.simulator.generator import WORLDS, GeneratedWorld, generate_world
from duvo_monitor.simulator.scoring import Emitted
from duvo_monitor.simulator.server import key_id

CONTENDERS = ("daemon", "rr_all", "rr_skip")
LABELS = {
    "daemon": "duvo-monitor",
    "rr_all": "round-robin (all runs)",
    "rr_skip": "round-robin (skips finished)",
}
KEYS = {name: f"bench-{name}-key" for name in CONTENDERS}
CONTROL_TOKEN = "bench-control-token"
GRACE = 15.0  # wall seconds after the world's last step
STEP = 0.05  # wall seconds between looks for newly created runs
SPEED = 4.0
SEEDS = (1, 2, 3)
ROOT = Path(__file__).resolve().parent.parent


@dataclass(slots=True)
class Contender:
    name: str
    added: dict[str, float]
    started_at: float
    received: list[Emitted] = field(default_factory=list)
    process: Process | None = None
    stdin_open: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Play:
    world: str
    version: str
    seed: int
    mode: str


async def play(
    world: GeneratedWorld, version: str, mode: str, speed: float, tmp: Path
) -> dict[str, Any]:
    """One simulator, three contenders, until all caught up or the grace ran out; the scores."""
    clock = Clock.scaled(speed)
    wall = mode == "wall"
    sim = Simulator(
        world.scenario,
        clock=clock,
        rate_limit=world.budget,
        rate_window=60.0 * speed if wall else 60.0,
        api_keys=tuple(KEYS.values()),
        client_clock=Clock() if wall else None,
    )
    scale = speed if wall else 1.0
    discover = world.discover and version == "v2"
    contenders: dict[str, Contender] = {}
    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        bound = await tg.start(sim.serve, "127.0.0.1", 0)
        sim.world.advance(clock.time())
        existing = [r.id for r in sim.world.runs()]
        control_port = free_port()
        env = _environ(clock, wall)
        for name in CONTENDERS:
            now = clock.time()
            c = contenders[name] = Contender(
                name=name, added=dict.fromkeys(existing, now), started_at=now
            )
            argv = _argv(name, world, version, bound.url, existing, tmp, control_port, discover)
            # Its log stays in the play's directory; the child holds its own descriptor.
            with (tmp / f"{name}.stderr").open("wb") as log:
                c.process = await anyio.open_process(
                    argv, env={**env, "DUVO_API_KEY": KEYS[name]}, stderr=log, cwd=ROOT
                )
            tg.start_soon(_read, c, clock)
        ended = await _follow(sim, world, contenders, clock, control_port, discover, scale)
        end = clock.time()
        for c in contenders.values():
            await _stop(c)
        tg.cancel_scope.cancel()
    rows = {}
    for name, c in contenders.items():
        score = freshness(
            sim.truth,
            c.received,
            [r for r in sim.requests if r.key_id == key_id(KEYS[name])],
            Contest(start=c.started_at, end=end, added=c.added, budget=world.budget, scale=scale),
        )
        rows[name] = _row(score)
    return {
        "contenders": rows,
        "ended": ended,
        "simulated_seconds": round(end - sim.started_at, 1),
        "wall_seconds": round(time.perf_counter() - began, 1),
        "changes": len(sim.truth),
        "runs": len(sim.world.runs()),
    }


def _row(score: Freshness) -> dict[str, Any]:
    out = score.summary()
    out["first_look_late_runs"] = score.first_look_late[:10]
    return out


def _environ(clock: Clock, wall: bool) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DUVO_", "CREDENTIALS_DIRECTORY"))
    }
    env["DUVO_MONITOR_CONTROL_TOKEN"] = CONTROL_TOKEN
    env["PYTHONUNBUFFERED"] = "1"
    if not wall:
        env["DUVO_MONITOR_CLOCK"] = clock.to_environ()
    return env


def _argv(
    name: str,
    world: GeneratedWorld,
    version: str,
    url: str,
    existing: Sequence[str],
    tmp: Path,
    control_port: int,
    discover: bool,
) -> list[str]:
    if name != "daemon":
        runs_file = tmp / f"{name}-runs.txt"
        runs_file.write_text("".join(f"{r}\n" for r in existing))
        argv = [sys.executable, "-m", "benchmarks.round_robin", "--base-url", url]
        argv += ["--version", version, "--rpm", str(world.budget), "--runs-file", str(runs_file)]
        return [*argv, "--skip-finished"] if name == "rr_skip" else argv
    api: dict[str, Any] = {
        "base_url": url,
        "version": version,
        "requests_per_minute": world.budget,
    }
    if version == "v2":
        api["team_id"] = world.scenario.team.id
    watch: dict[str, Any] = {"runs": list(existing)}
    if discover:
        watch["discover"] = {"since": "1h"}
    config = {
        "api": api,
        "watch": watch,
        "state": {"path": str(tmp / "state.db")},
        "sinks": [{"type": "stdout"}],
        "control": {"listen": f"127.0.0.1:{control_port}"},
        "logging": {"level": "warning", "format": "json"},
    }
    path = tmp / "daemon.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "duvo_monitor", "run", "--config", str(path)]


async def _read(c: Contender, clock: Clock) -> None:
    """Stamp each line the contender prints, on the simulator's clock, as it is read."""
    assert c.process is not None and c.process.stdout is not None
    stream = BufferedByteReceiveStream(c.process.stdout)
    while True:
        try:
            line = await stream.receive_until(b"\n", 1 << 24)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            return
        at = clock.time()
        if line.strip():
            c.received.append(Emitted(envelope=json.loads(line), at=at))


async def _follow(
    sim: Simulator,
    world: GeneratedWorld,
    contenders: dict[str, Contender],
    clock: Clock,
    control_port: int,
    discover: bool,
    scale: float,
) -> str:
    """Tell the contenders of new runs the moment they exist; end when every contender has
    delivered everything ("caught up") or ``GRACE`` after the world's last step, or after the
    first-look bound of the runs there at the start if that is later ("grace")."""
    known = {r.id for r in sim.world.runs()}
    done_at: float | None = None
    # Never end before the first look at the runs there at the start was due (its bound, in the
    # contenders' seconds): a play shorter than that would count the backlog as misses.
    bound = math.ceil(2 * len(known) / (world.budget / 60)) + 1
    earliest = time.perf_counter() + clock.wall(bound * scale)
    deadline = max(earliest, time.perf_counter() + clock.wall(world.duration)) + 3 * GRACE
    last_check = 0.0
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{control_port}",
        headers={"authorization": f"Bearer {CONTROL_TOKEN}"},
        timeout=5.0,
    ) as control:
        untold: dict[str, float] = {}
        while time.perf_counter() < deadline:
            await anyio.sleep(STEP)
            now = clock.time()
            fresh = [r.id for r in sim.world.runs() if r.id not in known]
            for run_id in fresh:
                known.add(run_id)
                for c in contenders.values():
                    c.added[run_id] = now  # discovered or told: from the moment it exists
                    if c.name != "daemon":
                        await _tell(c, run_id)
                if not discover:
                    untold[run_id] = now
            if untold and await _post_runs(control, list(untold)):
                untold.clear()
            if sim.world.next_event_time() is None:
                done_at = done_at or max(time.perf_counter(), earliest)
                if time.perf_counter() - done_at > GRACE:
                    return "grace"
                if time.perf_counter() - last_check > 2.0:
                    last_check = time.perf_counter()
                    if _all_caught_up(sim, world, contenders, now, scale):
                        return "caught up"
    return "timeout"


async def _tell(c: Contender, run_id: str) -> None:
    assert c.process is not None and c.process.stdin is not None
    if c.stdin_open:
        try:
            await c.process.stdin.send(f"{run_id}\n".encode())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            c.stdin_open = False


async def _post_runs(control: httpx.AsyncClient, run_ids: list[str]) -> bool:
    """Tell the daemon through its control API; False while it is not listening yet."""
    try:
        response = await control.post("/runs", json={"run_ids": run_ids})
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 201)


def _all_caught_up(
    sim: Simulator,
    world: GeneratedWorld,
    contenders: dict[str, Contender],
    now: float,
    scale: float,
) -> bool:
    for c in contenders.values():
        contest = Contest(
            start=c.started_at, end=now, added=c.added, budget=world.budget, scale=scale
        )
        if freshness(sim.truth, c.received, (), contest).missed:
            return False
    return True


async def _stop(c: Contender) -> None:
    """SIGTERM (the daemon drains), then SIGKILL after five seconds."""
    process = c.process
    if process is None or process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(5.0):
        await process.wait()
        return
    process.kill()
    with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
        await process.wait()


# -- the family ----------------------------------------------------------------------------------


def plays(
    worlds: Sequence[str], versions: Sequence[str], seeds: Sequence[int], modes: str
) -> list[Play]:
    out = []
    for name in worlds:
        world_modes = {
            "auto": ("wall", "scaled") if name == "reference" else ("wall",),
            "both": ("wall", "scaled"),
        }.get(modes, (modes,))
        for mode in world_modes:
            for version in versions:
                if version not in generate_world(name, seed=0, quick=True).versions:
                    continue
                out.extend(Play(world=name, version=version, seed=s, mode=mode) for s in seeds)
    return out


async def measure(todo: Sequence[Play], *, quick: bool, speed: float) -> list[dict[str, Any]]:
    results = []
    for i, p in enumerate(todo, 1):
        scale = speed if p.mode == "wall" else 1.0
        world = generate_world(p.world, seed=p.seed, quick=quick, scale=scale)
        with tempfile.TemporaryDirectory(prefix=f"bench-worlds-{p.world}-") as tmp:
            outcome = await play(world, p.version, p.mode, speed, Path(tmp))
        results.append(
            {"world": p.world, "version": p.version, "seed": p.seed, "mode": p.mode, **outcome}
        )
        d = outcome["contenders"]["daemon"]
        print(
            f"  [{i}/{len(todo)}] {p.world} {p.version} seed {p.seed} {p.mode}: "
            f"{outcome['wall_seconds']} s wall, {outcome['ended']}; daemon msg p95 "
            f"{fmt(d['message_p95'])}, misses {d['misses']}; rr_all p95 "
            f"{fmt(outcome['contenders']['rr_all']['message_p95'])}",
            flush=True,
        )
    return results


METRICS = (
    "message_p50",
    "message_p95",
    "misses",
    "resume_p95",
    "deletion_p95",
    "discovery_p95",
    "first_look_max",
    "first_look_bound_max",
    "first_look_late",
    "utilization_while_due",
    "max_in_60s",
    "requests",
)


def medians(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Per world x version x mode x contender, the median over seeds of each metric (None when
    no seed had a value), and the seeds' misses by kind summed."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        for name, row in r["contenders"].items():
            groups.setdefault((r["world"], r["version"], r["mode"], name), []).append(row)
    out = {}
    for key, rows in groups.items():
        m: dict[str, Any] = {"seeds": len(rows)}
        for metric in METRICS:
            values = [row[metric] for row in rows if row[metric] is not None]
            m[metric] = statistics.median(values) if values else None
        kinds: dict[str, int] = {}
        for row in rows:
            for kind, n in row["misses_by_kind"].items():
                kinds[kind] = kinds.get(kind, 0) + n
        m["misses_by_kind"] = kinds
        out[key] = m
    return out


def targets(
    med: dict[tuple[str, str, str, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Issue 11's targets for the daemon, per world x version x mode, on the medians."""
    out = []
    for (world, version, mode, name), d in sorted(med.items()):
        if name != "daemon":
            continue
        rr_all = med.get((world, version, mode, "rr_all"), {})
        rr_skip = med.get((world, version, mode, "rr_skip"), {})
        checks: list[tuple[str, float | None, float | None, str]] = []
        if rr_all.get("message_p95"):
            checks.append(
                ("msg p95 <= 0.25 x rr_all", d["message_p95"], 0.25 * rr_all["message_p95"], "<=")
            )
        if rr_skip.get("message_p95"):
            checks.append(
                ("msg p95 <= 0.5 x rr_skip", d["message_p95"], 0.5 * rr_skip["message_p95"], "<=")
            )
        checks.append(("misses = 0", d["misses"], 0, "<="))
        if world == "resume":
            limit = 5.0 if version == "v1" else 2.0
            checks.append((f"resume p95 <= {limit:g} s", d["resume_p95"], limit, "<="))
            checks.append((f"deletion p95 <= {limit:g} s", d["deletion_p95"], limit, "<="))
        if world == "discovery":
            checks.append(("discovery p95 <= 3 s", d["discovery_p95"], 3.0, "<="))
        checks.append(("runs first looked at late", d["first_look_late"], 0, "<="))
        if world == "reference" and mode == "scaled":
            checks.append(("msg p95 <= 3 s (scaled)", d["message_p95"], 3.0, "<="))
        checks.append(
            ("budget used while news waits >= 90%", d["utilization_while_due"], 0.9, ">=")
        )
        for label, value, bound, op in checks:
            met = (
                value is not None
                and bound is not None
                and (value <= bound if op == "<=" else value >= bound)
            )
            out.append(
                {
                    "world": world,
                    "version": version,
                    "mode": mode,
                    "target": label,
                    "value": value,
                    "bound": bound,
                    "met": met,
                    "by": None if value is None or bound is None else value - bound,
                }
            )
    return out


# -- the report ----------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> str:
    med = {tuple(k.split("|")): v for k, v in result["medians"].items()}
    speed = result["speed"]
    lines = [
        f"Worlds: {', '.join(result['worlds'])}; versions {', '.join(result['versions'])}; "
        f"seeds {', '.join(map(str, result['seeds']))}; world time x{speed:g}. Medians over "
        "seeds. Latencies in **real seconds** in `wall` mode (contenders on the real clock), in "
        "**simulated seconds** in `scaled` mode.\n",
        "| world | version | mode | contender | msg p50 (s) | msg p95 (s) | misses "
        "| resume p95 (s) "
        "| deletion p95 (s) | discovery p95 (s) | first look max / bound (s) | late first looks "
        "| budget used while news waits | max in 60 s / budget |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    budgets = result["budgets"]
    for (world, version, mode, name), m in sorted(med.items(), key=_order):
        util = m["utilization_while_due"]
        lines.append(
            f"| {world} | {version} | {mode} | {LABELS[name]} | {fmt(m['message_p50'])} "
            f"| {fmt(m['message_p95'])} | {fmt(m['misses'], 0)} | {fmt(m['resume_p95'])} "
            f"| {fmt(m['deletion_p95'])} | {fmt(m['discovery_p95'])} "
            f"| {fmt(m['first_look_max'])} / {fmt(m['first_look_bound_max'], 0)} "
            f"| {fmt(m['first_look_late'], 0)} "
            f"| {'n/a' if util is None else f'{100 * util:.0f} %'} "
            f"| {fmt(m['max_in_60s'], 0)} / {budgets[world]} |"
        )
    kinds = [
        f"{world} {version} {mode} {LABELS[name]}: "
        + ", ".join(f"{k} {n}" for k, n in m["misses_by_kind"].items() if n)
        for (world, version, mode, name), m in sorted(med.items(), key=_order)
        if any(m["misses_by_kind"].values())
    ]
    if kinds:
        lines += ["", "Misses by kind (summed over seeds): " + "; ".join(kinds) + "."]
    lines += [
        "",
        "Targets of issue 11 for duvo-monitor (medians over seeds; `by`: value minus bound):\n",
        "| world | version | mode | target | value | bound | met | by |",
        "| --- | --- | --- | --- | ---: | ---: | --- | ---: |",
    ]
    for t in result["targets"]:
        value = t["value"]
        shown = (
            f"{100 * value:.0f} %" if "90%" in t["target"] and value is not None else fmt(value, 2)
        )
        bound = f"{100 * t['bound']:.0f} %" if "90%" in t["target"] else fmt(t["bound"], 2)
        lines.append(
            f"| {t['world']} | {t['version']} | {t['mode']} | {t['target']} | {shown} | {bound} "
            f"| {'yes' if t['met'] else '**no**'} | {fmt(t['by'], 2)} |"
        )
    met = sum(1 for t in result["targets"] if t["met"])
    lines += ["", f"{met} of {len(result['targets'])} targets met."]
    return "\n".join(lines) + "\n"


def _order(item: tuple[tuple[str, ...], Any]) -> tuple[int, str, str, int]:
    (world, version, mode, name), _ = item
    return (list(WORLDS).index(world), version, mode, CONTENDERS.index(name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks worlds")
    parser.add_argument(
        "--quick", action="store_true", help="one seed, shorter worlds, wall mode (~6 min)"
    )
    parser.add_argument("--seeds", default=None, help="comma-separated (default 1,2,3; quick 1)")
    parser.add_argument("--worlds", default=",".join(WORLDS))
    parser.add_argument("--versions", default="v1,v2")
    parser.add_argument(
        "--mode",
        choices=["auto", "wall", "scaled", "both"],
        default="auto",
        help="auto: wall everywhere, and scaled too for the reference world",
    )
    parser.add_argument("--speed", type=float, default=SPEED, help="the world's time compression")
    parser.add_argument("--name", default="worlds", help="results file name")
    args = parser.parse_args(argv)
    quiet_logs()
    seeds = [int(s) for s in (args.seeds or ("1" if args.quick else "1,2,3")).split(",")]
    worlds = [w for w in args.worlds.split(",") if w]
    unknown = [w for w in worlds if w not in WORLDS]
    if unknown:
        parser.error(f"unknown worlds {', '.join(unknown)} (known: {', '.join(WORLDS)})")
    versions = [v for v in args.versions.split(",") if v]
    modes = "wall" if args.quick and args.mode == "auto" else args.mode
    todo = plays(worlds, versions, seeds, modes)
    started = time.perf_counter()
    results = anyio.run(lambda: measure(todo, quick=args.quick, speed=args.speed))
    med = medians(results)
    result = {
        "speed": args.speed,
        "quick": args.quick,
        "worlds": worlds,
        "versions": versions,
        "seeds": seeds,
        "budgets": {w: generate_world(w, seed=0, quick=True).budget for w in worlds},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "plays": results,
        "medians": {"|".join(k): v for k, v in med.items()},
        "targets": targets(med),
    }
    text = report(result)
    print(text)
    save(f"{args.name}-quick" if args.quick else args.name, result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
