"""duvo-monitor: watch Duvo agent runs and emit every change as a CloudEvent."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
