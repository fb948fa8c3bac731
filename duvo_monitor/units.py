"""Durations and sizes as people write them in config files: ``250ms``, ``10s``, ``2m``, ``1h``,
``1d`` or a number of seconds; ``512KiB``, ``100MB``, ``1GiB`` or a number of bytes. Pure."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from ``250ms`` / ``10s`` / ``2m`` / ``1h`` / ``1d`` / a number. ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"not a duration (use 250ms, 10s, 2m, 1h or seconds): {value!r}")


def parse_size(value: object) -> int:
    """Bytes from ``512KiB`` / ``100MB`` / ``1GiB`` / a number. ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = match.group(2).lower() if match.group(2) else None
            return int(float(match.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"not a size (use 512KiB, 100MB, 1GiB or bytes): {value!r}")
