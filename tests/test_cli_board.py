"""The live board of ``watch`` on a real pseudo-terminal: ``duvo-monitor watch`` as a subprocess
whose stdout and stderr are a pty (python's ``pty``), against the simulator on loopback with a
compressed clock. The test plays the person at the terminal: it answers the approval with the
exact ``duvo-monitor respond ...`` the board printed, stops the long run, and then reads the
final summary the board leaves on screen. Also: a narrow terminal, NO_COLOR, TERM=dumb."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from anyio.from_thread import start_blocking_portal
from test_cli_commands import (
    APPROVAL,
    FAILING,
    KEY,
    LONG,
    PLAIN,
    TEST_TIMEOUT,
    Served,
    _deadline,  # noqa: F401 (the per-test timeout, autouse)
    environ,
    scenario,
)

from duvo_monitor.board import short
from duvo_monitor.cli import main
from duvo_monitor.clock import Clock
from duvo_monitor.simulator import Simulator

SPEED = 20.0
NOWHERE = "0b0e7a6c-5c1e-4e57-9d1e-6a0c3f1f2b9d"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7]|38;[25])[;m]")
CURSOR_UP = "\x1b[1A"


@pytest.fixture
def served() -> Iterator[Served]:
    clock = Clock.scaled(SPEED)
    sim = Simulator(scenario(), clock=clock, rate_limit=None, api_keys={KEY})
    with start_blocking_portal() as portal:
        future, bound = portal.start_task(sim.serve, "127.0.0.1", 0)
        try:
            yield Served(portal=portal, sim=sim, url=bound.url)
        finally:
            future.cancel()


@dataclass
class Terminal:
    """A child process on a pty of a given size; everything it wrote, as the terminal got it."""

    proc: subprocess.Popen[bytes]
    master: int
    raw: bytes = b""

    @classmethod
    def spawn(cls, argv: list[str], env: dict[str, str], *, columns: int) -> Terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        return cls(proc=proc, master=master)

    @property
    def text(self) -> str:
        """What was written, without the escape codes (lines as the terminal shows them)."""
        return ANSI.sub("", self.raw.decode("utf-8", "replace")).replace("\r", "")

    def read(self, timeout: float) -> bool:
        """Read what is there (waiting up to ``timeout``); False once the child closed it."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child is gone and the pty closed
            return False
        self.raw += data
        return bool(data)

    def wait_for(self, pattern: str, deadline: float) -> re.Match[str]:
        while True:
            found = re.search(pattern, self.text)
            if found:
                return found
            assert time.monotonic() < deadline, f"never saw {pattern!r}:\n{self.text[-3000:]}"
            assert self.read(0.2) or re.search(pattern, self.text), self.text[-3000:]

    def finish(self, deadline: float) -> int:
        while self.read(0.2):
            assert time.monotonic() < deadline, f"still running:\n{self.text[-3000:]}"
        code = self.proc.wait(max(0.1, deadline - time.monotonic()))
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def child_env(served: Served, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUVO_", "NO_COLOR"))}
    env.update(environ(served))
    env.update({"TERM": "xterm-256color", "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"})
    env.pop("DUVO_MONITOR_LOG_FORMAT", None)
    env.update(extra)
    return env


def final_summary(text: str) -> list[str]:
    """The last drawing of the board: from its 'final summary' title to its footer."""
    start = text.rindex("final summary")
    lines = text[start:].splitlines()
    end = next(i for i, line in enumerate(lines) if ("ended" in line and "|" in line) or i > 40)
    return lines[: end + 1]


def row(summary: list[str], run_id: str) -> list[str]:
    """The run's row of the summary, cell by cell (run, [agent,] ended, duration, last)."""
    line = next(line for line in summary if line.startswith(short(run_id)))
    return re.split(r"\s{2,}", line.strip())


def ending(cells: list[str]) -> str:
    return cells[1] if len(cells) < 5 else cells[2]


def test_the_board_follows_the_runs_and_leaves_a_final_summary(served: Served) -> None:
    """Five runs on a terminal: the board shows the approval's question and the command that
    answers it (which the test runs, exactly as printed), the long run is stopped from outside,
    and when the last run ends the board stays as a summary naming every run with its ending
    and duration; the exit code is 1 (one failed, one stopped, one not found)."""
    deadline = time.monotonic() + TEST_TIMEOUT - 10
    runs = {
        served.start_run(PLAIN): "completed",
        served.start_run(FAILING): "failed",
        served.start_run(APPROVAL): "completed",
        served.start_run(LONG): "stopped",
        NOWHERE: "not found",
    }
    approval, long = list(runs)[2], list(runs)[3]
    argv = [sys.executable, "-m", "duvo_monitor", "watch", *runs, "--base-url", served.url]
    term = Terminal.spawn(argv, child_env(served), columns=120)
    try:
        command = term.wait_for(r"answer with: (duvo-monitor respond [^\n]+)", deadline)[1]
        words = shlex.split(command)
        assert words[2:4] == [approval, served.run(approval)["pending"]]
        assert words[4] == "--approve" and words[5:] == ["--base-url", served.url]
        assert main(words[1:], environ=environ(served)) == 0
        served.wait(long, lambda r: r["status"] == "running")
        assert main(["stop", long, "--base-url", served.url], environ=environ(served)) == 0
        code = term.finish(deadline)
    finally:
        term.kill()
    assert code == 1, term.text[-3000:]
    text = term.text
    assert "asks: Go ahead?" in text  # the waiting row showed the question
    summary = final_summary(text)
    header = re.split(r"\s{2,}", summary[1].strip())
    assert header == ["run", "agent", "ended", "duration", "last"], summary
    for run_id, end in runs.items():
        cells = row(summary, run_id)
        assert cells[2] == end, (run_id, cells)
        assert re.fullmatch(r"-|\d+s|\d+m\d\ds", cells[3]), cells
        if end != "not found":
            assert cells[3] != "-", cells  # it ran: a duration
    assert f"run {NOWHERE} not found" in text
    assert "ended" in summary[-1] and "requests" in summary[-1]
    assert KEY not in text
    # Piped it would be JSON lines; on the terminal not one event is printed as JSON.
    assert '"specversion"' not in text


@pytest.mark.parametrize(
    ("columns", "extra"),
    [(50, {}), (100, {"NO_COLOR": "1"}), (100, {"TERM": "dumb"})],
    ids=["narrow", "no-color", "dumb"],
)
def test_the_board_adapts_to_the_terminal(
    served: Served, columns: int, extra: dict[str, str]
) -> None:
    """A narrow terminal gets a summary that fits its width; NO_COLOR gets no colours; TERM=dumb
    gets no cursor movement and the summary drawn once, at the end. Each still names every run
    with its ending."""
    deadline = time.monotonic() + TEST_TIMEOUT - 10
    runs = {served.start_run(PLAIN): "completed", served.start_run(FAILING): "failed"}
    argv = [sys.executable, "-m", "duvo_monitor", "watch", *runs, "--base-url", served.url]
    term = Terminal.spawn(argv, child_env(served, **extra), columns=columns)
    try:
        code = term.finish(deadline)
    finally:
        term.kill()
    assert code == 1, term.text[-3000:]
    summary = final_summary(term.text)
    for run_id, end in runs.items():
        assert ending(row(summary, run_id)) == end, summary
    raw = term.raw.decode("utf-8", "replace")
    if columns < 80:
        assert all(len(line) <= columns for line in summary), summary
        assert "agent" not in summary[1]  # the agent column is left out
    if "NO_COLOR" in extra:
        assert not COLOUR.search(raw), COLOUR.search(raw)
    if extra.get("TERM") == "dumb":
        assert CURSOR_UP not in raw
        assert term.text.count("final summary") == 1
    else:
        assert CURSOR_UP in raw  # redrawn in place
