"""Duvo's timestamps (ISO 8601, UTC) and unix seconds, both ways. Pure."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(text: str | None) -> float | None:
    """ISO 8601 -> unix seconds; None for None or text that is not a timestamp."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def format_time(unix: float) -> str:
    """Unix seconds -> RFC 3339 UTC with milliseconds."""
    return (
        datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
