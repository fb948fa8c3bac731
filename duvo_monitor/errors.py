"""The one exception tree of duvo-monitor.

::

    DuvoMonitorError
    ├── ConfigError                 bad config file: every problem with its YAML path (exit 2)
    ├── ApiError                    anything the Duvo API said or failed to say
    │   ├── ApiStatusError          an HTTP error answer, with the server's {error, message}
    │   │   ├── BadRequest          400
    │   │   ├── Unauthorized        401
    │   │   ├── Forbidden           403
    │   │   ├── NotFound            404
    │   │   ├── Conflict            409
    │   │   ├── RateLimited         429, with retry_after
    │   │   ├── ServerError         5xx
    │   │   └── UnexpectedStatus    any other status
    │   ├── TransportError          timeout, reset, refused: no answer at all
    │   └── MalformedResponse       an answer that is not what the schema promises
    ├── StateError                  the SQLite state store failed
    ├── SinkError                   a sink could not deliver
    │   ├── SinkClosed              the reader went away for good (sinks/base.py)
    │   └── SinkUnavailable         a transient failure with a metric kind (sinks/base.py)
    └── ControlError                a running daemon's control API did not answer (control.py)

    CredentialError (a ValueError, credentials.py): a secret could not be read; names where it
    looked, never the value.

Errors are translated once, at the edge that meets the outside (httpx in ``api``, sqlite3 in
``state``, OSError in the sinks), with ``raise ... from``. They carry fields, not only text, and
never a secret: the API key is not part of any request description.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DuvoMonitorError(Exception):
    """Base of every error duvo-monitor raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(DuvoMonitorError):
    def __init__(self, problems: Sequence[ConfigProblem], *, source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class ApiError(DuvoMonitorError):
    """Base of API failures. ``endpoint`` is the route template, e.g. ``GET /v2/runs/{run_id}``."""

    retryable: bool = True

    def __init__(self, message: str, *, endpoint: str, status: int | None = None) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.status = status


class ApiStatusError(ApiError):
    retryable = False

    def __init__(
        self,
        *,
        endpoint: str,
        status: int,
        error: str | None = None,
        message: str | None = None,
    ) -> None:
        detail = error or "no error code"
        if message:
            detail = f"{detail}: {message}"
        super().__init__(f"HTTP {status} ({detail})", endpoint=endpoint, status=status)
        self.error = error
        self.server_message = message


class BadRequest(ApiStatusError):
    pass


class Unauthorized(ApiStatusError):
    pass


class Forbidden(ApiStatusError):
    pass


class NotFound(ApiStatusError):
    pass


class Conflict(ApiStatusError):
    pass


class RateLimited(ApiStatusError):
    retryable = True

    def __init__(
        self,
        *,
        endpoint: str,
        status: int = 429,
        error: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(endpoint=endpoint, status=status, error=error, message=message)
        self.retry_after = retry_after


class ServerError(ApiStatusError):
    retryable = True


class UnexpectedStatus(ApiStatusError):
    pass


class TransportError(ApiError):
    """No usable answer: a timeout, a reset, a refused connection, a cut-off body."""


class MalformedResponse(ApiError):
    """An answer that is not JSON, is HTML, is truncated, or does not have the schema's shape."""

    def __init__(
        self, message: str, *, endpoint: str, status: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.field = field


class StateError(DuvoMonitorError):
    pass


class SinkError(DuvoMonitorError):
    def __init__(self, message: str, *, sink: str, permanent: bool = False) -> None:
        super().__init__(f"sink {sink}: {message}")
        self.sink = sink
        self.permanent = permanent


STATUS_ERRORS: dict[int, type[ApiStatusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}
