"""What the lifecycle server tells an agent's harness, and what it reads back from it.

hive.json, the model override and cancel requests go into the agent's credentials dir (read-only
in its sandbox); turn.json comes from the harness dir, which the agent can write, so it is read
like any file of the agent's: no links followed, size capped, validated.
"""

from __future__ import annotations

from pydantic import ValidationError

from hyperhive.servers.common.catalog import SERVERS
from hyperhive.servers.common.client import ServerUnavailable, server_address
from hyperhive.servers.common.config import AgentConfig, HiveConfig, read_env_file
from hyperhive.servers.common.harnessdir import TURN_STATE, TURN_STATE_MAX_BYTES, HarnessInfo, TurnState
from hyperhive.servers.lifecycle import statefiles
from hyperhive.servers.lifecycle.paths import AgentPaths


def harness_info(config: HiveConfig, name: str, agent: AgentConfig) -> HarnessInfo:
    paths = AgentPaths.of(config, name)
    settings = config.harness
    from_file = read_env_file(config.home / settings.env_file) if settings.env_file else {}  # ConfigError
    return HarnessInfo(
        agent=name,
        role=agent.role,
        model=agent.model,
        servers=agent_urls(config),
        tools={server: sorted(agent.allowed_tools(server)) for server in SERVERS},
        bash=list(agent.bash),
        mcp_servers={extra: server.model_dump() for extra, server in agent.mcp_servers.items()},
        env={**settings.env, **from_file, **agent.env},
        prompt=agent.prompt,
        state_dir=str(paths.state),
        harness_dir=str(paths.harness),
        token_file=str(paths.credentials_mount / paths.token.name),
        agents_dir=str(config.agents_dir) if agent.role == "manager" else None,
        batch_max=settings.batch_max,
        notes_max_bytes=settings.notes_max_bytes,
        context_reset_tokens=settings.context_reset_tokens,
    )


def agent_urls(config: HiveConfig) -> dict[str, str]:
    """Each server's URL as agents reach it: loopback TCP (a server with only a unix socket is left out)."""
    urls = {}
    for server in SERVERS:
        try:
            address = server_address(config, server)
        except ServerUnavailable:
            continue
        if address.socket is None:
            urls[server] = address.url
    return urls


def read_turn_state(paths: AgentPaths) -> TurnState | None:
    """The harness's turn.json; None when there is none or it is not a valid one."""
    try:
        data = statefiles.read_state_file(paths.harness, TURN_STATE, TURN_STATE_MAX_BYTES)
        return TurnState.model_validate_json(data)
    except (statefiles.UnsafePath, ValidationError, OSError):
        return None
