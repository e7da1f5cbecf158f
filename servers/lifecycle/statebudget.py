"""How much an agent's state dir holds, against its budget (agent.toml / hive.toml [sandbox] state_max).

The dir is the agent's own, so hostile: the walk follows no link, crosses no mount, and stops at
a time bound; what it has counted by then is a lower bound, enough to tell "over budget".
An agent over budget has a `problem` in lifecycle's store (shown by list_agents, kept across
restarts of the server); the manager is told when it passes the budget, and at each refused start.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio

from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.events import HelperEvent, StateOverBudget
from hyperhive.servers.lifecycle import logfiles
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.store import LifecycleStore

WALK_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int  # disk space of its files (allocated blocks, so a sparse file counts what it holds)
    complete: bool  # False: the walk ran out of time, `bytes` is a lower bound


def usage(root: Path, seconds: float = WALK_SECONDS) -> Usage:
    """Disk space used under `root`, without following links or leaving its filesystem."""
    deadline = time.monotonic() + seconds
    try:
        device = root.lstat().st_dev
    except OSError:
        return Usage(0, True)
    total = 0
    stack = [str(root)]
    while stack:
        if time.monotonic() > deadline:
            return Usage(total, False)
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode) and info.st_dev == device:
                        stack.append(entry.path)
        except OSError:
            continue
    return Usage(total, True)


def human(size: int) -> str:
    """1.5G, 512M, 12K: sizes as hive.toml writes them."""
    for unit, scale in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + unit
    return f"{size}B"


def over_budget_message(name: str, used: Usage, budget: int) -> str:
    at_least = "" if used.complete else "at least "
    return (
        f"{name}'s state dir holds {at_least}{human(used.bytes)}, past its budget of {human(budget)} "
        f"([sandbox] state_max); free space in it or raise state_max, then start it"
    )


class StateBudgets:
    """Checks agents' state dirs against their budgets: before each start, and now and then while they run."""

    def __init__(
        self,
        config: HiveConfig,
        store: LifecycleStore,
        agents: AgentRegistry,
        announce: Callable[[HelperEvent], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.agents = agents
        self.announce = announce
        self.clock = clock

    async def check(self, name: str, config: AgentConfig, *, starting: bool = False) -> str | None:
        """None if its state dir is within [sandbox] state_max; else why not (recorded as its problem).
        Tells the manager when it first passes, and at every start it refuses."""
        budget = config.sandbox.bounds(self.config.sandbox).state_max
        paths = AgentPaths.of(self.config, name)
        used = await anyio.to_thread.run_sync(usage, paths.state)
        row = await self.store.agent(name)
        known = row.problem if row is not None else None
        if used.bytes <= budget:
            if known is not None:
                await self.store.set_problem(name, None)
            return None
        message = over_budget_message(name, used, budget)
        await anyio.to_thread.run_sync(logfiles.mark, paths.log, self.clock(), message)
        if known is None or starting:
            used_text = ("at least " if not used.complete else "") + human(used.bytes)
            await self.announce(
                StateOverBudget(agent=name, used=used_text, budget=human(budget), refused_start=starting)
            )
        await self.store.set_problem(name, message)
        return message

    async def watch(self) -> None:
        """Measure running agents' state dirs now and then; passing the budget is told to the manager."""
        while True:
            await asyncio.sleep(self.config.sandbox.state_check_seconds)
            for row in await self.store.agents():
                config = self.agents.get(row.name)
                if row.state == "running" and config is not None:
                    await self.check(row.name, config)
