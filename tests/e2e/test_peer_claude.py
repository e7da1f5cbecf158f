"""A peer with the real Claude Code: `hive peer add` prints an --mcp-config, the bundled Claude Code
run in print mode with it (outside any sandbox, as an operator's own session would be) gets its token
from the headers helper (`hive peer token`) and, told by the scripted model, sends through the real
broker; the manager receives the message from the peer's name."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.anthropic_api import Say, ScriptedAPI, ToolCall
from hivetest import Hivemind

from hyperhive.harness.claude import bundled_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PEER = "ops-peer"


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    with ScriptedAPI() as fake:
        yield fake


async def test_a_peer_added_with_hive_peer_add_sends_through_the_broker_with_real_claude_code(
    hivemind: Hivemind, api: ScriptedAPI, tmp_path: Path
) -> None:
    config_file = tmp_path / "peer.json"
    add = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hyperhive.servers.cli", "peer", "add", PEER,
        "--tools", "broker=send,recv,ack", "--tools", "operator=", "--tools", "forge=", "--out", str(config_file),
        "--home", str(hivemind.hive.home), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(add.communicate(), 60)
    assert add.returncode == 0, err.decode()
    servers = json.loads(config_file.read_text())["mcpServers"]
    assert list(servers) == ["broker"] and "headersHelper" in servers["broker"]
    # The --allowedTools the usage line prints, as the operator would paste them.
    [usage] = [line for line in err.decode().splitlines() if "claude --mcp-config" in line]
    allowed = usage.split("--allowedTools ", 1)[1].strip("'")
    assert allowed == "mcp__broker__ack mcp__broker__recv mcp__broker__send"

    api.script(
        when="tell the manager",
        steps=[ToolCall("mcp__broker__send", {"to": "manager", "body": "hello from a peer session"}), Say("sent")],
        times=1,
    )
    config_dir = tmp_path / "claude"
    config_dir.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CLAUDE_CONFIG_DIR": str(config_dir),
        **api.env(),
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    claude = await asyncio.create_subprocess_exec(
        bundled_cli(), "-p", "tell the manager hello", "--mcp-config", str(config_file), "--strict-mcp-config",
        "--allowedTools", allowed, "--output-format", "json",
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(claude.communicate(), 120)
    assert claude.returncode == 0, (out.decode(), err.decode())
    result = json.loads(out)
    assert result["result"] == "sent", result

    # The tool call went through: its result came back to the model, and the manager has the message.
    results = {r.tool_result_text().replace(" ", "") for r in api.snapshot() if r.tool_results} - {""}
    assert results == {'{"id":1,"recipients":1}'}, results
    got = await hivemind.broker.client("manager").call("recv", {"wait_seconds": 5})
    message = got["message"]
    assert (message["sender"], message["body"]) == (PEER, "hello from a peer session")
