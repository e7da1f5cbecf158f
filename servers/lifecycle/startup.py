"""The order the hive's agents come up and go down in, as the lifecycle server starts and stops:
the recorded states matched with what still runs (sandboxes outlive the server), the manager created
if there is none, then the manager started before everyone else and stopped after everyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from hyperhive.servers.common.audit import Outcome
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.names import MANAGER
from hyperhive.servers.lifecycle.backends.base import SandboxBackend
from hyperhive.servers.lifecycle.provisioning import Provisioning
from hyperhive.servers.lifecycle.sandbox_setup import SandboxSetup
from hyperhive.servers.lifecycle.store import AgentRow, LifecycleStore

log = logging.getLogger("hyperhive.lifecycle")


async def reconcile(
    store: LifecycleStore, backend: SandboxBackend, setup: SandboxSetup, clock: Callable[[], float]
) -> None:
    """Match the recorded states with what is running now (sandboxes outlive this server)."""
    running = await backend.list()
    for row in await store.agents():
        if row.name in running:
            if row.state != "running":
                await store.mark_running(row.name, running[row.name].started_at)
        elif row.state in ("starting", "running", "stopping", "restarting"):
            # It ended while no server watched; the backend reports how, and start_wanted starts it again.
            await setup.end_instance(row.name)
            await store.mark_stopped(row.name, clock())


async def ensure_manager(store: LifecycleStore, provisioning: Provisioning, clock: Callable[[], float]) -> None:
    """The manager is infrastructure: created on first start without asking anyone."""
    if await store.agent(MANAGER) is None:
        proposed, applied = await provisioning.provision(MANAGER, "manager")
        await store.add(MANAGER, clock(), applied, proposed)
        log.info("created the manager agent")


async def start_wanted(
    rows: list[AgentRow],
    start: Callable[[str], Awaitable[object]],
    failed: Callable[[str, Outcome, str], Awaitable[None]],
) -> None:
    """Start every agent that should run and does not: the manager first, then the rest together.
    One that cannot start, whatever the reason, is logged and `failed(name, why)`; the others start
    all the same, and the server comes up. `failed(name, outcome, why)`: "refused" or "failed"."""

    async def start_logged(name: str) -> None:
        try:
            await start(name)
        except Refused as e:
            log.error("could not start %s: %s", name, e)
            await failed(name, "refused", str(e))
        except Exception as e:  # a defect, not a refusal: it still must not keep the hive down
            log.exception("starting %s failed", name)
            await failed(name, "failed", f"{type(e).__name__}: {e}")

    to_start = [r for r in rows if r.desired == "running" and r.state not in ("running", "restarting")]
    for batch in manager_first_batches(to_start):
        await asyncio.gather(*(start_logged(row.name) for row in batch))


async def stop_running(rows: list[AgentRow], stop: Callable[[str], Awaitable[None]]) -> None:
    """Stop every sandbox (others first, the manager last)."""
    running = [r for r in rows if r.state in ("running", "starting")]
    for batch in reversed(manager_first_batches(running)):
        await asyncio.gather(*(stop(row.name) for row in batch), return_exceptions=True)


def manager_first(rows: list[AgentRow]) -> list[AgentRow]:
    return sorted(rows, key=lambda row: (row.name != MANAGER, row.name))


def manager_first_batches(rows: list[AgentRow]) -> list[list[AgentRow]]:
    """The manager alone, then everyone else together."""
    first = [r for r in rows if r.name == MANAGER]
    rest = [r for r in rows if r.name != MANAGER]
    return [batch for batch in (first, rest) if batch]
