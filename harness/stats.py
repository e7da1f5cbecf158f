"""What the harness reports about itself: its turn state (turn.json) and one row per turn.

turn.json lives in the harness dir; the lifecycle server reads it (without trusting it) for
agent_status. Turn rows go to the lifecycle server over MCP (record_turn, filed under the name in
this agent's token) from a background task: a turn never waits for them. While lifecycle is
unreachable rows wait in a bounded queue and are retried with backoff; a row that still cannot be
delivered after RETRY_FOR seconds, or that the queue has no room for, is dropped and logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Final

import anyio
from fastmcp.exceptions import ToolError

from hyperhive.harness.claude import TurnOutcome
from hyperhive.harness.turn_state import TurnStateFile
from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.harnessdir import HarnessState, TurnState
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.models import LONGEST_TURN, TurnRecord

log = logging.getLogger("hyperhive.harness.stats")

QUEUE_MAX: Final = 200  # rows waiting for lifecycle; the oldest is dropped to make room
RETRY_FOR: Final = 600.0  # seconds one row is retried before it is given up
MAX_BACKOFF: Final = 60.0
FLUSH_SECONDS: Final = 5.0  # at exit, how long rows still waiting may take to go out


class StatsReporter:
    """Delivers turn rows to lifecycle.record_turn in the background (see the module's doc)."""

    def __init__(self, lifecycle: LifecycleClient | None, *, queue_max: int = QUEUE_MAX, retry_for: float = RETRY_FOR):
        self.lifecycle = lifecycle
        self.retry_for = retry_for
        self.dropped = 0
        self._queue: collections.deque[tuple[TurnRecord, float]] = collections.deque(maxlen=queue_max)
        self._sender: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def submit(self, turn: TurnRecord) -> None:
        """Queue `turn` for delivery; never blocks."""
        if self.lifecycle is None:
            return
        if len(self._queue) == self._queue.maxlen:
            lost, _ = self._queue[0]
            self._lose(lost, f"{len(self._queue)} rows are waiting for the lifecycle server already")
        self._queue.append((turn, time.monotonic()))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all())

    async def drained(self, timeout: float) -> bool:
        """Wait up to `timeout` for every queued row to reach lifecycle (a budget check counts them)."""
        if self._sender is not None and not self._sender.done():
            await asyncio.wait({self._sender}, timeout=timeout)
        return not self._queue

    async def close(self, flush_seconds: float = FLUSH_SECONDS) -> None:
        """Give waiting rows `flush_seconds` to go out, then stop (what is left is logged as lost)."""
        if self._sender is not None and not self._sender.done():
            await asyncio.wait({self._sender}, timeout=flush_seconds)  # it ends when the queue is empty
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for turn, _ in self._queue:
            self._lose(turn, "the harness is stopping")
        self._queue.clear()
        if self.lifecycle is not None:
            await self.lifecycle.close()

    async def _send_all(self) -> None:
        backoff = Backoff(1.0, MAX_BACKOFF)
        while self._queue:
            turn, queued_at = self._queue[0]
            try:
                assert self.lifecycle is not None
                await self.lifecycle.record_turn(turn)
            except (ServerUnavailable, AuthRefused) as e:
                # record_turn is idempotent (the row's key), so a call that may have gone through is
                # simply repeated.
                if time.monotonic() - queued_at > self.retry_for:
                    self._queue.popleft()
                    self._lose(turn, f"the lifecycle server stayed unreachable for {self.retry_for:.0f} s: {e}")
                    continue
                log.info(
                    "turn stats: %s; trying again in %.0f s (%d rows waiting)", e, backoff.next_delay, len(self._queue)
                )
                await backoff.wait()
                continue
            except ToolError as e:  # refused (not granted, invalid): trying again would not help
                self._queue.popleft()
                self._lose(turn, f"the lifecycle server refused it: {e}")
                continue
            self._queue.popleft()
            backoff.reset()

    def _lose(self, turn: TurnRecord, why: str) -> None:
        self.dropped += 1
        log.warning("turn stats row of the turn started at %.3f lost: %s", turn.started_at, why)


class TurnRecorder:
    """turn.json (TurnStateFile, written off the event loop) and the turn rows (StatsReporter)."""

    def __init__(self, harness_dir: Path, reporter: StatsReporter | None = None) -> None:
        self.file = TurnStateFile(harness_dir)
        self.reporter = reporter or StatsReporter(None)

    @property
    def state(self) -> TurnState:
        return self.file.state

    async def open(self) -> TurnState | None:
        """Returns the state the previous run left behind."""
        previous = await anyio.to_thread.run_sync(self.file.previous)
        await self.set("starting")
        return previous

    async def set(
        self,
        state: HarnessState,
        *,
        turn: int | None = None,
        leased: list[int] | None = None,
        reason: str | None = None,
    ) -> None:
        """Enter `state` (the time counts from now unless it is the same state and reason as before)."""
        self.file.enter(state, turn=turn, leased=leased, reason=reason)
        await anyio.to_thread.run_sync(self.file.save)

    async def set_tool(self, tool: str) -> None:
        """The running turn is calling `tool` now (tool_text's words): turn.json shows it until the
        state changes. Nothing while no turn runs (a compaction's tools are not the agent's work)."""
        if self.file.state.state != "running" or self.file.state.tool == tool:
            return
        self.file.state = self.file.state.model_copy(update={"tool": tool})
        await anyio.to_thread.run_sync(self.file.save)

    async def record(self, turn: TurnRecord) -> None:
        """Report the turn (in the background); turn.json shows its end from the next state change on."""
        self.reporter.submit(turn)
        self.state.last_turn_at = turn.ended_at

    async def close(self) -> None:
        await self.reporter.close()


def turn_row(kind: str, started: float, model: str, outcome: TurnOutcome, messages: int, queued: int) -> TurnRecord:
    """The row of one turn, its fields cut to what record_turn accepts (a long error, many tools)."""
    tools = dict(outcome.tool_calls.most_common(64))
    ended = time.time()
    return TurnRecord(
        key=uuid.uuid4().hex,
        kind="compaction" if kind == "compaction" else "wake",
        started_at=min(max(started, ended - LONGEST_TURN), ended),  # a clock that jumped: still a valid row
        ended_at=ended,
        ok=outcome.ok,
        terminal_reason=_cut(outcome.terminal_reason, 200),
        model=_cut(model, 200),
        model_turns=min(max(outcome.model_turns, 0), 100_000),
        tool_calls={name[:128]: min(count, 1_000_000) for name, count in tools.items()},
        tokens_in=min(max(outcome.tokens_in, 0), 10**10),
        tokens_out=min(max(outcome.tokens_out, 0), 10**10),
        cost_usd=min(max(outcome.cost_usd, 0.0), 100_000.0) if math.isfinite(outcome.cost_usd) else 0.0,
        messages=min(messages, 1000),
        inbox_depth=min(messages + queued, 10**9),
        error=_cut(outcome.error, 2000),
    )


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"
