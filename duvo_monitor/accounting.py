"""Metrics derived from what the daemon did: the events it emitted and the API answers it got.

The run metrics (messages, tool calls, human requests, finished runs, event lag) are counted
from the events themselves, at the moment they are handed to the sinks, so what is counted is
exactly what was emitted; the API metrics come from the client's observations. The metrics'
names and labels belong to :mod:`duvo_monitor.metrics`; this module only says which event or
answer moves which one.
"""

from __future__ import annotations

from collections.abc import Iterable

from duvo_monitor.events import Change, Event
from duvo_monitor.metrics import Telemetry
from duvo_monitor.models import TERMINAL_STATUSES, parse_time
from duvo_monitor.observation import Observation


class Accounting:
    """Feeds :class:`Telemetry` from emitted events and API observations."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def emitted(self, events: Iterable[Event], now: float) -> None:
        """Count events handed to the sinks at ``now`` (clock.time())."""
        for event in events:
            self._event(event, now)

    def _event(self, event: Event, now: float) -> None:
        t = self.telemetry
        data = event.data
        lag = 0.0 if event.change_time is None else max(0.0, now - event.change_time)
        t.event_emitted(event.type, lag)
        change = event.change
        if change is Change.MESSAGE_CREATED:
            message = data["message"]
            t.message(message["role"], message["type"])
            result = message.get("tool_result")
            if result is not None:
                t.tool_call(
                    result.get("name") or "unknown",
                    "error" if result.get("error") else "ok",
                    result.get("duration_seconds"),
                )
        elif change is Change.REQUEST_OPENED:
            t.human_request_opened(event.subject, parse_time(data["request"].get("created_at")))
        elif change is Change.REQUEST_RESOLVED:
            t.human_request_resolved(event.subject, data.get("waited_seconds"))
        elif change is Change.STATUS and data["to"] in TERMINAL_STATUSES:
            t.run_finished(data.get("agent_id"), data["to"], data.get("duration_seconds"))

    def observe(self, observation: Observation) -> None:
        """One API answer (or failure): request counts, latency, 429s, malformed answers, and
        the last good answer that readiness looks at."""
        t = self.telemetry
        code: int | str = observation.status if observation.status is not None else "error"
        t.api_request(observation.endpoint, code, observation.seconds)
        if observation.status == 429:
            t.rate_limited(observation.rate.retry_after)
        if observation.error == "MalformedResponse":
            t.malformed_answer(observation.endpoint)
        # 401, 403 and 429 are answers, but not ones a ready monitor gets.
        status = observation.status
        answered = status is not None and status < 500 and status not in (401, 403, 429)
        if answered and observation.error is None:
            t.api_answered(observation.at)

    def requests_sent(self, delta: dict[str, int]) -> None:
        """Requests sent since the last tally, by kind."""
        for kind, count in delta.items():
            self.telemetry.requests_sent(kind, count)


__all__ = ["Accounting"]
