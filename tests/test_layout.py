"""The monitor's module sizes: one concept per module, which shows as modules that stay small.

The rule (issue 12, docs' house style): no module of the monitor over 500 lines and the median
module under 250. The simulator (``duvo_monitor/simulator/``) stands for Duvo and is apart from
the rule; package ``__init__.py`` and ``__main__.py`` files are entry points, not concepts, and do
not count towards the median.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import duvo_monitor

PACKAGE = Path(duvo_monitor.__file__).parent
MAX_LINES = 500
MEDIAN_BELOW = 250
DAEMON_MAX_LINES = 300


def monitor_modules() -> dict[str, int]:
    """Every module of the monitor outside the simulator, by path in the package: its lines."""
    sizes: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.split("/")[0] != "simulator":
            sizes[name] = len(path.read_text(encoding="utf-8").splitlines())
    return sizes


def test_the_walk_sees_the_monitor_and_not_the_simulator() -> None:
    """The sizes below are of the real package: its modules, sub-packages included, no simulator."""
    names = set(monitor_modules())
    assert {"config.py", "reader.py", "sinks/config.py", "models/runs.py"} <= names
    assert not any(name.startswith("simulator/") for name in names)


def test_no_monitor_module_is_over_500_lines() -> None:
    """Each module of the monitor has at most 500 lines."""
    over = {name: lines for name, lines in monitor_modules().items() if lines > MAX_LINES}
    assert over == {}


def test_the_median_module_is_under_250_lines() -> None:
    """Half of the monitor's modules are shorter than 250 lines."""
    sizes = [
        lines
        for name, lines in monitor_modules().items()
        if Path(name).name not in ("__init__.py", "__main__.py")
    ]
    assert statistics.median(sizes) < MEDIAN_BELOW


def test_the_daemon_is_topology_only() -> None:
    """daemon.py wires the stages and nothing else: at most 300 lines."""
    assert monitor_modules()["daemon.py"] <= DAEMON_MAX_LINES
