"""The round-robin baseline, as its own process with its own API key (issue 11).

Every watched run in turn, forever: ``GET run`` then ``GET messages`` from the offset it has
seen (one page a visit), each request spaced ``60 / rpm x 1.05`` seconds after the one before,
a 429 waiting out its ``retry-after``. With ``--skip-finished`` it stops visiting a run once it
has seen it finished (the stronger baseline: it spends nothing on the quiet part of the watch
list, and so never sees a resume). What it sees it prints as one JSON line per change, shaped as
duvo-monitor's CloudEvents as far as the scorer reads them (``type``, ``subject``, ``data``), so
that the benchmark stamps and scores its output exactly like the daemon's.

Run ids come from ``--runs-file`` (one a line) and, while it runs, from standard input (one a
line), the way the benchmark tells it of runs created later. The key comes from
``$DUVO_API_KEY``; the clock from ``$DUVO_MONITOR_CLOCK`` as for the daemon (the real clock when
unset). It runs until it is terminated.

``python -m benchmarks.round_robin --base-url URL --version v1 --rpm 600 [--skip-finished]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from duvo_monitor.clock import Clock

TERMINAL = frozenset({"completed", "failed", "stopped", "interrupted"})
PAGE = 50
TIMEOUT = 10.0  # real seconds: the deadline of one request
SPACING_FACTOR = 1.05


@dataclass(slots=True)
class Seen:
    """What the baseline knows of one run."""

    status: str | None = None
    offset: int = 0
    pending: str | None = None
    lost: bool = False


@dataclass(slots=True)
class RoundRobin:
    http: httpx.AsyncClient
    clock: Clock
    version: str
    spacing: float
    skip_finished: bool
    order: list[str] = field(default_factory=list)
    runs: dict[str, Seen] = field(default_factory=dict)
    next_at: float = 0.0

    def add(self, run_id: str) -> None:
        run_id = run_id.strip().lower()
        if run_id and run_id not in self.runs:
            self.runs[run_id] = Seen()
            self.order.append(run_id)

    async def forever(self) -> None:
        i = 0
        while True:
            due = [r for r in self.order if self._visit(self.runs[r])]
            if not due:
                await self._pace()  # nothing to visit: wait one slot, look again
                continue
            run_id = due[i % len(due)]
            i += 1
            await self.visit(run_id)

    def _visit(self, seen: Seen) -> bool:
        if seen.lost:
            return False
        return not (self.skip_finished and seen.status in TERMINAL)

    async def visit(self, run_id: str) -> None:
        seen = self.runs[run_id]
        answer = await self._get(f"/{self.version}/runs/{run_id}", {})
        if answer is None:
            return
        status, body = answer
        if status == 404 or (status == 200 and body.get("run") is None):
            seen.lost = True
            emit("run.lost", run_id, {"last_status": seen.status})
            return
        if status != 200:
            return
        run = body["run"]
        if run["status"] != seen.status:
            emit(f"run.{run['status']}", run_id, {"from": seen.status, "to": run["status"]})
            seen.status = run["status"]
        pending = body.get("pending_human_request")
        pending_id = None if pending is None else str(pending["id"])
        if seen.pending is not None and seen.pending != pending_id:
            emit("human_request.resolved", run_id, {"request_id": seen.pending})
        if pending_id is not None and pending_id != seen.pending:
            emit("human_request.opened", run_id, {"request": pending})
        seen.pending = pending_id
        query = {"offset": str(seen.offset), "limit": str(PAGE)}
        answer = await self._get(f"/{self.version}/runs/{run_id}/messages", query)
        if answer is None or answer[0] != 200:
            return
        for k, message in enumerate(answer[1]["messages"]):
            emit("message.created", run_id, {"index": seen.offset + k, "message": message})
        seen.offset += len(answer[1]["messages"])

    async def _get(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        await self._pace()
        try:
            with anyio.fail_after(TIMEOUT):
                response = await self.http.get(path, params=query)
        except (httpx.HTTPError, TimeoutError):
            return None
        if response.status_code == 429:
            wait = float(response.headers.get("retry-after", "1"))
            self.next_at = max(self.next_at, self.clock.monotonic() + wait)
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        return response.status_code, body if isinstance(body, dict) else {}

    async def _pace(self) -> None:
        now = self.clock.monotonic()
        if self.next_at > now:
            await self.clock.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.spacing


def emit(kind: str, run_id: str, data: dict[str, Any]) -> None:
    line = {"type": f"ai.duvo.{kind}", "subject": run_id, "data": {"run_id": run_id, **data}}
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    clock = Clock.from_environ(os.environ)
    key = os.environ["DUVO_API_KEY"]
    async with httpx.AsyncClient(
        base_url=args.base_url, headers={"authorization": f"Bearer {key}"}, timeout=TIMEOUT
    ) as http:
        rr = RoundRobin(
            http=http,
            clock=clock,
            version=args.version,
            spacing=60 / args.rpm * SPACING_FACTOR,
            skip_finished=args.skip_finished,
        )
        for run_id in args.initial:
            rr.add(run_id)

        async def read_stdin() -> None:
            stdin = anyio.wrap_file(sys.stdin)
            async for line in stdin:
                rr.add(line)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stdin)
            await rr.forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.round_robin")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--version", choices=["v1", "v2"], default="v2")
    parser.add_argument("--rpm", type=float, required=True, help="the key's budget a minute")
    parser.add_argument("--runs-file", default=None)
    parser.add_argument("--skip-finished", action="store_true")
    args = parser.parse_args(argv)
    args.initial = []
    if args.runs_file:
        with open(args.runs_file, encoding="utf-8") as lines:
            args.initial = [line.strip() for line in lines if line.strip()]
    try:
        anyio.run(main_async, args)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
