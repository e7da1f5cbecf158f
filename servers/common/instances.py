"""Which sandbox instance of an agent is the live one: `<home>/instances/<name>`.

The lifecycle server (only it) writes a fresh random id there whenever an agent's sandbox starts or
ends, and deletes it when the agent is destroyed; an agent's token names the instance it was issued
to (`inst`), and every server compares the two on every call. So a process left over from an ended
sandbox, or a token of a destroyed agent, is refused at once, and one agent never acts twice.
The directory is root's (0755; on NixOS 0750 to the servers' group): no agent can write it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.names import check_agent_name


def instance_path(directory: Path, name: str) -> Path:
    return directory / check_agent_name(name)


def current_instance(directory: Path, name: str) -> str | None:
    """The live instance id of agent `name`, or None if it has none (destroyed, or never created)."""
    try:
        return (directory / name).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def new_instance(directory: Path, name: str) -> str:
    """Begin a new instance of `name` (its sandbox started or ended): every older token stops working."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    instance = secrets.token_hex(8)
    write_atomic(instance_path(directory, name), instance + "\n", mode=0o644)
    return instance


def end_instances(directory: Path, name: str) -> None:
    """The agent is destroyed: no token of it works any more."""
    instance_path(directory, name).unlink(missing_ok=True)
