"""Shared fixtures: anyio's own pytest plugin on asyncio; logging reset around every test."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from duvo_monitor.logs import configure_logging


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test that runs the CLI configures logging onto its captured stderr; undo that."""
    configure_logging("info", json=True, stream=sys.__stderr__)
    yield
    configure_logging("info", json=True, stream=sys.__stderr__)
