"""Every hyperhive tool and who may call it by default.

One table serves both enforcement (each server's allow-list middleware) and validation
(`agent.toml` may only name tools that exist and that an agent may be granted).
A server's registered tools must match its entry here exactly; a test checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .principals import Role


@dataclass(frozen=True, slots=True)
class ToolAccess:
    """The roles that hold a tool without any agent.toml saying so."""

    roles: frozenset[Role]

    @property
    def grantable(self) -> bool:
        """Whether an agent.toml may grant it. Operator and service tools never are."""
        return Role.AGENT in self.roles or Role.MANAGER in self.roles

    @property
    def kind(self) -> str:
        """What the tool is, for messages: 'an agent tool', 'a manager tool', ..."""
        if Role.AGENT in self.roles:
            return "an agent tool"
        if Role.MANAGER in self.roles:
            return "a manager tool"
        if Role.OPERATOR in self.roles:
            return "an operator tool"
        return "a service tool"


def _access(*roles: Role) -> ToolAccess:
    return ToolAccess(frozenset(roles))


AGENT: Final = _access(Role.AGENT, Role.MANAGER, Role.OPERATOR)
MANAGER: Final = _access(Role.MANAGER, Role.OPERATOR)
MANAGER_AND_SERVICE: Final = _access(Role.MANAGER, Role.OPERATOR, Role.SERVICE)
OPERATOR: Final = _access(Role.OPERATOR)
OPERATOR_AND_SERVICE: Final = _access(Role.OPERATOR, Role.SERVICE)
SERVICE: Final = _access(Role.SERVICE)
# What an agent's harness reports about itself (identity from its token): not the operator's.
HARNESS: Final = _access(Role.AGENT, Role.MANAGER)

CATALOG: Final[Mapping[str, Mapping[str, ToolAccess]]] = {
    "broker": {
        "send": AGENT,
        "recv": AGENT,
        "recv_batch": AGENT,
        "ack": AGENT,
        "lease": AGENT,
        "pending_count": AGENT,
        "thread": AGENT,
        "remind": AGENT,
        "list_my_reminders": AGENT,
        "cancel_reminder": AGENT,
        "list_messages": OPERATOR_AND_SERVICE,
        "stats": OPERATOR_AND_SERVICE,
        "post_event": SERVICE,
    },
    "lifecycle": {
        "list_agents": MANAGER_AND_SERVICE,
        "agent_status": MANAGER_AND_SERVICE,
        "logs": MANAGER_AND_SERVICE,
        "agent_config": MANAGER_AND_SERVICE,
        "agent_stats": MANAGER_AND_SERVICE,
        "create_agent": OPERATOR_AND_SERVICE,
        "start": OPERATOR_AND_SERVICE,
        "stop": OPERATOR_AND_SERVICE,
        "restart": OPERATOR_AND_SERVICE,
        "kill": OPERATOR_AND_SERVICE,
        "rebuild": OPERATOR_AND_SERVICE,
        "rebuild_stale": OPERATOR_AND_SERVICE,
        "destroy": OPERATOR_AND_SERVICE,
        "set_model": OPERATOR_AND_SERVICE,
        "cancel_turn": OPERATOR_AND_SERVICE,
        "apply_commit": SERVICE,
        "diff_commit": MANAGER_AND_SERVICE,
        "create_draft": OPERATOR_AND_SERVICE,
        "read_state_file": OPERATOR,
        "audit": OPERATOR,
        "record_turn": HARNESS,
    },
    "approvals": {
        "request_apply_commit": MANAGER,
        "request_spawn": MANAGER,
        "request_spawn_draft": MANAGER,
        "request_spawn_commit": MANAGER,
        "list_my_requests": MANAGER,
        "pending_approvals": OPERATOR,
        "approve": OPERATOR,
        "deny": OPERATOR,
        "approval_history": OPERATOR,
    },
    "operator": {
        "ask_operator": MANAGER,
        "ask_agent": AGENT,
        "answer_question": AGENT,
        "list_my_asks": AGENT,
        "cancel_ask": AGENT,
        "pending_questions": OPERATOR,
        "answer": OPERATOR,
        "cancel_question": OPERATOR,
        "question_history": OPERATOR,
    },
}

SERVERS: Final = tuple(CATALOG)

# Exactly the tools each service principal calls, per server: a service may call nothing else,
# whatever its role would allow (approvals cannot kill an agent; nobody but approvals applies).
SERVICE_TOOLS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    "service:approvals": {
        "lifecycle": frozenset(
            {"diff_commit", "list_agents", "agent_config", "apply_commit", "create_agent", "create_draft"}
        ),
        "broker": frozenset({"post_event"}),
    },
    "service:operator": {"broker": frozenset({"post_event"})},
    "service:lifecycle": {"broker": frozenset({"post_event"})},
}


def audience_of_service(principal_name: str) -> tuple[str, ...]:
    """The servers a service principal's token is for: those it calls."""
    return tuple(sorted(SERVICE_TOOLS[principal_name]))


# Tools the harness calls for its agent, never offered to the agent's Claude Code: the model must
# not be able to forge its own turn stats. The harness leaves them out of Claude Code's MCP config.
HARNESS_ONLY: Final = frozenset({("lifecycle", "record_turn")})


def offered_to_claude(server: str, tools: frozenset[str]) -> frozenset[str]:
    """`tools` of `server` without the harness's own."""
    return frozenset(tool for tool in tools if (server, tool) not in HARNESS_ONLY)


def role_default(server: str, role: Role) -> frozenset[str]:
    """The tools of `server` that `role` holds by default."""
    return frozenset(name for name, access in CATALOG.get(server, {}).items() if role in access.roles)
