"""A team, as GET teams lists it. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from duvo_monitor.reader import JsonReader, refuse


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    id: str
    name: str
    organization_id: str | None

    @classmethod
    def from_api(cls, data: object, *, endpoint: str, where: str) -> Team:
        r = JsonReader.of(data, where, refuse(endpoint))
        return cls(
            id=r.text("id"), name=r.text("name"), organization_id=r.nullable_text("organization_id")
        )
