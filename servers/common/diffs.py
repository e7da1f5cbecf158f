"""Config diffs: what applying a proposed config would change, as the operator reviews it."""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Mapping
from typing import Final

from hyperhive.servers.common.agent_config import AGENT_TOML, AgentConfig, McpServer, parse_agent_config
from hyperhive.servers.common.catalog import CATALOG
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.names import BROADCAST

CONFIG_FILES: Final = ("agent.toml", "agent.nix")  # what a config repo holds and an apply copies
_SHARED_ACCESS: Final = {"none": 0, "ro": 1, "rw": 2}


def render_diff(old: Mapping[str, str], new: Mapping[str, str], old_label: str, new_label: str) -> str:
    """A unified diff of the config files, file by file ('' when nothing differs)."""
    parts: list[str] = []
    for name in CONFIG_FILES:
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        parts.extend(
            difflib.unified_diff(
                (before or "").splitlines(keepends=True),
                (after or "").splitlines(keepends=True),
                fromfile=f"{old_label}/{name}" if before is not None else "/dev/null",
                tofile=f"{new_label}/{name}" if after is not None else "/dev/null",
            )
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in parts)


def widenings(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """What the new config may do that the old could not, one line each ("bash: + \"rm:*\"").

    Read from the parsed configs, so a widening cannot hide in formatting; a new agent is compared
    with the default agent. A narrowing is not listed. agent.nix cannot be read this way: any
    change to it is listed, for the operator to read in the diff.
    """
    try:
        after = parse_agent_config(new.get(AGENT_TOML, ""), AGENT_TOML)
    except ConfigError:
        return []  # invalid: it cannot be requested or applied anyway
    try:
        before = parse_agent_config(old[AGENT_TOML], AGENT_TOML) if AGENT_TOML in old else AgentConfig()
    except ConfigError:
        before = AgentConfig()
    found: list[str] = []
    if after.role != before.role and after.role == "manager":
        found.append(f"role: {before.role} → {after.role}")
    if added := [pattern for pattern in after.bash if pattern not in before.bash]:
        found.append("bash: + " + ", ".join(json.dumps(pattern) for pattern in added))
    for server in CATALOG:
        if tools := sorted(after.allowed_tools(server) - before.allowed_tools(server)):
            found.append(f"tools.{server}: + {', '.join(tools)}")
    if BROADCAST not in before.allowed_recipients:
        recipients = [name for name in after.allowed_recipients if name not in before.allowed_recipients]
        if recipients:
            found.append("allowed_recipients: + " + ", ".join(json.dumps(name) for name in recipients))
    for name, extra in after.mcp_servers.items():
        if name not in before.mcp_servers:
            found.append(f"mcp_servers: + {name} ({_mcp(extra)})")
        elif before.mcp_servers[name] != extra:
            found.append(f"mcp_servers: {name} changed ({_mcp(before.mcp_servers[name])} → {_mcp(extra)})")
    sandbox_before, sandbox_after = before.sandbox.model_dump(), after.sandbox.model_dump()
    for key, value in sandbox_after.items():
        if key != "max_restarts" and value != sandbox_before.get(key):  # any other setting: what it runs, binds
            found.append(f"sandbox.{key}: {_setting(sandbox_before.get(key))} → {_setting(value)}")
    if _SHARED_ACCESS[after.shared] > _SHARED_ACCESS[before.shared]:
        found.append(f"shared: {before.shared} → {after.shared} (the hive's shared workspace, /hive/shared)")
    for bind in after.binds:
        if bind not in before.binds:  # a new host path, a new place for it, or read-write now
            found.append(f"binds: + host {bind.host} at {bind.path} ({bind.mode})")
    if old.get("agent.nix") != new.get("agent.nix"):
        found.append("agent.nix: changed (the container's NixOS config: read its diff)")
    return found


def _mcp(server: McpServer) -> str:
    if server.type == "http":
        return f"http: {server.url}"
    return f"stdio: {shlex.join([server.command, *server.args])}"


def _setting(value: object) -> str:
    if value is None:
        return "(default)"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return shlex.join(value)
    return json.dumps(value)
