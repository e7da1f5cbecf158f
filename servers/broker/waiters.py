"""In-process wake-ups for long-polls: a send sets the recipient's event, never a poll loop."""

from __future__ import annotations

import anyio


class Waiters:
    """One event per inbox with receivers waiting on it.

    A receiver takes `event(name)` *before* it looks for messages, so a send that lands
    between its look and its wait still wakes it (the send sets the event it holds).
    """

    def __init__(self) -> None:
        self._events: dict[str, anyio.Event] = {}
        self.closed = False

    def event(self, name: str) -> anyio.Event:
        ev = self._events.get(name)
        if ev is None:
            ev = self._events[name] = anyio.Event()
            if self.closed:
                ev.set()
        return ev

    def notify(self, name: str) -> None:
        ev = self._events.pop(name, None)
        if ev is not None:
            ev.set()

    def notify_all(self) -> None:
        """Wake every receiver waiting now (they look again): what changed is not known."""
        events, self._events = self._events, {}
        for ev in events.values():
            ev.set()

    def close(self) -> None:
        """Release every waiter now and from now on (the server is stopping)."""
        self.closed = True
        for ev in self._events.values():
            ev.set()
        self._events.clear()
