"""Test helpers that read PromQL: the metric names an expression selects, and those exposed.

The parser is deliberately small: it removes what cannot be a metric name (Grafana variables,
strings, label matchers, range and subquery brackets, grouping label lists), then keeps every
identifier that is not a keyword, an aggregation or a function call. ``{__name__="x"}`` selectors
count as ``x``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from duvo_monitor.metrics import Telemetry

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "prometheus" / "rules.test.yml"
DASHBOARD = ROOT / "grafana" / "duvo-monitor.json"

KEYWORDS = {
    # Binary operators and modifiers.
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "atan2",
    # Aggregations (may be followed by "by (...)" rather than a parenthesis).
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    # Literals and @ modifiers.
    "inf", "nan", "start", "end",
}  # fmt: skip

_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(["'`])([^"'`]+)\1""")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACKETS = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _GRAFANA_VARIABLE.sub(" 1 ", expr)
    names = {m.group(2) for m in _NAME_MATCHER.finditer(text)}
    text = _STRING.sub('""', text)
    text = _BRACKETS.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(r"\1 ", text)
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def label_values_metric(query: str) -> set[str]:
    """The metric of a Grafana ``label_values(metric, label)`` or ``query_result(expr)`` query."""
    if m := re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query, re.DOTALL):
        return metric_names(m.group(1))
    if m := re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.DOTALL):
        return metric_names(m.group(1))
    if re.fullmatch(r"\s*(label_names|metrics)\(.*\)\s*", query) or not query.strip():
        return set()
    return metric_names(query)


def exercised_telemetry(registry: CollectorRegistry | None = None) -> Telemetry:
    """A Telemetry with every method called once with realistic values."""
    telemetry = Telemetry(registry or CollectorRegistry())
    agent = "0b7a4c3e-9f1d-4e2a-8c55-6d0f2b1a9e77"
    telemetry.run_status("run-1", agent, "running")
    telemetry.run_status("run-2", agent, "waiting")
    telemetry.run_finished(agent, "completed", 842.0)
    telemetry.run_finished(agent, "failed", 95.5)
    telemetry.human_request_opened("run-2")
    telemetry.human_request_resolved("run-1", 312.0)
    telemetry.message("assistant", "text")
    telemetry.message("tool", "tool_result")
    telemetry.tool_call("web_search", "ok", 2.4)
    telemetry.tool_call("send_email", "error", 0.8)
    telemetry.api_request("GET /v2/runs/{run_id}/messages", 200, 0.21)
    telemetry.api_request("GET /v2/teams/{team_id}/runs", 429, 0.05)
    telemetry.api_request("GET /v2/runs/{run_id}", "error", 10.0)
    telemetry.rate_limited(12.0)
    telemetry.budget(300, 41.0, 259, 4.5)
    telemetry.api_answered(1_764_380_000.0)
    telemetry.malformed_answer("GET /v2/runs/{run_id}")
    telemetry.poll_lag(0.4)
    telemetry.event_emitted("ai.duvo.message.created", 1.8)
    telemetry.event_emitted("ai.duvo.run.completed", 3.2)
    telemetry.sink_health("file", "ok")
    telemetry.sink_health("webhook", "retry")
    telemetry.sink_delivered("file", "ai.duvo.message.created", 12)
    telemetry.sink_queue("webhook", 37)
    telemetry.sink_error("webhook", "timeout")
    telemetry.sink_dropped("webhook", "queue_full", 2)
    telemetry.state_commit(0.004)
    return telemetry


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry`` can expose (histogram and counter suffixes included)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def load_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}
