"""Budgets: what each agent and the hive spent, and whether an agent may take another turn.

The cost is what each harness reports per turn (record_turn's cost_usd, from Claude Code's
total_cost_usd), kept in lifecycle's own store. A day is a UTC day, a week starts Monday 00:00 UTC.
An agent is paused when its cost today reached its daily budget (set_budget's, else agent.toml's
[budget] usd_per_day) or the hive's cost today reached hive.toml's [budget] usd_per_day. Nothing is
stored about a pause: it is computed from the turns and the budgets at each check, so raising a
budget (set_budget, an applied agent.toml) or a new day lifts it at once. The harness asks
budget_check before it takes messages; the first refusal of a day tells the manager
(budget_exhausted, once per agent per day).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.events import BudgetExhausted
from hyperhive.servers.common.names import MANAGER
from hyperhive.servers.common.outbox import Outbox
from hyperhive.servers.lifecycle.models import BudgetCheck, Spend
from hyperhive.servers.lifecycle.store import LifecycleStore


def day_start(now: float) -> float:
    """00:00 UTC of the day `now` is in."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()


def week_start(now: float) -> float:
    """Monday 00:00 UTC of the week `now` is in."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return dt.datetime.combine(day - dt.timedelta(days=day.weekday()), dt.time(), dt.UTC).timestamp()


def paused_reason(usd_per_day: float, scope: Literal["agent", "hive"]) -> str:
    whose = "budget" if scope == "agent" else "hive budget"
    return f"paused: {whose} ${usd_per_day:.2f}/day reached"


@dataclass(frozen=True)
class SpendSheet:
    """Everyone's cost today and this week, read once for a listing."""

    today: dict[str, float]
    week: dict[str, float]
    overrides: dict[str, float]


class Spending:
    def __init__(
        self,
        config: HiveConfig,
        store: LifecycleStore,
        agents: AgentRegistry,
        outbox: Outbox,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.agents = agents
        self.outbox = outbox
        self.clock = clock

    async def sheet(self, *, week: bool = True) -> SpendSheet:
        """`week`: also this week's costs (listings); a budget check needs today's only."""
        now = self.clock()
        return SpendSheet(
            today=await self.store.costs_since(day_start(now)),
            week=await self.store.costs_since(week_start(now)) if week else {},
            overrides=await self.store.budget_overrides(),
        )

    def budget_of(self, name: str, sheet: SpendSheet) -> float | None:
        if name in sheet.overrides:
            return sheet.overrides[name]
        config = self.agents.get(name)
        return config.budget.usd_per_day if config is not None else None

    def hive(self, sheet: SpendSheet) -> Spend:
        budget = self.config.budget.usd_per_day
        today = sum(sheet.today.values())
        paused = paused_reason(budget, "hive") if budget is not None and today >= budget else None
        return Spend(
            today_usd=_rounded(today), week_usd=_rounded(sum(sheet.week.values())), usd_per_day=budget, paused=paused
        )

    def agent(self, name: str, sheet: SpendSheet) -> Spend:
        pause = self._pause(name, sheet)
        return Spend(
            today_usd=_rounded(sheet.today.get(name, 0.0)),
            week_usd=_rounded(sheet.week.get(name, 0.0)),
            usd_per_day=self.budget_of(name, sheet),
            paused=None if pause is None else paused_reason(pause.usd_per_day, pause.scope),
        )

    def _pause(self, name: str, sheet: SpendSheet) -> BudgetExhausted | None:
        """What stops `name` taking a turn now: its own daily budget, else the hive's; None: nothing."""
        budget = self.budget_of(name, sheet)
        today = sheet.today.get(name, 0.0)
        if budget is not None and today >= budget:
            return BudgetExhausted(agent=name, scope="agent", usd_per_day=budget, spent_usd=_rounded(today))
        hive_budget, hive_today = self.config.budget.usd_per_day, sum(sheet.today.values())
        if hive_budget is not None and hive_today >= hive_budget:
            return BudgetExhausted(agent=name, scope="hive", usd_per_day=hive_budget, spent_usd=_rounded(hive_today))
        return None

    async def spend(self, name: str) -> Spend:
        return self.agent(name, await self.sheet())

    async def check(self, name: str) -> BudgetCheck:
        """May `name` take a turn now? The first refusal of a day tells the manager."""
        pause = self._pause(name, await self.sheet(week=False))
        if pause is None:
            return BudgetCheck(paused=None)
        now = self.clock()
        day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
        if await self.store.notice_once(name, day, MANAGER, pause, now):
            self.outbox.wake()
        return BudgetCheck(paused=paused_reason(pause.usd_per_day, pause.scope))

    async def set_budget(self, name: str, usd_per_day: float | None) -> Spend:
        await self.store.set_budget_override(name, usd_per_day)
        return await self.spend(name)


def _rounded(usd: float) -> float:
    """To a millionth of a dollar: sums of floats, shown without their noise."""
    return round(usd, 6)
