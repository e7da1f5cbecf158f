"""turn.json, the harness's state as agent_status shows it: one writer for the turn loop and the idle waiter.

The state is kept in memory and written whole on each change. `since` only moves when the state
(or its reason or turn) changes, and `last_turn_at` is carried over from the previous run's file.
Standard library and pydantic only: the idle waiter (harness/idle.py) imports it.
"""

from __future__ import annotations

import time
from pathlib import Path

from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.harnessdir import TURN_STATE, HarnessState, TurnState


class TurnStateFile:
    def __init__(self, harness_dir: Path) -> None:
        self.path = harness_dir / TURN_STATE
        self.state = TurnState(state="starting", since=time.time())

    def previous(self) -> TurnState | None:
        """What the previous run (or the other half of the harness) left; its last turn's end is kept."""
        try:
            previous = TurnState.model_validate_json(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        self.state.last_turn_at = previous.last_turn_at
        return previous

    def enter(
        self,
        state: HarnessState,
        *,
        turn: int | None = None,
        leased: list[int] | None = None,
        reason: str | None = None,
    ) -> None:
        """Enter `state` (the time counts from now unless it is the same state and reason as before).
        Call save() to write it."""
        same = self.state.state == state and self.state.reason == reason and self.state.turn == turn
        self.state = TurnState(
            state=state,
            since=self.state.since if same else time.time(),
            turn=turn,
            messages=len(leased or ()),
            leased=leased or [],
            reason=reason,
            last_turn_at=self.state.last_turn_at,
        )

    def save(self) -> None:
        # No fsync: it is on the way to every turn's start, and a lost update only shows a stale state.
        write_atomic(self.path, self.state.model_dump_json(), 0o644, durable=False)
