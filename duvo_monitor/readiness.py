"""Readiness: whether the daemon is doing its job now, as ``/readyz`` answers it.

:meth:`duvo_monitor.telemetry.Telemetry.readiness` computes it from what it was told (the last
API answer, each sink's state); :mod:`duvo_monitor.metrics` serves it. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Readiness:
    """The answer of ``/readyz``: ready, or the list of what is not."""

    problems: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        if self.ready:
            return {"status": "ready"}
        return {"status": "not_ready", "not_ready": list(self.problems)}
