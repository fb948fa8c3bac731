"""The Grafana dashboard parses, uses ${datasource}, and queries only metrics that exist."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from promql import (
    DASHBOARD,
    exercised_telemetry,
    exposed_names,
    label_values_metric,
    metric_names,
    recorded_names,
)

REQUIRED_TOPICS = (
    "runs watched by status",
    "failure rate",
    "duration p50 / p95",
    "human request wait",
    "api budget",
    "event lag",
    "sink health",
)


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"${variable['name']}", query["query"] if isinstance(query, dict) else query


def test_dashboard_parses_and_covers_the_topics() -> None:
    """The JSON parses, has a uid and title, and has a panel for each topic the issue names."""
    dashboard = load()
    assert dashboard["uid"] == "duvo-monitor"
    titles = " | ".join(p["title"].lower() for p in panels(dashboard))
    for topic in REQUIRED_TOPICS:
        assert topic in titles, topic


def test_every_query_uses_the_datasource_variable() -> None:
    """Panels and targets name the data source only through ${datasource}."""
    dashboard = load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_metric_queried_exists() -> None:
    """Each metric name in each expression is exposed by Telemetry or recorded by rules.yml."""
    known = exposed_names(exercised_telemetry().registry) | recorded_names()
    seen: set[str] = set()
    for where, expr in queries(load()):
        names = label_values_metric(expr) if where.startswith("$") else metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        missing = names - known
        assert not missing, f"{where}: unknown metrics {sorted(missing)} in {expr!r}"
        seen |= names
    assert "duvo_runs_finished_total" in seen


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.9, sum by (a, le) (rate(x_bucket{a=~"$agent"}[$__interval])))',
            {"x_bucket"},
        ),
        ("sum without (instance) (x) / on (agent_id) group_left (foo) y", {"x", "y"}),
        ("sum(rate(a_total[5m])) by (le) > bool 1e3 offset 1h", {"a_total"}),
        ('{__name__="foo", x="by"} or time() - max(bar{i=~"${instance:regex}"})', {"foo", "bar"}),
        (
            "rec:x:ratio_rate1h > 0.25 and rec:y:increase1h >= 4",
            {"rec:x:ratio_rate1h", "rec:y:increase1h"},
        ),
        ("rate(x[5m:1m]) + Inf + NaN", {"x"}),
        ("topk(5, sum by(tool)(rate(t[1h])))", {"t"}),
    ],
)
def test_metric_name_parser(expr: str, names: set[str]) -> None:
    """The PromQL name extraction keeps metrics and skips labels, functions, keywords, variables."""
    assert metric_names(expr) == names
