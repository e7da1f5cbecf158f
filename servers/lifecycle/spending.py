"""Budgets: what each agent and the hive spent, and whether an agent may take another turn.

The cost is what each harness reports per turn (record_turn's cost_usd, from Claude Code's
total_cost_usd), kept in lifecycle's own store. A day is a UTC day, a week starts Monday 00:00 UTC.
An agent is paused when its cost today reached its daily budget (set_budget's, else agent.toml's
[budget] usd_per_day) or the hive's cost today reached hive.toml's [budget] usd_per_day. Nothing is
stored about a pause: it is computed from the turns and the budgets at each check, so raising a
budget (set_budget, an applied agent.toml) or a new day lifts it at once. The operator may also
resume an agent paused for its own budget (resume_agent): the time is stored, and from then to the
day's end only the cost since counts against its budget — a fresh allowance; the hive's total still
counts everything. The harness asks budget_check before it takes messages; the first refusal of an
allowance tells the manager (budget_exhausted, once per agent per day, and again after a resume).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.errors import Refused
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


def allowance_key(now: float, resumed_at: float | None) -> str:
    """Which allowance `now` is in, for one budget_exhausted per allowance: the UTC day ("2026-12-01"),
    or the rest of it after the operator's resume ("2026-12-01@2026-12-01T15:30:00.000Z")."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
    if resumed_at is None or resumed_at < day_start(now):
        return day
    return f"{day}@{iso(resumed_at)}"


def paused_reason(usd_per_day: float, scope: Literal["agent", "hive"]) -> str:
    whose = "budget" if scope == "agent" else "hive budget"
    return f"paused: {whose} ${usd_per_day:.2f}/day reached"


@dataclass(frozen=True)
class SpendSheet:
    """Everyone's cost today and this week, read once for a listing."""

    today: dict[str, float]
    week: dict[str, float]
    overrides: dict[str, float]
    counted: dict[str, float]  # the cost today that counts against each agent's own budget (since a resume)
    resumed: dict[str, float]  # when the operator last resumed each agent (any day)
    start: float  # 00:00 UTC of the day it was read on


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
        start = day_start(self.clock())
        return SpendSheet(
            today=await self.store.costs_since(start),
            week=await self.store.costs_since(week_start(start)) if week else {},
            overrides=await self.store.budget_overrides(),
            counted=await self.store.costs_counted(start),
            resumed=await self.store.budget_resumes(),
            start=start,
        )

    @staticmethod
    def resumed_today(name: str, sheet: SpendSheet) -> float | None:
        resumed = sheet.resumed.get(name)
        return resumed if resumed is not None and resumed >= sheet.start else None

    def budget_of(self, name: str, sheet: SpendSheet) -> float | None:
        if name in sheet.overrides:
            return sheet.overrides[name]
        config = self.agents.get(name)
        return config.budget.usd_per_day if config is not None else None

    def hive(self, sheet: SpendSheet) -> Spend:
        budget = self.config.budget.usd_per_day
        today = sum(sheet.today.values())
        paused = budget is not None and today >= budget
        return Spend(
            today_usd=_rounded(today),
            week_usd=_rounded(sum(sheet.week.values())),
            usd_per_day=budget,
            paused=paused_reason(budget, "hive") if budget is not None and paused else None,
            paused_by="hive" if paused else None,
        )

    def agent(self, name: str, sheet: SpendSheet) -> Spend:
        pause = self._pause(name, sheet)
        resumed = self.resumed_today(name, sheet)
        return Spend(
            today_usd=_rounded(sheet.today.get(name, 0.0)),
            week_usd=_rounded(sheet.week.get(name, 0.0)),
            usd_per_day=self.budget_of(name, sheet),
            paused=None if pause is None else paused_reason(pause.usd_per_day, pause.scope),
            paused_by=None if pause is None else pause.scope,
            resumed_at=None if resumed is None else iso(resumed),
            counted_usd=None if resumed is None else _rounded(sheet.counted.get(name, 0.0)),
        )

    def _pause(self, name: str, sheet: SpendSheet) -> BudgetExhausted | None:
        """What stops `name` taking a turn now: its own daily budget, else the hive's; None: nothing."""
        budget = self.budget_of(name, sheet)
        counted = sheet.counted.get(name, 0.0)
        if budget is not None and counted >= budget:
            return BudgetExhausted(agent=name, scope="agent", usd_per_day=budget, spent_usd=_rounded(counted))
        return self._hive_pause(name, sheet)

    def _hive_pause(self, name: str, sheet: SpendSheet) -> BudgetExhausted | None:
        hive_budget, hive_today = self.config.budget.usd_per_day, sum(sheet.today.values())
        if hive_budget is not None and hive_today >= hive_budget:
            return BudgetExhausted(agent=name, scope="hive", usd_per_day=hive_budget, spent_usd=_rounded(hive_today))
        return None

    async def spend(self, name: str) -> Spend:
        return self.agent(name, await self.sheet())

    async def check(self, name: str) -> BudgetCheck:
        """May `name` take a turn now? The first refusal of an allowance (a day, or its rest after a
        resume) tells the manager."""
        sheet = await self.sheet(week=False)
        pause = self._pause(name, sheet)
        if pause is None:
            return BudgetCheck(paused=None)
        now = self.clock()
        key = allowance_key(now, self.resumed_today(name, sheet))
        if await self.store.notice_once(name, key, MANAGER, pause, now):
            self.outbox.wake()
        return BudgetCheck(paused=paused_reason(pause.usd_per_day, pause.scope))

    async def resume(self, name: str) -> Spend:
        """Start `name`'s day afresh now: its cost so far stops counting against its own daily budget
        until the day ends (UTC). Refused unless its own budget is what pauses it."""
        sheet = await self.sheet()
        if self._pause(name, sheet) is None:
            raise Refused(f"{name} is not paused; nothing to resume")
        hive = self._hive_pause(name, sheet)
        if hive is not None:
            raise Refused(
                f"the hive's budget pauses every agent, {name} with them (${hive.spent_usd:.2f} spent today "
                f"of ${hive.usd_per_day:.2f}/day); resuming one agent does not lift it: raise hive.toml "
                "[budget] usd_per_day and restart the lifecycle server, or wait for the next UTC day"
            )
        await self.store.set_resumed(name, self.clock())
        return self.agent(name, await self.sheet())

    async def set_budget(self, name: str, usd_per_day: float | None) -> Spend:
        await self.store.set_budget_override(name, usd_per_day)
        return await self.spend(name)


def _rounded(usd: float) -> float:
    """To a millionth of a dollar: sums of floats, shown without their noise."""
    return round(usd, 6)
