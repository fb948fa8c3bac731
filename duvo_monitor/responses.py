"""What a Duvo answer means, decided without I/O: decoding, validation, error classification.

The client in :mod:`duvo_monitor.api` does the wire (gate, deadline, capped read) and hands the
bytes here: a 2xx body is decoded with orjson and checked to be JSON (an HTML error page from a
proxy is a :class:`~duvo_monitor.errors.MalformedResponse`, not a crash); any other status becomes
one class of the :mod:`duvo_monitor.errors` tree, with the server's ``error``/``message`` fields
and the key redacted from them. Pure functions, so every malformed answer is tested without a
server.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from duvo_monitor.credentials import Secret
from duvo_monitor.errors import (
    STATUS_ERRORS,
    ApiStatusError,
    MalformedResponse,
    RateLimited,
    ServerError,
    UnexpectedStatus,
)
from duvo_monitor.models import RateLimit


def describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def expect_object(data: Any, endpoint: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MalformedResponse("body is not a JSON object", endpoint=endpoint)
    return data


def decode_json(body: bytes, content_type: str, endpoint: str, status: int) -> Any:
    if "json" not in content_type.lower() and body.lstrip()[:1] in (b"<", b""):
        what = "an empty body" if not body.strip() else f"a {content_type or 'untyped'} page"
        raise MalformedResponse(
            f"expected JSON, got {what} (HTTP {status})", endpoint=endpoint, status=status
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(
            f"body is not valid JSON ({len(body)} bytes, {exc.msg} at {exc.pos})",
            endpoint=endpoint,
            status=status,
        ) from exc


def status_error(
    endpoint: str, status: int, body: bytes, content_type: str, rate: RateLimit, key: Secret
) -> ApiStatusError:
    error: str | None = None
    message: str | None = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error") if isinstance(parsed.get("error"), str) else None
        message = parsed.get("message") if isinstance(parsed.get("message"), str) else None
    elif body:
        message = f"non-JSON error body ({content_type or 'untyped'}, {len(body)} bytes)"
    # A server may echo the key it refused ("invalid key sk-..."); it must not reach our errors.
    error, message = redact(error, key), redact(message, key)
    if status == 429:
        return RateLimited(
            endpoint=endpoint, error=error, message=message, retry_after=rate.retry_after
        )
    if status >= 500:
        return ServerError(endpoint=endpoint, status=status, error=error, message=message)
    cls = STATUS_ERRORS.get(status, UnexpectedStatus)
    return cls(endpoint=endpoint, status=status, error=error, message=message)


def redact(text: str | None, key: Secret) -> str | None:
    secret = key.reveal()
    return text.replace(secret, "***") if text and secret else text


__all__ = ["decode_json", "describe", "expect_object", "redact", "status_error"]
