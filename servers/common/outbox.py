"""Helper events on their way to the broker, kept in the sending server's own sqlite.

A server queues an event in the same transaction as the change it reports (so both happen or
neither does), and one task delivers the queue in order through the broker's post_event. A
broker that is down or restarting delays delivery; nothing is lost, not even across a restart
of the sending server. An event the broker refuses for good (its recipient no longer exists)
is dropped with an error in the log.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from functools import partial
from typing import Final

import anyio
from fastmcp.exceptions import ToolError
from pydantic import ValidationError

from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.client import HiveClient
from hyperhive.servers.common.clock import Clock
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.events import HELPER_EVENT, HelperEvent

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
        # Imported here: the broker's client module imports this kernel's modules.
        from hyperhive.servers.broker.client import BrokerClient

        self.broker = BrokerClient(broker).with_timeout(10)
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
            try:
                event = HELPER_EVENT.validate_json(text)
                await self.broker.post_event(recipient, event)
            except ValidationError as e:  # queued by another version of hyperhive: the broker would refuse it too
                log.error("an event for %s is not a helper event this version knows, dropping it: %s", recipient, e)
            except ToolError as e:
                log.error("the broker refused a %s event for %s, dropping it: %s", event.type, recipient, e)
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
