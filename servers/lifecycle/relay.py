"""Calls about an agent of another host go to that host's lifecycle server: any host's lifecycle
server answers for the whole hive, so the dashboard, the CLI, approvals and the manager each talk to
one address and name agents, never hosts.

A call is relayed with the caller's own token (every lifecycle server of the hive checks it and its
allow-list itself) and marked relayed, so the host it reaches answers it alone and never relays it
again. Which calls: every tool whose `name` is an agent placed on another host (hivedb.py);
`create_agent` to the host placement picks (hosts.py); `list_agents` and `swarm_stats` asked of
every host and merged (the agents of a host that does not answer show as `unreachable`); a
terminal's calls to the host its session was opened on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
import mcp_types as mt
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_access_token, get_http_headers
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult

from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.names import is_agent_name
from hyperhive.servers.lifecycle.hosts import RELAYED_HEADER, HostPlane
from hyperhive.servers.lifecycle.models import AgentInfo, AgentList, SwarmStats

if TYPE_CHECKING:
    from hyperhive.servers.common.hivedb import HostRow

log = logging.getLogger("hyperhive.lifecycle.relay")

MERGED: Final = frozenset({"list_agents", "swarm_stats"})
SESSION_TOOLS: Final = frozenset({"terminal_io", "terminal_resize", "terminal_close"})
ASK_SECONDS: Final = 10.0  # a host asked for its part of a merged list
MAX_SESSIONS: Final = 1000


class HostRelay(Middleware):
    def __init__(self, plane: HostPlane, unreachable: Callable[[str, str], Awaitable[AgentInfo]]) -> None:
        """`unreachable(name, host)`: how agent `name` of host `host`, which does not answer, is listed."""
        self.plane = plane
        self.unreachable = unreachable
        self._sessions: dict[str, str] = {}  # terminal session -> the host it was opened on

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        if not self.plane.spans_hosts or get_http_headers(include={RELAYED_HEADER}).get(RELAYED_HEADER):
            return await call_next(context)
        tool = context.message.name
        arguments = dict(context.message.arguments or {})
        if tool in MERGED:
            return await self._merged(tool, arguments, context, call_next)
        host = await self._host_for(tool, arguments)
        if host is None or host == self.plane.name:
            return await call_next(context)
        result = await self._relay(host, tool, arguments)
        if tool == "terminal_open" and isinstance(session := (result.structured_content or {}).get("session"), str):
            if len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session] = host
        return result

    async def _host_for(self, tool: str, arguments: dict[str, Any]) -> str | None:
        """The host that answers this call, if another's; None: this one."""
        if tool in SESSION_TOOLS:
            session = arguments.get("session")
            host = self._sessions.get(session) if isinstance(session, str) else None
            if tool == "terminal_close" and isinstance(session, str):
                self._sessions.pop(session, None)
            return host
        name = arguments.get("name")
        if not isinstance(name, str) or not is_agent_name(name):
            return None  # not about an agent (or not a name: the tool itself says so)
        host = await self.plane.host_of(name)
        if host is None and tool == "create_agent":
            wanted = arguments.get("host")
            if wanted is None and arguments.get("sha") is not None:
                return None  # from a draft: its repo is this host's (create_draft made it here)
            host = await self.plane.choose(wanted if isinstance(wanted, str) else None)
            arguments["host"] = host
        return host

    async def _relay(self, host: str, tool: str, arguments: dict[str, Any]) -> ToolResult:
        async with self._client(await self._host_row(host)) as client:
            try:
                data = await client.call(tool, arguments)
            except ToolError as e:  # its refusal, as it said it
                raise Refused(str(e)) from None
            except (ServerUnavailable, AuthRefused) as e:
                raise Refused(
                    f"{arguments.get('name') or 'that agent'} lives on host {host}, whose lifecycle server "
                    f"does not answer ({e}); try again when {host} is back"
                ) from None
        return ToolResult(structured_content=data)

    async def _merged(
        self,
        tool: str,
        arguments: dict[str, Any],
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        """This host's answer, with every other host's merged in."""
        own = await call_next(context)
        others = [h for h in await self.plane.hosts() if h.name != self.plane.name]
        answers: dict[str, Any] = {}

        async def ask(host: HostRow) -> None:
            async with self._client(host) as client:
                try:
                    answers[host.name] = await client.call(tool, arguments, timeout=ASK_SECONDS)
                except (ToolError, ServerUnavailable, AuthRefused) as e:
                    log.warning("host %s did not answer %s: %s", host.name, tool, e)

        with anyio.move_on_after(ASK_SECONDS + 1):
            async with anyio.create_task_group() as group:
                for host in others:
                    if host.up:  # a host known to be down is not waited for
                        group.start_soon(ask, host)
        if tool == "swarm_stats":
            stats = SwarmStats.model_validate(own.structured_content)
            for data in answers.values():
                stats.agents.extend(SwarmStats.model_validate(data).agents)
            stats.agents.sort(key=lambda totals: totals.name)
            return ToolResult(structured_content=stats.model_dump(mode="json"))
        listed = AgentList.model_validate(own.structured_content)
        for host in others:
            if host.name in answers:
                theirs = AgentList.model_validate(answers[host.name])
                listed.agents.extend(a for a in theirs.agents if a.host == host.name)
                listed.drafts.extend(theirs.drafts)
            else:
                for placed in await self.plane.directory.agents(host.name):
                    if placed.config is not None:
                        listed.agents.append(await self.unreachable(placed.name, host.name))
        listed.agents.sort(key=lambda agent: agent.name)
        listed.drafts = sorted(set(listed.drafts))
        return ToolResult(structured_content=listed.model_dump(mode="json"))

    async def _host_row(self, host: str) -> HostRow:
        for row in await self.plane.hosts():
            if row.name == host:
                return row
        raise Refused(f"the agent lives on host {host}, which the hive no longer knows")

    def _client(self, host: HostRow) -> HiveClient:
        token = get_access_token()
        if token is None:  # the verifier let the call in: it has a token
            raise Refused("a relayed call needs the caller's token")
        return HiveClient(
            # Its https trusted by the certificate it registered (the directory is the hive's own).
            ServerAddress(f"lifecycle of host {host.name}", host.lifecycle_url, tls_cert_pem=host.tls_cert),
            token.token,
            retry_seconds=0,
            timeout=ASK_SECONDS,
            headers={RELAYED_HEADER: "1"},
        )
