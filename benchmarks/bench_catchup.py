"""Catch-up: how many requests the daemon spends to read a 5,000-message run it has never seen.

The floor is ceil(5000 / 50) = 100 message requests (50 is the largest page the API allows).
One run with 5,000 messages in its transcript when the daemon first sees it, in two cases:

* ``ended``: the run is already ``completed`` (a daemon started after the fact);
* ``live``: the run is ``running``; it says two more things and completes 60 simulated seconds
  later, so that the daemon catches up while it runs and then drains and verifies at the end.

Each case runs with ``polling.final_verify: tail`` and with ``full`` (the default: once the
run is terminal, one full read checks that nothing changed behind the cursor). Counted from the
simulator's request log, by endpoint: the requests until the 5,000th old message was emitted
(the catch-up, against the floor), and all requests until the daemon was done with the run.
Every message is checked against the truth (exactly once). Adaptive policy, defaults otherwise.

Run: ``python -m benchmarks catchup [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from benchmarks.runner import quiet_logs, run_trial, save
from duvo_monitor.api import MESSAGES_PAGE_MAX
from duvo_monitor.simulator import Scenario
from duvo_monitor.simulator.scoring import score

HISTORY = 5000
SPEED = 20.0


def long_run(history: int, case: str) -> Scenario:
    run: dict[str, Any] = {
        "title": f"A run with {history} messages",
        "start": "-10s",
        "history": history,
    }
    if case == "ended":
        run["status"] = "completed"
    else:
        run["status"] = "running"
        run["timeline"] = [
            {"at": "40s", "say": "Nearly there."},
            {"at": "50s", "say": "Done."},
            {"at": "70s", "status": "completed"},
        ]
    return Scenario.from_dict(
        {
            "version": 1,
            "name": f"catch-up-{case}",
            "seed": 5,
            "agents": [{"name": "Archivist", "human_in_the_loop": False}],
            "runs": [run],
        }
    )


async def catch_up(case: str, final_verify: str, history: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-catchup-") as tmp:
        trial = await run_trial(
            long_run(history, case),
            state_dir=Path(tmp),
            speed=SPEED,
            polling={"final_verify": final_verify},
            wall_timeout=120,
            follow_new=False,
        )
    s = score(trial.sim.truth, trial.sink.received, start=trial.started_at)
    created = [e.at for e in trial.sink.received if e.envelope["type"].endswith("message.created")]
    caught = created[history - 1] if len(created) >= history else None
    catch = trial.requests(until=caught)
    total = trial.requests()
    return {
        "case": case,
        "final_verify": final_verify,
        "settled": trial.settled,
        "catch_up_requests": dict(catch),
        "catch_up_seconds": None if caught is None else round(caught - trial.started_at, 1),
        "requests": dict(total),
        "floor": math.ceil(history / MESSAGES_PAGE_MAX),
        "messages_expected": s.messages_expected,
        "messages_missed": len(s.messages_missed),
        "messages_duplicated": len(s.messages_duplicated),
        "simulated_seconds": round(trial.ended_at - trial.started_at, 1),
        "wall_seconds": round(trial.wall_seconds, 1),
    }


def report(history: int, rows: Sequence[dict[str, Any]]) -> str:
    floor = rows[0]["floor"]
    lines = [
        f"Catch-up of one run with {history} messages "
        f"(floor: ceil({history}/{MESSAGES_PAGE_MAX}) = {floor} message requests).\n",
        "| run | final_verify | catch-up: GET messages | vs floor | catch-up: simulated s "
        "| until done: GET messages | GET run | list | total | messages missed / duplicated |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        c, q = r["catch_up_requests"], r["requests"]
        lines.append(
            f"| {r['case']} | {r['final_verify']} | {c.get('messages', 0)} "
            f"| {c.get('messages', 0) / floor:.2f}x | {r['catch_up_seconds']} "
            f"| {q.get('messages', 0)} | {q.get('run', 0)} | {q.get('list', 0)} "
            f"| {q.get('total', 0)} | {r['messages_missed']} / {r['messages_duplicated']} "
            f"of {r['messages_expected']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks catchup")
    parser.add_argument("--quick", action="store_true", help="the ended run only")
    parser.add_argument("--history", type=int, default=HISTORY)
    args = parser.parse_args(argv)
    quiet_logs()

    async def both() -> list[dict[str, Any]]:
        cases = ("ended",) if args.quick else ("ended", "live")
        return [
            await catch_up(case, mode, args.history) for case in cases for mode in ("tail", "full")
        ]

    rows = anyio.run(both)
    text = report(args.history, rows)
    print(text)
    save(
        "catchup-quick" if args.quick else "catchup",
        {"history": args.history, "speed": SPEED, "rows": rows},
        text,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
