"""What the harness records for others: the turn state (turn.json) and one row per turn.

Both live in the harness dir. The lifecycle server reads them for agent_status and agent_stats;
the layout is in hyperhive.servers.common.harnessdir.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import anyio

from hyperhive.harness.claude import TurnOutcome
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.harnessdir import TURN_STATE, TURN_STATS, TURN_STATS_SCHEMA, HarnessState, Turn, TurnState


class TurnRecorder:
    def __init__(self, harness_dir: Path) -> None:
        self.state_path = harness_dir / TURN_STATE
        self.stats_path = harness_dir / TURN_STATS
        self.state = TurnState(state="starting", since=time.time())

    async def open(self) -> TurnState | None:
        """Create the stats file if needed; returns the state the previous run left behind."""
        previous = await anyio.to_thread.run_sync(self._previous)
        if previous is not None:
            self.state.last_turn_at = previous.last_turn_at
        await anyio.to_thread.run_sync(self._create)
        await self.set("starting")
        return previous

    def _previous(self) -> TurnState | None:
        try:
            return TurnState.model_validate_json(self.state_path.read_bytes())
        except (OSError, ValueError):
            return None

    def _create(self) -> None:
        with sqlite3.connect(self.stats_path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(TURN_STATS_SCHEMA)
        conn.close()

    async def set(
        self,
        state: HarnessState,
        *,
        turn: int | None = None,
        leased: list[int] | None = None,
        reason: str | None = None,
    ) -> None:
        """Enter `state` (the time counts from now unless it is the same state and reason as before)."""
        same = self.state.state == state and self.state.reason == reason and self.state.turn == turn
        since = self.state.since if same else time.time()
        self.state = TurnState(
            state=state,
            since=since,
            turn=turn,
            messages=len(leased or ()),
            leased=leased or [],
            reason=reason,
            last_turn_at=self.state.last_turn_at,
        )
        # No fsync: it is on the way to every turn's start, and a lost update only shows a stale state.
        text = self.state.model_dump_json()
        await anyio.to_thread.run_sync(lambda: write_atomic(self.state_path, text, 0o644, durable=False))

    async def record(self, turn: Turn) -> None:
        """Keep the turn's row; turn.json shows its end from the next state change on."""
        await anyio.to_thread.run_sync(self._insert, turn)
        self.state.last_turn_at = turn.ended_at

    def _insert(self, turn: Turn) -> None:
        row = turn.model_dump()
        row["tool_calls"] = json.dumps(turn.tool_calls, sort_keys=True)
        columns = ", ".join(row)
        with sqlite3.connect(self.stats_path) as conn:
            conn.execute(f"INSERT INTO turns ({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        conn.close()


def turn_row(kind: str, started: float, model: str, outcome: TurnOutcome, messages: int, queued: int) -> Turn:
    return Turn(
        kind=kind,
        started_at=started,
        ended_at=time.time(),
        ok=outcome.ok,
        terminal_reason=outcome.terminal_reason,
        model=model,
        model_turns=outcome.model_turns,
        tool_calls=dict(outcome.tool_calls),
        tokens_in=outcome.tokens_in,
        tokens_out=outcome.tokens_out,
        cost_usd=outcome.cost_usd,
        messages=messages,
        inbox_depth=messages + queued,
        error=outcome.error,
    )
