"""The approvals store on sqlite (store.py has the contract): one writer, each method one job on the
database's thread. Its MIGRATIONS are the history of every sqlite file made so far: only ever added to."""

from __future__ import annotations

import json
import sqlite3
from functools import partial
from typing import Final, Literal

from hyperhive.servers.approvals.store import (
    ApprovalStore,
    Kind,
    RequestRow,
    already_resolved,
    asks_already,
    no_such_request,
    requested_detail,
    too_many_waiting,
)
from hyperhive.servers.common import audit
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.names import SYSTEM
from hyperhive.servers.common.outbox import OUTBOX_SCHEMA, queue_event

MIGRATIONS: Final = [
    """
    CREATE TABLE requests (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        kind         TEXT NOT NULL CHECK (kind IN ('apply_commit', 'spawn', 'spawn_commit')),
        agent        TEXT NOT NULL,
        commit_sha   TEXT,                 -- the proposed commit, for apply_commit and spawn_commit
        diff         TEXT NOT NULL,        -- what approving changes, as the operator reviews it
        requested_by TEXT NOT NULL,
        requested_at REAL NOT NULL,
        state        TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'approving', 'applied', 'denied', 'failed')),
        resolved_by  TEXT,
        resolved_at  REAL,
        note         TEXT,                 -- the operator's, on a denial
        error        TEXT                  -- why carrying it out failed
    );
    CREATE INDEX requests_state ON requests (state, id);
    CREATE INDEX requests_requester ON requests (requested_by, id);
    """
    + OUTBOX_SCHEMA
    + audit.AUDIT_SCHEMA,
    # The applied config's sha the diff was made against (NULL: there was none, a new agent);
    # approving applies the request only while it is still that. NULL in an apply_commit made
    # before this column was: not checked.
    # widenings: a JSON list of what the new config may do that the old could not.
    """
    ALTER TABLE requests ADD COLUMN base_sha TEXT;
    ALTER TABLE requests ADD COLUMN widenings TEXT NOT NULL DEFAULT '[]';
    """,
    # reason: the requester's why; message: the proposed commit's message. NULL on older requests.
    """
    ALTER TABLE requests ADD COLUMN reason TEXT;
    ALTER TABLE requests ADD COLUMN message TEXT;
    """,
]


class SqliteApprovalStore(ApprovalStore):
    """Each method is one job on the database's thread: one transaction, or one consistent read."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------------------------ reading
    async def get(self, request_id: int) -> RequestRow:
        return await self.db.read(partial(_row, request_id=request_id))

    async def requested_by(self, requester: str, limit: int) -> list[RequestRow]:
        return await self._rows(
            "requested_by = ? ORDER BY state NOT IN ('pending', 'approving'), id DESC LIMIT ?", (requester, limit)
        )

    async def open_requests(self) -> list[RequestRow]:
        return await self._rows("state IN ('pending', 'approving') ORDER BY id")

    async def resolved(self, limit: int) -> list[RequestRow]:
        return await self._rows("state IN ('applied', 'denied', 'failed') ORDER BY id DESC LIMIT ?", (limit,))

    async def approving(self) -> list[RequestRow]:
        return await self._rows("state = 'approving' ORDER BY id")

    async def _rows(self, where: str, params: tuple[object, ...] = ()) -> list[RequestRow]:
        rows = await self.db.fetch_all(f"SELECT * FROM requests WHERE {where}", params)
        return [RequestRow.of(row) for row in rows]

    # ------------------------------------------------------------------------------------ writing
    async def add(
        self,
        kind: Kind,
        agent: str,
        commit_sha: str | None,
        base_sha: str | None,
        diff: str,
        widenings: list[str],
        reason: str,
        message: str | None,
        requester: str,
        now: float,
        max_pending: int,
    ) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            # Both checks in the insert's transaction, so two identical requests at once make one.
            # Asked against another base (the applied config moved), it is a new request: the old went stale.
            same = conn.execute(
                "SELECT * FROM requests WHERE state IN ('pending', 'approving') "
                "AND agent = ? AND kind = ? AND commit_sha IS ? AND base_sha IS ? ORDER BY id LIMIT 1",
                (agent, kind, commit_sha, base_sha),
            ).fetchone()
            if same is not None:
                raise asks_already(same["id"], same["state"])
            waiting = conn.execute("SELECT count(*) FROM requests WHERE state = 'pending'").fetchone()[0]
            if waiting >= max_pending:
                raise too_many_waiting(waiting)
            cur = conn.execute(
                "INSERT INTO requests (kind, agent, commit_sha, base_sha, diff, widenings, reason, message, "
                "requested_by, requested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, agent, commit_sha, base_sha, diff, json.dumps(widenings), reason, message, requester, now),
            )
            assert cur.lastrowid is not None
            detail = requested_detail(kind, agent, commit_sha)
            audit.record(conn, cur.lastrowid, "requested", requester, now, detail)
            return cur.lastrowid

        return await self.db.write(tx)

    async def claim(self, request_id: int, operator: str, now: float) -> RequestRow:
        def tx(conn: sqlite3.Connection) -> RequestRow:
            cur = conn.execute(
                "UPDATE requests SET state = 'approving', resolved_by = ?, resolved_at = ? "
                "WHERE id = ? AND state = 'pending'",
                (operator, now, request_id),
            )
            row = _row(conn, request_id)
            if cur.rowcount == 0:
                raise already_resolved(row)
            audit.record(conn, request_id, "approved", operator, now)
            return row

        return await self.db.write(tx)

    async def deny(self, request_id: int, operator: str, note: str, now: float) -> RequestRow:
        def tx(conn: sqlite3.Connection) -> RequestRow:
            cur = conn.execute(
                "UPDATE requests SET state = 'denied', resolved_by = ?, resolved_at = ?, note = ? "
                "WHERE id = ? AND state = 'pending'",
                (operator, now, note, request_id),
            )
            row = _row(conn, request_id)
            if cur.rowcount == 0:
                raise already_resolved(row)
            audit.record(conn, request_id, "denied", operator, now, note)
            queue_event(conn, row.requested_by, row.resolved_event(), now)
            return row

        return await self.db.write(tx)

    async def finish(
        self, request_id: int, outcome: Literal["applied", "failed"], error: str | None, now: float
    ) -> RequestRow:
        def tx(conn: sqlite3.Connection) -> RequestRow:
            cur = conn.execute(
                "UPDATE requests SET state = ?, error = ? WHERE id = ? AND state = 'approving'",
                (outcome, error, request_id),
            )
            row = _row(conn, request_id)
            if cur.rowcount == 1:  # recovery and an approval may both try; the first one records it
                audit.record(conn, request_id, outcome, SYSTEM, now, error)
                queue_event(conn, row.requested_by, row.resolved_event(), now)
            return row

        return await self.db.write(tx)


def _row(conn: sqlite3.Connection, request_id: int) -> RequestRow:
    row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise no_such_request(request_id)
    return RequestRow.of(row)
