"""Standard Webhooks signatures (https://www.standardwebhooks.com/): what receivers verify.

For a message id, a Unix timestamp in seconds and the exact body bytes::

    webhook-id:        <id>
    webhook-timestamp: <seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

The key is the secret's bytes: ``whsec_<base64>`` per the spec; a secret without the prefix is
read as base64 too (as the reference libraries do). A message is signed again, with a fresh
timestamp, on every attempt: receivers refuse timestamps older than a few minutes, and a
spooled event may be hours old when the receiver comes back. The id stays the same across
attempts, so receivers can deduplicate. Pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Sequence

from duvo_monitor.credentials import Secret

SECRET_PREFIX = "whsec_"
_BATCH_NAMESPACE = uuid.UUID("0b7e6f3c-2d1a-4c59-9d8e-6475766f6261")


def secret_key(secret: Secret) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError (without the value) if unusable."""
    text = secret.reveal().strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the webhook secret is not whsec_<base64>") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def batch_id(event_ids: Sequence[str]) -> str:
    """The ``webhook-id`` of a batch: derived from all its event ids, in order.

    The same batch sent again keeps its id (receivers deduplicate on it); a batch with other
    events gets another id, which "the first event's id" would not guarantee after a restart
    regroups the spool.
    """
    if len(event_ids) == 1:
        return event_ids[0]
    return f"batch_{uuid.uuid5(_BATCH_NAMESPACE, ','.join(event_ids))}"


class Signer:
    """Signs webhook bodies with one secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: Secret) -> None:
        self._key = secret_key(secret)

    def __repr__(self) -> str:
        return "Signer(***)"

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode("ascii")

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(msg_id, timestamp, body),
        }
