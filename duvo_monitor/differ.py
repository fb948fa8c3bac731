"""The differ: what the API shows of a run, against its checkpoint, becomes typed changes. Pure.

The differ never builds an event: it returns the new checkpoint and the changes
(:mod:`duvo_monitor.changes`), and :func:`duvo_monitor.events.render` turns each change into its
CloudEvent, with an id derived from the change, so a change re-emitted after a crash keeps its id.
It is three modules, re-exported here under the names callers have always imported:

* :mod:`duvo_monitor.checkpoint`: what is remembered of a run between polls (and persisted);
* :mod:`duvo_monitor.status_diff`: a GET run answer -> status, loss and human-request changes;
* :mod:`duvo_monitor.message_walk`: a page of messages -> created and updated messages.
"""

from __future__ import annotations

from duvo_monitor.checkpoint import Checkpoint, PendingRequest, message_digest
from duvo_monitor.message_walk import (
    LIFECYCLE_TYPES,
    OPEN_CALLS_CAP,
    SUGGESTED_STATUS,
    MessageDiff,
    diff_messages,
    page_request,
    scanning_from_start,
    start_final_verify,
)
from duvo_monitor.status_diff import NOT_FOUND_GRACE, StatusDiff, diff_status

__all__ = [
    "LIFECYCLE_TYPES",
    "NOT_FOUND_GRACE",
    "OPEN_CALLS_CAP",
    "SUGGESTED_STATUS",
    "Checkpoint",
    "MessageDiff",
    "PendingRequest",
    "StatusDiff",
    "diff_messages",
    "diff_status",
    "message_digest",
    "page_request",
    "scanning_from_start",
    "start_final_verify",
]
