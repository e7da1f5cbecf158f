"""The lifecycle server's sqlite: what each agent is doing, their host uids, their turn stats,
events to deliver (outbox)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Final, Literal

from hyperhive.servers.common.audit import ACTION_AUDIT_SCHEMA
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.events import HelperEvent
from hyperhive.servers.common.outbox import OUTBOX_SCHEMA, queue_event
from hyperhive.servers.lifecycle.models import AgentState, Turn, TurnRecord, TurnTotals

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
    # Turn stats, reported by each agent's harness over MCP (record_turn); kept for [harness]
    # stats_retention_days. `key` is the harness's id for a row: a retried report is stored once.
    """
    CREATE TABLE turns (
        id              INTEGER PRIMARY KEY,
        agent           TEXT NOT NULL,
        key             TEXT NOT NULL,
        kind            TEXT NOT NULL,              -- wake | compaction (the notes rewrite)
        started_at      REAL NOT NULL,
        ended_at        REAL NOT NULL,
        ok              INTEGER NOT NULL,
        terminal_reason TEXT,
        model           TEXT,
        model_turns     INTEGER NOT NULL,
        tool_calls      TEXT NOT NULL,              -- JSON: tool name -> calls
        tokens_in       INTEGER NOT NULL,
        tokens_out      INTEGER NOT NULL,
        cost_usd        REAL NOT NULL,
        messages        INTEGER NOT NULL,           -- messages the turn consumed
        inbox_depth     INTEGER NOT NULL,           -- messages waiting when it started
        error           TEXT,
        UNIQUE (agent, key)
    );
    CREATE INDEX turns_by_agent ON turns (agent, started_at);
    CREATE INDEX turns_by_start ON turns (started_at);
    """,
    # Why an agent cannot run as it is (its state dir past state_max), kept across restarts of the server.
    "ALTER TABLE agents ADD COLUMN problem TEXT;",
    # Budgets: the operator's daily budget for an agent (set_budget; wins over agent.toml's), and the
    # days an agent's budget_exhausted event was sent (once per agent per day).
    """
    CREATE TABLE budget_overrides (
        agent       TEXT PRIMARY KEY,
        usd_per_day REAL NOT NULL
    );
    CREATE TABLE budget_notices (
        agent TEXT NOT NULL,
        day   TEXT NOT NULL,                        -- YYYY-MM-DD, UTC
        PRIMARY KEY (agent, day)
    );
    """,
    # When the operator last resumed an agent paused for its own budget (resume_agent): its cost
    # before then no longer counts against its daily budget for the rest of that UTC day.
    """
    CREATE TABLE budget_resumes (
        agent      TEXT PRIMARY KEY,
        resumed_at REAL NOT NULL
    );
    """,
]


class UidsExhausted(Exception):
    """Every uid of the home's block is taken."""


State = AgentState  # the tools' own type (models.py): one definition


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
    problem: str | None = None  # why it cannot run as it is, if something other than its state says so


class LifecycleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def agents(self) -> list[AgentRow]:
        rows = await self.db.fetch_all("SELECT * FROM agents ORDER BY name")
        return [AgentRow(**dict(row)) for row in rows]

    async def agent(self, name: str) -> AgentRow | None:
        row = await self.db.fetch_one("SELECT * FROM agents WHERE name = ?", (name,))
        return AgentRow(**dict(row)) if row else None

    async def add(self, name: str, now: float, applied_sha: str, applied_from: str) -> None:
        """A new agent, stopped and meant to run, its config applied from proposed commit `applied_from`."""
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO agents (name, state, desired, applied_sha, applied_from, created_at) "
                "VALUES (?, 'stopped', 'running', ?, ?, ?)",
                (name, applied_sha, applied_from, now),
            )
        )

    # What an agent is doing, and what it should be doing. One method a change, each naming the
    # columns it sets: no caller can write a column (or a state) the rules do not name.
    async def want_running(self, name: str) -> None:
        """Asked to run (start, restart): a fresh run of crashes from here."""
        await self._set(name, "desired = 'running', crashes = 0")

    async def want_stopped(self, name: str) -> None:
        await self._set(name, "desired = 'stopped'")

    async def mark_changing(self, name: str, state: Literal["starting", "stopping"]) -> None:
        await self._set(name, "state = ?", state)

    async def mark_running(self, name: str, started_at: float) -> None:
        """Found running (a sandbox outlived the server)."""
        await self._set(name, "state = 'running', started_at = ?", started_at)

    async def mark_started(self, name: str, started_at: float, built_sha: str | None, built_version: str) -> None:
        """Started by us, its sandbox built from `built_sha` with hyperhive `built_version`."""
        await self._set(
            name,
            "state = 'running', started_at = ?, built_sha = ?, built_version = ?",
            started_at,
            built_sha,
            built_version,
        )

    async def mark_restarted(self, name: str, started_at: float) -> None:
        """Running again: the platform restarted it after a crash (systemd's Restart=on-failure)."""
        await self._set(name, "state = 'running', started_at = ?, restart_count = restart_count + 1", started_at)

    async def mark_stopped(self, name: str, stopped_at: float | None = None) -> None:
        """Stopped; `stopped_at` None keeps the time it last stopped (it was not running)."""
        await self._set(name, "state = 'stopped', stopped_at = COALESCE(?, stopped_at)", stopped_at)

    async def mark_failed(self, name: str, stopped_at: float) -> None:
        await self._set(name, "state = 'failed', stopped_at = ?", stopped_at)

    async def mark_crashed(
        self, name: str, state: Literal["restarting", "failed"], stopped_at: float, crashes: int
    ) -> None:
        await self._set(name, "state = ?, stopped_at = ?, crashes = ?", state, stopped_at, crashes)

    async def record_exit(self, name: str, exit_code: int | None, signal: int | None) -> None:
        await self._set(name, "last_exit_code = ?, last_signal = ?", exit_code, signal)

    async def count_restart(self, name: str) -> None:
        await self._set(name, "restart_count = restart_count + 1")

    async def set_applied(self, name: str, applied_sha: str, applied_from: str) -> None:
        await self._set(name, "applied_sha = ?, applied_from = ?", applied_sha, applied_from)

    async def set_built(self, name: str, built_sha: str | None, built_version: str) -> None:
        await self._set(name, "built_sha = ?, built_version = ?", built_sha, built_version)

    async def _set(self, name: str, assignments: str, *values: object) -> None:
        await self.db.write(
            lambda conn: conn.execute(f"UPDATE agents SET {assignments} WHERE name = ?", (*values, name))
        )

    async def set_problem(self, name: str, problem: str | None) -> None:
        await self.db.write(lambda conn: conn.execute("UPDATE agents SET problem = ? WHERE name = ?", (problem, name)))

    async def remove(self, name: str, forget_uid: bool) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM agents WHERE name = ?", (name,))
            # A raised budget was the operator's word on that agent, not on whatever gets its name next.
            conn.execute("DELETE FROM budget_overrides WHERE agent = ?", (name,))
            conn.execute("DELETE FROM budget_resumes WHERE agent = ?", (name,))
            if forget_uid:
                conn.execute("DELETE FROM uids WHERE name = ?", (name,))

        await self.db.write(tx)

    async def uid(self, name: str) -> int | None:
        value = await self.db.fetch_value("SELECT uid FROM uids WHERE name = ?", (name,))
        return None if value is None else int(value)

    async def names_by_uid(self) -> dict[int, str]:
        """Every recorded host uid and the agent it is for (who wrote a file in the shared workspace)."""
        rows = await self.db.fetch_all("SELECT name, uid FROM uids")
        return {int(row["uid"]): row["name"] for row in rows}

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

    # ------------------------------------------------------------------------------- turn stats
    async def add_turn(self, agent: str, turn: TurnRecord, keep: int) -> bool:
        """Keep one turn of `agent`, and at most `keep` of its turns (its oldest go first);
        False if a turn with its key is kept already."""
        row = turn.model_dump(exclude={"key"})
        row["tool_calls"] = json.dumps(turn.tool_calls, sort_keys=True)
        columns = ["agent", "key", *row]
        values = [agent, turn.key, *row.values()]
        sql = f"INSERT OR IGNORE INTO turns ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

        def tx(conn: sqlite3.Connection) -> bool:
            if not conn.execute(sql, values).rowcount:
                return False
            over = int(conn.execute("SELECT COUNT(*) FROM turns WHERE agent = ?", (agent,)).fetchone()[0]) - keep
            if over > 0:  # room for a while: a hundredth of them at once
                conn.execute(
                    "DELETE FROM turns WHERE id IN (SELECT id FROM turns WHERE agent = ? ORDER BY started_at LIMIT ?)",
                    (agent, max(over, keep // 100)),
                )
            return True

        return await self.db.write(tx)

    async def turns(self, agent: str, since: float | None, limit: int) -> list[Turn]:
        """The newest `limit` turns of `agent` started at or after `since`, oldest first."""
        rows = await self.db.fetch_all(
            "SELECT * FROM turns WHERE agent = ? AND started_at >= ? ORDER BY started_at DESC, id DESC LIMIT ?",
            (agent, since or 0.0, limit),
        )
        return [turn_from_row(row) for row in reversed(rows)]

    async def prune_turns(self, before: float, keep_per_agent: int) -> int:
        """Forget turns started before `before`, and each agent's beyond its newest `keep_per_agent`."""

        def tx(conn: sqlite3.Connection) -> int:
            removed = conn.execute("DELETE FROM turns WHERE started_at < ?", (before,)).rowcount
            for (agent,) in conn.execute("SELECT DISTINCT agent FROM turns").fetchall():
                removed += conn.execute(
                    "DELETE FROM turns WHERE agent = ? AND started_at < (SELECT started_at FROM turns "
                    "WHERE agent = ? ORDER BY started_at DESC LIMIT 1 OFFSET ?)",
                    (agent, agent, keep_per_agent - 1),
                ).rowcount
            return removed

        return await self.db.write(tx)

    async def turn_totals(self, since: float, top_tools: int) -> list[TurnTotals]:
        """Every agent's turns started at or after `since`, added up in two grouped queries (not one
        per agent: the dashboard asks for the whole swarm)."""
        rows = await self.db.fetch_all(
            "SELECT agent, COUNT(*) AS turns, SUM(NOT ok) AS errors, AVG(ended_at - started_at) AS seconds, "
            "SUM(cost_usd) AS cost FROM turns WHERE started_at >= ? GROUP BY agent ORDER BY agent",
            (since,),
        )
        calls = await self.db.fetch_all(
            "SELECT t.agent AS agent, j.key AS tool, SUM(j.value) AS calls FROM turns t, json_each(t.tool_calls) j "
            "WHERE t.started_at >= ? GROUP BY t.agent, j.key ORDER BY t.agent, calls DESC, j.key",
            (since,),
        )
        tools: dict[str, dict[str, int]] = {}
        for row in calls:
            mine = tools.setdefault(row["agent"], {})
            if len(mine) < top_tools:
                mine[row["tool"]] = int(row["calls"])
        return [
            TurnTotals(
                name=row["agent"],
                turns=int(row["turns"]),
                errors=int(row["errors"]),
                avg_seconds=round(float(row["seconds"]), 3) if row["seconds"] is not None else None,
                cost_usd=round(float(row["cost"] or 0.0), 6),
                top_tools=tools.get(row["agent"], {}),
            )
            for row in rows
        ]

    async def costs_since(self, since: float) -> dict[str, float]:
        """Each agent's cost of the turns it started at or after `since`."""
        rows = await self.db.fetch_all(
            "SELECT agent, SUM(cost_usd) AS cost FROM turns WHERE started_at >= ? GROUP BY agent", (since,)
        )
        return {row["agent"]: float(row["cost"]) for row in rows}

    async def costs_counted(self, day_start: float) -> dict[str, float]:
        """Each agent's cost that counts against its own daily budget: of the turns it started at or
        after `day_start`, or after the operator last resumed it if that was later."""
        rows = await self.db.fetch_all(
            "SELECT t.agent, SUM(t.cost_usd) AS cost FROM turns t "
            "LEFT JOIN budget_resumes r ON r.agent = t.agent "
            "WHERE t.started_at >= MAX(?, COALESCE(r.resumed_at, 0)) GROUP BY t.agent",
            (day_start,),
        )
        return {row["agent"]: float(row["cost"]) for row in rows}

    async def budget_resumes(self) -> dict[str, float]:
        rows = await self.db.fetch_all("SELECT agent, resumed_at FROM budget_resumes")
        return {row["agent"]: float(row["resumed_at"]) for row in rows}

    async def set_resumed(self, agent: str, resumed_at: float) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO budget_resumes (agent, resumed_at) VALUES (?, ?) "
                "ON CONFLICT (agent) DO UPDATE SET resumed_at = excluded.resumed_at",
                (agent, resumed_at),
            )
        )

    async def budget_overrides(self) -> dict[str, float]:
        rows = await self.db.fetch_all("SELECT agent, usd_per_day FROM budget_overrides")
        return {row["agent"]: float(row["usd_per_day"]) for row in rows}

    async def set_budget_override(self, agent: str, usd_per_day: float | None) -> None:
        if usd_per_day is None:
            await self.db.write(lambda conn: conn.execute("DELETE FROM budget_overrides WHERE agent = ?", (agent,)))
            return
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO budget_overrides (agent, usd_per_day) VALUES (?, ?) "
                "ON CONFLICT (agent) DO UPDATE SET usd_per_day = excluded.usd_per_day",
                (agent, usd_per_day),
            )
        )

    async def notice_once(self, agent: str, day: str, recipient: str, event: HelperEvent, now: float) -> bool:
        """Queue `event` unless `agent` had one for `day` already (a UTC day, or the rest of it after a
        resume: spending.allowance_key); True if it was queued (wake the outbox)."""

        def tx(conn: sqlite3.Connection) -> bool:
            fresh = conn.execute(
                "INSERT OR IGNORE INTO budget_notices (agent, day) VALUES (?, ?)", (agent, day)
            ).rowcount
            if fresh:
                queue_event(conn, recipient, event, now)
            return bool(fresh)

        return await self.db.write(tx)

    async def forget_turns(self, agent: str) -> None:
        await self.db.write(lambda conn: conn.execute("DELETE FROM turns WHERE agent = ?", (agent,)))


def turn_from_row(row: sqlite3.Row) -> Turn:
    data: dict[str, Any] = dict(row)
    for column in ("id", "agent", "key"):
        data.pop(column)
    data["tool_calls"] = json.loads(data["tool_calls"])
    return Turn.model_validate(data)
