"""The operator store on sqlite (store.py has the contract): one writer, each method one job on the
database's thread."""

from __future__ import annotations

import json
import sqlite3
from typing import Final, Literal

from hyperhive.servers.common import audit
from hyperhive.servers.common.audit import AUDIT_SCHEMA
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.names import OPERATOR, SYSTEM
from hyperhive.servers.common.outbox import OUTBOX_SCHEMA, queue_event
from hyperhive.servers.operator.store import (
    EXPIRED,
    NewQuestion,
    QuestionRow,
    QuestionStore,
    Resolution,
    tells_asker,
    too_many_pending,
)

MIGRATIONS: Final = [
    """
    CREATE TABLE questions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        asker       TEXT NOT NULL,
        target      TEXT NOT NULL,                      -- 'operator', or the agent asked (ask_agent)
        question    TEXT NOT NULL,
        options     TEXT,                               -- JSON list of strings; NULL: free text
        multi       INTEGER NOT NULL DEFAULT 0,
        asked_at    REAL NOT NULL,
        expires_at  REAL NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'answered', 'cancelled', 'expired')),
        answer      TEXT,                               -- the answer, '[cancelled]' or '[expired]'
        resolved_by TEXT,                               -- a principal, or 'system' for an expiry
        resolved_at REAL
    );
    CREATE INDEX questions_due ON questions (expires_at) WHERE state = 'pending';
    CREATE INDEX questions_target ON questions (target, id) WHERE state = 'pending';
    CREATE INDEX questions_asker ON questions (asker, id);
    CREATE INDEX questions_resolved ON questions (resolved_at, id) WHERE state != 'pending';
    """
    + OUTBOX_SCHEMA
    + AUDIT_SCHEMA,
    # the message the asker says a question is about (ask_operator's `about`): its thread opens beside it
    "ALTER TABLE questions ADD COLUMN about INTEGER;",
]


class SqliteQuestionStore(QuestionStore):
    """Each method is one job on the database's thread: one transaction, or one consistent read."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -------------------------------------------------------------------------------- asking
    async def add(self, new: NewQuestion, now: float, *, max_pending: int) -> int:

        def tx(conn: sqlite3.Connection) -> int:
            # Counted in the same transaction as the insert, so parallel asks cannot pass the cap together.
            pending = conn.execute(
                "SELECT count(*) FROM questions WHERE asker = ? AND state = 'pending'", (new.asker,)
            ).fetchone()[0]
            if pending >= max_pending:
                raise too_many_pending(pending)
            cur = conn.execute(
                "INSERT INTO questions (asker, target, question, options, multi, asked_at, expires_at, about) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.asker,
                    new.target,
                    new.question,
                    json.dumps(new.options) if new.options is not None else None,
                    new.multi,
                    now,
                    new.expires_at,
                    new.about,
                ),
            )
            question_id = cur.lastrowid
            assert question_id is not None
            audit.record(conn, question_id, "asked", new.asker, now, f"to {new.target}")
            if new.target != OPERATOR:  # the operator reads pending_questions; an agent reads its inbox
                queue_event(conn, new.target, new.asked_event(question_id), now)
            return question_id

        return await self.db.write(tx)

    # ----------------------------------------------------------------------------- resolving
    async def resolve(
        self, question_id: int, state: Literal["answered", "cancelled"], answer: str, actor: str, now: float
    ) -> Resolution:

        def tx(conn: sqlite3.Connection) -> Resolution:
            _expire(conn, now, only=question_id)
            changed = conn.execute(
                "UPDATE questions SET state = ?, answer = ?, resolved_by = ?, resolved_at = ? "
                "WHERE id = ? AND state = 'pending' RETURNING *",
                (state, answer, actor, now, question_id),
            ).fetchone()
            if changed is None:
                return Resolution(QuestionRow.of(_row(conn, question_id)), won=False)
            row = QuestionRow.of(changed)
            audit.record(conn, question_id, state, actor, now, answer if state == "answered" else None)
            if tells_asker(state, actor, row):
                _tell_asker(conn, row, now)
            return Resolution(row, won=True)

        return await self.db.write(tx)

    async def expire_due(self, now: float, batch: int = 500) -> int:
        return await self.db.write(lambda conn: len(_expire(conn, now, batch=batch)))

    async def next_deadline(self) -> float | None:
        value = await self.db.fetch_value("SELECT min(expires_at) FROM questions WHERE state = 'pending'")
        return None if value is None else float(value)

    # ------------------------------------------------------------------------------- reading
    async def get(self, question_id: int) -> QuestionRow | None:
        row = await self.db.fetch_one("SELECT * FROM questions WHERE id = ?", (question_id,))
        return None if row is None else QuestionRow.of(row)

    async def asked_by(self, asker: str, resolved_limit: int) -> list[QuestionRow]:

        def read(conn: sqlite3.Connection) -> list[QuestionRow]:
            pending = conn.execute(
                "SELECT * FROM questions WHERE asker = ? AND state = 'pending' ORDER BY id", (asker,)
            ).fetchall()
            resolved = conn.execute(
                "SELECT * FROM questions WHERE asker = ? AND state != 'pending' ORDER BY id DESC LIMIT ?",
                (asker, resolved_limit),
            ).fetchall()
            return [QuestionRow.of(row) for row in (*pending, *resolved)]

        return await self.db.read(read)

    async def pending_for(self, target: str) -> list[QuestionRow]:
        rows = await self.db.fetch_all(
            "SELECT * FROM questions WHERE target = ? AND state = 'pending' ORDER BY id", (target,)
        )
        return [QuestionRow.of(row) for row in rows]

    async def resolved(self, limit: int) -> list[QuestionRow]:
        rows = await self.db.fetch_all(
            "SELECT * FROM questions WHERE state != 'pending' ORDER BY resolved_at DESC, id DESC LIMIT ?", (limit,)
        )
        return [QuestionRow.of(row) for row in rows]

    async def audit_trails(self, question_ids: list[int]) -> dict[int, list[audit.AuditEntry]]:
        return await audit.entries(self.db, question_ids)


def _expire(conn: sqlite3.Connection, now: float, *, only: int | None = None, batch: int = 500) -> list[QuestionRow]:
    """Inside a transaction: resolve due questions as '[expired]', with their events and audit entries."""
    if only is not None:
        which = "id = :only"
    else:  # the oldest deadlines first, a batch at a time, so one transaction stays short
        which = (
            "id IN (SELECT id FROM questions WHERE state = 'pending' AND expires_at <= :now "
            "ORDER BY expires_at LIMIT :n)"
        )
    rows = conn.execute(
        "UPDATE questions SET state = 'expired', answer = :answer, resolved_by = :system, resolved_at = :now "
        f"WHERE {which} AND state = 'pending' AND expires_at <= :now RETURNING *",
        {"answer": EXPIRED, "system": SYSTEM, "now": now, "only": only, "n": batch},
    ).fetchall()
    expired = [QuestionRow.of(row) for row in rows]
    for question in expired:
        audit.record(conn, question.id, "expired", SYSTEM, now)
        _tell_asker(conn, question, now)
    return expired


def _tell_asker(conn: sqlite3.Connection, question: QuestionRow, now: float) -> None:
    queue_event(conn, question.asker, question.answered_event(), now)


def _row(conn: sqlite3.Connection, question_id: int) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM questions WHERE id = ?", (question_id,)).fetchone()
    if row is None:  # questions are never deleted, and callers look a question up before resolving it
        raise LookupError(f"no question {question_id}")
    return row
