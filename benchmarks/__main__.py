"""``python -m benchmarks [freshness|memory|catchup|pipeline|worlds ...] [--quick]``: run the
benchmarks.

With no name, every benchmark runs, one after the other (about 32 minutes on 2 cores, 25 of them
``worlds``; ``--quick`` about 10). Each prints its table and writes
``benchmarks/results/<name>.json`` (raw figures, the machine) and ``<name>.md`` (the table).
With one name, that benchmark's own options pass through:
``python -m benchmarks freshness --only adaptive --polling '{"sweep_interval": "2s"}'``.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import bench_catchup, bench_freshness, bench_memory, worlds
from benchmarks.runner import save

ROOT = Path(__file__).resolve().parent.parent


def pipeline(argv: Sequence[str]) -> int:
    """The delivery pipeline benchmark, run as its own process (it pins itself to one core)."""
    # It has no quick mode (it takes about 15-25 s); a --quick run saves apart all the same.
    quick = "--quick" in argv
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_pipeline"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    print(out.stdout)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    save("pipeline-quick" if quick else "pipeline", {"output": out.stdout}, out.stdout)
    return 0


BENCHMARKS: dict[str, Callable[[Sequence[str]], int]] = {
    "freshness": bench_freshness.main,
    "memory": bench_memory.main,
    "catchup": bench_catchup.main,
    "pipeline": pipeline,
    "worlds": worlds.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke check")
    args, rest = parser.parse_known_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    if rest and len(names) != 1:
        parser.error(f"options {' '.join(rest)} need exactly one benchmark named")
    extra = [*rest, "--quick"] if args.quick else rest
    failed = 0
    started = time.perf_counter()
    for name in names:
        print(f"## {name}\n", flush=True)
        began = time.perf_counter()
        code = BENCHMARKS[name](extra)
        print(f"({name}: {time.perf_counter() - began:.0f} s)\n", flush=True)
        failed += code != 0
    print(f"all benchmarks: {time.perf_counter() - started:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
