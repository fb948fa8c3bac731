"""A run's messages (GET messages, one page at a time) with their tool calls and results. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from duvo_monitor.reader import JsonReader, refuse


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    tool_call_id: str
    result: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tool_call_id": self.tool_call_id, "result": self.result, "error": self.error}


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: str
    type: str
    role: str
    timestamp: str
    text_content: str | None = None
    tool_call: ToolCall | None = None
    tool_result: ToolResult | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_api(cls, data: object, *, endpoint: str, where: str = "message") -> Message:
        r = JsonReader.of(data, where, refuse(endpoint))
        call = r.obj("tool_call", required=False)
        result = r.obj("tool_result", required=False)
        arguments = None
        if call is not None and call.raw.get("arguments") is not None:
            args = call.obj("arguments")
            arguments = args.raw if args is not None else None
        return cls(
            id=r.text("id"),
            type=r.text("type"),
            role=r.text("role"),
            timestamp=r.text("timestamp"),
            text_content=r.opt_text("text_content"),
            tool_call=(
                None
                if call is None
                else ToolCall(id=call.text("id"), name=call.text("name"), arguments=arguments)
            ),
            tool_result=(
                None
                if result is None
                else ToolResult(
                    tool_call_id=result.text("tool_call_id"),
                    result=result.raw.get("result"),
                    error=result.opt_text("error"),
                )
            ),
            extra=r.extra(_MESSAGE_FIELDS),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "role": self.role,
            "timestamp": self.timestamp,
            "text_content": self.text_content,
            "tool_call": None if self.tool_call is None else self.tool_call.to_dict(),
            "tool_result": None if self.tool_result is None else self.tool_result.to_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagePage:
    messages: tuple[Message, ...]
    total: int
    limit: int
    offset: int

    @classmethod
    def from_api(cls, data: object, *, endpoint: str) -> MessagePage:
        r = JsonReader.of(data, "", refuse(endpoint))
        return cls(
            messages=tuple(
                Message.from_api(m, endpoint=endpoint, where=f"messages[{i}]")
                for i, m in enumerate(r.array("messages"))
            ),
            total=r.whole("total"),
            limit=r.whole("limit"),
            offset=r.whole("offset"),
        )


# The fields a message's ``extra`` leaves out: the ones the dataclass has.
_MESSAGE_FIELDS = frozenset(f.name for f in dataclasses.fields(Message)) - {"extra"}
