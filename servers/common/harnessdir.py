"""The files between the lifecycle server and an agent's harness, stated once for both sides.

The lifecycle server writes the harness's instructions into the agent's credentials dir, which
the sandbox sees read-only at harness/credentials: hive.json (who it is, its servers and tools),
the token, the model override (set_model) and a cancel request (cancel_turn). The agent cannot
change them. The harness writes what others read into its harness dir: turn.json (its turn
state, shown by agent_status) and the turn stats.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

CREDENTIALS: Final = "credentials"  # in the harness dir: a read-only bind of the agent's credentials dir
# In CREDENTIALS, written by lifecycle:
HIVE_JSON: Final = "hive.json"  # HarnessInfo, written at each start
TOKEN_FILE: Final = "token"  # the agent's bearer token, refreshed while it runs
MODEL_FILE: Final = "model"  # the runtime model override (set_model); absent: agent.toml's model
CANCEL_FILE: Final = "cancel"  # the id of a turn the operator cancelled (cancel_turn)
# In the harness dir, written by the harness:
TURN_STATE: Final = "turn.json"  # TurnState
TURN_STATS: Final = "turn-stats.sqlite"  # read by lifecycle's agent_stats
TURN_STATE_MAX_BYTES: Final = 16 * 1024

TURN_STATS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS turns (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL DEFAULT 'wake', -- wake | compaction (the notes rewrite)
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
    """hive.json: who the agent is, where its servers are, and what its Claude Code may do."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    role: str
    model: str  # agent.toml's; the override file wins
    servers: dict[str, str]  # hyperhive server -> MCP URL reachable from inside the sandbox
    tools: dict[str, list[str]]  # hyperhive server -> the tools this agent may call there
    bash: list[str]  # Claude Code allowedTools patterns for Bash ("git diff:*")
    mcp_servers: dict[str, dict[str, Any]]  # its own extra MCP servers, as Claude Code's --mcp-config has them
    env: dict[str, str]  # configured environment for Claude Code (hive.toml [harness.env] + agent.toml [env])
    prompt: str  # agent.toml's addendum to the system prompt
    state_dir: str
    harness_dir: str
    token_file: str
    agents_dir: str | None = None  # the manager's: where every agent's proposed config repo is
    batch_max: int = 10
    notes_max_bytes: int = 32 * 1024
    context_reset_tokens: int = 150_000

    def tool_names(self) -> list[str]:
        """Claude Code's names for the hyperhive tools it may call: mcp__<server>__<tool>."""
        return [f"mcp__{server}__{tool}" for server, tools in self.tools.items() for tool in sorted(tools)]

    def mcp_config(self, token: str) -> dict[str, dict[str, Any]]:
        """The `mcpServers` of Claude Code's --mcp-config: the hyperhive servers it may use, then its own."""
        servers: dict[str, dict[str, Any]] = {
            server: {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}
            for server, url in self.servers.items()
            if self.tools.get(server)
        }
        servers.update(self.mcp_servers)
        return servers


HarnessState = Literal["starting", "idle", "running", "error"]


class TurnState(BaseModel):
    """turn.json: what the harness is doing now."""

    state: HarnessState
    since: float  # epoch seconds: when it entered this state
    turn: int | None = None  # the running turn's id (cancel_turn names it)
    messages: int = 0  # messages the running turn consumes
    leased: list[int] = []  # their ids: a harness that died mid-turn releases them at its next start
    reason: str | None = None  # for an error: what went wrong and what happens next
    last_turn_at: float | None = None  # epoch seconds: when its last turn ended (kept across restarts)


class Turn(BaseModel):
    kind: str = "wake"
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
