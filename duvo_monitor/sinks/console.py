"""One short human sentence per event, for a person at a terminal.

The live board (:mod:`duvo_monitor.board`, the in-process sink ``watch`` and ``demo`` use when
stdout is a terminal) prints it for every event above the board and in each run's "last"
column. Pure: an event in, a sentence out.
"""

from __future__ import annotations

from typing import Any

from duvo_monitor.events import TYPE_PREFIX, Event


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
