"""The approvals server's sqlite: requests, their audit trail, events to deliver.

A request is `pending` until the operator acts. Approving claims it (`approving`) in one
transaction, so two approvals, or an approval racing a denial, resolve it once; carrying it out
then ends it `applied` or `failed`. A request still `approving` after a crash is carried out (or
found done) at start-up. Each change, its audit entry and its event commit together.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Final, Literal

from hyperhive.servers.common import audit
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.events import ApprovalResolved
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
]

Kind = Literal["apply_commit", "spawn", "spawn_commit"]
State = Literal["pending", "approving", "applied", "denied", "failed"]


@dataclass(frozen=True, slots=True)
class RequestRow:
    id: int
    kind: Kind
    agent: str
    commit_sha: str | None
    diff: str
    requested_by: str
    requested_at: float
    state: State
    resolved_by: str | None
    resolved_at: float | None
    note: str | None
    error: str | None
    base_sha: str | None
    widenings: str  # JSON list


class NotPending(Exception):
    """The request was resolved already (or is being carried out)."""

    def __init__(self, row: RequestRow) -> None:
        super().__init__(row.state)
        self.row = row


class Unknown(Exception):
    """No such request."""


@dataclass(frozen=True, slots=True)
class QueueFull:
    waiting: int


class ApprovalStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------------------------ reading
    async def get(self, request_id: int) -> RequestRow:
        row = await self.db.fetch_one("SELECT * FROM requests WHERE id = ?", (request_id,))
        if row is None:
            raise Unknown(request_id)
        return RequestRow(**dict(row))

    async def where(self, sql: str, params: tuple[object, ...] = ()) -> list[RequestRow]:
        """Requests matching a WHERE clause of ours (never a caller's text)."""
        rows = await self.db.fetch_all(f"SELECT * FROM requests WHERE {sql}", params)
        return [RequestRow(**dict(row)) for row in rows]

    # ------------------------------------------------------------------------------------ writing
    async def add(
        self,
        kind: Kind,
        agent: str,
        commit_sha: str | None,
        base_sha: str | None,
        diff: str,
        widenings: list[str],
        requester: str,
        now: float,
        max_pending: int,
    ) -> int | RequestRow | QueueFull:
        """The new request's id; the open request that asks the same already; or QueueFull."""

        def tx(conn: sqlite3.Connection) -> int | RequestRow | QueueFull:
            # Both checks in the insert's transaction, so two identical requests at once make one.
            # Asked against another base (the applied config moved), it is a new request: the old went stale.
            same = conn.execute(
                "SELECT * FROM requests WHERE state IN ('pending', 'approving') "
                "AND agent = ? AND kind = ? AND commit_sha IS ? AND base_sha IS ? ORDER BY id LIMIT 1",
                (agent, kind, commit_sha, base_sha),
            ).fetchone()
            if same is not None:
                return RequestRow(**dict(same))
            waiting = conn.execute("SELECT count(*) FROM requests WHERE state = 'pending'").fetchone()[0]
            if waiting >= max_pending:
                return QueueFull(waiting)
            cur = conn.execute(
                "INSERT INTO requests (kind, agent, commit_sha, base_sha, diff, widenings, requested_by, requested_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, agent, commit_sha, base_sha, diff, json.dumps(widenings), requester, now),
            )
            assert cur.lastrowid is not None
            detail = f"{kind} {agent}" + (f" at {commit_sha}" if commit_sha else "")
            audit.record(conn, cur.lastrowid, "requested", requester, now, detail)
            return cur.lastrowid

        return await self.db.write(tx)

    async def claim(self, request_id: int, operator: str, now: float) -> RequestRow:
        """pending -> approving, by `operator`: exactly one caller wins. NotPending for the others."""

        def tx(conn: sqlite3.Connection) -> RequestRow:
            cur = conn.execute(
                "UPDATE requests SET state = 'approving', resolved_by = ?, resolved_at = ? "
                "WHERE id = ? AND state = 'pending'",
                (operator, now, request_id),
            )
            row = _row(conn, request_id)
            if cur.rowcount == 0:
                raise NotPending(row)
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
                raise NotPending(row)
            audit.record(conn, request_id, "denied", operator, now, note)
            queue_event(conn, row.requested_by, _event(row), now)
            return row

        return await self.db.write(tx)

    async def finish(
        self, request_id: int, outcome: Literal["applied", "failed"], error: str | None, now: float
    ) -> RequestRow:
        """approving -> applied | failed, with its audit entry and the requester's event."""

        def tx(conn: sqlite3.Connection) -> RequestRow:
            cur = conn.execute(
                "UPDATE requests SET state = ?, error = ? WHERE id = ? AND state = 'approving'",
                (outcome, error, request_id),
            )
            row = _row(conn, request_id)
            if cur.rowcount == 1:  # recovery and an approval may both try; the first one records it
                audit.record(conn, request_id, outcome, "system", now, error)
                queue_event(conn, row.requested_by, _event(row), now)
            return row

        return await self.db.write(tx)


def _row(conn: sqlite3.Connection, request_id: int) -> RequestRow:
    row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise Unknown(request_id)
    return RequestRow(**dict(row))


def _event(row: RequestRow) -> ApprovalResolved:
    assert row.state in ("applied", "denied", "failed") and row.resolved_by is not None
    return ApprovalResolved(
        request_id=row.id,
        request="apply_commit" if row.kind == "apply_commit" else "spawn",
        agent=row.agent,
        outcome=row.state,
        by=row.resolved_by,
        note=row.note,
        error=row.error,
    )
