"""Memory: the daemon's resident memory with 10,000 watched runs.

Two processes, so that the measured one holds nothing but the daemon:

* the simulator (``duvo-monitor simulate``) serves 10,000 finished runs
  (``generate:runs=10000,active=0``, short transcripts) on a loopback port;
* a child Python process runs the real :class:`~duvo_monitor.daemon.Monitor` (SQLite state
  store, a file sink, the default adaptive policy) watching those 10,000 runs from a
  ``watch.runs_file``. It reads its own ``VmRSS`` from ``/proc/self/status`` after the imports
  (before), once the watch list is loaded (the daemon has started), and after polling for a
  while (after), plus the peak (``VmHWM``). Per-run bytes = (after - before) / 10,000.

A second child does the same under ``tracemalloc`` and attributes the live Python allocations
to the modules that made them (scheduler tracks, checkpoints, telemetry, ...). tracemalloc's
bookkeeping inflates RSS, so the RSS figures come from the first child only. The children also
time loading the watch list (it was quadratic in the number of runs before ``47d8877``).

Both processes share a scaled clock (``DUVO_MONITOR_CLOCK``), as the daemon and the simulator
would in a benchmark across processes.

Run: ``python -m benchmarks memory [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.runner import save

RUNS = 10_000
SPEED = 10.0
POLL_SECONDS = 30.0  # wall seconds the daemon polls before "after" is read
SEED = 11
ROOT = Path(__file__).resolve().parent.parent


# -- the measured child ----------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _owner(filename: str) -> str:
    """Who allocated: ``duvo_monitor/<module>``, a third-party package, or a stdlib module."""
    parts = filename.replace("\\", "/").split("/")
    if "duvo_monitor" in parts:
        return "/".join(parts[parts.index("duvo_monitor") :])
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return f"stdlib {parts[-1]}" if filename.endswith(".py") else filename


def child(url: str, team: str, runs_file: str, state_dir: str, seconds: float, trace: bool) -> None:
    """Run the daemon on ``runs_file`` for ``seconds`` wall seconds; print a JSON report."""
    import gc
    import tracemalloc

    import anyio

    from duvo_monitor.clock import Clock
    from duvo_monitor.config import parse_config
    from duvo_monitor.credentials import Secret
    from duvo_monitor.daemon import Monitor
    from duvo_monitor.logs import configure_logging
    from duvo_monitor.simulator import DEFAULT_API_KEY

    configure_logging("error", json=False, stream=sys.stderr)
    report: dict[str, Any] = {}

    def mark(name: str) -> None:
        gc.collect()
        report[f"rss_{name}_kib"] = _status_kib("VmRSS")
        if trace:
            report[f"traced_{name}_bytes"] = tracemalloc.get_traced_memory()[0]

    config = parse_config(
        {
            "api": {"base_url": url, "version": "v2", "team_id": team},
            "watch": {"runs_file": runs_file},
            "state": {"path": os.path.join(state_dir, "state.db")},
            "sinks": [{"type": "file", "path": os.path.join(state_dir, "events.jsonl")}],
        },
        source="bench-memory",
    )
    if trace:
        tracemalloc.start(1)
    mark("before")

    async def main() -> None:
        monitor = Monitor(
            config,
            api_key=Secret(DEFAULT_API_KEY),
            environ={},
            clock=Clock.from_environ(os.environ),
            handle_signals=False,
        )
        async with anyio.create_task_group() as tg:
            started = time.perf_counter()
            await tg.start(monitor.run)
            report["load_seconds"] = round(time.perf_counter() - started, 2)
            report["watched"] = len(monitor.scheduler.tracks)
            mark("loaded")
            await anyio.sleep(seconds)
            report["polls"] = sum(t.polls for t in monitor.scheduler.tracks.values())
            report["runs_polled"] = sum(1 for t in monitor.scheduler.tracks.values() if t.polls)
            mark("after")
            if trace:
                snapshot = tracemalloc.take_snapshot()
                by_file: dict[str, int] = {}
                for stat in snapshot.statistics("filename"):
                    key = _owner(stat.traceback[0].filename)
                    by_file[key] = by_file.get(key, 0) + stat.size
                report["traced_by_module"] = dict(
                    sorted(by_file.items(), key=lambda kv: -kv[1])[:12]
                )
            monitor.stop(0)
        report["rss_peak_kib"] = _status_kib("VmHWM")

    anyio.run(main)
    print(json.dumps(report))


# -- the parent: simulator + two children ----------------------------------------------------------


def _start_simulator(
    runs: int, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``duvo-monitor simulate``; its stderr goes to ``log`` (a pipe nobody drains would
    fill up and stall it), where its banner gives the URL."""
    scenario = f"generate:runs={runs},active=0,duration=20"
    command = [sys.executable, "-m", "duvo_monitor", "simulate", "--listen", "127.0.0.1:0"]
    command += ["--scenario", scenario, "--seed", str(SEED), "--speed", str(SPEED)]
    with open(log, "wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if line.strip().startswith("url:"):
                return proc, line.split(":", 1)[1].strip()
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the simulator did not start: {log.read_text(errors='replace')[-2000:]}")


def measure(runs: int, seconds: float) -> dict[str, Any]:
    from duvo_monitor.clock import CLOCK_ENV, Clock
    from duvo_monitor.simulator import generate_scenario

    scenario = generate_scenario(seed=SEED, runs=runs, active=0, duration=20)
    clock = Clock.scaled(SPEED)
    env = {**os.environ, CLOCK_ENV: clock.to_environ(), "PYTHONPATH": str(ROOT)}
    result: dict[str, Any] = {"runs": runs, "poll_seconds_wall": seconds, "speed": SPEED}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        ids = [spec.id for spec in scenario.runs]
        runs_file = Path(tmp) / "runs.txt"
        runs_file.write_text("".join(f"{run_id}\n" for run_id in ids))
        sim, url = _start_simulator(runs, env, Path(tmp) / "simulator.log")
        try:
            for trace in (False, True):
                state_dir = Path(tmp) / ("traced" if trace else "plain")
                state_dir.mkdir()
                started = time.perf_counter()
                command = [sys.executable, "-m", "benchmarks.bench_memory", "--child", url]
                command += [scenario.team.id, str(runs_file), str(state_dir), str(seconds)]
                command += ["--trace"] if trace else []
                out = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=ROOT,
                    timeout=seconds + 300,
                    check=True,
                )
                report = json.loads(out.stdout.strip().splitlines()[-1])
                report["wall_seconds"] = round(time.perf_counter() - started, 1)
                result["traced" if trace else "plain"] = report
        finally:
            sim.terminate()
            sim.wait(timeout=30)
    plain = result["plain"]
    result["per_run_bytes_loaded"] = (
        (plain["rss_loaded_kib"] - plain["rss_before_kib"]) * 1024 / runs
    )
    result["per_run_bytes_after"] = (plain["rss_after_kib"] - plain["rss_before_kib"]) * 1024 / runs
    traced = result["traced"]
    result["traced_per_run_bytes_after"] = (
        traced["traced_after_bytes"] - traced["traced_before_bytes"]
    ) / traced["watched"]
    return result


def report(r: dict[str, Any]) -> str:
    p = r["plain"]
    t = r["traced"]
    mib = 1024
    lines = [
        f"Daemon memory with {r['runs']:,} watched runs (RSS of the daemon's own process).\n",
        "| measurement | value |",
        "| --- | ---: |",
        f"| RSS before (imports done, nothing watched) | {p['rss_before_kib'] / mib:.1f} MiB |",
        f"| RSS with {p['watched']:,} runs loaded | {p['rss_loaded_kib'] / mib:.1f} MiB |",
        f"| RSS after {r['poll_seconds_wall']:.0f} s wall of polling ({p['polls']} polls of "
        f"{p['runs_polled']} runs) | {p['rss_after_kib'] / mib:.1f} MiB |",
        f"| peak RSS (VmHWM) | {p['rss_peak_kib'] / mib:.1f} MiB |",
        f"| time to load the watch list (daemon start) | {p['load_seconds']:.1f} s |",
        f"| per watched run, loaded | {r['per_run_bytes_loaded']:,.0f} bytes |",
        f"| per watched run, after polling | {r['per_run_bytes_after']:,.0f} bytes |",
        f"| per watched run, Python heap (tracemalloc, {t['watched']:,} runs) | "
        f"{r['traced_per_run_bytes_after']:,.0f} bytes |",
        "",
        f"tracemalloc with {t['watched']:,} runs, live allocations after polling, by the module "
        "that allocated them:\n",
        "| module | MiB |",
        "| --- | ---: |",
        *[f"| {k} | {v / 2**20:.2f} |" for k, v in t["traced_by_module"].items()],
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks memory")
    parser.add_argument("--quick", action="store_true", help="poll for 5 s instead of 30 s")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--child", nargs=5, metavar=("URL", "TEAM", "RUNS", "DIR", "SECONDS"))
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        url, team, runs_file, state_dir, seconds = args.child
        child(url, team, runs_file, state_dir, float(seconds), args.trace)
        return 0
    result = measure(args.runs, 5.0 if args.quick else POLL_SECONDS)
    text = report(result)
    print(text)
    save("memory-quick" if args.quick else "memory", result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
