"""A broadcast wake-up for anyio tasks (the fan-out's lanes and the webhook's delivery loop)."""

from __future__ import annotations

import anyio


class Signal:
    """Wake every current waiter; waiters take :meth:`waiter` before checking their condition."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    def waiter(self) -> anyio.Event:
        return self._event
