"""The ``/metrics``, ``/healthz`` and ``/readyz`` listener; and the import path of the telemetry.

The metrics themselves are defined in :mod:`duvo_monitor.telemetry` (:class:`Telemetry`), the
bounded labels in :mod:`duvo_monitor.labels`, the readiness answer in
:mod:`duvo_monitor.readiness`; their names are re-exported here so that ``from
duvo_monitor.metrics import Telemetry`` keeps working.

The listener (:func:`serve_metrics`) uses :mod:`duvo_monitor.httpserver` rather than
``prometheus_client.start_http_server`` because the latter binds all interfaces and runs a thread
outside the daemon's task group.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from duvo_monitor.httpserver import Bound, Request, Response, serve
from duvo_monitor.labels import DEFAULT_LABEL_CAP, OTHER, UNKNOWN, LabelCap
from duvo_monitor.readiness import Readiness
from duvo_monitor.telemetry import (
    API_DURATION_BUCKETS,
    COMMIT_BUCKETS,
    DEFAULT_AGENT_CAP,
    DEFAULT_READY_AFTER,
    DEFAULT_TOOL_CAP,
    DROP_REASONS,
    HUMAN_WAIT_BUCKETS,
    KNOWN_ROLES,
    KNOWN_STATUSES,
    LAG_BUCKETS,
    PURPOSES,
    RUN_DURATION_BUCKETS,
    SINK_STATES,
    TERMINAL_STATUSES,
    TOOL_CALL_BUCKETS,
    TOOL_OUTCOMES,
    Telemetry,
    TimeSource,
)


def respond(telemetry: Telemetry, request: Request, now: float) -> Response:
    """The listener's answer to one request (pure apart from reading the registry)."""
    if request.path not in ("/metrics", "/healthz", "/readyz"):
        return Response.json(404, {"error": "not_found"})
    if request.method != "GET":
        return Response.json(405, {"error": "method_not_allowed"}, headers=[("allow", "GET")])
    if request.path == "/healthz":
        return Response.json(200, {"status": "ok"})
    if request.path == "/readyz":
        readiness = telemetry.readiness(now)
        return Response.json(200 if readiness.ready else 503, readiness.to_json())
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    source: Collector = telemetry.registry
    if not content_type.startswith("application/openmetrics-text"):
        source = _WithoutCreated(telemetry.registry)
    return Response(status=200, body=encoder(source), headers=[("content-type", content_type)])


class _WithoutCreated(Collector):
    """The registry minus its ``*_created`` samples, for the classic text format.

    OpenMetrics carries creation times as part of a counter; the classic text format can only
    show them as extra gauge series that double the series count and that no query here uses.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            created = metric.name + "_created"
            kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            kept.samples = [s for s in metric.samples if s.name != created]
            yield kept


async def serve_metrics(
    telemetry: Telemetry,
    host: str,
    port: int,
    *,
    clock: TimeSource,
    task_status: TaskStatus[Bound] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on exactly ``host:port`` until cancelled."""

    async def handle(request: Request) -> Response:
        return respond(telemetry, request, clock.time())

    await serve(handle, host, port, name="metrics", task_status=task_status)


__all__ = [
    "API_DURATION_BUCKETS",
    "COMMIT_BUCKETS",
    "DEFAULT_AGENT_CAP",
    "DEFAULT_LABEL_CAP",
    "DEFAULT_READY_AFTER",
    "DEFAULT_TOOL_CAP",
    "DROP_REASONS",
    "HUMAN_WAIT_BUCKETS",
    "KNOWN_ROLES",
    "KNOWN_STATUSES",
    "LAG_BUCKETS",
    "OTHER",
    "PURPOSES",
    "RUN_DURATION_BUCKETS",
    "SINK_STATES",
    "TERMINAL_STATUSES",
    "TOOL_CALL_BUCKETS",
    "TOOL_OUTCOMES",
    "UNKNOWN",
    "LabelCap",
    "Readiness",
    "Telemetry",
    "TimeSource",
    "respond",
    "serve_metrics",
]
