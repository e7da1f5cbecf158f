"""Agents' turn stats: reported by each harness over MCP (record_turn), kept in the lifecycle
server's own store for [harness] stats_retention_days, summarised for agent_stats.

They used to be a sqlite file in the agent's harness dir, which the root server opened by path:
a fifo there hung it, a symlink read another agent's (or a root-only) database. Now nothing the
agent writes is opened; what it reports is validated (models.TurnRecord) and filed under the
name in its token.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from typing import Final

from hyperhive.servers.common.clock import Clock
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.lifecycle.models import Turn, TurnRecord, TurnSummary, TurnTotals
from hyperhive.servers.lifecycle.store import LifecycleStore

log = logging.getLogger("hyperhive.lifecycle.turnstats")

PRUNE_EVERY: Final = 3600.0
# Turns kept per agent at most, whatever their age: a bound on the disk a chatty (or hostile) harness
# can fill in root's database, ~10 KiB a row at worst (typically a few hundred bytes).
KEEP_PER_AGENT: Final = 100_000
STATS_LIMIT: Final = 1000  # turns agent_stats returns (and summarises) at most
TOP_TOOLS: Final = 3  # swarm_stats' tools per agent


class TurnStats:
    def __init__(self, store: LifecycleStore, retention_days: int, clock: Clock) -> None:
        self.store = store
        self.retention = retention_days * 86_400.0
        self.retention_days = retention_days
        self.clock = clock

    async def record(self, agent: str, turn: TurnRecord) -> bool:
        if turn.started_at < self.clock.now() - self.retention:
            raise Refused(
                f"this turn started more than {self.retention_days} days ago, older than the "
                f"{self.retention_days}-day retention ([harness] stats_retention_days); it is not kept"
            )
        return await self.store.add_turn(agent, turn, KEEP_PER_AGENT)

    async def turns(self, agent: str, since: float | None) -> list[Turn]:
        return await self.store.turns(agent, since, STATS_LIMIT)

    async def totals(self, since: float) -> list[TurnTotals]:
        return await self.store.turn_totals(since, TOP_TOOLS)

    async def prune(self) -> int:
        removed = await self.store.prune_turns(self.clock.now() - self.retention, KEEP_PER_AGENT)
        if removed:
            log.info("forgot %d turn stats rows (older than %d days or beyond an agent's newest %d)",
                     removed, self.retention_days, KEEP_PER_AGENT)  # fmt: skip
        return removed

    async def prune_forever(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:  # a locked or full database: try again at the next round
                log.exception("pruning turn stats failed")
            await asyncio.sleep(PRUNE_EVERY)


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
