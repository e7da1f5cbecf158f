"""What the lifecycle server tells an agent's harness, and what it reads back from it: the files
between the two. Not the harness itself (harness/, which runs inside the sandbox and reads them).

hive.json, the model override and cancel requests go into the agent's credentials dir (read-only
in its sandbox); turn.json comes from the harness dir, which the agent can write, so it is read
like any file of the agent's (servers/common/files.py: no links followed, non-blocking, size and
time capped) and validated; turn stats come over MCP (record_turn), never from a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Final

import anyio
from pydantic import ValidationError

from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.call_errors import ServerUnavailable
from hyperhive.servers.common.catalog import offered_to_claude
from hyperhive.servers.common.client import failover_addresses, forge_git_url, server_address
from hyperhive.servers.common.config import HiveConfig, read_env_file
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.files import FileMissing, UnsafeFile, read_agent_file_async, write_atomic
from hyperhive.servers.common.harnessdir import (
    INSTANCE_DIR,
    TOKEN_FILE,
    TURN_STATE,
    TURN_STATE_MAX_BYTES,
    HarnessInfo,
    SandboxStart,
    ServerEndpoint,
    TurnState,
)
from hyperhive.servers.common.registry import SERVER_NAMES
from hyperhive.servers.lifecycle.paths import AgentPaths

CANCEL_WAIT: Final = 5.0  # cancel_turn waits this long for the harness to end the turn


def harness_info(config: HiveConfig, name: str, agent: AgentConfig, start: SandboxStart | None = None) -> HarnessInfo:
    """hive.json for `name`; `start`: why lifecycle starts its sandbox now (its harness tells the agent)."""
    paths = AgentPaths.of(config, name)
    settings = config.harness
    from_file = read_env_file(config.home / settings.env_file) if settings.env_file else {}  # ConfigError
    return HarnessInfo(
        agent=name,
        role=agent.role,
        model=agent.model,
        servers=agent_urls(config),
        tls_certs=agent_tls_certs(config),
        failover=agent_failover(config),
        # What its Claude Code may call: the harness's own tools (record_turn) are not offered to the model.
        tools={server: sorted(offered_to_claude(server, agent.allowed_tools(server))) for server in SERVER_NAMES},
        bash=list(agent.bash),
        mcp_servers={extra: server.model_dump() for extra, server in agent.mcp_servers.items()},
        env={**settings.env, **from_file, **agent.env},
        prompt=agent.prompt,
        state_dir=str(paths.state),
        harness_dir=str(paths.harness),
        token_file=str(paths.credentials_mount / INSTANCE_DIR / TOKEN_FILE),
        agents_dir=str(config.agents_dir) if agent.role == "manager" else None,
        shared=None if agent.shared == "none" else agent.shared,
        binds=[f"{bind.path} ({bind.mode})" for bind in agent.binds],
        batch_max=settings.batch_max,
        notes_max_bytes=settings.notes_max_bytes,
        context_reset_tokens=settings.context_reset_tokens,
        usd_per_turn=agent.budget.usd_per_turn,
        idle_close_seconds=settings.idle_close_seconds,
        start=start,
        git_url=forge_git_url(config),
    )


def agent_urls(config: HiveConfig) -> dict[str, str]:
    """Each server's URL as agents reach it: loopback TCP (a server with only a unix socket is left out)."""
    urls = {}
    for server in SERVER_NAMES:
        try:
            address = server_address(config, server)
        except ServerUnavailable:
            continue
        if address.socket is None:
            urls[server] = address.url
    return urls


def agent_tls_certs(config: HiveConfig) -> dict[str, str]:
    """The PEM certificate of each server agents reach over TLS: hive.json carries the text, since the
    sandbox need not have hive.toml's tls_cert path. ConfigError when one cannot be read."""
    certs = {}
    for server in agent_urls(config):
        cert = config.listen(server).tls_cert
        if cert is not None:
            certs[server] = _read_cert(cert, server)
    return certs


def _read_cert(cert: Path, server: str) -> str:
    try:
        return cert.read_text(encoding="ascii")
    except OSError as e:
        raise ConfigError(cert, [("", f"cannot read {server}'s tls_cert: {e.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(cert, [("", f"{server}'s tls_cert is not a PEM certificate (text)")]) from None


def agent_failover(config: HiveConfig) -> dict[str, list[ServerEndpoint]]:
    """Each server's failover addresses ([servers.broker] failover), with the text of their
    certificates as agent_tls_certs gives the first one's. ConfigError when one cannot be read."""
    failover: dict[str, list[ServerEndpoint]] = {}
    for server in agent_urls(config):
        endpoints = [
            ServerEndpoint(url=address.url, tls_cert=_read_cert(address.tls_cert, server) if address.tls_cert else None)
            for address in failover_addresses(config, server)
        ]
        if endpoints:
            failover[server] = endpoints
    return failover


async def read_turn_state(paths: AgentPaths) -> TurnState | None:
    """The harness's turn.json; None when there is none, state "unreadable" (and why) when it is not
    a valid one: a link, a fifo, too big, too slow, not JSON, not a turn state."""
    try:
        data = await read_agent_file_async(paths.root, paths.harness.name, TURN_STATE, cap=TURN_STATE_MAX_BYTES)
        return TurnState.model_validate_json(data)
    except FileMissing:
        return None
    except UnsafeFile as e:
        why = str(e) if TURN_STATE in str(e) else f"{TURN_STATE} cannot be read: {e}"
    except ValidationError as e:
        why = f"{TURN_STATE} is not a turn state ({e.error_count()} problems, e.g. {_first_problem(e)})"
    return TurnState(state="unreadable", since=time.time(), reason=why)


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the document"
    return f"{where}: {first['msg']}"[:200]


def model_override(paths: AgentPaths) -> str | None:
    """set_model's override, if any (the file is root's, in its credentials dir)."""
    with contextlib.suppress(OSError):
        return paths.model_override.read_text().strip() or None
    return None


def model_of(paths: AgentPaths, config: AgentConfig | None) -> str:
    """The model its next turn uses: set_model's override, else agent.toml's."""
    return model_override(paths) or (config.model if config else "?")


async def set_model_override(paths: AgentPaths, model: str | None, uid: int | None) -> None:
    """Write (None: remove) the model override its harness reads before each turn."""
    path = paths.model_override
    if model is None:
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
        return
    try:
        AgentConfig(model=model)
    except ValueError:
        raise Refused(f"{model!r} is not a model name (e.g. 'sonnet' or 'claude-sonnet-4-5')") from None

    def write() -> None:
        write_atomic(path, model + "\n", mode=0o644)
        if uid is not None:
            os.chown(path, uid, uid)

    await anyio.to_thread.run_sync(write)


async def request_session_reset(paths: AgentPaths, now: float) -> str:
    """Ask the harness for a fresh Claude Code session before its next turn: a new request id (ms)."""
    request = str(int(now * 1000))
    await anyio.to_thread.run_sync(write_atomic, paths.reset_request, f"{request}\n", 0o644)
    return request


async def cancel_turn(paths: AgentPaths, turn: TurnState, wait: float = CANCEL_WAIT) -> tuple[int, TurnState]:
    """Ask the harness to stop running turn `turn`: (the turn's id, its state once stopped or after `wait`)."""
    assert turn.turn is not None
    await anyio.to_thread.run_sync(write_atomic, paths.cancel_request, f"{turn.turn}\n", 0o644)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = await read_turn_state(paths)
        if now is not None and now.turn != turn.turn:
            return turn.turn, now
    return turn.turn, turn
