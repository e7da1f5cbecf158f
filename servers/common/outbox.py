"""Helper events on their way to the broker, kept in the sending server's own sqlite.

A server queues an event in the same transaction as the change it reports (so both happen or
neither does), and one task delivers the queue in order through the broker's post_event. A
broker that is down or restarting delays delivery; nothing is lost, not even across a restart
of the sending server. An event the broker refuses for good (its recipient no longer exists)
is dropped with an error in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from functools import partial
from typing import Any, Final

import anyio
from fastmcp.exceptions import ToolError

from .backoff import Backoff
from .client import AuthRefused, HiveClient, ServerUnavailable
from .clock import Clock
from .db import Database
from .events import HelperEvent

log = logging.getLogger("hyperhive.outbox")

OUTBOX_SCHEMA: Final = """
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL,
    event      TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
);
"""


def queue_event(conn: sqlite3.Connection, recipient: str, event: HelperEvent, now: float) -> None:
    """Queue `event` for `recipient` inside the caller's transaction; call Outbox.wake() after it commits."""
    conn.execute(
        "INSERT INTO outbox (recipient, event, created_at) VALUES (?, ?, ?)",
        (recipient, event.model_dump_json(), now),
    )


class Outbox:
    def __init__(self, db: Database, broker: HiveClient, clock: Clock) -> None:
        self.db = db
        self.broker = broker
        self.clock = clock
        self._wake = asyncio.Event()

    async def post(self, recipient: str, event: HelperEvent) -> None:
        """Queue `event` on its own and have it delivered as soon as it can be."""
        await self.db.write(lambda conn: queue_event(conn, recipient, event, self.clock.now()))
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever (run it as a task; cancel it to stop)."""
        backoff = Backoff(0.5, 30)
        while True:
            self._wake.clear()
            if await self._deliver_pending():
                backoff.reset()
                with anyio.move_on_after(60):  # and look again now and then, should a wake be missed
                    await self._wake.wait()
            else:
                await backoff.wait()

    async def _deliver_pending(self) -> bool:
        """Deliver the queue in order; False if the broker could not be reached (try again later)."""
        rows = await self.db.fetch_all("SELECT id, recipient, event FROM outbox ORDER BY id LIMIT 100")
        for event_id, recipient, text in rows:
            event: dict[str, Any] = json.loads(text)
            try:
                await self.broker.call("post_event", {"to": recipient, "event": event}, timeout=10)
            except ToolError as e:
                log.error("the broker refused a %s event for %s, dropping it: %s", event.get("type"), recipient, e)
            except (ServerUnavailable, AuthRefused) as e:
                log.info("the broker is unavailable, will retry event delivery: %s", e)
                await self.db.write(
                    partial(_execute, "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", event_id)
                )
                return False
            await self.db.write(partial(_execute, "DELETE FROM outbox WHERE id = ?", event_id))
        return True


def _execute(sql: str, event_id: int, conn: sqlite3.Connection) -> None:
    conn.execute(sql, (event_id,))
