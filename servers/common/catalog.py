"""Every hyperhive tool and who may call it by default, per server, as the registry lists them.

One table serves both enforcement (each server's allow-list middleware) and validation
(`agent.toml` may only name tools that exist and that an agent may be granted). The tools are
written in each server's entry of registry.py; a server's registered tools must match them
exactly (a test checks it). Role and the access levels are access.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from hyperhive.servers.common.access import Role, ToolAccess
from hyperhive.servers.common.names import SERVICE_PREFIX
from hyperhive.servers.common.registry import REGISTRY, callers

CATALOG: Final[Mapping[str, Mapping[str, ToolAccess]]] = {spec.name: spec.tools for spec in REGISTRY}

# Exactly the tools each service principal calls, per server: a service may call nothing else,
# whatever its role would allow (approvals cannot kill an agent; nobody but approvals applies).
SERVICE_TOOLS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    SERVICE_PREFIX + spec.name: spec.calls for spec in callers()
}


def audience_of_service(principal_name: str) -> tuple[str, ...]:
    """The servers a service principal's token is for: those it calls."""
    return tuple(sorted(SERVICE_TOOLS[principal_name]))


# Tools the harness calls for its agent, never offered to the agent's Claude Code: the model must
# not be able to forge its own turn stats. The harness leaves them out of Claude Code's MCP config.
HARNESS_ONLY: Final = frozenset({("lifecycle", "record_turn"), ("lifecycle", "budget_check")})


def offered_to_claude(server: str, tools: frozenset[str]) -> frozenset[str]:
    """`tools` of `server` without the harness's own."""
    return frozenset(tool for tool in tools if (server, tool) not in HARNESS_ONLY)


def role_default(server: str, role: Role) -> frozenset[str]:
    """The tools of `server` that `role` holds by default."""
    return frozenset(name for name, access in CATALOG.get(server, {}).items() if role in access.roles)
