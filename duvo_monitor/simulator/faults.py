"""Fault injection: what can go wrong with one answer, and how likely it is.

A :class:`Faults` is a frozen set of per-request probabilities (0..1), optionally limited to a
:class:`Window` of simulated time counted from the simulator's start. :func:`roll` draws, for one
request, which faults hit it (:class:`Roll`); the server then acts on the roll. Three families:

- wire faults that replace the answer: ``drop`` (close the connection), ``error_500``,
  ``error_502``, ``error_503`` (502/503 sometimes as an HTML proxy page), ``html`` (an HTML 502
  page served as ``text/html``). At most one per request, in that order of precedence. They are
  decided before the request is handled, so a faulted request has no effect on the world;
- answer faults that damage a successful answer: ``truncate`` (the body is cut under a full
  ``Content-Length``), ``malformed`` (not JSON although ``application/json``), ``extra_fields``
  (unknown fields added to every object), ``slow`` (the answer waits ``slow_delay``), and
  ``trickle`` (the body goes out one byte every ``trickle_interval`` wall-clock seconds, which
  httpx's per-phase timeouts never catch: each byte arrives well within the read timeout);
- world faults that change the run the request is about, and land in the truth log:
  ``unknown_status`` (a made-up status for ``unknown_status_duration``), ``unknown_message_type``
  (a message of a type Duvo never documented), ``edit_message`` (a visible message's text changes
  in place, same id).

Everything here is pure: the random generator is passed in.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

WIRE = ("drop", "error_500", "error_502", "error_503", "html")
ANSWER = ("slow", "trickle", "truncate", "malformed", "extra_fields")
WORLD = ("unknown_status", "unknown_message_type", "edit_message")
KINDS = WIRE + ANSWER + WORLD

DEFAULT_SLOW_DELAY = 2.0
DEFAULT_TRICKLE_INTERVAL = 1.0
DEFAULT_UNKNOWN_STATUS_DURATION = 10.0
UNKNOWN_STATUSES = ("queued_for_review", "paused", "throttled", "migrating")
UNKNOWN_MESSAGE_TYPES = ("canvas_update", "artifact", "citation", "plan_step")


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """Simulated seconds since the simulator started: ``start <= t < end``."""

    start: float = 0.0
    end: float = math.inf

    def __contains__(self, elapsed: float) -> bool:
        return self.start <= elapsed < self.end


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Per-request fault probabilities (0..1); all zero by default."""

    error_500: float = 0.0
    error_502: float = 0.0
    error_503: float = 0.0
    slow: float = 0.0
    trickle: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    malformed: float = 0.0
    html: float = 0.0
    extra_fields: float = 0.0
    unknown_status: float = 0.0
    unknown_message_type: float = 0.0
    edit_message: float = 0.0
    slow_delay: float = DEFAULT_SLOW_DELAY
    trickle_interval: float = DEFAULT_TRICKLE_INTERVAL
    unknown_status_duration: float = DEFAULT_UNKNOWN_STATUS_DURATION
    window: Window | None = None

    def __post_init__(self) -> None:
        for kind in KINDS:
            p = getattr(self, kind)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{kind}: a probability must be within 0..1, not {p!r}")
        if self.slow_delay < 0 or self.unknown_status_duration < 0:
            raise ValueError("slow_delay and unknown_status_duration cannot be negative")
        if self.trickle_interval <= 0:
            raise ValueError("trickle_interval must be positive")

    @property
    def any(self) -> bool:
        return any(getattr(self, kind) > 0 for kind in KINDS)


FAULT_FIELDS = frozenset(f.name for f in fields(Faults))


@dataclass(frozen=True, slots=True, kw_only=True)
class Roll:
    """The faults that hit one request."""

    kinds: frozenset[str] = frozenset()
    slow_delay: float = 0.0
    trickle_interval: float = DEFAULT_TRICKLE_INTERVAL
    unknown_status_duration: float = DEFAULT_UNKNOWN_STATUS_DURATION

    @property
    def wire(self) -> str | None:
        """The wire fault that replaces the answer, if any (one at most, by precedence)."""
        return next((kind for kind in WIRE if kind in self.kinds), None)

    def __contains__(self, kind: str) -> bool:
        return kind in self.kinds


NO_FAULTS = Roll()


def roll(plans: Iterable[Faults], elapsed: float, rng: random.Random) -> Roll:
    """Draw which faults hit a request ``elapsed`` simulated seconds after the start."""
    kinds: set[str] = set()
    slow_delay = 0.0
    trickle_interval = DEFAULT_TRICKLE_INTERVAL
    duration = DEFAULT_UNKNOWN_STATUS_DURATION
    for plan in plans:
        if plan.window is not None and elapsed not in plan.window:
            continue
        for kind in KINDS:
            p = getattr(plan, kind)
            if p > 0 and rng.random() < p:
                kinds.add(kind)
                if kind == "slow":
                    slow_delay = max(slow_delay, plan.slow_delay)
                elif kind == "trickle":
                    trickle_interval = plan.trickle_interval
                elif kind == "unknown_status":
                    duration = plan.unknown_status_duration
    if not kinds:
        return NO_FAULTS
    return Roll(
        kinds=frozenset(kinds),
        slow_delay=slow_delay,
        trickle_interval=trickle_interval,
        unknown_status_duration=duration,
    )


def html_page(status: int) -> bytes:
    """An error page as a reverse proxy in front of the API would serve it."""
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    title = f"{status} {reason.get(status, 'Error')}"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n"
        f"<body><center><h1>{title}</h1></center><hr><center>nginx</center></body></html>\n"
    ).encode()


# Free-form payloads (a tool's arguments and output) are the agent's data, not the API's objects:
# a growing API adds fields to its own objects, it does not rewrite what a tool returned.
FREE_FORM = frozenset({"arguments", "result"})


def add_extra_fields(payload: Any) -> Any:
    """``payload`` with two unknown fields in every API object, nested ones included."""
    if isinstance(payload, dict):
        out = {
            key: value if key in FREE_FORM else add_extra_fields(value)
            for key, value in payload.items()
        }
        out["x_sim_extra"] = "unknown field"
        out["x_sim_meta"] = {"rev": 2, "flags": ["beta"]}
        return out
    if isinstance(payload, list):
        return [add_extra_fields(item) for item in payload]
    return payload


def malform(body: bytes, rng: random.Random) -> bytes:
    """Bytes that look like the start of ``body`` but do not parse as JSON."""
    cut = rng.randint(1, max(1, len(body) - 1))
    garbage = rng.choice([b"\x00\xff", b"}{", b",,", b'"unterminated'])
    out = body[:cut] + garbage + body[cut:]
    try:
        json.loads(out)
    except ValueError:
        return out
    return b"{" + out  # the garbage landed inside a string: break the structure instead
