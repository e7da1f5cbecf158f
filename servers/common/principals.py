"""Who is calling: a principal is a name and a role, taken from a verified token."""

from __future__ import annotations

from dataclasses import dataclass

from hyperhive.servers.common.access import Role
from hyperhive.servers.common.names import OPERATOR, SERVICE_PREFIX, SERVICES, InvalidName, check_agent_name

__all__ = ["Principal", "Role", "principal_for"]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role

    @property
    def is_agent(self) -> bool:
        """An agent or the manager: a principal whose policy comes from its agent.toml."""
        return self.role in (Role.AGENT, Role.MANAGER)

    def __str__(self) -> str:
        return self.name if self.name == self.role else f"{self.name} ({self.role})"


def principal_for(name: str, role: Role) -> Principal:
    """Build a principal, checking that the name fits the role."""
    if role is Role.OPERATOR:
        if name != OPERATOR:
            raise InvalidName(f"the operator principal is named {OPERATOR!r}, not {name!r}")
    elif role is Role.SERVICE:
        if not name.startswith(SERVICE_PREFIX) or name.removeprefix(SERVICE_PREFIX) not in SERVICES:
            known = ", ".join(SERVICE_PREFIX + server for server in sorted(SERVICES))
            raise InvalidName(f"{name!r} is not a service principal; there are exactly: {known}")
    else:
        check_agent_name(name)
    return Principal(name, role)
