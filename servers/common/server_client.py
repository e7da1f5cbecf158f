"""What the typed clients of the hive's servers share: one HiveClient, and results validated into
the same pydantic models the tools return.

    async with BrokerClient.for_server(config, token) as broker:
        sent = await broker.send("alice", "hi")  # a SendResult

Each server's client (servers/<server>/client.py) is a subclass with one method per tool the
hive's own processes call; the tool's name and its result model are written there once, so a
renamed field or tool is found by mypy, not by users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel

from hyperhive.servers.common.client import HiveClient, ServerAddress, TokenSource
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.harnessdir import ServerEndpoint

M = TypeVar("M", bound=BaseModel)


class ServerClient:
    server: ClassVar[str]  # the server's name in hive.toml and the catalog

    def __init__(self, hive: HiveClient, *, call_timeout: float | None = None) -> None:
        self.hive = hive
        self.call_timeout = call_timeout  # None: the HiveClient's own

    @classmethod
    def for_server(cls, config: HiveConfig, token: TokenSource, **kwargs: Any) -> Self:
        """Reach the server where hive.toml says it listens; kwargs as HiveClient's (timeout, retry_seconds)."""
        return cls(HiveClient.for_server(config, cls.server, token, **kwargs))

    @classmethod
    def at(cls, url: str, token: TokenSource, *, tls_cert_pem: str | None = None, **kwargs: Any) -> Self:
        """Reach the server at `url` (the harness: the address hive.json gives it); an https one is
        trusted by `tls_cert_pem` (hive.json's certificate for it) if given, else by the system's CAs."""
        return cls(HiveClient(ServerAddress(cls.server, url, tls_cert_pem=tls_cert_pem), token, **kwargs))

    @classmethod
    def at_any(cls, endpoints: Sequence[ServerEndpoint], token: TokenSource, **kwargs: Any) -> Self:
        """Reach the server at whichever of `endpoints` answers, the first preferred (the harness: every
        address hive.json gives it, HarnessInfo.endpoints); each trusted as `at` trusts its one."""
        addresses = [ServerAddress(cls.server, one.url, tls_cert_pem=one.tls_cert) for one in endpoints]
        return cls(HiveClient(addresses, token, **kwargs))

    def with_timeout(self, seconds: float) -> Self:
        """The same client (same session) whose calls may take up to `seconds`: actions, not polls."""
        return type(self)(self.hive, call_timeout=seconds)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.hive.close()

    async def _call(self, tool: str, result: type[M], **arguments: Any) -> M:
        """Call `tool`; errors as HiveClient.call raises them (ToolError, AuthRefused, ServerUnavailable)."""
        return await self.hive.call(tool, arguments, result=result, timeout=self.call_timeout)
