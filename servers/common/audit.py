"""The audit trails: who did what to which request, question or agent, when, and how it ended.
Rows are only added."""

from __future__ import annotations

import sqlite3
from typing import Final, Literal

from pydantic import BaseModel

from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.db import Database

AUDIT_SCHEMA: Final = """
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    subject INTEGER NOT NULL,   -- the request's or question's id
    action  TEXT NOT NULL,
    actor   TEXT NOT NULL,      -- a principal, or "system" for what the server did on its own
    at      REAL NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_subject ON audit (subject, id);
"""


class AuditEntry(BaseModel):
    subject: int
    action: str
    actor: str
    at: str  # ISO 8601 UTC
    detail: str | None = None


def record(
    conn: sqlite3.Connection, subject: int, action: str, actor: str, at: float, detail: str | None = None
) -> None:
    """Add an entry inside the caller's transaction, so the change and its record go together."""
    conn.execute(
        "INSERT INTO audit (subject, action, actor, at, detail) VALUES (?, ?, ?, ?, ?)",
        (subject, action, actor, at, detail),
    )


async def entries(db: Database, subjects: list[int]) -> dict[int, list[AuditEntry]]:
    """The trail of each subject, oldest first."""
    if not subjects:
        return {}
    marks = ", ".join("?" for _ in subjects)
    rows = await db.fetch_all(f"SELECT * FROM audit WHERE subject IN ({marks}) ORDER BY id", subjects)
    trail: dict[int, list[AuditEntry]] = {subject: [] for subject in subjects}
    for row in rows:
        trail[row["subject"]].append(
            AuditEntry(subject=row["subject"], action=row["action"], actor=row["actor"], at=iso(row["at"]),
                       detail=row["detail"])
        )  # fmt: skip
    return trail


# ------------------------------------------------------------------------------ actions on agents
# The same idea for servers whose subjects are named (the lifecycle server's agents), with the
# outcome of each action, refusals and failures included.

ACTION_AUDIT_SCHEMA: Final = """
CREATE TABLE action_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,      -- what was acted on (an agent's name, '*' for all of them)
    action  TEXT NOT NULL,      -- the tool
    actor   TEXT NOT NULL,      -- the caller's principal
    at      REAL NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed', 'interrupted')),
    detail  TEXT                -- the arguments that matter, or why it was refused or failed
);
CREATE INDEX action_audit_subject ON action_audit (subject, id);
"""

Outcome = Literal["ok", "refused", "failed", "interrupted"]
DETAIL_MAX = 2000  # characters of a detail kept: a refusal's reason, not a whole file


class ActionEntry(BaseModel):
    id: int
    at: str  # ISO 8601 UTC
    actor: str
    action: str
    agent: str
    outcome: Outcome
    detail: str | None = None


async def record_action(
    db: Database, subject: str, action: str, actor: str, at: float, outcome: Outcome, detail: str | None
) -> None:
    await db.write(
        lambda conn: conn.execute(
            "INSERT INTO action_audit (subject, action, actor, at, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (subject[:200], action, actor, at, outcome, detail[:DETAIL_MAX] if detail else None),
        )
    )


async def actions(db: Database, limit: int, subject: str | None = None) -> list[ActionEntry]:
    """The latest `limit` entries, newest first, of one subject or all."""
    where, args = ("WHERE subject = ?", [subject]) if subject is not None else ("", [])
    rows = await db.fetch_all(f"SELECT * FROM action_audit {where} ORDER BY id DESC LIMIT ?", [*args, limit])
    return [
        ActionEntry(id=row["id"], at=iso(row["at"]), actor=row["actor"], action=row["action"], agent=row["subject"],
                    outcome=row["outcome"], detail=row["detail"])
        for row in rows
    ]  # fmt: skip
