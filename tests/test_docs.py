"""The docs name only metrics that exist (they are what people paste into Grafana)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from duvo_monitor.metrics import Telemetry

ROOT = Path(__file__).parent.parent
NAME = re.compile(
    r"\bduvo_[a-z_]+?(?:_total|_seconds|_bucket|_count|_sum|_info|_depth|_up|_state"
    r"|_pending|_watched|_limit|_remaining|_used)\b"
)


def test_metric_names_in_docs_exist() -> None:
    """Every metric-looking name in README.md and docs/ is one Telemetry registers."""
    registry = CollectorRegistry()
    Telemetry(registry)
    samples = {s.name for family in registry.collect() for s in family.samples}
    families = {family.name for family in registry.collect()}
    suffixes = ("", "_total", "_info", "_bucket", "_count", "_sum")
    known = samples | {f + suffix for f in families for suffix in suffixes}
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = {(path.name, name) for path in texts for name in NAME.findall(path.read_text())}
    assert len(found) > 20, "the pattern finds the metrics the docs talk about"
    unknown = {(file, name) for file, name in found if name not in known}
    assert not unknown
