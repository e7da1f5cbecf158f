"""A server's background loops (registry watch, outbox, timers) for as long as it runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def background(*loops: Coroutine[Any, Any, object]) -> AsyncIterator[None]:
    """Run each loop as a task while the block runs; then cancel them all and wait for them to end.

    Plain tasks, not a task group: FastMCP may leave a server's lifespan from another cancel scope,
    and one loop failing must not take the others (or the server) down with it.
    """
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
