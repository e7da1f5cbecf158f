"""Config diffs: what applying a proposed config would change, as the operator reviews it."""

from __future__ import annotations

import difflib
import json
import re
import shlex
from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel

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
    return [text for _, text in _widened(old, new)]


def _widened(old: Mapping[str, str], new: Mapping[str, str]) -> list[tuple[RiskyField, str]]:
    """widenings(), each with the summary field it is about (ConfigSummary.risky)."""
    try:
        after = parse_agent_config(new.get(AGENT_TOML, ""), AGENT_TOML)
    except ConfigError:
        return []  # invalid: it cannot be requested or applied anyway
    try:
        before = parse_agent_config(old[AGENT_TOML], AGENT_TOML) if AGENT_TOML in old else AgentConfig()
    except ConfigError:
        before = AgentConfig()
    found: list[tuple[RiskyField, str]] = []
    if after.role != before.role and after.role == "manager":
        found.append(("role", f"role: {before.role} → {after.role}"))
    if added := [pattern for pattern in after.bash if pattern not in before.bash]:
        found.append(("bash", "bash: + " + ", ".join(json.dumps(pattern) for pattern in added)))
    for server in CATALOG:
        if tools := sorted(after.allowed_tools(server) - before.allowed_tools(server)):
            found.append(("tools", f"tools.{server}: + {', '.join(tools)}"))
    if BROADCAST not in before.allowed_recipients:
        recipients = [name for name in after.allowed_recipients if name not in before.allowed_recipients]
        if recipients:
            found.append(("recipients", "allowed_recipients: + " + ", ".join(json.dumps(n) for n in recipients)))
    for name, extra in after.mcp_servers.items():
        if name not in before.mcp_servers:
            found.append(("mcp_servers", f"mcp_servers: + {name} ({_mcp(extra)})"))
        elif before.mcp_servers[name] != extra:
            changed = f"{name} changed ({_mcp(before.mcp_servers[name])} → {_mcp(extra)})"
            found.append(("mcp_servers", f"mcp_servers: {changed}"))
    sandbox_before, sandbox_after = before.sandbox.model_dump(), after.sandbox.model_dump()
    for key, value in sandbox_after.items():
        if key != "max_restarts" and value != sandbox_before.get(key):  # any other setting: what it runs, binds
            found.append(("sandbox", f"sandbox.{key}: {_setting(sandbox_before.get(key))} → {_setting(value)}"))
    if _SHARED_ACCESS[after.shared] > _SHARED_ACCESS[before.shared]:
        shared = f"shared: {before.shared} → {after.shared} (the hive's shared workspace, /hive/shared)"
        found.append(("shared", shared))
    for bind in after.binds:
        if bind not in before.binds:  # a new host path, a new place for it, or read-write now
            found.append(("binds", f"binds: + host {bind.host} at {bind.path} ({bind.mode})"))
    for key in ("usd_per_day", "usd_per_turn"):  # a raised or removed limit: it may spend more
        spent_before, spent_after = getattr(before.budget, key), getattr(after.budget, key)
        if spent_before is not None and (spent_after is None or spent_after > spent_before):
            shown = "no limit" if spent_after is None else f"${spent_after:g}"
            found.append(("budget", f"budget.{key}: ${spent_before:g} → {shown}"))
    if old.get("agent.nix") != new.get("agent.nix"):
        found.append(("nix", "agent.nix: changed (the container's NixOS config: read its diff)"))
    return found


RiskyField = Literal[
    "role", "bash", "tools", "recipients", "mcp_servers", "sandbox", "shared", "binds", "budget", "nix"
]


class ConfigSummary(BaseModel):
    """A new agent's config as the operator reviews it, read from its parsed agent.toml."""

    role: str
    model: str
    recipients: list[str]  # whom it may message ("*": everyone)
    bash: list[str]  # its Bash allowedTools patterns
    tools: dict[str, list[str]]  # per server, the tools set explicitly; a server left out has the role's defaults
    mcp_servers: list[str]  # "name (http: URL)" or "name (stdio: command)"
    binds: list[str]  # "host /srv/data at /data (ro)"
    shared: str  # the hive's shared workspace: rw, ro or none
    network: str | None  # the sandbox's network; None: the backend's default
    command: list[str] | None  # what the sandbox runs instead of the harness; None: the harness
    usd_per_day: float | None  # None: no daily limit
    usd_per_turn: float | None
    nix: bool  # it has an agent.nix (read the diff)
    risky: list[RiskyField]  # the fields above that allow more than a default agent (see the widenings)


def summary(files: Mapping[str, str]) -> ConfigSummary | None:
    """What a new agent made from `files` would be and may do; None if its agent.toml is invalid."""
    try:
        config = parse_agent_config(files.get(AGENT_TOML, ""), AGENT_TOML)
    except ConfigError:
        return None
    return ConfigSummary(
        role=config.role,
        model=config.model,
        recipients=config.allowed_recipients,
        bash=config.bash,
        tools={server: sorted(names) for server, names in config.tools.items()},
        mcp_servers=[f"{name} ({_mcp(extra)})" for name, extra in config.mcp_servers.items()],
        binds=[f"host {bind.host} at {bind.path} ({bind.mode})" for bind in config.binds],
        shared=config.shared,
        network=config.sandbox.network,
        command=config.sandbox.command,
        usd_per_day=config.budget.usd_per_day,
        usd_per_turn=config.budget.usd_per_turn,
        nix="agent.nix" in files,
        risky=sorted({field for field, _ in _widened({}, files)}),
    )


_HUNK: Final = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def created_files(diff: str) -> dict[str, str] | None:
    """The files a diff made by render_diff creates, whole: a new agent's diff is against nothing,
    so it holds every line of each file. None if it changes a file that was there before.

    Lines are counted by the hunk headers, so a file line that reads like a header ("+++ x") is
    still read as a line.
    """
    lines = diff.splitlines()
    files: dict[str, str] = {}
    at = 0
    while at < len(lines):
        if at + 2 >= len(lines) or lines[at] != "--- /dev/null" or not lines[at + 1].startswith("+++ "):
            return None
        name = lines[at + 1][4:].partition("/")[2]
        hunk = _HUNK.match(lines[at + 2])
        if name not in CONFIG_FILES or hunk is None or hunk.group(2) != "0":
            return None
        count = int(hunk.group(4) or 1)
        body = lines[at + 3 : at + 3 + count]
        if len(body) != count or not all(line.startswith("+") for line in body):
            return None
        files[name] = "".join(line[1:] + "\n" for line in body)
        at += 3 + count
    return files


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
