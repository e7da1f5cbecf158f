"""What every hyperhive server is: a FastMCP server with hive tokens, the allow-list, and
argument errors a model can act on."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import fastmcp
import mcp_types as mt
from fastmcp import FastMCP
from fastmcp.exceptions import ValidationError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from pydantic import ValidationError as PydanticValidationError

from hyperhive.servers.common.access import ToolAccess
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.policy import AllowListMiddleware
from hyperhive.servers.common.tokens import HiveTokenVerifier, ServerCredentials

log = logging.getLogger("hyperhive.tools")


@dataclass(frozen=True)
class HiveServer:
    """A server ready to serve: its FastMCP object and what to do first when asked to stop."""

    mcp: FastMCP[Any]
    before_shutdown: Callable[[], Awaitable[None]] | None = None


def create_mcp(
    name: str,
    *,
    instructions: str,
    credentials: ServerCredentials,
    agents: AgentRegistry,
    running: Callable[[], AbstractAsyncContextManager[object]] | None = None,
    catalog: Mapping[str, ToolAccess] | None = None,
    middleware: Sequence[Middleware] = (),
) -> FastMCP[Any]:
    """A server named `name` (its catalog entry), whose `running()` context spans its life.
    `middleware` runs after the allow-list and the argument check."""
    # FastMCP's OpenTelemetry spans cost about a quarter of a call even when nothing exports them.
    # hyperhive exports no traces; FASTMCP_TELEMETRY_MODE=native turns them back on.
    if "FASTMCP_TELEMETRY_MODE" not in os.environ:
        fastmcp.settings.telemetry_mode = "off"
    _quiet_argument_warnings()
    return FastMCP(
        name,
        instructions=instructions,
        auth=HiveTokenVerifier(name, credentials.keys, agents),
        middleware=[AllowListMiddleware(name, agents, catalog), ArgumentErrors(), *middleware],
        lifespan=_lifespan(running) if running is not None else None,
        # Unexpected exceptions reach the caller as "Error calling tool 'x'"; the server logs them.
        mask_error_details=True,
    )


def _lifespan(
    running: Callable[[], AbstractAsyncContextManager[object]],
) -> Callable[[FastMCP[Any]], AbstractAsyncContextManager[dict[str, Any]]]:
    @asynccontextmanager
    async def lifespan(_: FastMCP[Any]) -> AsyncIterator[dict[str, Any]]:
        async with running():  # the tools close over the object that runs
            yield {}

    return lifespan


class ArgumentErrors(Middleware):
    """Say which arguments were wrong, plainly, instead of pydantic's report with its links."""

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        try:
            return await call_next(context)
        except ValidationError as e:
            cause = e.__cause__
            if not isinstance(cause, PydanticValidationError):
                raise
            name = context.message.name
            problems = "; ".join(_problem(error) for error in cause.errors())
            hint = ""
            if any(error["type"] == "unexpected_keyword_argument" for error in cause.errors()):
                tool = await context.fastmcp_context.fastmcp.get_tool(name) if context.fastmcp_context else None
                if tool is not None:
                    hint = f" ({name} takes: {', '.join(tool.parameters.get('properties', {}))})"
            message = f"invalid arguments for {name}: {problems}{hint}"
            log.info("refused: %s", message[:500])
            raise Refused(message) from None


class _DropArgumentWarnings(logging.Filter):
    """FastMCP warns about every call with bad arguments, over several lines; ArgumentErrors
    logs one line instead (a caller's mistake is not the server's warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Invalid arguments for tool")


def _quiet_argument_warnings() -> None:
    server_log = logging.getLogger("fastmcp.server.server")
    if not any(isinstance(f, _DropArgumentWarnings) for f in server_log.filters):
        server_log.addFilter(_DropArgumentWarnings())


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "arguments"
    if error["type"] == "unexpected_keyword_argument":
        return f"{where}: unknown argument"
    if error["type"] == "missing_argument" or error["type"] == "missing":
        return f"{where}: required"
    return f"{where}: {str(error['msg']).removeprefix('Value error, ')}"
