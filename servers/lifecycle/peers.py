"""Peers: agents outside the hive. A peer is a Claude Code session the operator runs elsewhere (their
own terminal) that messages the swarm like any agent, under its own allow-lists.

It has what the servers need to know an agent — an applied config (`kind = "peer"`, written here,
by the lifecycle server, the one writer of applied/) and a live instance its tokens name — and
nothing the lifecycle server runs: no sandbox, no harness, no state dir, no uid, no row in the
agents table. So the supervisor never starts, restarts or watches one. Its tokens are minted by
whoever holds the home's key (`hive peer token`, run by the peer's Claude Code at each connection);
removing it ends its instance, so every token of it stops working at once, as for a destroyed agent.
"""

from __future__ import annotations

import json
import shutil
from typing import Final

import anyio

from hyperhive.servers.common.agent_config import AGENT_TOML, AgentConfig, parse_agent_config
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.instances import end_instances, new_instance
from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.paths import AgentPaths

PEER_STATE: Final = "peer"  # what list_agents says a peer is doing: lifecycle cannot know more


def peer_refusal(name: str) -> str:
    return (
        f"{name} is a peer: it runs outside the hive (a Claude Code session of its own), so there is no "
        f"sandbox to start, stop, restart, kill or rebuild and no harness to steer; "
        f"`hive peer remove {name}` revokes it"
    )


def peer_toml(tools: dict[str, list[str]] | None, recipients: list[str] | None) -> str:
    """A peer's agent.toml: its kind, its recipients and, per server given, its exact tools."""
    lines = ['# A peer: an agent outside the hive (`hive peer add`). Written by the lifecycle server.',
             'kind = "peer"', 'role = "agent"']  # fmt: skip
    if recipients is not None:
        lines.append(f"allowed_recipients = {json.dumps(recipients)}")
    if tools:
        lines.append("\n[tools]")
        lines.extend(f"{server} = {json.dumps(names)}" for server, names in sorted(tools.items()))
    return "\n".join(lines) + "\n"


class Peers:
    def __init__(self, config: HiveConfig, agents: AgentRegistry) -> None:
        self.config = config
        self.agents = agents

    def get(self, name: str) -> AgentConfig | None:
        """The applied config of peer `name`, or None if `name` is not a peer."""
        config = self.agents.get(name)
        return config if config is not None and config.is_peer else None

    def names(self) -> list[str]:
        return [name for name in self.agents.names() if self.get(name) is not None]

    async def add(self, name: str, tools: dict[str, list[str]] | None, recipients: list[str] | None) -> str:
        """Write its applied config and give it a live instance; returns the applied sha.
        The caller holds the name and has checked it is free."""
        text = peer_toml(tools, recipients)
        try:
            parse_agent_config(text, f"{name}:{AGENT_TOML}")
        except ConfigError as e:
            raise Refused(f"{e}\nThe peer was not added.") from None
        paths = AgentPaths.of(self.config, name)
        # The instance first: a server that dies before the config is written leaves only an id no
        # token can use (there is no agent.toml), and adding the peer again replaces it.
        await anyio.to_thread.run_sync(new_instance, self.config.instances_dir, name)
        await anyio.to_thread.run_sync(lambda: paths.applied.parent.mkdir(mode=0o700, parents=True, exist_ok=True))
        sha = await repos.init_repo(paths.applied, {AGENT_TOML: text}, f"Peer {name}\n\nAdded by the operator.")
        await self.agents.refresh()
        return sha

    async def remove(self, name: str) -> None:
        """Revoke it: its instance ends (every token of it is refused from the next call on), then
        its applied config goes. The caller holds the name."""
        await anyio.to_thread.run_sync(end_instances, self.config.instances_dir, name)
        applied = AgentPaths.of(self.config, name).applied
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(applied, ignore_errors=True))
        await self.agents.refresh()
