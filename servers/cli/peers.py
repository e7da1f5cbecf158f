"""Peers, agents outside the hive: `hive peer add|remove|list|token|mcp-config`.

A peer is a Claude Code session the operator runs elsewhere. `add` registers it with the lifecycle
server (the one writer of applied configs) and prints the --mcp-config for that session; the config
holds no token, only a `headersHelper` that runs `hive peer token` at each connection (and after a
401), which mints a short-lived token with this home's key. So only someone who can read the key —
the operator — can keep a peer connected, and `remove` ends every token of it at once.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from hyperhive.servers.cli.base import (
    applied_agent_config,
    call_hive,
    echo_json,
    fail,
    hive_config,
    home_option,
    json_option,
    main,
    mint,
    parse_duration,
)
from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.formatting import plural

PEER_TOKEN_TTL = "15m"  # what a peer's headers helper asks for: renewed at each connection and after a 401


@main.group()
def peer() -> None:
    """Peers: Claude Code sessions outside the hive that message the swarm like agents.

    \b
      hive peer add alice-peer --out alice.json     register it, write its --mcp-config
      claude --mcp-config alice.json                 that session is now alice-peer
      hive peer remove alice-peer                    revoke it: its tokens stop working
    """


def _tools(specs: tuple[str, ...]) -> dict[str, list[str]] | None:
    """--tools broker=send,recv --tools operator=ask_operator → {"broker": [...], ...}."""
    if not specs:
        return None
    tools: dict[str, list[str]] = {}
    for spec in specs:
        server, sep, names = spec.partition("=")
        if not sep or not server.strip():
            raise click.BadParameter(f"{spec!r} is not SERVER=TOOL,TOOL (e.g. broker=send,recv,recv_batch,ack)")
        tools.setdefault(server.strip(), []).extend(name.strip() for name in names.split(",") if name.strip())
    return tools


def _names(values: tuple[str, ...]) -> list[str] | None:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return names or None


def peer_config(config: HiveConfig, name: str) -> AgentConfig:
    """The applied config of peer `name`, or a clear failure if `name` is not a peer."""
    agent = applied_agent_config(config, name)
    if not agent.is_peer:
        fail(f"{name} is an agent of the hive, not a peer: `hive peer list` shows the peers")
    return agent


def headers_helper(config: HiveConfig, name: str) -> str:
    """The command Claude Code runs for the servers' headers: a fresh token of `name` each time."""
    argv = [sys.executable, "-m", "hyperhive.servers.cli", "peer", "token", name,
            "--home", str(config.home.resolve()), "--headers"]  # fmt: skip
    return shlex.join(argv)


def peer_mcp_config(config: HiveConfig, name: str) -> tuple[dict[str, object], list[str]]:
    """(the --mcp-config JSON of peer `name`, the tools it may call as Claude Code names them)."""
    from hyperhive.servers.lifecycle.harness_files import harness_info

    try:
        info = harness_info(config, name, peer_config(config, name))
    except ConfigError as e:
        fail(str(e))
    return {"mcpServers": info.mcp_config(headers_helper=headers_helper(config, name))}, info.tool_names()


def _print_config(config: HiveConfig, name: str, out: Path | None) -> None:
    document, tools = peer_mcp_config(config, name)
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        target = "<this JSON in a file>"
    else:
        write_atomic(out, text, mode=0o600)  # no secret in it, but it names the home's key holder
        target = str(out)
        click.echo(f"◆ wrote {name}'s --mcp-config to {out}", err=True)
    click.echo(
        f"◆ run Claude Code as {name} (it renews its token itself, with `hive peer token`):\n"
        f"    claude --mcp-config {shlex.quote(target)} --allowedTools {shlex.quote(' '.join(tools))}",
        err=True,
    )


@peer.command(name="add")
@click.argument("name")
@click.option(
    "--role", type=click.Choice(["agent"]), default="agent", show_default=True,
    help="Its role (the manager is the agent named manager, in the hive).",
)  # fmt: skip
@click.option(
    "--tools", "tools", multiple=True, metavar="SERVER=TOOL,…",
    help="The exact tools it may call on SERVER (repeat per server); a server left out: an agent's defaults.",
)  # fmt: skip
@click.option(
    "--recipients", multiple=True, metavar="NAME,…",
    help="Who it may message: agent names, 'operator' or '*' (default: everyone).",
)  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the --mcp-config JSON here.")
@home_option
def add(
    name: str, role: str, tools: tuple[str, ...], recipients: tuple[str, ...], out: Path | None, home: Path
) -> None:
    """Register peer NAME and print the --mcp-config for its Claude Code session.

    \b
    The config holds no token: Claude Code runs `hive peer token NAME` whenever it connects, which
    mints a 15-minute token with this home's key. Run it where you run `hive`, as the hive's owner.
    """
    del role  # the only one a peer can have; the option says so in --help
    result = call_hive(home, lambda hive: hive.lifecycle.add_peer(name, _tools(tools), _names(recipients)))
    click.echo(f"◆ {result.name}: peer added (config {result.applied_sha[:12]})", err=True)
    _print_config(hive_config(home), name, out)


@peer.command(name="mcp-config")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the --mcp-config JSON here.")
@home_option
def mcp_config(name: str, out: Path | None, home: Path) -> None:
    """Print the --mcp-config of peer NAME again (as `hive peer add` did)."""
    _print_config(hive_config(home), name, out)


@peer.command(name="token")
@click.argument("name")
@click.option("--ttl", default=PEER_TOKEN_TTL, show_default=True, help="Lifetime: seconds, or 90s, 15m, 12h.")
@click.option("--headers", is_flag=True, help='Print {"Authorization": "Bearer …"} (for headersHelper).')
@home_option
def token(name: str, ttl: str, headers: bool, home: Path) -> None:
    """Print a fresh token of peer NAME (its Claude Code's headersHelper runs this)."""
    config = hive_config(home)
    peer_config(config, name)
    minted = mint(config, name, parse_duration(ttl))
    click.echo(json.dumps({"Authorization": f"Bearer {minted}"}) if headers else minted)


@peer.command(name="remove")
@click.argument("name")
@home_option
def remove(name: str, home: Path) -> None:
    """Revoke peer NAME: every token of it stops working at once."""
    call_hive(home, lambda hive: hive.lifecycle.remove_peer(name))
    click.echo(f"◆ {name}: peer removed; its tokens no longer work")


@peer.command(name="list")
@json_option
@home_option
def list_peers(as_json: bool, home: Path) -> None:
    """List the peers and what each may do (--json: as `hive agents --json` lists them)."""
    listing = call_hive(home, lambda hive: hive.lifecycle.list_agents())
    if as_json:
        echo_json([agent for agent in listing.agents if agent.kind == "peer"])
        return
    peers = [agent.name for agent in listing.agents if agent.kind == "peer"]
    if not peers:
        click.echo("◆ no peers (`hive peer add NAME` registers one)")
        return
    config = hive_config(home)
    click.echo(f"◆ {plural(len(peers), 'peer')}")
    for name in peers:
        agent = applied_agent_config(config, name)
        own = ", ".join(f"{server}: {' '.join(tools)}" for server, tools in sorted(agent.tools.items()))
        click.echo(f"  {name}  to: {','.join(agent.allowed_recipients)}  tools: {own or 'an agent’s defaults'}")
