"""An embedded Duvo Runs API: the world the demo, the tests and the benchmarks run in.

``World`` (pure, clock-driven state) + ``Api`` (routes, validation, JSON) + ``Simulator`` (the
server: auth, rate limits, faults, webhooks, truth and request logs). Scenarios come from YAML or
JSON files (:meth:`Scenario.load`) or from :func:`generate_scenario`. See ``docs/simulator.md``.
"""

from __future__ import annotations

from duvo_monitor.simulator.faults import Faults, Window
from duvo_monitor.simulator.generator import generate_scenario
from duvo_monitor.simulator.model import RequestLogEntry, TruthEntry, WebhookDelivery
from duvo_monitor.simulator.scenario import Scenario, ScenarioError, parse_duration
from duvo_monitor.simulator.server import DEFAULT_API_KEY, Simulator
from duvo_monitor.simulator.world import World

__all__ = [
    "DEFAULT_API_KEY",
    "Faults",
    "RequestLogEntry",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "TruthEntry",
    "WebhookDelivery",
    "Window",
    "World",
    "generate_scenario",
    "parse_duration",
]
