"""Peers, agents outside the hive, over real HTTP: `hive peer add` (a real CLI process) registers one
through the lifecycle server, the token its --mcp-config's headers helper prints sends and receives
through the real broker under the peer's allow-list, lifecycle refuses to run it, and `hive peer
remove` ends its tokens at once."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from fastmcp.exceptions import ToolError
from hivetest import Hive, Hivemind

from hyperhive.servers.common.call_errors import AuthRefused
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = pytest.mark.slow

PEER = "alice-peer"


async def hive_cli(hive: Hive, *args: str) -> tuple[int, str, str]:
    """`hive ARGS --home HOME` as its own process (the servers run in this event loop: never block it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hyperhive.servers.cli", *args, "--home", str(hive.home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def helper_token(command: str) -> str:
    """Run a headersHelper as Claude Code does (`sh -c`) and take the bearer token out of its JSON."""
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    headers = json.loads(out)
    scheme, token = headers["Authorization"].split(" ", 1)
    assert scheme == "Bearer"
    return token


async def test_a_peer_messages_under_its_allow_lists_and_removing_it_revokes_its_tokens(
    hivemind: Hivemind, tmp_path: Path
) -> None:
    hive = hivemind.hive
    hive.add_agent("bob")  # an agent the peer may not message
    out = tmp_path / "peer.json"
    code, _, err = await hive_cli(
        hive, "peer", "add", PEER, "--recipients", "manager,operator",
        "--tools", "broker=send,recv,ack", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert f"claude --mcp-config {out}" in err and "mcp__broker__send" in err

    # The config names the servers and a helper, never a token.
    text = out.read_text()
    assert "Bearer" not in text.replace('"Bearer %s"', "") and "eyJ" not in text
    broker = json.loads(text)["mcpServers"]["broker"]
    assert broker["url"] == hivemind.broker.url and "peer token" in broker["headersHelper"]
    token = await helper_token(broker["headersHelper"])

    async with HiveClient(ServerAddress("broker", hivemind.broker.url), token, retry_seconds=0) as peer:
        sent = await peer.call("send", {"to": "manager", "body": "hello from outside"})
        assert sent["recipients"] == 1
        got = await hivemind.broker.client("manager").call("recv", {"wait_seconds": 5})
        assert (got["message"]["sender"], got["message"]["body"]) == (PEER, "hello from outside")

        with pytest.raises(ToolError, match="bob"):  # outside its allowed_recipients
            await peer.call("send", {"to": "bob", "body": "not allowed"})
        with pytest.raises(ToolError, match="remind"):  # outside its broker tools
            await peer.call("remind", {"body": "x", "in_seconds": 60})

        await hivemind.broker.client("operator").call("send", {"to": PEER, "body": "hello peer"})
        got = await peer.call("recv", {"wait_seconds": 5})
        assert (got["message"]["sender"], got["message"]["body"]) == ("operator", "hello peer")

        # Lifecycle runs nothing of it, and says so.
        listing = await hivemind.call("list_agents")
        [row] = [agent for agent in listing["agents"] if agent["name"] == PEER]
        assert (row["kind"], row["state"], row["role"]) == ("peer", "peer", "agent")
        assert "desired" not in row or row["desired"] is None
        for action in ("start", "stop", "restart", "kill", "rebuild", "destroy"):
            with pytest.raises(ToolError, match=f"{PEER} is a peer: it runs outside the hive"):
                await hivemind.call(action, name=PEER)
        with pytest.raises(ToolError, match=f"{PEER} is a peer"):
            await hivemind.call("create_agent", name=PEER)
        config = await hivemind.call("agent_config", name=PEER)
        assert 'kind = "peer"' in config["agent_toml"]
        assert config["sha"] == await repos.head(AgentPaths.of(hive.config, PEER).applied)
        code, listed, err = await hive_cli(hive, "peer", "list")
        assert code == 0 and PEER in listed and "broker: send recv ack" in listed, err

        # Removed: the very token it holds is refused (401), and no new one can be had.
        code, _, err = await hive_cli(hive, "peer", "remove", PEER)
        assert code == 0, err
        with pytest.raises(AuthRefused):
            await peer.call("send", {"to": "manager", "body": "after removal"})
    code, _, err = await hive_cli(hive, "peer", "token", PEER)
    assert code != 0 and f"no agent named {PEER!r}" in err
    actions = (await hivemind.call("audit", agent=PEER))["entries"]
    assert [(e["action"], e["outcome"]) for e in actions if e["action"].endswith("_peer")] == [
        ("remove_peer", "ok"),
        ("add_peer", "ok"),
    ]


async def test_a_peer_name_must_be_free_and_its_config_valid(hivemind: Hivemind) -> None:
    with pytest.raises(ToolError, match="manager is an agent of the hive"):
        await hivemind.call("add_peer", name="manager")
    with pytest.raises(ToolError, match="has no tool 'nope'"):
        await hivemind.call("add_peer", name="carol", tools={"broker": ["nope"]})
    with pytest.raises(ToolError, match="an operator tool; agents cannot be granted it"):
        await hivemind.call("add_peer", name="carol", tools={"lifecycle": ["start"]})
    assert not AgentPaths.of(hivemind.hive.config, "carol").applied.exists()  # nothing half-written
    await hivemind.call("add_peer", name="carol")
    with pytest.raises(ToolError, match="carol is a peer already"):
        await hivemind.call("add_peer", name="carol")
    with pytest.raises(ToolError, match="dave is no peer"):
        await hivemind.call("remove_peer", name="dave")
    with pytest.raises(ToolError, match="manager is an agent of the hive"):
        await hivemind.call("remove_peer", name="manager")
    code, _, err = await hive_cli(hivemind.hive, "peer", "token", "manager")
    assert code != 0 and "manager is an agent of the hive, not a peer" in err
