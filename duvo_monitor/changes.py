"""What happened to a run, as typed values: the differ's output and the events' input. Pure.

The differ compares what the API shows with the checkpoint and says what changed, one frozen
value per change; it never builds a CloudEvent. :func:`duvo_monitor.events.render` turns a change
into its event. Each change carries what its event needs and no more: the run and agent, the
``key`` that (with the change's :class:`~duvo_monitor.events.Change` kind) makes the event's
deterministic id, the time the change happened (``time`` as the API spelled it, ``change_time``
as seconds) and the event's ``data``. Consumers that need "what happened" match on the class
(``isinstance``, ``match``), never on a type string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from duvo_monitor.events import TYPE_PREFIX, Change, status_type


@dataclass(frozen=True, slots=True, kw_only=True)
class _Change:
    """What every change carries: the run, the agent, the id key, when, and the event's data."""

    run_id: str
    agent_id: str | None
    key: str
    time: str
    change_time: float
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged(_Change):
    """The run's status moved; ``key`` is its transition number (persisted in the checkpoint)."""

    kind: ClassVar[Change] = Change.STATUS
    status: str
    previous: str | None

    @property
    def type(self) -> str:
        return status_type(self.status)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLost(_Change):
    """The run answers 404 (or ``run: null``); ``key`` is the transition number."""

    kind: ClassVar[Change] = Change.LOST
    type: ClassVar[str] = f"{TYPE_PREFIX}run.lost"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageCreated(_Change):
    """A message not emitted before; ``key`` is the message id."""

    kind: ClassVar[Change] = Change.MESSAGE_CREATED
    type: ClassVar[str] = f"{TYPE_PREFIX}message.created"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageUpdated(_Change):
    """A message edited in place; ``key`` is the message id and the new content's digest."""

    kind: ClassVar[Change] = Change.MESSAGE_UPDATED
    type: ClassVar[str] = f"{TYPE_PREFIX}message.updated"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOpened(_Change):
    """A human request appeared on the run; ``key`` is the request id."""

    kind: ClassVar[Change] = Change.REQUEST_OPENED
    type: ClassVar[str] = f"{TYPE_PREFIX}human_request.opened"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestResolved(_Change):
    """The open human request is gone (answered, or replaced); ``key`` is the request id."""

    kind: ClassVar[Change] = Change.REQUEST_RESOLVED
    type: ClassVar[str] = f"{TYPE_PREFIX}human_request.resolved"


RunChange = (
    StatusChanged | RunLost | MessageCreated | MessageUpdated | RequestOpened | RequestResolved
)
"""Every change the differ can report."""
