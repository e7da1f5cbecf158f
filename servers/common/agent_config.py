"""Per-agent settings: `agent.toml` (in the agent's proposed and applied config repos), its models,
loading and the template a new agent starts from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, Field, field_validator

from hyperhive.servers.common.binds import Bind, SharedMode, check_binds
from hyperhive.servers.common.catalog import CATALOG, role_default
from hyperhive.servers.common.config import (
    CpuWeight,
    HostLabel,
    MemorySize,
    PidsMax,
    SandboxDefaults,
    StateSize,
    TmpSize,
    Usd,
)
from hyperhive.servers.common.config_parsing import STRICT, ConfigError, check_env_names, validated
from hyperhive.servers.common.names import BROADCAST, OPERATOR, InvalidName, check_agent_name
from hyperhive.servers.common.principals import Role

AGENT_TOML: Final = "agent.toml"
DEFAULT_MODEL: Final = "sonnet"


class _Strict(BaseModel):
    model_config = STRICT


_MODEL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\[\]-]{0,99}$")
_MCP_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class HttpMcpServer(_Strict):
    type: Literal["http"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    headers: dict[str, str] = {}


class StdioMcpServer(_Strict):
    type: Literal["stdio"]
    command: Annotated[str, Field(min_length=1)]
    args: list[str] = []
    env: dict[str, str] = {}


McpServer = Annotated[HttpMcpServer | StdioMcpServer, Field(discriminator="type")]


class SandboxSettings(_Strict):
    # What the sandbox runs; unset runs the harness. Set it to run a program of your own in its place.
    command: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    max_restarts: Annotated[int, Field(ge=0, le=100)] = 3  # crashes in a row restarted, then it stays failed
    # bubblewrap: "outbound" (own network namespace: the outside world and the hive's servers, not the
    # host's other loopback services), "hive-only" (the hive's servers alone), "host" (the host's network).
    # nixos-container offers "host" only. Unset: the backend's default (bubblewrap "outbound", NixOS "host").
    network: Literal["outbound", "hive-only", "host"] | None = None
    # Bounds; unset takes hive.toml's [sandbox].
    memory_max: MemorySize | None = None
    pids_max: PidsMax | None = None
    cpu_weight: CpuWeight | None = None
    tmp_max: TmpSize | None = None
    state_max: StateSize | None = None

    def bounds(self, defaults: SandboxDefaults) -> SandboxDefaults:
        """The bounds this agent runs with: its own where set, the hive's elsewhere."""
        own = {k: v for k, v in self.model_dump(include=set(SandboxDefaults.model_fields)).items() if v is not None}
        return defaults.model_copy(update=own)


class AgentBudget(_Strict):
    """agent.toml [budget], in US dollars from the cost Claude Code reports; unset: no limit."""

    # Past it in a day (UTC) the agent pauses: it takes no turns, its messages wait, the manager is told.
    usd_per_day: Usd | None = None
    # Claude Code's --max-budget-usd for each turn: the turn stops when it has cost this much.
    usd_per_turn: Usd | None = None


class Placement(_Strict):
    """Where the agent may live in a hive of several hosts: only on a host with every label here."""

    labels: list[HostLabel] = []


class AgentConfig(_Strict):
    # "agent": sandboxed, run by the lifecycle server. "peer": a Claude Code session outside the hive
    # (`hive peer add`): an applied config and tokens, no sandbox, no harness, no state dir.
    kind: Literal["agent", "peer"] = "agent"
    role: Literal["agent", "manager"] = "agent"
    model: str = DEFAULT_MODEL
    # Per hyperhive server, the exact tools this agent may call; a server left out gets the role default.
    tools: dict[str, list[str]] = {}
    # Names this agent may send to (and remind): agents, "operator", or "*" for everyone.
    allowed_recipients: list[str] = [BROADCAST]
    # Claude Code allowedTools patterns for Bash, e.g. "git diff:*".
    bash: list[Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[^\n()]+$")]] = []
    mcp_servers: dict[str, McpServer] = {}
    env: dict[str, str] = {}
    prompt: Annotated[str, Field(max_length=20_000)] = ""
    sandbox: SandboxSettings = SandboxSettings()
    budget: AgentBudget = AgentBudget()
    # The hive's shared workspace at /hive/shared: read-write, read-only, or not there at all.
    shared: SharedMode = "rw"
    # Host paths bound into the sandbox (binds.py says which are refused).
    binds: list[Bind] = []
    placement: Placement = Placement()

    @property
    def principal_role(self) -> Role:
        return Role(self.role)

    @property
    def is_peer(self) -> bool:
        return self.kind == "peer"

    @field_validator("model")
    @classmethod
    def _model_name(cls, model: str) -> str:
        if not _MODEL_RE.match(model):
            raise ValueError(f"{model!r} is not a model name (e.g. 'sonnet' or 'claude-sonnet-4-5')")
        return model

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: dict[str, list[str]]) -> dict[str, list[str]]:
        for server, names in tools.items():
            catalog = CATALOG.get(server)
            if catalog is None:
                raise ValueError(f"unknown server {server!r}; servers: {', '.join(CATALOG)}")
            for name in names:
                access = catalog.get(name)
                if access is None:
                    raise ValueError(f"{server} has no tool {name!r}; tools: {', '.join(catalog)}")
                if not access.grantable:
                    raise ValueError(f"{server}.{name} is {access.kind}; agents cannot be granted it")
        return tools

    @field_validator("allowed_recipients")
    @classmethod
    def _recipients(cls, names: list[str]) -> list[str]:
        for name in names:
            if name in (BROADCAST, OPERATOR):
                continue
            try:
                check_agent_name(name)
            except InvalidName as e:
                raise ValueError(f"{e}; use agent names, 'operator' or '*'") from None
        return names

    @field_validator("binds")
    @classmethod
    def _binds(cls, binds: list[Bind]) -> list[Bind]:
        return check_binds(binds)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env_names(env)

    @field_validator("mcp_servers")
    @classmethod
    def _mcp_names(cls, servers: dict[str, Any]) -> dict[str, Any]:
        for name in servers:
            if not _MCP_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a server name (lowercase letters, digits, '-', '_')")
            if name in CATALOG:
                raise ValueError(f"{name!r} is a hyperhive server; name the extra server differently")
        return servers

    def allowed_tools(self, server: str) -> frozenset[str]:
        if server in self.tools:
            return frozenset(self.tools[server])
        return role_default(server, self.principal_role)

    def may_send_to(self, recipient: str) -> bool:
        return BROADCAST in self.allowed_recipients or recipient in self.allowed_recipients


def load_agent_config(path: Path) -> AgentConfig:
    return parse_agent_config(path.read_text(encoding="utf-8"), path)


def parse_agent_config(text: str, path: Path | str) -> AgentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [("", f"invalid TOML: {e}")]) from None
    return validated(AgentConfig, data, Path(path))


# The manager edits agents' config repos and commits there with `git -C <repo> ...`.
MANAGER_BASH: Final = '["git -C:*"]'


def agent_toml_template(role: Literal["agent", "manager"] = "agent", model: str = DEFAULT_MODEL) -> str:
    bash = MANAGER_BASH if role == "manager" else "[]"
    return f"""\
# hyperhive agent config. Edits take effect when the operator approves them.
role = "{role}"
model = "{model}"

# Who this agent may message: agent names, "operator", or "*" for everyone.
allowed_recipients = ["*"]

# Shell commands Claude Code may run, as allowedTools patterns ("git diff:*").
bash = {bash}

# Extra instructions appended to the system prompt.
prompt = ""

# The exact tools this agent may call, per hyperhive server; a server left out gets the
# defaults of the role. For example:
# [tools]
# broker = ["send", "recv", "recv_batch", "ack", "thread", "remind"]

# Environment variables for the agent's Claude Code.
# [env]
# LANG = "C.UTF-8"

# Extra MCP servers only this agent uses.
# [mcp_servers.search]
# type = "http"
# url = "http://127.0.0.1:9000/mcp"

# The hive's shared workspace, /hive/shared in every sandbox: documents and files agents hand
# each other without the manager. "rw" (the default), "ro" (read only) or "none" (not there).
# shared = "rw"

# Host paths bound into this sandbox, read-only unless mode = "rw". The host path must exist and
# not be a link; the hive's home, the host's system dirs (/etc, /usr, /var/lib …) and places the
# sandbox keeps for itself (/tmp, /hive, /nix …) are refused. A change here is flagged to the
# operator as a widening. The agent's uid still needs the host's permissions on what is bound.
# [[binds]]
# host = "/srv/data"
# path = "/data"
# mode = "ro"

# What this agent may spend, in US dollars, from the cost Claude Code reports. Past usd_per_day
# (a UTC day) it pauses: no turns, its messages wait, the manager gets a budget_exhausted event;
# the operator raises it (set_budget) or this file's budget is raised through an approval.
# usd_per_turn stops a single turn that costs more (Claude Code's --max-budget-usd).
# [budget]
# usd_per_day = 5
# usd_per_turn = 0.5

# The sandbox: how many crashes in a row are restarted (then it stays failed), what it runs
# (unset: the harness, which drives Claude Code), its network: "outbound" (the outside world
# and the hive's servers, not the host's other loopback services), "hive-only" (the hive's
# servers alone) or "host" (the host's network, every loopback service; the only one NixOS
# containers offer, and their default), and its bounds (unset: hive.toml's [sandbox]).
# [sandbox]
# max_restarts = 3
# command = ["python3", "-m", "my_agent"]
# network = "outbound"
# memory_max = "4G"
# pids_max = 512
# cpu_weight = 100
# tmp_max = "1G"
# state_max = "10G"
"""
