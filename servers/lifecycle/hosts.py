"""This host among the hive's hosts: registration and heartbeat, the watch for hosts gone silent,
and placement (which host a new agent lives on).

A hive spans hosts when its stores are in PostgreSQL (`[storage] url`): each host runs a lifecycle
server, whose registry publishes the host's agents to the hive's directory (common/hivedb.py). On
one host (sqlite) this is inert: every agent lives here, `claim` takes any name.

Every lifecycle server watches every host's heartbeat; the first to see one `[host]
down_after_seconds` late marks it down (one winner, hivedb.mark_down) and tells the manager
(`host_down`); the host's own next heartbeat marks it up again (`host_up`).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx2
from fastmcp.exceptions import ToolError

from hyperhive.servers.common.agents import PublishingAgentRegistry
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.db import DatabaseError
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.events import HostDown, HostUp
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import MANAGER

if TYPE_CHECKING:
    from hyperhive.servers.common.hivedb import HiveDirectory, HostRow

log = logging.getLogger("hyperhive.lifecycle.hosts")

RELAYED_HEADER: Final = "x-hyperhive-relayed"  # a call one lifecycle server makes of another: answer it there
ADOPT_SECONDS: Final = 1800.0  # a move's whole copy, however large the agent's state


class HostPlane:
    def __init__(self, kit: ServiceKit) -> None:
        self.kit = kit
        self.settings = kit.config.host
        self.name = self.settings.name
        registry = kit.agents
        self.registry = registry if isinstance(registry, PublishingAgentRegistry) else None

    @property
    def spans_hosts(self) -> bool:
        return self.registry is not None

    @property
    def directory(self) -> HiveDirectory:
        if self.registry is None:
            raise RuntimeError("one host: there is no hive directory")
        return self.registry.directory

    # ------------------------------------------------------------------------------- the names
    @asynccontextmanager
    async def claim(self, name: str) -> AsyncIterator[None]:
        """Take `name` for an agent created here, for as long as its files are being written; Refused
        if it lives on another host."""
        if self.registry is None:
            yield
            return
        self.registry.placing.add(name)  # not unpublished for want of files meanwhile
        try:
            host = await self.directory.place(name, self.name)
            if host != self.name:
                raise Refused(
                    f"{name} lives on host {host}, not on {self.name}: ask {host}'s lifecycle server "
                    "(a call through any host's reaches it) or pick another name"
                )
            yield
        finally:
            self.registry.placing.discard(name)
            await self.registry.refresh()  # what was made is published; a failed create frees the name

    async def manager_lives_elsewhere(self) -> bool:
        """The hive's manager lives on another host (each hive has one, on the host that made it first)."""
        if self.registry is None:
            return False
        return await self.directory.place(MANAGER, self.name) != self.name

    async def host_of(self, name: str) -> str | None:
        """The host agent `name` lives on, if it is placed anywhere."""
        if self.registry is None:
            return None
        placed = await self.directory.agent(name)
        return placed.host if placed else None

    async def choose(self, host: str | None, labels: Sequence[str] = ()) -> str:
        """The host a new agent goes to: `host` if it can take one, else the least loaded host that is up,
        has room and has every label in `labels`. Refused, saying why, if none can."""
        if self.registry is None:
            if host not in (None, self.name):
                raise Refused(f"this hive has one host ({self.name}); there is no host {host!r}")
            return self.name
        hosts = await self.directory.hosts()
        wanted = set(labels)

        def unfit(row: HostRow) -> str | None:
            if not row.up:
                return "down"
            if not wanted <= set(row.labels):
                return f"lacks label {', '.join(sorted(wanted - set(row.labels)))}"
            if row.agents >= row.capacity:
                return f"full ({row.agents} of {row.capacity} agents)"
            return None

        if host is not None:
            row = next((h for h in hosts if h.name == host), None)
            if row is None:
                raise Refused(f"no host named {host!r}; the hive's hosts: {', '.join(h.name for h in hosts)}")
            if why := unfit(row):
                raise Refused(f"host {host} cannot take a new agent: {why}")
            return host
        fit = [h for h in hosts if unfit(h) is None]
        if not fit:
            status = "; ".join(f"{h.name}: {unfit(h)}" for h in hosts)
            raise Refused(f"no host can take a new agent ({status}); add capacity or a host")
        return min(fit, key=lambda h: (h.agents / max(h.capacity, 1), h.agents, h.name)).name

    async def host(self, name: str) -> HostRow:
        for row in await self.hosts():
            if row.name == name:
                return row
        raise Refused(f"the hive knows no host named {name!r}")

    async def call_on(self, host: str, tool: str, arguments: dict[str, Any]) -> Any:
        """Call `tool` on `host`'s lifecycle server as this server's service (answered there)."""
        target = await self.host(host)
        address = ServerAddress(f"lifecycle of host {target.name}", target.lifecycle_url, tls_cert_pem=target.tls_cert)
        async with HiveClient(
            address, self.kit.service_token, retry_seconds=0, timeout=ADOPT_SECONDS, headers={RELAYED_HEADER: "1"}
        ) as client:
            try:
                return await client.call(tool, arguments)
            except ToolError as e:
                raise Refused(f"host {target.name}: {e}") from None
            except (ServerUnavailable, AuthRefused) as e:
                raise Refused(f"host {target.name} does not answer: {e}") from None

    def fetcher(self, source: HostRow) -> httpx2.AsyncClient:
        """An HTTP client of `source`'s lifecycle server (its https trusted by its registered certificate)."""
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cadata=source.tls_cert) if source.tls_cert else ssl.create_default_context()
        )
        return httpx2.AsyncClient(verify=verify, timeout=httpx2.Timeout(30.0, read=300.0))

    async def hosts(self) -> list[HostRow]:
        return await self.directory.hosts() if self.registry is not None else []

    # ----------------------------------------------------------------------- heartbeat and watch
    async def run(self) -> None:
        """Keep this host's heartbeat and watch the other hosts', forever."""
        if self.registry is None:
            return
        settings = self.settings  # registered as the registry opened (its agents' rows name it)
        while True:
            try:
                was_down = await self.directory.heartbeat(self.name)
                if was_down is not None:
                    await self.kit.outbox.post(MANAGER, HostUp(host=self.name, down_seconds=time.time() - was_down))
                for host in await self.directory.mark_down(settings.down_after_seconds):
                    agents = [a.name for a in await self.directory.agents(host) if a.config is not None]
                    log.warning("host %s is down: no heartbeat for %g s", host, settings.down_after_seconds)
                    event = HostDown(host=host, agents=agents, silent_seconds=settings.down_after_seconds)
                    await self.kit.outbox.post(MANAGER, event)
            except DatabaseError as e:  # StoreUnavailable too: the database is away, try at the next beat
                log.warning("host heartbeat: %s", e)
            await anyio.sleep(settings.heartbeat_seconds)
