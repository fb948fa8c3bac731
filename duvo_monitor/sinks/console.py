"""A readable line per event, for a person at a terminal (``watch`` and ``demo`` on a TTY).

Not a configurable sink: when stdout is a terminal, the CLI puts this in place of the JSON-lines
stdout sink. Acknowledges after the write, like the stdout sink.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from duvo_monitor.events import TYPE_PREFIX, Event
from duvo_monitor.sinks.base import InProcessSink, SinkClosed
from duvo_monitor.sinks.config import StdoutConfig

_COLOURS = {
    "completed": "\x1b[32m",
    "failed": "\x1b[31m",
    "stopped": "\x1b[33m",
    "interrupted": "\x1b[33m",
    "lost": "\x1b[31m",
    "waiting": "\x1b[35m",
}
_RESET = "\x1b[0m"


def describe(event: Event) -> str:
    """One short human sentence for an event."""
    data: Any = event.data
    kind = event.type.removeprefix(TYPE_PREFIX)
    if kind == "message.created" or kind == "message.updated":
        message = data["message"]
        verb = "edited" if kind == "message.updated" else ""
        if message.get("tool_call"):
            call = message["tool_call"]
            return f"{verb} tool call {call['name']}".strip()
        if message.get("tool_result"):
            result = message["tool_result"]
            outcome = "error: " + str(result["error"]) if result.get("error") else "ok"
            took = result.get("duration_seconds")
            took_text = f" in {took:.1f}s" if isinstance(took, int | float) else ""
            return f"{verb} tool result {result.get('name', '?')} {outcome}{took_text}".strip()
        text = (message.get("text_content") or "").replace("\n", " ")
        if len(text) > 100:
            text = text[:97] + "..."
        return f"{verb} {message['role']} {message['type']}: {text}".strip()
    if kind == "human_request.opened":
        request = data["request"]
        return f"human request opened ({request['type']}): {request['title']}"
    if kind == "human_request.resolved":
        waited = data.get("waited_seconds")
        return "human request resolved" + (f" after {waited:.0f}s" if waited is not None else "")
    if kind == "run.lost":
        if data.get("last_status") is None:
            return "run not found (the API never showed it)"
        return "run lost (the API no longer knows it)"
    if kind.startswith("run."):
        took = data.get("duration_seconds")
        tail = f" after {took:.0f}s" if isinstance(took, int | float) else ""
        return f"status {data.get('from') or '-'} -> {data['to']}{tail}"
    return kind


class ConsoleSink(InProcessSink):
    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None) -> None:
        self._stream = stream or sys.stdout
        self._colour = self._stream.isatty() if colour is None else colour
        self._name = "console"
        self._config = StdoutConfig(type="stdout", name="console")

    def format(self, event: Event) -> str:
        when = event.time[11:19] if len(event.time) >= 19 else event.time
        run = f"{event.subject[:8]}..{event.subject[-4:]}"
        text = describe(event)
        status = event.type.removeprefix(f"{TYPE_PREFIX}run.")
        if self._colour and status in _COLOURS:
            text = f"{_COLOURS[status]}{text}{_RESET}"
        return f"{when}  {run}  {text}\n"

    async def deliver(self, batch: Sequence[Event]) -> None:
        try:
            self._stream.write("".join(self.format(e) for e in batch))
            self._stream.flush()
        except BrokenPipeError as exc:
            raise SinkClosed("the terminal went away", sink=self.name) from exc
