"""The audit trail: who did what to which request or question, and when. Rows are only added."""

from __future__ import annotations

import sqlite3
from typing import Final

from pydantic import BaseModel

from .clock import iso
from .db import Database

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
