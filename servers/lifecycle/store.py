"""The lifecycle server's sqlite: what each agent is doing, their host uids, events to deliver (outbox)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Final, Literal

from hyperhive.servers.common.audit import ACTION_AUDIT_SCHEMA
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.outbox import OUTBOX_SCHEMA

MIGRATIONS: Final = [
    """
    CREATE TABLE agents (
        name           TEXT PRIMARY KEY,
        state          TEXT NOT NULL CHECK (state IN
                         ('stopped', 'starting', 'running', 'stopping', 'restarting', 'failed')),
        desired        TEXT NOT NULL DEFAULT 'stopped' CHECK (desired IN ('running', 'stopped')),
        started_at     REAL,
        stopped_at     REAL,
        last_exit_code INTEGER,
        last_signal    INTEGER,
        crashes        INTEGER NOT NULL DEFAULT 0,  -- in a row, since it last ran steadily
        restart_count  INTEGER NOT NULL DEFAULT 0,  -- restarts after crashes, ever
        applied_sha    TEXT,
        built_sha      TEXT,                         -- the applied sha its sandbox was built from
        built_version  TEXT,                         -- the hyperhive version it was built with
        created_at     REAL NOT NULL
    );
    -- Host uids, allocated once per name and kept when an agent is destroyed without purge.
    CREATE TABLE uids (
        name TEXT PRIMARY KEY,
        uid  INTEGER NOT NULL UNIQUE
    );
    """
    + OUTBOX_SCHEMA,
    # The proposed commit the applied config came from: lets the approvals server tell, after a
    # crash, whether an approved apply already happened.
    "ALTER TABLE agents ADD COLUMN applied_from TEXT;",
    # Who did what to which agent, when, and how it ended (the `audit` tool).
    ACTION_AUDIT_SCHEMA,
]


class UidsExhausted(Exception):
    """Every uid of the home's block is taken."""


State = Literal["stopped", "starting", "running", "stopping", "restarting", "failed"]


@dataclass(frozen=True, slots=True)
class AgentRow:
    name: str
    state: State
    desired: Literal["running", "stopped"]
    started_at: float | None
    stopped_at: float | None
    last_exit_code: int | None
    last_signal: int | None
    crashes: int
    restart_count: int
    applied_sha: str | None
    built_sha: str | None
    built_version: str | None
    created_at: float
    applied_from: str | None = None


class LifecycleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def agents(self) -> list[AgentRow]:
        rows = await self.db.fetch_all("SELECT * FROM agents ORDER BY name")
        return [AgentRow(**dict(row)) for row in rows]

    async def agent(self, name: str) -> AgentRow | None:
        row = await self.db.fetch_one("SELECT * FROM agents WHERE name = ?", (name,))
        return AgentRow(**dict(row)) if row else None

    async def add(self, name: str, now: float, applied_sha: str) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO agents (name, state, applied_sha, created_at) VALUES (?, 'stopped', ?, ?)",
                (name, applied_sha, now),
            )
        )

    async def update(self, name: str, **fields: Any) -> None:
        """Set columns of one agent (names are ours, values are parameters)."""
        assignments = ", ".join(f"{column} = ?" for column in fields)
        await self.db.write(
            lambda conn: conn.execute(f"UPDATE agents SET {assignments} WHERE name = ?", (*fields.values(), name))
        )

    async def remove(self, name: str, forget_uid: bool) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM agents WHERE name = ?", (name,))
            if forget_uid:
                conn.execute("DELETE FROM uids WHERE name = ?", (name,))

        await self.db.write(tx)

    async def uid(self, name: str) -> int | None:
        value = await self.db.fetch_value("SELECT uid FROM uids WHERE name = ?", (name,))
        return None if value is None else int(value)

    async def uid_of(self, name: str, base: int, taken: set[int], end: int = 2**31 - 1) -> int:
        """The uid recorded for `name`, or the lowest free one from `base` up (not in `taken`), below `end`."""

        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT uid FROM uids WHERE name = ?", (name,)).fetchone()
            if row:
                return int(row[0])
            used = {r[0] for r in conn.execute("SELECT uid FROM uids")} | taken
            uid = base
            while uid in used:
                uid += 1
            if uid >= end:
                raise UidsExhausted()
            conn.execute("INSERT INTO uids (name, uid) VALUES (?, ?)", (name, uid))
            return uid

        return await self.db.write(tx)
