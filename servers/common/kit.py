"""What every hyperhive server runs on, built once in its server.py `create(...)` and handed to its
rules class: its own database (sqlite, or for a shared store PostgreSQL: storage.py), the agent
registry, the clock, the clients it calls other servers with (as its service principal) and, for a
server that reports helper events, its outbox.

`running(*loops, first=...)` is the server's life: the database open, the registry read, `first`
done before any loop or call (work a crash left half done), then the registry watch, the outbox
and the server's own loops in the background until exit, and every client closed at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from hyperhive.servers.common.agents import AgentRegistry, agent_registry
from hyperhive.servers.common.background import background
from hyperhive.servers.common.client import HiveClient, server_addresses
from hyperhive.servers.common.clock import Clock, SystemClock
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.outbox import Outbox
from hyperhive.servers.common.storage import AnyDatabase, Schemas, store_database

Loop = Callable[[], Coroutine[Any, Any, object]]


class ServiceKit:
    def __init__(
        self,
        server: str,
        config: HiveConfig,
        schemas: Schemas,
        *,
        token: Callable[[], str] | None = None,
        clock: Clock | None = None,
        agents: AgentRegistry | None = None,
    ) -> None:
        """`token`: the server's service token, for the servers it calls; one that calls none (the
        broker) has none, and so no outbox either (its own events are its messages)."""
        self.server = server
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.agents = agents or agent_registry(config, server)
        self.db: AnyDatabase = store_database(server, config, schemas)
        self._token = token
        self._clients: list[HiveClient] = []
        # The broker's refusals and outages are the outbox's to handle: no retries inside a call.
        self._outbox = Outbox(self.db, self.client("broker", retry_seconds=0), self.clock) if token else None

    @property
    def sqlite(self) -> Database:
        """The database of a server whose store is sqlite only (its host's own: lifecycle, forge)."""
        if not isinstance(self.db, Database):
            raise RuntimeError(f"the {self.server} server's store is sqlite only")
        return self.db

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError(f"the {self.server} server was given no service token, so it has no outbox")
        return self._outbox

    def service_token(self) -> str:
        """This server's service token (for a client of its own making: another host's server)."""
        if self._token is None:
            raise RuntimeError(f"the {self.server} server was given no service token; it calls no other server")
        return self._token()

    def client(self, server: str, *, timeout: float = 30.0, retry_seconds: float = 10.0) -> HiveClient:
        """A client of `server` with this server's service token, closed when the server stops; it
        fails over to the server's other processes (the broker's `failover` in hive.toml)."""
        if self._token is None:
            raise RuntimeError(f"the {self.server} server was given no service token; it calls no other server")
        client = HiveClient(
            server_addresses(self.config, server), self._token, timeout=timeout, retry_seconds=retry_seconds
        )
        self._clients.append(client)
        return client

    @asynccontextmanager
    async def running(self, *loops: Loop, first: Callable[[], Awaitable[object]] | None = None) -> AsyncIterator[None]:
        """The server's life: see the module's docstring. `loops` are started (called) once `first` is done."""
        async with self.db:
            await self.agents.open()
            try:
                await self.agents.refresh()
                if first is not None:
                    await first()
                own = [self.agents.watch(), *([self._outbox.run()] if self._outbox else [])]
                async with background(*own, *(loop() for loop in loops)):
                    yield
            finally:
                for client in self._clients:
                    await client.close()
                await self.agents.close()
