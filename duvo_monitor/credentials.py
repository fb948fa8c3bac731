"""Secrets (the Duvo API key, the webhook secret, the control token): where they come from, and a
value type that cannot leak them by accident.

Lookup order, first hit wins:

1. ``$CREDENTIALS_DIRECTORY/<name>``: systemd's ``LoadCredential=``. The file lives on a private
   ramfs readable only by the service, and the secret never enters the environment, which other
   processes of the same user (and ``/proc/<pid>/environ``) could read.
2. an environment variable, for containers and development;
3. a file path from the configuration, for anything else.

A source that is absent is skipped; a source that is present but unusable (unreadable, not
UTF-8, empty) is a :class:`CredentialError` rather than a silent fall-through, because falling
back past a broken credential would run the daemon with a key the operator did not mean.

Every secret found here is registered for log redaction (:func:`duvo_monitor.logs.register_secret`)
the moment it is read, so no caller can forget to (the webhook signing secret once was).

Files are read synchronously: they are small, local, and read at start-up and on reload only.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import ClassVar

from duvo_monitor.logs import register_secret

CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"

# The credential ids the systemd units load (LoadCredential=<id>:<path>); tested to match.
API_KEY = "duvo-api-key"
WEBHOOK_SECRET = "webhook-secret"
CONTROL_TOKEN = "control-token"


class CredentialError(ValueError):
    """A secret could not be read; says where it looked, never what it found."""

    def __init__(self, name: str, reason: str, *, looked: tuple[str, ...]) -> None:
        self.name = name
        self.reason = reason
        self.looked = looked
        where = ", ".join(looked) if looked else "nowhere"
        super().__init__(f"credential {name!r}: {reason} (looked in: {where})")


class Secret:
    """A secret string that prints as ``Secret('***')`` and is only read through :meth:`reveal`.

    Equality with another ``Secret`` is constant-time (:func:`hmac.compare_digest`). Secrets are
    deliberately unhashable: a hash of the value is a fingerprint of it, and a dict keyed by
    secrets invites timing-dependent lookups.
    """

    __slots__ = ("_value",)
    __hash__: ClassVar[None] = None  # type: ignore[assignment]

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it (a header, a signature key)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the value wherever the pickle goes (a cache, a crash dump).
        raise TypeError("a Secret cannot be pickled")

    # Immutable, so copies are the object itself (and copying a config tree keeps working).
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


def read_secret(
    name: str,
    *,
    environ: Mapping[str, str],
    env_var: str | None = None,
    file: str | None = None,
) -> Secret | None:
    """The secret ``name`` from systemd's credentials, then ``environ[env_var]``, then ``file``.

    ``name`` is the credential id (``LoadCredential=duvo-api-key:...`` gives ``duvo-api-key``).
    One trailing newline (``\\n`` or ``\\r\\n``) is stripped, since ``echo`` and editors add one.
    Returns ``None`` when no source has it; use :func:`require_secret` when it is mandatory.
    A ``file`` that is given but missing is an error, since someone configured it.
    """
    return _lookup(name, environ=environ, env_var=env_var, file=file)[0]


def require_secret(
    name: str,
    *,
    environ: Mapping[str, str],
    env_var: str | None = None,
    file: str | None = None,
) -> Secret:
    """Like :func:`read_secret`, but a secret found nowhere is a :class:`CredentialError`."""
    secret, looked = _lookup(name, environ=environ, env_var=env_var, file=file)
    if secret is None:
        raise CredentialError(name, "not found", looked=tuple(looked))
    return secret


def _lookup(
    name: str, *, environ: Mapping[str, str], env_var: str | None, file: str | None
) -> tuple[Secret | None, list[str]]:
    _check_name(name)
    looked: list[str] = []

    directory = environ.get(CREDENTIALS_DIRECTORY_ENV)
    if directory:
        path = os.path.join(directory, name)
        looked.append(f"${CREDENTIALS_DIRECTORY_ENV}/{name} ({path})")
        text = _read_file(name, path, looked=looked, missing_ok=True)
        if text is not None:
            return _secret(name, text, looked=looked), looked
    else:
        looked.append(f"${CREDENTIALS_DIRECTORY_ENV} (unset)")

    if env_var is not None:
        looked.append(f"${env_var}")
        value = environ.get(env_var)
        if value is not None:
            return _secret(name, value, looked=looked), looked

    if file is not None:
        looked.append(file)
        text = _read_file(name, file, looked=looked, missing_ok=False)
        if text is not None:
            return _secret(name, text, looked=looked), looked

    return None, looked


def _check_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\0" in name:
        raise ValueError(f"not a credential name: {name!r}")


def _read_file(name: str, path: str, *, looked: list[str], missing_ok: bool) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        if missing_ok:
            return None
        raise CredentialError(name, f"{path} does not exist", looked=tuple(looked)) from exc
    except OSError as exc:
        reason = f"{path} cannot be read ({exc.strerror or type(exc).__name__})"
        raise CredentialError(name, reason, looked=tuple(looked)) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Raised outside the handler: the decode error quotes the secret's bytes, and even with
    # `from None` it would stay attached as __context__ for a traceback renderer to print.
    raise CredentialError(name, f"{path} is not UTF-8", looked=tuple(looked))


def _secret(name: str, text: str, *, looked: list[str]) -> Secret:
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise CredentialError(name, f"{looked[-1]} is empty", looked=tuple(looked))
    register_secret(text)
    return Secret(text)
