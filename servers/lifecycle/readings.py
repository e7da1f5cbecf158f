"""What lifecycle/server.py reads through the supervisor, and the records it keeps (turn stats, the
audit trail, budget overrides): thin delegations to the part that owns each (the store, the backend,
provisioning, turn stats, spending, the audit trail, the harness's files), so that server.py calls only the supervisor's
methods and never changes an agent through them. AgentSupervisor (supervisor.py) is built on it.
"""

from __future__ import annotations

from collections.abc import Callable

from hyperhive.servers.common import audit
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.harnessdir import TurnState
from hyperhive.servers.lifecycle import harness_files, repos
from hyperhive.servers.lifecycle.agentlocks import AgentLocks
from hyperhive.servers.lifecycle.backends.base import SandboxBackend
from hyperhive.servers.lifecycle.models import BudgetCheck, Spend, Turn, TurnRecord, TurnTotals
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.peers import Peers, peer_refusal
from hyperhive.servers.lifecycle.provisioning import Provisioning, checked
from hyperhive.servers.lifecycle.spending import Spending, SpendSheet, day_start
from hyperhive.servers.lifecycle.store import AgentRow, LifecycleStore
from hyperhive.servers.lifecycle.turnstats import TurnStats


class AgentReadings:
    # Set by AgentSupervisor.__init__.
    config: HiveConfig
    agents: AgentRegistry
    backend: SandboxBackend
    store: LifecycleStore
    db: Database
    provisioning: Provisioning
    turn_stats: TurnStats
    spending: Spending
    locks: AgentLocks
    peers: Peers
    version: str
    clock: Callable[[], float]

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def isolation(self) -> str:
        return self.backend.isolation

    async def rows(self) -> list[AgentRow]:
        return await self.store.agents()

    async def row(self, name: str) -> AgentRow:
        row = await self.store.agent(checked(name))
        if row is None:
            config = await self.agents.lookup(name)
            if config is not None and config.is_peer:  # no row: nothing of it is lifecycle's to run
                raise Refused(peer_refusal(name))
            raise Refused(f"no agent named {name!r}; list_agents shows the agents there are")
        return row

    async def applied_head(self, name: str) -> str:
        return await repos.head(AgentPaths.of(self.config, name).applied)

    async def drafts(self, rows: list[AgentRow]) -> list[str]:
        """Names with a proposed config repo and no agent: drafts, and what destroyed agents left."""
        return await self.provisioning.drafts({row.name for row in rows})

    async def recorded_uid(self, name: str) -> int | None:
        """The host uid recorded for it, if any (none is allocated by asking)."""
        return await self.store.uid(name)

    def role_of(self, name: str) -> str:
        config = self.agents.get(name)
        return config.role if config else "agent"

    def busy(self, name: str) -> str | None:
        """What is being done to `name` right now, if anything."""
        return self.locks.busy(name)

    def needs_update(self, row: AgentRow) -> bool:
        if row.built_version is None:  # never built: its first start builds it
            return False
        return row.built_version != self.version or row.built_sha != row.applied_sha

    def model_of(self, name: str) -> str:
        return harness_files.model_of(AgentPaths.of(self.config, name), self.agents.get(name))

    async def turn_state(self, name: str) -> TurnState | None:
        """What its harness says it is doing (turn.json, read without trusting it)."""
        return await harness_files.read_turn_state(AgentPaths.of(self.config, name))

    async def logs(self, name: str, lines: int, since: float | None) -> list[str]:
        await self.row(name)
        return await self.backend.logs(name, lines, since)

    async def diff_commit(self, name: str, ref: str) -> tuple[str, str | None, str, str | None, list[str], str]:
        """(proposed sha, applied sha, diff of the applied config to it, why it is invalid or None,
        widenings, the commit's message)."""
        return await self.provisioning.diff_commit(name, ref)

    async def turns(self, name: str, since: float | None) -> list[Turn]:
        await self.row(name)
        return await self.turn_stats.turns(name, since)

    async def turns_today(self) -> tuple[float, list[TurnTotals]]:
        """Since 00:00 UTC (the day budgets count): every agent's turns added up."""
        since = day_start(self.clock())
        return since, await self.turn_stats.totals(since)

    async def record_turn(self, name: str, turn: TurnRecord) -> bool:
        return await self.turn_stats.record(name, turn)

    async def record_action(
        self, name: str, action: str, actor: str, outcome: audit.Outcome, detail: str | None
    ) -> None:
        await audit.record_action(self.db, name, action, actor, self.clock(), outcome, detail)

    async def actions(self, limit: int, agent: str | None) -> list[audit.ActionEntry]:
        return await audit.actions(self.db, limit, None if agent is None else checked(agent))

    async def spend_sheet(self) -> SpendSheet:
        return await self.spending.sheet()

    def spend_of(self, name: str, sheet: SpendSheet) -> Spend:
        return self.spending.agent(name, sheet)

    def hive_spend(self, sheet: SpendSheet) -> Spend:
        return self.spending.hive(sheet)

    async def spend(self, name: str) -> Spend:
        return await self.spending.spend(name)

    async def budget_check(self, name: str) -> BudgetCheck:
        return await self.spending.check(name)

    async def resume(self, name: str) -> Spend:
        """Start `name`'s day afresh against its own budget (refused unless that budget pauses it)."""
        await self.row(name)
        return await self.spending.resume(name)

    async def set_budget(self, name: str, usd_per_day: float | None) -> Spend:
        """Record the operator's daily budget for `name` (None: back to agent.toml's); its spend now."""
        await self.row(name)
        return await self.spending.set_budget(name, usd_per_day)
