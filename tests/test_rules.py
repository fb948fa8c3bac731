"""Prometheus rules: promtool accepts them, their unit tests pass, and they query real metrics.

promtool comes with Debian's ``prometheus`` package (``.ci/tools`` installs it); where it is
missing, the tests that need it are skipped with the reason shown in the summary.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import partial
from typing import Any

import anyio
import httpx
import pytest
import yaml
from promql import (
    RULES,
    RULES_TEST,
    exercised_telemetry,
    exposed_names,
    load_rules,
    metric_names,
    recorded_names,
)

from duvo_monitor.clock import Clock
from duvo_monitor.httpserver import Bound
from duvo_monitor.metrics import serve_metrics


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: apt-get install prometheus (see .ci/tools)")
    return path


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin.decode() if stdin else None, capture_output=True, text=True, timeout=60
    )


def test_promtool_check_rules(promtool: str) -> None:
    """promtool accepts rules.yml: valid PromQL, templates, no duplicate rules."""
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules(promtool: str) -> None:
    """The rule unit tests pass: each alert fires and stays quiet when it should."""
    result = run(promtool, "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_tested_firing_and_not_firing() -> None:
    """rules.test.yml has, for every alert, a case where it fires and one where it does not."""
    alerts = {rule["alert"] for rule in load_rules() if "alert" in rule}
    tests: list[dict[str, Any]] = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alerts - firing == set()
    assert alerts - quiet == set()


def test_every_recording_rule_value_tested() -> None:
    """Every recording rule's value is pinned by a promql_expr_test."""
    tests: list[dict[str, Any]] = yaml.safe_load(RULES_TEST.read_text())["tests"]
    exprs = {case["expr"] for test in tests for case in test.get("promql_expr_test", [])}
    assert recorded_names() - exprs == set()


def test_rules_query_only_existing_metrics() -> None:
    """Each metric in each rule is exposed by Telemetry or recorded by an earlier rule."""
    known = exposed_names(exercised_telemetry().registry) | recorded_names()
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, rule
        assert names <= known, (rule.get("alert") or rule.get("record"), names - known)


@pytest.mark.anyio
async def test_promtool_check_metrics_on_live_scrape(promtool: str) -> None:
    """A live /metrics scrape of an exercised Telemetry passes promtool's metric linter."""
    telemetry = exercised_telemetry()
    async with anyio.create_task_group() as tg, httpx.AsyncClient() as client:
        serve = partial(serve_metrics, clock=Clock())
        bound: Bound = await tg.start(serve, telemetry, "127.0.0.1", 0)
        with anyio.fail_after(5):
            response = await client.get(f"{bound.url}/metrics")
        tg.cancel_scope.cancel()
    assert response.status_code == 200
    assert b"duvo_runs_finished_total" in response.content
    result = await anyio.to_thread.run_sync(
        partial(run, promtool, "check", "metrics", stdin=response.content)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
