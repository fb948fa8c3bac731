"""What the Duvo Runs API returns, as frozen values built by ``from_api`` constructors.

Decoding is strict about what the schema requires and tolerant of what may grow:

* a missing required field, or one of the wrong type, raises :class:`MalformedResponse` naming the
  field path (``run.status``) and the endpoint (the fields are read by
  :class:`duvo_monitor.reader.JsonReader`, whose report refuses the whole answer);
* unknown extra fields are kept in ``extra`` (runs, messages) or ignored;
* ``status``, message ``type`` and ``role`` and human-request ``type`` are free strings: values we
  have never seen pass through unchanged.

One module per thing the API talks about: :mod:`.runs` (and the run statuses),
:mod:`.messages`, :mod:`.humanrequests`, :mod:`.team`, :mod:`.ratelimit` (headers) and
:mod:`.timestamps`. Everything is importable from here, as it was before the split. Pure: no I/O.
"""

from __future__ import annotations

from duvo_monitor.errors import MalformedResponse
from duvo_monitor.models.humanrequests import (
    HumanRequest,
    HumanRequestRecord,
    HumanResponse,
    Question,
    QuestionOption,
)
from duvo_monitor.models.messages import Message, MessagePage, ToolCall, ToolResult
from duvo_monitor.models.ratelimit import RateLimit
from duvo_monitor.models.runs import (
    KNOWN_STATUSES,
    RESUMABLE_STATUSES,
    TERMINAL_STATUSES,
    Run,
    RunList,
    RunSnapshot,
    RunSummary,
    StopResult,
)
from duvo_monitor.models.team import Team
from duvo_monitor.models.timestamps import format_time, parse_time

__all__ = [
    "KNOWN_STATUSES",
    "RESUMABLE_STATUSES",
    "TERMINAL_STATUSES",
    "HumanRequest",
    "HumanRequestRecord",
    "HumanResponse",
    "MalformedResponse",
    "Message",
    "MessagePage",
    "Question",
    "QuestionOption",
    "RateLimit",
    "Run",
    "RunList",
    "RunSnapshot",
    "RunSummary",
    "StopResult",
    "Team",
    "ToolCall",
    "ToolResult",
    "format_time",
    "parse_time",
]
