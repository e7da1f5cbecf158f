"""The broker's store on sqlite (store.py has the contract): one writer, each method one job on the
database's thread. The search language is search_query.py's, written as an FTS5 query."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Final

import anyio

from hyperhive.servers.broker import search_query
from hyperhive.servers.broker.store import (
    MARK_END,
    MARK_START,
    SNIPPET_TOKENS,
    BrokerStore,
    Claimed,
    NewMessage,
    ReminderStore,
    SearchOrder,
    all_inboxes_full,
    no_such_reminder,
    not_leased,
    not_yours,
    reminder_inbox_full,
    reminders_too_fast,
    search_too_slow,
    too_many_reminders,
    unknown_listed_thread,
    unknown_reply_target,
    unknown_thread_message,
)
from hyperhive.servers.common.db import Database, placeholders
from hyperhive.servers.common.storage import Row

MIGRATIONS: Final = [
    """
    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after retention
        sender      TEXT NOT NULL,
        body        TEXT NOT NULL,
        kind        TEXT NOT NULL DEFAULT 'message' CHECK (kind IN ('message', 'reminder', 'event')),
        event       TEXT,                               -- JSON of the helper event, kind = 'event'
        in_reply_to INTEGER,                            -- may point at a message retention removed
        thread_id   INTEGER,                            -- the thread's first message; NULL on that one
        broadcast   INTEGER NOT NULL DEFAULT 0,
        late        INTEGER NOT NULL DEFAULT 0,         -- a reminder fired after its time
        created_at  REAL NOT NULL
    );
    CREATE INDEX messages_thread ON messages (thread_id) WHERE thread_id IS NOT NULL;
    CREATE INDEX messages_sender ON messages (sender, id);
    CREATE INDEX messages_created ON messages (created_at);

    CREATE TABLE deliveries (
        message_id   INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        recipient    TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'leased', 'delivered')),
        lease_until  REAL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL,
        PRIMARY KEY (recipient, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_open ON deliveries (recipient, message_id) WHERE state != 'delivered';
    CREATE INDEX deliveries_message ON deliveries (message_id);
    CREATE INDEX deliveries_done ON deliveries (delivered_at) WHERE state = 'delivered';

    CREATE TABLE reminders (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        owner       TEXT NOT NULL,
        recipient   TEXT NOT NULL,
        body        TEXT NOT NULL,
        due_at      REAL NOT NULL,
        created_at  REAL NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'fired', 'cancelled')),
        resolved_at REAL,
        message_id  INTEGER
    );
    CREATE INDEX reminders_due ON reminders (due_at) WHERE state = 'pending';
    CREATE INDEX reminders_owner ON reminders (owner, created_at);
    """,
    # The inbox cap counts reminders scheduled for an inbox as already in it.
    "CREATE INDEX reminders_recipient ON reminders (recipient) WHERE state = 'pending';",
    # Full-text search (search_messages): an external-content FTS5 index over the messages' bodies
    # and senders, kept in step by triggers (so retention's deletes leave the index too), and built
    # once from the rows already stored.
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5 (
        body, sender, content = 'messages', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, body, sender) VALUES (new.id, new.body, new.sender);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body, sender) VALUES ('delete', old.id, old.body, old.sender);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, sender ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body, sender) VALUES ('delete', old.id, old.body, old.sender);
        INSERT INTO messages_fts (rowid, body, sender) VALUES (new.id, new.body, new.sender);
    END;
    INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
    """,
]

# An inbox's open deliveries. INDEXED BY, because without statistics sqlite prefers the primary
# key and walks the recipient's whole delivered history (30 days of it) to find the few open ones.
_OPEN: Final = "deliveries INDEXED BY deliveries_open"
# A delivery the recipient can take now: queued, or leased with the lease run out.
_AVAILABLE: Final = "state != 'delivered' AND (state = 'queued' OR lease_until <= :now)"
_VISIBLE: Final = (
    "(:everyone OR m.sender = :me OR EXISTS "
    "(SELECT 1 FROM deliveries v WHERE v.message_id = m.id AND v.recipient = :me))"
)


class SqliteBrokerStore(BrokerStore):
    """Each method is one job on the database's thread: one transaction, or one consistent read."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---------------------------------------------------------------------------------- sending
    async def insert_message(
        self,
        message: NewMessage,
        recipients: Sequence[str],
        now: float,
        *,
        inbox_cap: int | None,
        reply_visible_to: str | None,
    ) -> tuple[int, list[str], list[str]]:

        def tx(conn: sqlite3.Connection) -> tuple[int, list[str], list[str]]:
            thread_id = None
            if message.in_reply_to is not None:
                parent = conn.execute(
                    f"SELECT COALESCE(m.thread_id, m.id) FROM messages m WHERE m.id = :id AND {_VISIBLE}",
                    {"id": message.in_reply_to, "everyone": reply_visible_to is None, "me": reply_visible_to},
                ).fetchone()
                if parent is None:
                    raise unknown_reply_target(message.in_reply_to)
                thread_id = parent[0]
            full: list[str] = []
            if inbox_cap is not None:
                full = sorted(name for name, count in inbox_loads(conn, recipients).items() if count >= inbox_cap)
            deliver = [name for name in recipients if name not in full]
            if not deliver:
                assert inbox_cap is not None
                raise all_inboxes_full(full, inbox_cap)
            cur = conn.execute(
                "INSERT INTO messages (sender, body, kind, event, in_reply_to, thread_id, broadcast, late, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.sender,
                    message.body,
                    message.kind,
                    message.event,
                    message.in_reply_to,
                    thread_id,
                    message.broadcast,
                    message.late,
                    now,
                ),
            )
            message_id = cur.lastrowid
            assert message_id is not None
            conn.executemany(
                "INSERT INTO deliveries (message_id, recipient) VALUES (?, ?)",
                [(message_id, name) for name in deliver],
            )
            return message_id, deliver, full

        return await self.db.write(tx)

    # -------------------------------------------------------------------------------- receiving
    async def claim(self, recipient: str, limit: int, now: float, lease_until: float | None) -> Claimed:
        params = {
            "me": recipient,
            "now": now,
            "limit": limit,
            "state": "delivered" if lease_until is None else "leased",
            "lease": lease_until,
            "delivered": now if lease_until is None else None,
        }

        def tx(conn: sqlite3.Connection) -> Claimed:
            ids = sorted(
                row[0]
                for row in conn.execute(
                    "UPDATE deliveries SET state = :state, lease_until = :lease, delivered_at = :delivered, "
                    "attempts = attempts + 1 "
                    "WHERE recipient = :me AND message_id IN ("
                    f"  SELECT message_id FROM {_OPEN} WHERE recipient = :me AND {_AVAILABLE} "
                    "   ORDER BY message_id LIMIT :limit) "
                    "RETURNING message_id",
                    params,
                ).fetchall()
            )
            rows = (
                conn.execute(f"SELECT * FROM messages WHERE id IN ({placeholders(ids)}) ORDER BY id", ids).fetchall()
                if ids
                else []
            )
            queued, next_lease_end = conn.execute(
                f"SELECT count(*) FILTER (WHERE {_AVAILABLE}), "
                "min(lease_until) FILTER (WHERE state = 'leased' AND lease_until > :now) "
                f"FROM {_OPEN} WHERE recipient = :me AND state != 'delivered'",
                params,
            ).fetchone()
            return Claimed(rows, queued, next_lease_end)

        return await self.db.write(tx)

    async def unclaim(self, recipient: str, ids: Sequence[int]) -> None:

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE deliveries SET state = 'queued', lease_until = NULL, delivered_at = NULL, "
                f"attempts = attempts - 1 WHERE recipient = ? AND message_id IN ({placeholders(ids)})",
                [recipient, *ids],
            )

        await self.db.write(tx)

    async def ack(self, recipient: str, ids: Sequence[int], now: float) -> tuple[int, int]:

        def tx(conn: sqlite3.Connection) -> tuple[int, int]:
            states = dict(
                conn.execute(
                    f"SELECT message_id, state FROM deliveries WHERE recipient = ? "
                    f"AND message_id IN ({placeholders(ids)})",
                    [recipient, *ids],
                ).fetchall()
            )
            missing = [i for i in ids if i not in states]
            if missing:
                raise not_yours(missing)
            todo = [i for i, state in states.items() if state != "delivered"]
            if todo:
                conn.execute(
                    "UPDATE deliveries SET state = 'delivered', delivered_at = ?, lease_until = NULL "
                    f"WHERE recipient = ? AND message_id IN ({placeholders(todo)})",
                    [now, recipient, *todo],
                )
            return len(todo), len(states) - len(todo)

        return await self.db.write(tx)

    async def set_lease(self, recipient: str, ids: Sequence[int], lease_until: float | None) -> None:

        def tx(conn: sqlite3.Connection) -> None:
            leased = {
                row[0]
                for row in conn.execute(
                    f"SELECT message_id FROM deliveries WHERE recipient = ? AND state = 'leased' "
                    f"AND message_id IN ({placeholders(ids)})",
                    [recipient, *ids],
                )
            }
            missing = [i for i in ids if i not in leased]
            if missing:
                raise not_leased(missing)
            state = "leased" if lease_until is not None else "queued"
            conn.execute(
                f"UPDATE deliveries SET state = ?, lease_until = ? WHERE recipient = ? "
                f"AND message_id IN ({placeholders(ids)})",
                [state, lease_until, recipient, *ids],
            )

        await self.db.write(tx)

    async def counts(self, recipient: str, now: float) -> tuple[int, int]:
        row = await self.db.fetch_one(
            f"SELECT count(*) FILTER (WHERE {_AVAILABLE}), "
            "count(*) FILTER (WHERE state = 'leased' AND lease_until > :now) "
            f"FROM {_OPEN} WHERE recipient = :me AND state != 'delivered'",
            {"me": recipient, "now": now},
        )
        return (row[0], row[1]) if row else (0, 0)

    # ---------------------------------------------------------------------------------- reading
    async def thread(self, message_id: int, viewer: str | None) -> Sequence[Row]:
        visible = {"everyone": viewer is None, "me": viewer}

        def read(conn: sqlite3.Connection) -> Sequence[Row]:
            root = conn.execute(
                f"SELECT COALESCE(m.thread_id, m.id) FROM messages m WHERE m.id = :id AND {_VISIBLE}",
                {"id": message_id, **visible},
            ).fetchone()
            if root is None:
                raise unknown_thread_message(message_id)
            return conn.execute(
                "SELECT m.*, (SELECT group_concat(d.recipient, ',') FROM deliveries d "
                "WHERE d.message_id = m.id) AS recipients "
                f"FROM messages m WHERE (m.id = :root OR m.thread_id = :root) AND {_VISIBLE} ORDER BY m.id",
                {"root": root[0], **visible},
            ).fetchall()

        return await self.db.read(read)

    async def list_messages(
        self, agent: str | None, since: int | None, thread: int | None, limit: int
    ) -> tuple[Sequence[Row], Sequence[Row]]:
        def read(conn: sqlite3.Connection) -> tuple[Sequence[Row], Sequence[Row]]:
            root = thread
            if thread is not None:
                found = conn.execute("SELECT COALESCE(thread_id, id) FROM messages WHERE id = ?", (thread,)).fetchone()
                if found is None:
                    raise unknown_listed_thread(thread)
                root = found[0]
            # Only the filters given, each in a form its index serves ("x IS NULL OR ..." defeats them).
            where = []
            if agent is not None:
                where.append(
                    "m.id IN (SELECT id FROM messages WHERE sender = :agent "
                    "UNION SELECT message_id FROM deliveries WHERE recipient = :agent)"
                )
            if since is not None:
                where.append("m.id > :since")
            if root is not None:
                where.append("(m.id = :thread OR m.thread_id = :thread)")
            rows = conn.execute(
                "SELECT m.*, COALESCE(m.thread_id, m.id) AS thread_root FROM messages m "
                + ("WHERE " + " AND ".join(where) if where else "")
                + f" ORDER BY m.id {'ASC' if since is not None else 'DESC'} LIMIT :limit",
                {"agent": agent, "since": since, "thread": root, "limit": limit},
            ).fetchall()
            rows.sort(key=lambda row: int(row["id"]))
            ids = [row["id"] for row in rows]
            deliveries = (
                conn.execute(
                    f"SELECT * FROM deliveries WHERE message_id IN ({placeholders(ids)}) ORDER BY recipient",
                    ids,
                ).fetchall()
                if ids
                else []
            )
            return rows, deliveries

        return await self.db.read(read)

    async def search(
        self,
        query: search_query.Query,
        viewer: str | None,
        agent: str | None,
        limit: int,
        order: SearchOrder,
        timeout: float,
    ) -> tuple[Sequence[Row], Sequence[Row]]:
        match = search_query.as_fts5(query)
        params = {"query": match, "everyone": viewer is None, "me": viewer, "agent": agent, "limit": limit}
        where = ["messages_fts MATCH :query", _VISIBLE]
        if agent is not None:
            where.append(
                "(m.sender = :agent OR EXISTS (SELECT 1 FROM deliveries a WHERE a.message_id = m.id "
                "AND a.recipient = :agent))"
            )
        order_by = "messages_fts.rank, m.id DESC" if order == "relevance" else "m.id DESC"
        sql = (
            "SELECT m.*, COALESCE(m.thread_id, m.id) AS thread_root, "
            f"snippet(messages_fts, -1, '{MARK_START}', '{MARK_END}', '…', {SNIPPET_TOKENS}) AS snippet "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            f"WHERE {' AND '.join(where)} ORDER BY {order_by} LIMIT :limit"
        )

        def read(conn: sqlite3.Connection) -> tuple[Sequence[Row], Sequence[Row]]:
            deadline = time.monotonic() + timeout
            # The reader serves every read of the broker: a costly query is cut off, not waited out.
            conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as e:
                if str(e) == "interrupted":
                    raise search_too_slow(query.text, timeout) from None
                raise  # the query was written by search_query.as_fts5: a failure here is a bug
            finally:
                conn.set_progress_handler(None, 0)
            ids = [row["id"] for row in rows]
            deliveries = (
                conn.execute(
                    "SELECT d.* FROM deliveries d JOIN messages m ON m.id = d.message_id "
                    f"WHERE d.message_id IN ({placeholders(ids)}) AND (? OR d.recipient = ? OR m.sender = ?) "
                    "ORDER BY d.recipient",
                    [*ids, viewer is None, viewer, viewer],
                ).fetchall()
                if ids
                else []
            )
            return rows, deliveries

        return await self.db.read(read)

    async def peek(self, recipient: str, limit: int) -> Sequence[Row]:
        return await self.db.fetch_all(
            "SELECT m.*, COALESCE(m.thread_id, m.id) AS thread_root, d.state, d.lease_until "
            "FROM deliveries AS d INDEXED BY deliveries_open JOIN messages m ON m.id = d.message_id "
            "WHERE d.recipient = ? AND d.state != 'delivered' ORDER BY d.message_id LIMIT ?",
            (recipient, limit),
        )

    async def stats(self, since: float) -> dict[str, tuple[int, int, int, int]]:

        def read(conn: sqlite3.Connection) -> dict[str, tuple[int, int, int, int]]:
            result: dict[str, list[int]] = {}
            for name, count in conn.execute(
                "SELECT recipient, count(*) FROM deliveries WHERE state != 'delivered' GROUP BY recipient"
            ):
                result.setdefault(name, [0, 0, 0, 0])[0] = count
            for name, count, reminders in conn.execute(
                "SELECT d.recipient, count(*), sum(m.kind = 'reminder') FROM deliveries d "
                "JOIN messages m ON m.id = d.message_id "
                "WHERE d.state = 'delivered' AND d.delivered_at > ? GROUP BY d.recipient",
                (since,),
            ):
                counts = result.setdefault(name, [0, 0, 0, 0])
                counts[1], counts[3] = count, reminders
            owners = "SELECT owner, count(*) FROM reminders WHERE state = 'pending' GROUP BY owner"
            for name, count in conn.execute(owners):
                result.setdefault(name, [0, 0, 0, 0])[2] = count
            return {name: (c[0], c[1], c[2], c[3]) for name, c in result.items()}

        return await self.db.read(read)

    # -------------------------------------------------------------------------------- retention
    async def purge(self, before: float, batch: int = 5000) -> int:

        def tx(conn: sqlite3.Connection) -> int:
            statements = (
                "DELETE FROM deliveries WHERE (recipient, message_id) IN (SELECT recipient, message_id "
                "FROM deliveries WHERE state = 'delivered' AND delivered_at < ? LIMIT ?)",
                "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m WHERE m.created_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id) LIMIT ?)",
                "DELETE FROM reminders WHERE id IN (SELECT id FROM reminders WHERE state != 'pending' "
                "AND resolved_at < ? LIMIT ?)",
            )
            return sum(conn.execute(sql, (before, batch)).rowcount for sql in statements)

        return await self.db.write(tx)

    async def watch(self, wake: Callable[[Sequence[str] | None], None], poke: Callable[[], None]) -> None:
        await anyio.sleep_forever()  # a sqlite file has one broker process: it hears itself


class SqliteReminderStore(ReminderStore):
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
        def tx(conn: sqlite3.Connection) -> int:
            pending, recent, oldest_recent = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE created_at > :since), "
                "min(created_at) FILTER (WHERE created_at > :since) FROM reminders WHERE owner = :owner",
                {"since": now - 60, "owner": owner},
            ).fetchone()
            if pending >= max_pending:
                raise too_many_reminders(pending)
            if recent >= max_per_minute:
                raise reminders_too_fast(recent, max_per_minute, oldest_recent, now)
            load = inbox_loads(conn, [recipient]).get(recipient, 0)
            if load >= inbox_cap:
                raise reminder_inbox_full(recipient, load, inbox_cap)
            cur = conn.execute(
                "INSERT INTO reminders (owner, recipient, body, due_at, created_at) VALUES (?, ?, ?, ?, ?)",
                (owner, recipient, body, due_at, now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self.db.write(tx)

    async def pending_of(self, owner: str) -> Sequence[Row]:
        return await self.db.fetch_all(
            "SELECT * FROM reminders WHERE owner = ? AND state = 'pending' ORDER BY due_at, id", (owner,)
        )

    async def cancel(self, owner: str, reminder_id: int, now: float) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE reminders SET state = 'cancelled', resolved_at = ? "
                "WHERE id = ? AND owner = ? AND state = 'pending'",
                (now, reminder_id, owner),
            )
            if cur.rowcount != 1:
                raise no_such_reminder(reminder_id)

        await self.db.write(tx)

    async def next_due(self) -> float | None:
        value = await self.db.fetch_value("SELECT min(due_at) FROM reminders WHERE state = 'pending'")
        return None if value is None else float(value)

    async def fire_due(self, now: float, late_after: float, batch: int = 500) -> list[str]:
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


def inbox_loads(conn: sqlite3.Connection, recipients: Sequence[str]) -> dict[str, int]:
    """Per recipient: undelivered messages plus the reminders scheduled for it. The inbox cap
    counts both, so a reminder that comes due never finds its inbox full."""
    marks = placeholders(recipients)
    rows = conn.execute(
        f"SELECT recipient, count(*) FROM (SELECT recipient FROM {_OPEN} WHERE state != 'delivered' "
        f"AND recipient IN ({marks}) UNION ALL SELECT recipient FROM reminders INDEXED BY reminders_recipient "
        f"WHERE state = 'pending' AND recipient IN ({marks})) GROUP BY recipient",
        [*recipients, *recipients],
    )
    return {name: count for name, count in rows}


def check_fts5() -> None:
    """Raise RuntimeError, saying what to do, if this Python's sqlite lacks FTS5 (message search needs it)."""
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("CREATE VIRTUAL TABLE probe USING fts5 (body)")
    except sqlite3.OperationalError as e:
        raise RuntimeError(
            f"this Python's sqlite ({sqlite3.sqlite_version}) has no FTS5 ({e}), which the broker needs for "
            "search_messages: run hyperhive on a Python whose sqlite3 is built with FTS5 (Debian's, Ubuntu's, "
            "Nix's and python.org's are)"
        ) from None
