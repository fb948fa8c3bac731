"""Dead letters: events a webhook will never take, kept as JSON lines with the reason.

One line per event::

    {"time": "...", "sink": "hooks", "reason": "HTTP 422", "status": 422, "attempts": 1,
     "event": {...the CloudEvent as it was sent...}}

Each call appends whole lines with one write and fsyncs before returning, because the events
are acknowledged (and the run's checkpoint may advance) right after. Synchronous, for
``anyio.to_thread``.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Sequence

import orjson


class DeadLetters:
    def __init__(self, path: str, *, sink: str) -> None:
        self.path = path
        self.sink = sink
        self._lock = threading.Lock()

    def write(
        self,
        lines: Sequence[bytes],
        *,
        reason: str,
        status: int | None,
        attempts: int,
        now: float,
    ) -> None:
        stamp = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).isoformat()
        data = b"".join(
            orjson.dumps(
                {
                    "time": stamp,
                    "sink": self.sink,
                    "reason": reason,
                    "status": status,
                    "attempts": attempts,
                    "event": orjson.Fragment(line.rstrip(b"\n")),
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
            for line in lines
        )
        with self._lock:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
