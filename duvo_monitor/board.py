"""The live board: what a person at a terminal sees while ``watch`` or ``demo`` runs.

One row per run (short id, agent, status in colour, elapsed time, what it is doing; for a run
that waits for a human, the question and the exact ``duvo-monitor respond ...`` that answers it),
redrawn in place under the event lines, which scroll above it, with a footer of the requests
spent of the key's budget. When every run has ended the board becomes the final summary (how
each ended, and how long it took) and is left on screen.

Two halves, on purpose:

* :class:`BoardState` folds events into rows and :func:`render` draws them. Pure: fed from the
  same event stream as every other sink (never by polling the API again), so what the board
  shows is what was emitted, and both are tested without a terminal.
* :class:`BoardSink` is the in-process sink that owns a ``rich`` :class:`~rich.live.Live`
  display. Only the CLI puts it in place, and only when stdout is a terminal: piped output stays
  the JSON lines. ``rich`` already honours ``NO_COLOR`` and ``TERM=dumb`` (no redraws; the final
  board is printed once at the end); a narrow terminal gets fewer columns.

Refreshes are driven by the sink's own task (``auto_refresh=False``): rich's refresh thread would
read the rows while the event loop writes them.
"""

from __future__ import annotations

import io
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, cast

import anyio
from anyio.abc import TaskStatus
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from duvo_monitor.budget import BudgetSnapshot
from duvo_monitor.clock import Clock
from duvo_monitor.events import TYPE_PREFIX, Event
from duvo_monitor.models import TERMINAL_STATUSES, parse_time
from duvo_monitor.sinks.base import InProcessSink, SinkClosed
from duvo_monitor.sinks.config import StdoutConfig
from duvo_monitor.sinks.console import describe

REFRESH_SECONDS = 0.5
"""Wall seconds between redraws (elapsed times move on between events)."""
NARROW = 80
"""Below this many columns the agent and elapsed columns are left out."""

STYLES = {
    "completed": "green",
    "failed": "bold red",
    "lost": "red",
    "not found": "bold red",
    "stopped": "yellow",
    "interrupted": "yellow",
    "waiting": "bold magenta",
    "running": "cyan",
    "starting": "blue",
    "pending": "dim",
    "looking": "dim",
}
ENDED = frozenset({*TERMINAL_STATUSES, "lost", "not found"})


def short(run_id: str) -> str:
    return f"{run_id[:8]}..{run_id[-4:]}" if len(run_id) > 14 else run_id


@dataclass(slots=True)
class Row:
    """What the board knows of one run; updated in place as its events arrive."""

    run_id: str
    agent_id: str | None = None
    status: str = "looking"
    created: float | None = None
    ended: float | None = None
    duration: float | None = None
    doing: str = ""
    question: str | None = None
    respond: str | None = None

    @property
    def over(self) -> bool:
        return self.status in ENDED

    def elapsed(self, now: float) -> float | None:
        if self.duration is not None:
            return self.duration
        if self.created is None:
            return None
        return max(0.0, (self.ended if self.ended is not None else now) - self.created)


def respond_command(run_id: str, request: dict[str, Any], prefix: Sequence[str] = ()) -> str:
    """The exact command that answers ``request`` (``prefix``: the target flags in use)."""
    argv = ["duvo-monitor", "respond", run_id, str(request.get("id", "?"))]
    questions = request.get("questions") or []
    if request.get("type") == "question" and questions:
        for q in questions:
            options = q.get("options") or []
            answer = options[0]["label"] if options else "ANSWER"
            argv += ["--answer", f"{q.get('question', '?')}={answer}"]
    else:
        argv.append("--approve")
    return " ".join(shlex.quote(a) for a in [*argv, *prefix])


class BoardState:
    """Rows by run, in the order the runs were first seen. Pure."""

    def __init__(self, run_ids: Iterable[str] = (), respond_prefix: Sequence[str] = ()) -> None:
        self.rows: dict[str, Row] = {r: Row(run_id=r) for r in run_ids}
        self.respond_prefix = tuple(respond_prefix)

    @property
    def finished(self) -> bool:
        return bool(self.rows) and all(row.over for row in self.rows.values())

    def apply(self, event: Event) -> None:
        row = self.rows.setdefault(event.subject, Row(run_id=event.subject))
        row.agent_id = event.agent_id or row.agent_id
        data: Any = event.data
        kind = event.type.removeprefix(TYPE_PREFIX)
        at = event.change_time
        if kind == "run.lost":
            row.status = "lost" if data.get("last_status") else "not found"
            row.ended = at
            row.question = row.respond = None
            row.doing = describe(event) if row.status == "lost" else "the API never showed it"
        elif kind.startswith("run.") and "to" in data:
            row.status = str(data["to"])
            run = data.get("run") or {}
            row.created = parse_time(run.get("created_at")) or row.created
            if row.status in TERMINAL_STATUSES:
                took = data.get("duration_seconds")
                row.duration = float(took) if isinstance(took, int | float) else None
                row.ended = at
            else:
                row.duration = row.ended = None
            if row.status != "waiting":
                row.question = row.respond = None
        elif kind == "human_request.opened":
            request = data["request"]
            questions = request.get("questions") or []
            asked = questions[0].get("question") if questions else None
            row.question = asked or request.get("title") or "?"
            row.respond = respond_command(event.subject, request, self.respond_prefix)
        elif kind == "human_request.resolved":
            row.question = row.respond = None
            row.doing = describe(event)
        elif kind.startswith("message."):
            row.doing = describe(event)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def render(
    state: BoardState, *, now: float, budget: BudgetSnapshot | None, width: int
) -> RenderableType:
    """The board as it stands: the live rows, or the final summary once every run has ended."""
    final = state.finished
    wide = width >= NARROW
    table = Table(
        title="final summary" if final else None,
        title_justify="left",
        expand=False,
        pad_edge=False,
        show_edge=False,
        box=None,
        header_style="bold",
    )
    table.add_column("run", no_wrap=True)
    if wide:
        table.add_column("agent", no_wrap=True)
    table.add_column("ended" if final else "status", no_wrap=True)
    if wide or final:
        table.add_column("duration" if final else "elapsed", justify="right", no_wrap=True)
    table.add_column("last", overflow="fold" if not final else "ellipsis", ratio=1)
    for row in state.rows.values():
        cells: list[RenderableType] = [short(row.run_id)]
        if wide:
            cells.append(short(row.agent_id) if row.agent_id else "-")
        cells.append(Text(row.status, style=STYLES.get(row.status, "")))
        if wide or final:
            cells.append(_duration(row.elapsed(now)))
        if row.status == "waiting" and row.question and not final:
            doing = Text.assemble(
                ("asks: ", "magenta"), row.question, "\n", (f"$ {row.respond}", "bold")
            )
            doing.overflow = "fold"  # the command is worth its lines, whole
        else:
            doing = Text(row.doing, no_wrap=True, overflow="ellipsis")
        cells.append(doing)
        table.add_row(*cells)
    return Group(table, Text(footer(state, budget), style="dim"))


def footer(state: BoardState, budget: BudgetSnapshot | None) -> str:
    counts: dict[str, int] = {}
    for row in state.rows.values():
        key = "ended" if row.over else row.status
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{n} {what}" for what, n in counts.items()]
    if budget is not None:
        parts.append(f"requests {budget.used} of {budget.limit} in the last minute")
    return " | ".join(parts) if parts else "no runs yet"


class _LogLines(io.TextIOBase):
    """A stream for the log lines while the board is up: each whole line is printed above the
    board (a raw write to the same terminal would tear the redraw); before and after, the
    lines go straight to ``fallback`` (stderr)."""

    def __init__(self, board: BoardSink, fallback: TextIO, *, colour: bool) -> None:
        self._board = board
        self._fallback = fallback
        self._colour = colour
        self._partial = ""

    def write(self, text: str) -> int:
        live = self._board.live
        if live is None or not live.is_started:
            self._fallback.write(text)
            return len(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            live.console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        self._fallback.flush()

    def isatty(self) -> bool:
        # The log renderer colours its lines only for a terminal: NO_COLOR says no colours.
        return self._colour and self._fallback.isatty()


class BoardSink(InProcessSink):
    """The live board as a sink: event lines above, the board below, on ``console``."""

    def __init__(
        self,
        console: Console,
        *,
        clock: Clock,
        run_ids: Iterable[str] = (),
        respond_prefix: Sequence[str] = (),
        budget: Callable[[], BudgetSnapshot] | None = None,
    ) -> None:
        self._name = "board"
        self._config = StdoutConfig(type="stdout", name="board")
        self.console = console
        self.clock = clock
        self.model = BoardState(run_ids, respond_prefix)
        self.budget = budget
        self.live: Live | None = None

    def log_stream(self, fallback: TextIO | None = None, *, colour: bool = True) -> TextIO:
        """Where log lines should go while the board is up (see :class:`_LogLines`)."""
        return cast(TextIO, _LogLines(self, fallback or sys.stderr, colour=colour))

    def renderable(self) -> RenderableType:
        snapshot = self.budget() if self.budget is not None else None
        return render(self.model, now=self.clock.time(), budget=snapshot, width=self.console.width)

    async def open(self) -> None:
        self.live = Live(
            self.renderable(),
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="visible",
        )
        self.live.start(refresh=True)

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        while True:
            # Wall time, not the injected clock: this is the screen's pace, not the API's.
            await anyio.sleep(REFRESH_SECONDS)
            self._redraw()

    def _redraw(self) -> None:
        if self.live is not None and self.live.is_started:
            self.live.update(self.renderable(), refresh=True)

    async def deliver(self, batch: Sequence[Event]) -> None:
        try:
            for event in batch:
                self.model.apply(event)
                if self.live is None:
                    continue
                self.live.console.print(self.line(event), soft_wrap=True)
                row = self.model.rows[event.subject]
                if event.type == f"{TYPE_PREFIX}human_request.opened" and row.respond:
                    # Whole on one line, to copy: the board's own cell may fold it.
                    self.live.console.print(
                        Text.assemble("  answer with: ", (row.respond, "bold")), soft_wrap=True
                    )
            self._redraw()
        except BrokenPipeError as exc:
            raise SinkClosed("the terminal went away", sink=self.name) from exc

    def line(self, event: Event) -> Text:
        when = event.time[11:19] if len(event.time) >= 19 else event.time
        status = event.type.removeprefix(f"{TYPE_PREFIX}run.")
        return Text.assemble(
            (when, "dim"),
            "  ",
            short(event.subject),
            "  ",
            (describe(event), STYLES.get(status, "")),
        )

    async def close(self) -> None:
        if self.live is not None:
            # The last frame stays on screen: the final summary.
            self.live.update(self.renderable())
            self.live.stop()


__all__ = ["BoardSink", "BoardState", "Row", "footer", "render", "respond_command", "short"]
