"""Agent and principal names: one rule, checked at every entry point."""

from __future__ import annotations

import re
from typing import Final

from hyperhive.servers.common.registry import SERVER_NAMES, callers

# 11 characters is the nixos-container name limit; agents must fit it on every backend.
AGENT_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9-]{0,10}$")

OPERATOR: Final = "operator"
SYSTEM: Final = "system"  # sender of helper events
MANAGER: Final = "manager"  # the manager agent's name
BROADCAST: Final = "*"
SERVICE_PREFIX: Final = "service:"
# The servers that call other servers, each as its own service principal: a closed set.
SERVICES: Final = frozenset(spec.name for spec in callers())

# Names an agent may not take: they mean something else in messages, tokens or paths (every
# server's name among them).
RESERVED: Final = frozenset({OPERATOR, SYSTEM, "service", "dashboard", "hive", "all", "root", *SERVER_NAMES})


class InvalidName(ValueError):
    """A name that is not a valid agent name; the message says why and what is allowed."""


def check_agent_name(name: object) -> str:
    """Return `name` if it is a valid agent name, else raise InvalidName saying why."""
    if not isinstance(name, str):
        raise InvalidName(f"agent name must be a string, got {type(name).__name__}")
    if not AGENT_NAME_RE.match(name):
        raise InvalidName(
            f"invalid agent name {name!r}: use 1-11 characters, lowercase letters, digits and '-', "
            "starting with a letter"
        )
    if name in RESERVED:
        raise InvalidName(f"invalid agent name {name!r}: it is reserved")
    return name


def is_agent_name(name: str) -> bool:
    return bool(AGENT_NAME_RE.match(name)) and name not in RESERVED


def service_principal(server: str) -> str:
    """The principal name a hyperhive server uses when it calls another one."""
    if server not in SERVICES:
        raise InvalidName(f"{server!r} is not a service: the services are {', '.join(sorted(SERVICES))}")
    return SERVICE_PREFIX + server
