"""Bounded label values: what keeps every metric's cardinality fixed, whatever Duvo sends.

A label value comes from outside (a status, a tool name, an agent id): a new one appears as a new
series, so an unbounded source would grow the registry for ever. :class:`LabelCap` lets through
the values it knows, then a few others by name (a new status shows up as itself), then folds the
rest into ``"other"``. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

OTHER = "other"
UNKNOWN = "unknown"
DEFAULT_LABEL_CAP = 20


class LabelCap:
    """Maps raw values onto a bounded label set: ``known``, then ``cap`` others, then ``other``.

    ``None`` and ``""`` become ``"unknown"`` (an empty label value is the same as no label in
    Prometheus). The first ``cap`` unknown values are kept as they are, so a new status or tool
    shows up by name; later ones fold into ``"other"`` for the life of the process.
    """

    __slots__ = ("_allowed", "_cap", "_extra")

    def __init__(self, known: Iterable[str] = (), cap: int = DEFAULT_LABEL_CAP) -> None:
        if cap < 0:
            raise ValueError("cap must be >= 0")
        self._allowed = {*known, UNKNOWN, OTHER}
        self._cap = cap
        self._extra = 0

    def __call__(self, value: object) -> str:
        text = UNKNOWN if value is None or value == "" else str(value)
        if text in self._allowed:
            return text
        if self._extra < self._cap:
            self._extra += 1
            self._allowed.add(text)
            return text
        return OTHER
