"""The sd_notify protocol: telling systemd that the daemon is ready, reloading, stopping, alive.

systemd hands a ``Type=notify`` service the address of a datagram socket in ``NOTIFY_SOCKET``
(a filesystem path, or ``@name`` for the abstract namespace) and, with ``WatchdogSec=``, the
watchdog period in ``WATCHDOG_USEC`` (plus ``WATCHDOG_PID`` when it is meant for one process).
The protocol is one datagram of newline-separated ``KEY=value`` lines per message.

Why not ``libsystemd`` or a wrapper package: the protocol is a dozen lines of socket code, a C
dependency would have to be built for every install, and this way the test can open the socket
itself and read the exact bytes.

Three rules shape this module:

* Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon never asks where
  it runs.
* Sending can never block or raise: the socket is non-blocking and any ``OSError`` is logged
  once per :class:`Notifier` and then dropped. A missed ``STATUS=`` line is harmless; a
  notification that crashed or wedged the daemon would not be.
* :func:`watchdog_loop` pings from the event loop itself, never from a thread, so that a wedged
  loop stops pinging and systemd restarts the service.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import structlog

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

# systemd ignores a notification of PIPE_BUF bytes or more; STATUS= is the only free text we send.
MAX_STATUS_CHARS = 512

_KEY = re.compile(r"[A-Z][A-Z0-9_]*")


class Notifier:
    """Sends sd_notify messages to the socket systemd gave this process, or nowhere.

    Build it with :meth:`from_environ`; ``Notifier()`` is the silent one used outside systemd.
    Each message opens a fresh non-blocking datagram socket, as ``sd_notify(3)`` does, so there
    is nothing to close and nothing can be left half-open across a fork or a reload.
    """

    __slots__ = ("_address", "_error_logged", "_pid", "_watchdog_pid", "_watchdog_usec")

    def __init__(
        self,
        address: str | None = None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        pid: int | None = None,
    ) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._watchdog_pid = watchdog_pid
        self._pid = os.getpid() if pid is None else pid
        self._error_logged = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, pid: int | None = None) -> Notifier:
        """The notifier systemd configured through ``environ`` (usually ``os.environ``).

        ``pid`` is this process's id (default :func:`os.getpid`), compared with
        ``WATCHDOG_PID``. Malformed watchdog variables disable the watchdog with a warning
        rather than failing the start: the service still runs, just unwatched.
        """
        address = environ.get(NOTIFY_SOCKET_ENV) or None
        if address is not None and not address.startswith(("/", "@")):
            # sd_notify(3) refuses these too (relative paths, or vsock: from newer systemd).
            _log().warning(
                "NOTIFY_SOCKET is not a path or an abstract name.", notify_socket=address
            )
            address = None
        return cls(
            address,
            watchdog_usec=_positive_int(environ, WATCHDOG_USEC_ENV),
            watchdog_pid=_positive_int(environ, WATCHDOG_PID_ENV),
            pid=pid,
        )

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere (the process runs under systemd with a notify socket)."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, as systemd advises.

        ``None`` when there is nothing to ping: no notify socket, no ``WATCHDOG_USEC``, or a
        ``WATCHDOG_PID`` naming another process (the variables were inherited, not ours).
        """
        if self._address is None or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != self._pid:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self) -> bool:
        """``READY=1``: start-up (or a reload) is complete."""
        return self.notify(READY=1)

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status`` (newlines become spaces)."""
        if len(text) > MAX_STATUS_CHARS:
            text = text[: MAX_STATUS_CHARS - 1] + "…"
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=``; answer with :meth:`ready` when done.

        ``MONOTONIC_USEC`` is required from systemd 253 on (``Type=notify-reload``) and ignored
        by 252, which Debian 12 ships; sending it keeps the daemon right on both.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=monotonic_usec)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the daemon is alive."""
        return self.notify(WATCHDOG=1)

    def notify(self, **fields: str | int) -> bool:
        """Send the fields as ``KEY=value`` lines in one datagram; keys are upper-cased.

        Returns whether the datagram was handed to the kernel. Never raises for a socket
        problem; raises ``ValueError`` only for a key that is not ``[A-Z][A-Z0-9_]*``, which
        is a bug at the call site, not a runtime condition.
        """
        if not fields:
            return False
        lines = []
        for key, value in fields.items():
            name = key.upper()
            if not _KEY.fullmatch(name):
                raise ValueError(f"not an sd_notify field name: {key!r}")
            # A newline inside a value would start a new field: systemd must see one line.
            text = str(value).replace("\r", " ").replace("\n", " ")
            lines.append(f"{name}={text}")
        if self._address is None:
            return False
        return self._send(self._address, ("\n".join(lines) + "\n").encode())

    def _send(self, address: str, payload: bytes) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(payload, address)
        except OSError as exc:
            # Once per notifier: a vanished socket would otherwise log every watchdog period.
            if not self._error_logged:
                self._error_logged = True
                _log().warning(
                    "Could not notify systemd; further failures are not logged.",
                    notify_socket=_display(address),
                    error=repr(exc),
                )
            return False
        return True


async def watchdog_loop(
    notifier: Notifier,
    *,
    clock_sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> None:
    """Ping ``WATCHDOG=1`` every :meth:`Notifier.watchdog_interval` seconds until cancelled.

    Run it in the daemon's root task group. It returns at once when systemd asked for no
    watchdog, so it never holds a task for nothing. The first ping is sent immediately.
    ``clock_sleep`` is injected so tests can drive the loop without waiting.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await clock_sleep(interval)


def _log() -> Any:
    # Looked up per use (all rare) rather than held at import, so that the configuration in
    # force, and structlog's capture_logs in tests, always apply.
    return structlog.get_logger("duvo_monitor.sdnotify")


def _socket_address(address: str) -> str:
    # Python spells Linux's abstract namespace with a leading NUL, systemd with "@".
    return "\0" + address[1:] if address.startswith("@") else address


def _display(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address


def _positive_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        _log().warning("Ignoring a malformed systemd variable.", variable=name, value=raw)
        return None
    return value
