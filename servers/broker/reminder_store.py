"""The broker's reminders: rows that become messages when they come due.

They live in the broker's database (store.MIGRATIONS) and count against the recipient's inbox
cap from the moment they are scheduled (store.inbox_loads), so one that fires is always
delivered. When to fire them is scheduler.py's; who may schedule what is mailbox.py's.
"""

from __future__ import annotations

import math
import sqlite3

from hyperhive.servers.broker.store import inbox_loads
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.errors import LimitReached, NotFound


class ReminderStore:
    """Each method is one job on the database's thread: one transaction, or one consistent read."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        owner: str,
        recipient: str,
        body: str,
        due_at: float,
        now: float,
        *,
        max_pending: int,
        max_per_minute: int,
        inbox_cap: int,
    ) -> int:
        """Insert a reminder and return its id; LimitReached (saying which limit) if it would pass one.

        A reminder takes its place in the recipient's inbox now (see store.inbox_loads), so one that
        comes due is always delivered without passing `inbox_cap`.
        """

        def tx(conn: sqlite3.Connection) -> int:
            pending, recent, oldest_recent = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE created_at > :since), "
                "min(created_at) FILTER (WHERE created_at > :since) FROM reminders WHERE owner = :owner",
                {"since": now - 60, "owner": owner},
            ).fetchone()
            if pending >= max_pending:
                raise LimitReached(
                    f"you have {pending} pending reminders, the limit; cancel some with cancel_reminder first"
                )
            if recent >= max_per_minute:
                retry = math.ceil(oldest_recent + 60 - now)
                raise LimitReached(
                    f"too many reminders: {recent} in the last minute (limit {max_per_minute}); try again in {retry} s"
                )
            load = inbox_loads(conn, [recipient]).get(recipient, 0)
            if load >= inbox_cap:
                raise LimitReached(
                    f"the inbox of {recipient} is full ({load:,} undelivered messages and reminders scheduled "
                    f"for it, the limit is {inbox_cap:,}); nothing was scheduled. Try again later."
                )
            cur = conn.execute(
                "INSERT INTO reminders (owner, recipient, body, due_at, created_at) VALUES (?, ?, ?, ?, ?)",
                (owner, recipient, body, due_at, now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self.db.write(tx)

    async def pending_of(self, owner: str) -> list[sqlite3.Row]:
        return await self.db.fetch_all(
            "SELECT * FROM reminders WHERE owner = ? AND state = 'pending' ORDER BY due_at, id", (owner,)
        )

    async def cancel(self, owner: str, reminder_id: int, now: float) -> None:
        """Cancel a pending reminder of `owner`'s; NotFound if it has none with that id."""

        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE reminders SET state = 'cancelled', resolved_at = ? "
                "WHERE id = ? AND owner = ? AND state = 'pending'",
                (now, reminder_id, owner),
            )
            if cur.rowcount != 1:
                raise NotFound(
                    f"no pending reminder {reminder_id} of yours; list_my_reminders shows the ones you can cancel"
                )

        await self.db.write(tx)

    async def next_due(self) -> float | None:
        value = await self.db.fetch_value("SELECT min(due_at) FROM reminders WHERE state = 'pending'")
        return None if value is None else float(value)

    async def fire_due(self, now: float, late_after: float, batch: int = 500) -> list[str]:
        """Turn due reminders into messages; returns the recipients to wake."""

        def tx(conn: sqlite3.Connection) -> list[str]:
            due = conn.execute(
                "SELECT * FROM reminders WHERE state = 'pending' AND due_at <= ? ORDER BY due_at, id LIMIT ?",
                (now, batch),
            ).fetchall()
            for reminder in due:
                cur = conn.execute(
                    "INSERT INTO messages (sender, body, kind, late, created_at) VALUES (?, ?, 'reminder', ?, ?)",
                    (reminder["owner"], reminder["body"], now - reminder["due_at"] > late_after, now),
                )
                conn.execute(
                    "INSERT INTO deliveries (message_id, recipient) VALUES (?, ?)",
                    (cur.lastrowid, reminder["recipient"]),
                )
                conn.execute(
                    "UPDATE reminders SET state = 'fired', resolved_at = ?, message_id = ? WHERE id = ?",
                    (now, cur.lastrowid, reminder["id"]),
                )
            return sorted({reminder["recipient"] for reminder in due})

        return await self.db.write(tx)
