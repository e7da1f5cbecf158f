"""Allow-lists, enforced by every server: one decision function and one middleware; and the one
allowed_recipients check, for every tool that addresses someone (send, remind, ask_agent).

Role defaults come from the catalog; an agent's `agent.toml` narrows or widens them with
`[tools] <server> = [...]`. Operator and service tools can never be granted to agents.
A tool a caller may not use is absent from its tools/list, and calling it is refused with
a ToolError that names the missing permission (`<server>.<tool>`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import mcp_types as mt
from fastmcp.exceptions import ToolError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import Tool, ToolResult

from hyperhive.servers.common.access import ToolAccess
from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.catalog import CATALOG, SERVICE_TOOLS
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.names import BROADCAST
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.tokens import current_principal


def refusal(
    server: str,
    tool: str,
    principal: Principal | None,
    config: AgentConfig | None,
    catalog: Mapping[str, ToolAccess] | None = None,
) -> str | None:
    """None if `principal` may call `server.tool`, else the reason it may not (one sentence).

    `catalog` is the server's entry in CATALOG unless given (a benchmark's echo server).
    """
    access = (CATALOG.get(server, {}) if catalog is None else catalog).get(tool)
    permission = f"{server}.{tool}"
    if access is None:
        return f"Unknown tool: {tool!r}"
    if principal is None:
        return f"permission denied: {permission} needs an authenticated caller"
    if principal.role is Role.SERVICE:
        if Role.SERVICE in access.roles and tool in SERVICE_TOOLS.get(principal.name, {}).get(server, ()):
            return None
        return f"permission denied: {principal.name} does not call {permission}"
    if principal.role is Role.OPERATOR:
        if principal.role in access.roles:
            return None
        return f"permission denied: {permission} is {access.kind}; {principal} may not call it"
    if config is None:
        return f"permission denied: {principal.name} has no applied config, so it holds no tools"
    if tool in config.allowed_tools(server):
        return None
    if not access.grantable:
        return f"permission denied: {permission} is {access.kind}; agents may not call it"
    approver = "the operator" if principal.role is Role.MANAGER else "the manager"
    return (
        f"permission denied: {principal.name} lacks {permission}; ask {approver} to add "
        f'"{tool}" to [tools] {server} in its agent.toml'
    )


def recipient_refusal(me: Principal, config: AgentConfig | None, to: str, *, verb: str) -> str | None:
    """None if `me` may address `to` ("*": everyone) by its allowed_recipients, else why not.

    Only agents are limited: the manager and the operator address anyone. An agent without an
    applied config (it was destroyed a moment ago) may address no one. `verb` names the act in
    the refusal: "send to", "ask".
    """
    if me.role is not Role.AGENT or (config is not None and config.may_send_to(to)):
        return None
    if to == BROADCAST:
        return "broadcast ('*') is not in your allowed_recipients; send to each agent instead"
    allowed = ", ".join(config.allowed_recipients) if config is not None else ""
    return f"you may not {verb} {to!r}; your allowed_recipients are: {allowed or 'nobody'}"


async def check_recipient(agents: AgentRegistry, me: Principal, to: str, *, verb: str) -> None:
    """Refused unless `me` may address `to` (recipient_refusal)."""
    config = await agents.lookup(me.name) if me.role is Role.AGENT else None
    reason = recipient_refusal(me, config, to, verb=verb)
    if reason is not None:
        raise Refused(reason)


class AllowListMiddleware(Middleware):
    """Hides and refuses the tools of `server` that the caller's policy does not allow."""

    def __init__(self, server: str, agents: AgentRegistry, catalog: Mapping[str, ToolAccess] | None = None) -> None:
        self.server = server
        self.agents = agents
        self.catalog = catalog

    async def _refusal(self, tool: str) -> str | None:
        principal = current_principal()
        config = await self.agents.lookup(principal.name) if principal and principal.is_agent else None
        return refusal(self.server, tool, principal, config, self.catalog)

    async def on_list_tools(
        self,
        context: MiddlewareContext[mt.ListToolsRequest],
        call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        tools = await call_next(context)
        return [tool for tool in tools if await self._refusal(tool.name) is None]

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        reason = await self._refusal(context.message.name)
        if reason is not None:
            raise ToolError(reason, log_level=logging.WARNING)  # worth seeing: a call outside an allow-list
        return await call_next(context)
