"""Who is changing which agent right now: every change to an agent (start, stop, rebuild, a restart
after a crash, ...) holds it exclusively, and a second caller gets "busy: <name> is <doing what>"
at once instead of waiting behind the first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hyperhive.servers.common.errors import Refused


class AgentLocks:
    def __init__(self) -> None:
        self._busy: dict[str, str] = {}  # agent -> what is being done to it

    def busy(self, name: str) -> str | None:
        """What is being done to `name` right now, if anything."""
        return self._busy.get(name)

    @asynccontextmanager
    async def exclusive(self, name: str, doing: str) -> AsyncIterator[None]:
        current = self._busy.get(name)
        if current is not None:
            raise Refused(f"busy: {name} is {current}; try again when that is done")
        self._busy[name] = doing
        try:
            yield
        finally:
            del self._busy[name]
