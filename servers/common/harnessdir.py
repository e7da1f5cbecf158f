"""The files an agent's harness dir holds: what the lifecycle server writes there for the harness
(hive.json, the model override, the token) and what the harness writes for others (turn stats).

Both sides use this module, so the layout is stated once.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

HIVE_JSON: Final = "hive.json"  # HarnessInfo, written by lifecycle at each start
MODEL_FILE: Final = "model"  # the runtime model override (set_model); absent: agent.toml's model
CREDENTIALS: Final = "credentials"  # a read-only bind of the agent's credentials dir
TOKEN_FILE: Final = "token"  # in CREDENTIALS: the agent's bearer token, refreshed by lifecycle
TURN_STATS: Final = "turn-stats.sqlite"  # written by the harness, read by lifecycle's agent_stats

TURN_STATS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS turns (
    id              INTEGER PRIMARY KEY,
    started_at      REAL NOT NULL,
    ended_at        REAL NOT NULL,
    ok              INTEGER NOT NULL,
    terminal_reason TEXT,
    model           TEXT,
    model_turns     INTEGER NOT NULL DEFAULT 0,
    tool_calls      TEXT NOT NULL DEFAULT '{}',   -- JSON: tool name -> calls
    tokens_in       INTEGER NOT NULL DEFAULT 0,
    tokens_out      INTEGER NOT NULL DEFAULT 0,
    cost_usd        REAL NOT NULL DEFAULT 0,
    messages        INTEGER NOT NULL DEFAULT 0,   -- messages the turn consumed
    inbox_depth     INTEGER NOT NULL DEFAULT 0,   -- messages waiting when it started
    error           TEXT
);
CREATE INDEX IF NOT EXISTS turns_started ON turns (started_at);
"""


class HarnessInfo(BaseModel):
    """hive.json: who the agent is and where its servers are."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    role: str
    servers: dict[str, str]  # server name -> MCP URL reachable from inside the sandbox
    state_dir: str
    harness_dir: str
    token_file: str


class Turn(BaseModel):
    started_at: float
    ended_at: float
    ok: bool
    terminal_reason: str | None
    model: str | None
    model_turns: int
    tool_calls: dict[str, int]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    messages: int
    inbox_depth: int
    error: str | None


class TurnSummary(BaseModel):
    turns: int
    errors: int
    duration_p50: float | None
    duration_p95: float | None
    tool_calls: dict[str, int]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    messages: int


def read_turns(path: Path, since: float | None, limit: int = 1000) -> list[Turn]:
    """The newest `limit` turns started at or after `since`, oldest first (none if the file is absent)."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM turns WHERE started_at >= ? ORDER BY started_at DESC LIMIT ?", (since or 0, limit)
        ).fetchall()
    finally:
        conn.close()
    return [_turn(row) for row in reversed(rows)]


def summarise(turns: list[Turn]) -> TurnSummary:
    durations = sorted(t.ended_at - t.started_at for t in turns)
    calls: dict[str, int] = {}
    for turn in turns:
        for name, count in turn.tool_calls.items():
            calls[name] = calls.get(name, 0) + count
    return TurnSummary(
        turns=len(turns),
        errors=sum(not t.ok for t in turns),
        duration_p50=statistics.median(durations) if durations else None,
        duration_p95=durations[min(len(durations) - 1, int(len(durations) * 0.95))] if durations else None,
        tool_calls=dict(sorted(calls.items(), key=lambda item: -item[1])),
        tokens_in=sum(t.tokens_in for t in turns),
        tokens_out=sum(t.tokens_out for t in turns),
        cost_usd=round(sum(t.cost_usd for t in turns), 6),
        messages=sum(t.messages for t in turns),
    )


def _turn(row: sqlite3.Row) -> Turn:
    data: dict[str, Any] = dict(row)
    data.pop("id")
    data["tool_calls"] = json.loads(data["tool_calls"] or "{}")
    return Turn.model_validate(data)
