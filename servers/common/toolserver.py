"""What every hyperhive server is: a FastMCP server with hive tokens and the allow-list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastmcp import FastMCP

from .agents import AgentRegistry
from .policy import AllowListMiddleware
from .tokens import HiveTokenVerifier


@dataclass(frozen=True)
class HiveServer:
    """A server ready to serve: its FastMCP object and what to do first when asked to stop."""

    mcp: FastMCP[Any]
    before_shutdown: Callable[[], Awaitable[None]] | None = None


def create_mcp(
    name: str,
    *,
    instructions: str,
    secret: bytes,
    agents: AgentRegistry,
    lifespan: Any = None,
) -> FastMCP[Any]:
    return FastMCP(
        name,
        instructions=instructions,
        auth=HiveTokenVerifier(secret, agents),
        middleware=[AllowListMiddleware(name, agents)],
        lifespan=lifespan,
        # Unexpected exceptions reach the caller as "Error calling tool 'x'"; the server logs them.
        mask_error_details=True,
    )
