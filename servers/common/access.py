"""Roles, and what a tool grants to each by default: the vocabulary of the server registry.

It imports nothing of hyperhive's, so the registry (and names.py, which reads it) can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    AGENT = "agent"
    MANAGER = "manager"
    OPERATOR = "operator"
    SERVICE = "service"


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


# Each level is named for the roles that hold it, but AGENT: an agent tool, held by every agent (the
# manager is one) and by the operator.
AGENT: Final = _access(Role.AGENT, Role.MANAGER, Role.OPERATOR)
MANAGER_AND_OPERATOR: Final = _access(Role.MANAGER, Role.OPERATOR)
MANAGER_OPERATOR_AND_SERVICE: Final = _access(Role.MANAGER, Role.OPERATOR, Role.SERVICE)
OPERATOR: Final = _access(Role.OPERATOR)
OPERATOR_AND_SERVICE: Final = _access(Role.OPERATOR, Role.SERVICE)
SERVICE: Final = _access(Role.SERVICE)
# What an agent's harness reports about itself (identity from its token): not the operator's.
HARNESS: Final = _access(Role.AGENT, Role.MANAGER)
