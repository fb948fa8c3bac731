"""The board's pure half without a terminal: events folded into rows (status, question, the
respond command, endings) and drawn by rich into a recording console; the README's commands
and variables are the ones the CLI has."""

from __future__ import annotations

import io
import shlex
from pathlib import Path
from typing import Any

from rich.console import Console

from duvo_monitor.board import BoardState, footer, render, respond_command, short
from duvo_monitor.budget import BudgetSnapshot
from duvo_monitor.events import TYPE_PREFIX, Change, Event

RUN = "d0000000-0000-4000-8000-000000000001"
OTHER = "d0000000-0000-4000-8000-000000000002"
AGENT = "a0000000-0000-4000-8000-000000000001"
REQUEST = "90c192cf-d3ac-44af-8f21-ddb66cad4a26"
T0 = 1_800_000_000.0
ROOT = Path(__file__).parent.parent


CHANGES = {
    "run.lost": Change.LOST,
    "message.created": Change.MESSAGE_CREATED,
    "human_request.opened": Change.REQUEST_OPENED,
    "human_request.resolved": Change.REQUEST_RESOLVED,
}


def event(kind: str, run_id: str, data: dict[str, Any], at: float) -> Event:
    return Event.build(
        kind=CHANGES.get(kind, Change.STATUS),
        key=f"{kind}-{at}",
        type=f"{TYPE_PREFIX}{kind}",
        run_id=run_id,
        agent_id=AGENT,
        time="2027-01-15T08:00:00.000Z",
        change_time=at,
        data={"run_id": run_id, "agent_id": AGENT, **data},
    )


def status(run_id: str, old: str | None, new: str, at: float, **extra: Any) -> Event:
    run = {"id": run_id, "created_at": "2027-01-15T08:00:00.000Z"}
    return event(f"run.{new}", run_id, {"from": old, "to": new, "run": run, **extra}, at)


def draw(state: BoardState, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    budget = BudgetSnapshot(limit=300, used=42, remaining=258, paused_for=0.0)
    console.print(render(state, now=T0 + 30, budget=budget, width=width))
    return console.export_text()


def test_a_waiting_run_shows_its_question_and_the_command_that_answers_it() -> None:
    """human_request.opened puts the question and `duvo-monitor respond RUN REQ ...` (with the
    target flags in use) on the run's row; the resolution takes them away."""
    state = BoardState([RUN], respond_prefix=["--base-url", "http://127.0.0.1:8080"])
    questions = [{"question": "Refund method?", "options": [{"label": "Card"}]}]
    request = {"id": REQUEST, "type": "question", "title": "Refund?", "questions": questions}
    state.apply(status(RUN, None, "running", T0))
    state.apply(status(RUN, "running", "waiting", T0 + 5))
    state.apply(event("human_request.opened", RUN, {"request": request}, T0 + 5))
    row = state.rows[RUN]
    assert row.status == "waiting" and row.question == "Refund method?"
    assert row.respond is not None
    assert shlex.split(row.respond) == [
        "duvo-monitor",
        "respond",
        RUN,
        REQUEST,
        "--answer",
        "Refund method?=Card",
        "--base-url",
        "http://127.0.0.1:8080",
    ]
    text = draw(state)
    assert "asks: Refund method?" in text and "duvo-monitor respond" in text
    state.apply(event("human_request.resolved", RUN, {"request_id": REQUEST}, T0 + 9))
    assert state.rows[RUN].respond is None and "respond" not in draw(state)


def test_an_approval_is_answered_with_approve() -> None:
    """An approval request's command is `--approve`."""
    command = respond_command(RUN, {"id": REQUEST, "type": "approval", "questions": []})
    assert shlex.split(command)[-1] == "--approve"


def test_the_final_summary_names_each_run_with_its_ending_and_duration() -> None:
    """Once every row has ended the board is the final summary: ending and duration per run, a
    run the API never showed as `not found`; before that it is the live board."""
    state = BoardState([RUN, OTHER])
    state.apply(status(RUN, None, "running", T0))
    assert not state.finished and "final summary" not in draw(state)
    state.apply(status(RUN, "running", "failed", T0 + 75, duration_seconds=75.0))
    state.apply(event("run.lost", OTHER, {"last_status": None, "reason": "not_found"}, T0 + 10))
    assert state.finished
    text = draw(state)
    lines = text.splitlines()
    assert lines[0].startswith("final summary")
    assert any(
        line.startswith(short(RUN)) and "failed" in line and "1m15s" in line for line in lines
    )
    assert any(line.startswith(short(OTHER)) and "not found" in line for line in lines)
    assert "2 ended | requests 42 of 300 in the last minute" in text


def test_a_narrow_board_fits_its_width() -> None:
    """Below 80 columns the agent and elapsed columns go and every line fits."""
    state = BoardState([RUN])
    state.apply(status(RUN, None, "running", T0))
    long_text = {"message": {"role": "assistant", "type": "text", "text_content": "x " * 200}}
    state.apply(event("message.created", RUN, long_text, T0 + 1))
    text = draw(state, width=50)
    assert all(len(line) <= 50 for line in text.splitlines()), text
    assert "agent" not in text and "elapsed" not in text


def test_footer_counts_runs_by_state() -> None:
    """The footer: runs by state (ended ones together), then the budget when known."""
    state = BoardState([RUN, OTHER])
    state.apply(status(RUN, None, "waiting", T0))
    assert footer(state, None) == "1 waiting | 1 looking"


def test_readme_names_the_target_flags_and_variables() -> None:
    """The README's command section documents each target flag and variable, the watch flags,
    and shows the recorded board (which is committed)."""
    readme = (ROOT / "README.md").read_text()
    for name in (
        "--base-url",
        "--api-version",
        "--team-id",
        "--requests-per-minute",
        "DUVO_API_URL",
        "DUVO_API_VERSION",
        "DUVO_TEAM_ID",
        "--appear-timeout",
        "--timeout",
        "docs/board.svg",
    ):
        assert name in readme, name
    assert (ROOT / "docs" / "board.svg").read_text().startswith("<svg")
