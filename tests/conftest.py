"""Shared fixtures: anyio's own pytest plugin on asyncio; logging reset around every test.

Markers: every test of a ``test_process_*`` module (real subprocesses, real signals), and the
few others in ``SLOW_TESTS``, is ``slow``, so ``pytest -m "not slow"`` is the inner loop; a slow
test's timeout is ``SLOW_TIMEOUT`` rather than the default of pyproject.toml (pytest-timeout).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from duvo_monitor.logs import configure_logging

SLOW_TIMEOUT = 600
SLOW_MODULES = "test_process_"
# Tests elsewhere that take over ~5 s on an idle machine (pytest --durations).
SLOW_TESTS = frozenset(
    {
        "tests/test_daemon_world.py::test_demo_scenario_every_change_once",
        "tests/test_daemon_world.py::test_trusted_rounds_under_saturation",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name.startswith(SLOW_MODULES) or item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test that runs the CLI configures logging onto its captured stderr; undo that."""
    configure_logging("info", json=True, stream=sys.__stderr__)
    yield
    configure_logging("info", json=True, stream=sys.__stderr__)
