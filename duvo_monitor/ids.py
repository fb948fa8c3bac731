"""Duvo's identifiers: every run, agent, team and human-request id is a UUID.

Checked once where an id enters (config, CLI, control API, the client's calls), so a typo fails
with its name and value before any request is spent; :func:`require_uuid` also lower-cases, so
one run has one spelling in state, events and metrics.
"""

from __future__ import annotations

import re

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_uuid(value: str) -> bool:
    return bool(_UUID.match(value))


def require_uuid(value: str, what: str) -> str:
    if not isinstance(value, str) or not is_uuid(value):
        raise ValueError(f"{what} is not a uuid: {value!r}")
    return value.lower()


__all__ = ["is_uuid", "require_uuid"]
