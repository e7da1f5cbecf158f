"""Crash handling: what the lifecycle server does when an agent's sandbox ends.

It follows the backend's changes(), tells the stops and kills the supervisor asked for (expect_exit)
from crashes, and carries out what the pure restart policy decides (restart_policy.decide): the
exit recorded, the run's tokens ended, the manager told (container_crash), the agent started again
after its backoff. Where the platform restarts a crashed sandbox itself (systemd), it remembers that
the agent is coming back and marks it running again when the backend says it is up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Final

from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.events import ContainerCrash, HelperEvent
from hyperhive.servers.common.harnessdir import SandboxStart
from hyperhive.servers.lifecycle.agentlocks import AgentLocks
from hyperhive.servers.lifecycle.backends.base import Change, Restarted, SandboxBackend
from hyperhive.servers.lifecycle.restart_policy import RestartSettings, decide
from hyperhive.servers.lifecycle.sandbox_setup import SandboxSetup
from hyperhive.servers.lifecycle.store import LifecycleStore

log = logging.getLogger("hyperhive.lifecycle")

CRASH_LOG_LINES: Final = 20


@dataclass(eq=False)
class CrashHandling:
    config: HiveConfig
    store: LifecycleStore
    agents: AgentRegistry
    backend: SandboxBackend
    setup: SandboxSetup
    locks: AgentLocks
    _: KW_ONLY
    launch: Callable[[str, SandboxStart], Awaitable[None]]  # start it from its applied config; the caller holds it
    announce: Callable[[HelperEvent], Awaitable[None]]
    clock: Callable[[], float]
    # Stops we asked for, not yet seen ending.
    _expected_exits: dict[str, int] = field(default_factory=dict, init=False)
    # Crashed, and the platform restarts them itself (systemd).
    _coming_back: set[str] = field(default_factory=set, init=False)
    # Restarts after crashes, waiting out their backoff.
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    def expect_exit(self, name: str) -> None:
        """The supervisor is stopping `name`: its next ending is not a crash."""
        self._expected_exits[name] = self._expected_exits.get(name, 0) + 1

    def coming_back(self, name: str) -> bool:
        """Whether `name` crashed and the platform is restarting it on its own."""
        return name in self._coming_back

    def not_coming_back(self, name: str) -> None:
        """The supervisor started or stopped `name` itself: whatever the platform was restarting is moot."""
        self._coming_back.discard(name)

    async def close(self) -> None:
        """Cancel the restarts still waiting out their backoff."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def follow(self) -> None:
        """Handle every sandbox ending the backend reports, until it is closed."""
        async for change in self.backend.changes():
            try:
                if isinstance(change, Restarted):
                    await self._on_restarted(change)
                else:
                    await self._on_change(change)
            except Exception:
                log.exception("handling the end of %s's sandbox failed", change.name)

    async def _on_change(self, change: Change) -> None:
        """Carry out what the restart policy decides about a sandbox that ended."""
        row = await self.store.agent(change.name)
        if row is None:
            return
        expected = bool(self._expected_exits.get(change.name))
        if expected:
            self._expected_exits[change.name] -= 1
        config = self.agents.get(change.name)
        settings = RestartSettings(
            max_restarts=config.sandbox.max_restarts if config else 0,
            backoff_seconds=self.config.lifecycle.restart_backoff_seconds,
        )
        decision = decide(row, change, settings, expected=expected)
        lines = await self.backend.logs(change.name, CRASH_LOG_LINES, None) if decision.report else []
        if decision.end_instance:
            await self.setup.end_instance(change.name, reissue=decision.reissue_token)
        if decision.kind == "crash":  # does the platform bring it back itself (systemd)?
            if change.auto_restarting:
                self._coming_back.add(change.name)
            else:
                self._coming_back.discard(change.name)
        if decision.record_exit:
            await self.store.record_exit(change.name, change.exit_code, change.signal)
        if decision.state is not None:
            await self.store.mark_crashed(change.name, decision.state, change.at, decision.crashes)
        if decision.report:
            await self.announce(_crash_event(change, row.restart_count, decision.will_restart, lines))
        if decision.restart_after is not None:
            self._spawn(self._restart_after_crash(change.name, decision.restart_after))

    async def _on_restarted(self, restarted: Restarted) -> None:
        """The platform restarted a crashed sandbox itself (systemd's Restart=on-failure): it runs again."""
        name = restarted.name
        self._coming_back.discard(name)
        row = await self.store.agent(name)
        if row is None or row.state != "restarting" or row.desired != "running" or self.locks.busy(name) is not None:
            return  # not waiting for it: started again by us meanwhile, or being changed right now
        await self.store.mark_restarted(name, restarted.running.started_at)

    async def _restart_after_crash(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        row = await self.store.agent(name)
        if row is None or row.state != "restarting" or row.desired != "running" or self.locks.busy(name) is not None:
            return  # someone decided otherwise meanwhile
        async with self.locks.exclusive(name, "restarting after a crash"):
            await self.store.count_restart(name)
            try:
                await self.launch(
                    name, SandboxStart(reason="crashed", detail=how_it_ended(row.last_exit_code, row.last_signal))
                )
            except Refused as e:
                log.error("restarting %s after its crash failed: %s", name, e)
                await self._on_change(Change(name, at=self.clock()))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _crash_event(change: Change, restarts: int, will_restart: bool, lines: list[str]) -> ContainerCrash:
    return ContainerCrash(
        agent=change.name,
        exit_code=change.exit_code,
        signal=signal_name(change.signal),
        restarts=change.restarts if change.restarts is not None else restarts,
        will_restart=will_restart,
        last_lines=lines,
        reason=change.reason,
    )


def how_it_ended(exit_code: int | None, signal_number: int | None) -> str:
    """A crashed run's end as its next run's harness tells the agent: "exit 137", "killed by SIGKILL"."""
    if signal_number is not None:
        return f"killed by {signal_name(signal_number)}"
    return f"exit {exit_code}" if exit_code is not None else ""


def signal_name(number: int | None) -> str | None:
    """SIGKILL for 9; the number itself for one Python does not know."""
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
