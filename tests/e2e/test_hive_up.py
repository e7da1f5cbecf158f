"""The whole hive as `hive up` runs it, with the real Claude Code in real bwrap sandboxes.

The only fake is the model: a scripted Messages API on loopback (tests/fakes/anthropic_api.py)
that every agent's Claude Code reaches through hive.toml's [harness.env]. One `hive up` serves
the module; the tests run in order and share the hive (alice, once spawned, stays).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes.anthropic_api import Fail, Hold, Request, Say, ScriptedAPI, ToolCall
from fastmcp.exceptions import ToolError
from hivetest import bwrap_pids, children_of, cmdline, free_port, gone, start_hive_up

from hyperhive.harness.claude import bundled_cli
from hyperhive.servers.cli import SERVERS
from hyperhive.servers.common.agent_config import AGENT_TOML
from hyperhive.servers.common.client import HiveClient, ServerAddress, forge_git_url
from hyperhive.servers.common.config import HiveConfig, load_hive_config
from hyperhive.servers.common.issuer import issue_token
from hyperhive.servers.common.principals import Role
from hyperhive.servers.lifecycle import repos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ALICE_MAY_NOT = ("mcp__lifecycle__", "mcp__approvals__", "mcp__operator__ask_operator", "mcp__broker__list_messages")


@dataclass
class RunningHive:
    home: Path
    config: HiveConfig
    api: ScriptedAPI
    up: subprocess.Popen[str]
    output: list[str]

    def token(self, name: str, role: Role) -> str:
        return issue_token(self.config, name, 600)

    def client(self, server: str, name: str = "operator", role: Role = Role.OPERATOR) -> HiveClient:
        return HiveClient.for_server(self.config, server, self.token(name, role), retry_seconds=0)

    async def call(self, server: str, tool: str, **arguments: Any) -> Any:
        async with self.client(server) as client:
            return await client.call(tool, arguments, timeout=60)

    def hive(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "hyperhive.servers.cli", args[0], "--home", str(self.home), *args[1:]],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    async def status(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("lifecycle", "agent_status", name=name)
        return result

    async def until(self, name: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(name)
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never got there; last status: {status}\n{self.log(name)}")
            await asyncio.sleep(0.2)

    async def operator_inbox(self, timeout: float = 60) -> list[dict[str, Any]]:
        async with self.client("broker") as broker:
            result = await broker.call("recv_batch", {"max": 50, "wait_seconds": timeout}, timeout=timeout + 30)
        messages: list[dict[str, Any]] = result["messages"]
        return messages

    def log(self, name: str) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else "(no log)"

    def wait_for(self, what: str, predicate: Any, timeout: float = 60) -> Request:
        try:
            return self.api.wait_for(predicate, timeout=timeout)
        except Exception as e:  # say what was seen instead
            seen = "\n".join(
                f"  {r.agent} #{r.position} {r.reply!r} wake={r.wake[:120]!r}" for r in self.api.snapshot()
            )
            raise AssertionError(
                f"no request where {what}: {e}\nrequests so far:\n{seen}\n{self.log('manager')}"
            ) from None


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHive]:
    home = tmp_path_factory.mktemp("hive")
    api = ScriptedAPI().start()
    # No retries inside Claude Code: an API failure ends the turn, and the harness's own retry shows.
    claude_env = {**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0"}
    env = "".join(f"{key} = {json.dumps(value)}\n" for key, value in claude_env.items())
    (home / "hive.toml").write_text(
        "".join(f"[servers.{name}]\nport = {free_port()}\n" for name in SERVERS)
        + f"[dashboard]\nport = {free_port()}\n"
        + f"[lifecycle]\nrestart_backoff_seconds = 0.2\nforward_ports = [{api.port}]\n"  # the API, into sandboxes
        + f"[harness.env]\n{env}"
    )
    up, output = start_hive_up(home)
    hive = RunningHive(home, load_hive_config(home), api, up, output)
    try:
        yield hive
    finally:
        sandboxes = bwrap_pids(containing=str(home))
        assert sandboxes  # the manager's and alice's
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(60)
        finally:
            if up.poll() is None:
                up.kill()
            api.close()
        assert code == 0, "".join(output)
        leftovers = [f"{pid}: {cmdline(pid)[-300:]}" for pid in sandboxes if not gone(pid)] + _processes_under(home)
        assert not leftovers, f"outlived hive up: {leftovers}"


# ----------------------------------------------------------------------------------------- tests


async def test_1_the_operator_talks_to_the_manager_and_it_answers(running: RunningHive) -> None:
    manager = await running.until("manager", lambda s: s["turn"] and s["turn"]["state"] == "idle")
    assert manager["state"] == "running"
    running.api.script(
        agent="manager",
        when="e2e-1 ping",
        steps=[ToolCall("mcp__broker__send", {"to": "operator", "body": "pong from the manager"}), Say("sent")],
        times=1,
    )
    sent = running.hive("send", "manager", "e2e-1", "ping")
    assert sent.returncode == 0 and sent.stdout.startswith("◆ message #"), sent.stderr
    [reply] = await running.operator_inbox()
    assert (reply["sender"], reply["body"]) == ("manager", "pong from the manager")

    wake = running.wait_for("the manager woke on the ping", lambda r: r.agent == "manager" and "e2e-1 ping" in r.wake)
    assert re.search(r"--- message #\d+ from operator", wake.wake)
    # Claude Code offers the manager exactly its allow-list: its MCP tools, and no operator tools.
    assert "mcp__approvals__request_spawn" in wake.tools and "mcp__operator__ask_operator" in wake.tools
    assert not [t for t in wake.tools if t in ("mcp__approvals__approve", "mcp__operator__answer")]
    # Its harness reports its turns with record_turn; the model is never offered that tool.
    assert "mcp__lifecycle__agent_stats" in wake.tools and "mcp__lifecycle__record_turn" not in wake.tools
    stats = await running.call("lifecycle", "agent_stats", name="manager")
    turn = await _until_turn_recorded(running, "manager", "mcp__broker__send")
    assert turn["ok"] and turn["messages"] == 1 and turn["model"] == "sonnet" and turn["tokens_in"] > 0
    assert stats["name"] == "manager"


async def test_2_spawn_with_approval_then_manager_and_alice_talk_in_a_thread(running: RunningHive) -> None:
    api = running.api
    api.script(
        agent="manager",
        when="e2e-2 spawn",
        steps=[
            ToolCall("mcp__approvals__request_spawn", {"name": "alice", "reason": "the operator asked for alice"}),
            Say("asked"),
        ],
        times=1,
    )
    api.script(
        agent="manager",
        when=lambda wake: "approval_resolved" in wake and "alice" in wake,
        steps=[ToolCall("mcp__broker__send", {"to": "alice", "body": "e2e-2 task: say hello"}), Say("ok")],
        times=1,
    )
    api.script(
        agent="alice",
        when="e2e-2 task",
        steps=[ToolCall("mcp__broker__send", _reply_to_manager("hello, manager")), Say("replied")],
        times=1,
    )
    running.hive("send", "manager", "e2e-2 spawn alice please")
    request_id = await _pending_request(running)
    approved = running.hive("approve", str(request_id))
    assert approved.returncode == 0, approved.stderr
    alice = await running.until("alice", lambda s: s["state"] == "running")
    assert alice["role"] == "agent"

    reply = running.wait_for(
        "the manager got alice's reply",
        lambda r: r.agent == "manager" and "hello, manager" in r.wake,
        timeout=90,
    )
    assert re.search(r"--- message #\d+ from alice, [^,]+, in reply to #\d+\nhello, manager", reply.wake), reply.wake
    task = running.wait_for("alice got the task", lambda r: r.agent == "alice" and "e2e-2 task" in r.wake)
    assert task.body["model"]  # alice's own Claude Code, in its own sandbox


async def test_3_a_sandbox_killed_mid_turn_gets_its_message_again_and_the_manager_hears(
    running: RunningHive,
) -> None:
    api = running.api
    holding = threading.Event()
    api.script(agent="alice", when="e2e-3 work", steps=[Hold(holding, seconds=120), Say("never")], times=1)
    api.script(
        agent="alice",
        when="e2e-3 work",
        steps=[ToolCall("mcp__broker__send", {"to": "operator", "body": "e2e-3 done after all"}), Say("ok")],
        times=1,
    )
    await running.call("broker", "send", to="alice", body="e2e-3 work on this")
    running.wait_for("alice's turn started", lambda r: r.agent == "alice" and "e2e-3 work" in r.wake)
    busy = await running.until("alice", lambda s: s["turn"] and s["turn"]["state"] == "running")
    assert busy["turn"]["messages"] == 1

    init = json.loads((running.config.run_dir / "lifecycle" / "bwrap" / "alice.json").read_text())["init_pid"]
    os.kill(init, signal.SIGKILL)  # the whole sandbox, as a crash would take it
    holding.set()

    [done] = await running.operator_inbox(timeout=90)  # redelivered after the restart, handled this time
    assert (done["sender"], done["body"]) == ("alice", "e2e-3 done after all")
    crash = running.wait_for(
        "the manager was told of the crash",
        lambda r: r.agent == "manager" and "container_crash" in r.wake and "agent alice crashed" in r.wake,
    )
    assert "SIGKILL" in crash.wake
    status = await running.status("alice")
    assert status["restart_count"] >= 1 and status["state"] == "running"


async def test_4_a_question_to_the_operator_expires_and_the_manager_is_told(running: RunningHive) -> None:
    running.api.script(
        agent="manager",
        when="e2e-4 ask",
        steps=[
            ToolCall(
                "mcp__operator__ask_operator",
                {"question": "e2e-4: go ahead?", "options": ["yes", "no"], "ttl_seconds": 2},
            ),
            Say("asked"),
        ],
        times=1,
    )
    running.hive("send", "manager", "e2e-4 ask the operator")
    expired = running.wait_for(
        "the manager heard the question expired",
        lambda r: r.agent == "manager" and "operator_answered" in r.wake and "e2e-4: go ahead?" in r.wake,
    )
    assert "got no answer: expired" in expired.wake
    history = await running.call("operator", "question_history")
    [asked] = [q for q in history["questions"] if q["question"] == "e2e-4: go ahead?"]
    assert asked["answer"] == "[expired]" and asked["asker"] == "manager"


async def test_5_a_tool_outside_the_allow_list_is_not_offered_and_refused(running: RunningHive) -> None:
    api = running.api
    status = await running.status("alice")
    outside = Path(status["harness_dir"]) / "planted.txt"  # its own harness dir, but not its state dir
    api.script(
        agent="alice",
        when="e2e-5 sneak",
        steps=[
            ToolCall("mcp__approvals__approve", {"id": 1}),
            ToolCall("Write", {"file_path": str(outside), "content": "x"}),
            ToolCall("Read", {"file_path": str(Path(status["harness_dir"]) / "turn.json")}),
            ToolCall("Bash", {"command": "id"}),  # agent.toml grants no bash patterns
            ToolCall("Write", {"file_path": str(Path(status["state_dir"]) / "ok.txt"), "content": "mine"}),
            Say("tried"),
        ],
        times=1,
    )
    await running.call("broker", "send", to="alice", body="e2e-5 sneak")
    answers = [
        running.wait_for(
            f"alice's Claude Code answered call {position}",
            lambda r, p=position: r.agent == "alice" and "e2e-5 sneak" in r.wake and r.position == p,  # type: ignore[misc]
        )
        for position in range(1, 6)
    ]
    assert all(a.tool_results() for a in answers), [a.messages[-2:] for a in answers]
    results = [a.tool_results()[0] for a in answers]
    assert [result.get("is_error") is True for result in results] == [True, True, True, True, False], results
    assert not outside.exists()
    assert (Path(status["state_dir"]) / "ok.txt").read_text() == "mine"  # its state dir is its own
    for request in api.snapshot():
        if request.agent == "alice":
            assert not [t for t in request.tools if t.startswith(ALICE_MAY_NOT)], request.tools

    # The servers refuse a direct call with alice's own token, whatever Claude Code would do.
    for server, tool, arguments, why in [
        ("approvals", "approve", {"id": 1}, "approvals.approve is an operator tool; agents may not call it"),
        ("lifecycle", "list_agents", {}, "alice lacks lifecycle.list_agents; ask the manager"),
        ("broker", "list_messages", {}, "broker.list_messages is an operator tool"),
    ]:
        async with running.client(server, "alice", Role.AGENT) as client:
            with pytest.raises(ToolError, match=re.escape(f"permission denied: {why}")):
                await client.call(tool, arguments)


async def test_6_the_operator_cancels_a_running_turn_and_changes_the_model(running: RunningHive) -> None:
    api = running.api
    api.script(agent="alice", when="e2e-6 long", steps=[Hold(None, seconds=120), Say("never")], times=1)
    await running.call("broker", "send", to="alice", body="e2e-6 long job")
    running.wait_for("alice's long turn started", lambda r: r.agent == "alice" and "e2e-6 long" in r.wake)
    await running.until("alice", lambda s: s["turn"] and s["turn"]["state"] == "running")
    cancelled = running.hive("cancel-turn", "alice")
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stdout + cancelled.stderr
    idle = await running.until("alice", lambda s: s["turn"]["state"] == "idle")
    assert idle["state"] == "running"
    turn = await _until_turn_recorded(running, "alice", None, reason="cancelled")
    assert not turn["ok"] and turn["error"] == "cancelled by the operator"
    refused = running.hive("cancel-turn", "alice")
    assert refused.returncode == 1 and "not running a turn" in refused.stderr

    await running.call("lifecycle", "set_model", name="alice", model="haiku")
    api.script(agent="alice", when="e2e-6 again", steps=[Say("fine")], times=1)
    await running.call("broker", "send", to="alice", body="e2e-6 again")
    again = running.wait_for("alice's next turn", lambda r: r.agent == "alice" and "e2e-6 again" in r.wake)
    assert "haiku" in again.body["model"]
    # The cancelled message was acknowledged: it never comes back.
    await asyncio.sleep(1)
    assert len([r for r in api.snapshot() if r.agent == "alice" and "e2e-6 long" in r.wake and r.position == 0]) == 1


async def test_7_a_failed_api_call_is_retried_and_the_wake_is_handled_once(running: RunningHive) -> None:
    running.api.script(agent="alice", when="e2e-7 flaky", steps=[Fail(529, times=1), Say()], times=1)
    running.api.script(  # the harness's second try
        agent="alice",
        when="e2e-7 flaky",
        steps=[ToolCall("mcp__broker__send", {"to": "operator", "body": "e2e-7 handled"}), Say()],
        times=1,
    )
    await running.call("broker", "send", to="alice", body="e2e-7 flaky")
    [handled] = await running.operator_inbox()
    assert handled["body"] == "e2e-7 handled"
    failed = await _until_turn_recorded(running, "alice", None, reason="api_error")
    assert not failed["ok"] and "529" in failed["error"]
    ok = await _until_turn_recorded(running, "alice", "mcp__broker__send", after=failed["started_at"])
    assert ok["ok"]
    assert (await running.status("alice"))["turn"]["state"] == "idle"


async def test_8_notes_past_the_limit_are_rewritten_and_the_old_ones_kept(running: RunningHive) -> None:
    status = await running.status("alice")
    notes = Path(status["state_dir"]) / "notes.md"
    long_notes = "# alice's notes\n" + "".join(f"- finished task {i}: details nobody needs\n" for i in range(1000))
    notes.write_text(long_notes)
    os.chown(notes, status["uid"], status["uid"])
    running.api.script(
        when="has grown to",  # the rewrite runs outside alice's session, with its own system prompt
        steps=[ToolCall("Write", {"file_path": str(notes), "content": "# alice's notes\n- all tasks done\n"}), Say()],
        times=1,
    )
    await running.call("broker", "send", to="alice", body="e2e-8 anything")
    compaction = await _until_turn_recorded(running, "alice", "Write", kind="compaction")
    assert compaction["ok"], compaction
    assert notes.read_text() == "# alice's notes\n- all tasks done\n"
    assert (notes.parent / "notes.previous.md").read_text() == long_notes


async def test_9_mcp_config_and_claude_show_the_hive_as_an_agent_sees_it(running: RunningHive) -> None:
    printed = running.hive("mcp-config", "alice")
    assert printed.returncode == 0, printed.stderr
    servers = json.loads(printed.stdout)["mcpServers"]
    assert set(servers) == {"broker", "operator", "forge"}  # alice holds no lifecycle or approvals tools
    assert "mcp__broker__send" in printed.stderr and "mcp__lifecycle" not in printed.stderr
    token = servers["broker"]["headers"]["Authorization"].removeprefix("Bearer ")
    async with HiveClient(ServerAddress("broker", servers["broker"]["url"]), token, retry_seconds=0) as broker:
        sent = await broker.call("send", {"to": "operator", "body": "e2e-9 from a hand-made client"})
    [message] = await running.operator_inbox()
    assert (message["id"], message["sender"]) == (sent["id"], "alice")
    refused = running.hive("mcp-config", "operator")
    assert refused.returncode == 1 and "not an agent" in refused.stderr

    # The bundled Claude Code as alice's uid, which must be able to walk to its dir and to the CLI
    # (a checkout may itself sit in a 0700 temporary dir).
    cli = Path(bundled_cli()).resolve().parent
    chains = {p for start in (running.home, cli) for p in (start, *start.parents)}
    closed = sorted(p for p in chains if not p.stat().st_mode & 0o001)
    assert closed  # pytest's temporary dirs are 0700
    blocked = running.hive("claude", "alice", "auth", "status")
    assert blocked.returncode == 1 and "cannot reach" in blocked.stderr
    assert any(f"`chmod o+x {path}`" in blocked.stderr for path in closed), blocked.stderr
    for path in closed:
        path.chmod(path.stat().st_mode | 0o001)
    try:
        status = running.hive("claude", "alice", "auth", "status")
    finally:
        for path in closed:
            path.chmod(path.stat().st_mode & ~0o001)
    assert status.returncode == 0, status.stderr
    auth = json.loads(status.stdout)
    assert auth["loggedIn"] and auth["apiKeySource"] == "ANTHROPIC_API_KEY"
    assert auth["configDirectory"].endswith("agents/alice/harness/claude")
    alice_uid = (await running.status("alice"))["uid"]
    assert {p.stat().st_uid for p in Path(auth["configDirectory"]).rglob("*")} == {alice_uid}


async def test_10_agents_ride_out_a_broker_restart(running: RunningHive) -> None:
    [broker] = [pid for pid in children_of(running.up.pid) if " serve broker " in cmdline(pid)]
    os.kill(broker, signal.SIGKILL)  # hive up restarts it; the harnesses' long-polls break meanwhile
    running.api.script(
        agent="alice",
        when="e2e-10 still there",
        steps=[ToolCall("mcp__broker__send", {"to": "operator", "body": "e2e-10 yes"}), Say()],
        times=1,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            await running.call("broker", "send", to="alice", body="e2e-10 still there?")
            break
        except Exception:
            assert time.monotonic() < deadline, "the broker did not come back"
            await asyncio.sleep(0.3)
    [answer] = await running.operator_inbox()
    assert (answer["sender"], answer["body"]) == ("alice", "e2e-10 yes")


async def test_11_the_manager_edits_and_commits_a_config_and_asks_to_apply_it(running: RunningHive) -> None:
    repo = running.config.agents_dir / "alice" / "config"
    toml = repo / "agent.toml"
    brief = 'prompt = "Be brief."'

    def request_apply(request: Request) -> dict[str, Any]:
        sha = request.tool_result_text().strip()
        assert re.fullmatch(r"[0-9a-f]{40}", sha), sha
        return {"agent": "alice", "commit_ref": sha, "reason": "the operator asked alice to be brief"}

    running.api.script(
        agent="manager",
        when="e2e-11 configure",
        steps=[
            ToolCall("Read", {"file_path": str(toml)}),
            ToolCall(
                "Edit", {"file_path": str(toml), "old_string": 'prompt = ""', "new_string": 'prompt = "Be brief."'}
            ),
            ToolCall("Bash", {"command": f'git -C {repo} commit -am "alice: be brief (asked by the operator)"'}),
            ToolCall("Bash", {"command": f"git -C {repo} rev-parse HEAD"}),
            ToolCall("mcp__approvals__request_apply_commit", request_apply),
            Say("asked"),
        ],
        times=1,
    )
    running.hive("send", "manager", "e2e-11 configure alice to be brief")
    request_id = await _pending_request(running)
    pending = await running.call("approvals", "pending_approvals")
    [request] = [r for r in pending["requests"] if r["id"] == request_id]
    assert f"+{brief}" in request["diff"], request
    approved = running.hive("approve", str(request_id))
    assert approved.returncode == 0, approved.stderr
    config = await running.call("lifecycle", "agent_config", name="alice")
    assert brief in config["agent_toml"]
    log = await asyncio.to_thread(
        subprocess.run,
        ["git", "-c", "safe.directory=*", "-C", str(repo), "log", "-1", "--format=%an %s"],
        capture_output=True,
        text=True,
    )
    assert log.stdout.strip() == "manager alice: be brief (asked by the operator)"
    await running.until("alice", lambda s: s["state"] == "running" and s["turn"] and s["turn"]["state"] == "idle")
    running.api.script(agent="alice", when="e2e-11 hello", steps=[Say("hi")], times=1)
    await running.call("broker", "send", to="alice", body="e2e-11 hello")
    rebuilt = running.wait_for(
        "alice runs with its new prompt", lambda r: r.agent == "alice" and "e2e-11 hello" in r.wake
    )
    assert "Instructions from your config (agent.toml):\nBe brief." in rebuilt.system_text


# ------------------------------------------------------------------------------------------ helpers


def _reply_to_manager(body: str) -> Any:
    def make(request: Request) -> dict[str, Any]:
        found = re.search(r"--- message #(\d+) from manager", request.wake)
        assert found, request.wake
        return {"to": "manager", "body": body, "in_reply_to": int(found[1])}

    return make


async def _pending_request(running: RunningHive, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = await running.call("approvals", "pending_approvals")
        if pending["requests"]:
            request_id: int = pending["requests"][0]["id"]
            return request_id
        await asyncio.sleep(0.2)
    raise AssertionError(f"no approval request came\n{running.log('manager')}")


async def test_12_an_agent_past_its_daily_budget_pauses_until_the_operator_raises_it(running: RunningHive) -> None:
    """The scripted model reports a costly turn; alice passes the daily budget the operator gave her,
    pauses (turn state, list_agents), the manager hears of it, and a message sent meanwhile waits
    until the budget is raised."""
    # Sonnet's price, whatever model an earlier test left alice on: the costly turn must pass the budget.
    await running.call("lifecycle", "set_model", name="alice", model="sonnet")
    spent = (await running.call("lifecycle", "agent_stats", name="alice"))["spend"]["today_usd"]
    budget = round(spent + 0.5, 2)
    await running.call("lifecycle", "set_budget", name="alice", usd_per_day=budget)
    running.api.script(agent="alice", when="e2e-12 expensive", steps=[Say("costly", output_tokens=200_000)], times=1)
    await running.call("broker", "send", to="alice", body="e2e-12 expensive")
    status = await running.until("alice", lambda s: s["turn"] is not None and s["turn"]["state"] == "paused")
    assert status["turn"]["reason"] == f"paused: budget ${budget:.2f}/day reached", status
    assert status["spend"]["paused"] == status["turn"]["reason"] and status["spend"]["today_usd"] >= budget
    turns = (await running.call("lifecycle", "agent_stats", name="alice"))["turns"]
    assert max(turn["cost_usd"] for turn in turns) > 0.5, turns  # the cost Claude Code computed and reported
    listing = await running.call("lifecycle", "list_agents")
    assert listing["hive_spend"]["today_usd"] >= status["spend"]["today_usd"]
    told = running.wait_for(
        "the manager hears alice is paused", lambda r: r.agent == "manager" and "alice is paused" in r.wake
    )
    assert "budget_exhausted" in told.wake or "budget of" in told.wake

    running.api.script(
        agent="alice",
        when="e2e-12 meanwhile",
        steps=[ToolCall("mcp__broker__send", {"to": "operator", "body": "e2e-12 handled"}), Say()],
        times=1,
    )
    await running.call("broker", "send", to="alice", body="e2e-12 meanwhile")
    await asyncio.sleep(3)  # paused: the message waits in the inbox, no turn takes it
    assert not [r for r in running.api.snapshot() if r.agent == "alice" and "e2e-12 meanwhile" in r.wake]
    assert (await running.status("alice"))["turn"]["state"] == "paused"

    refused = running.hive("set-budget", "alice", "lots")
    assert refused.returncode == 1 and "is not an amount" in refused.stderr
    raised = running.hive("set-budget", "alice", f"{budget + 100:.2f}")  # the operator, from the CLI
    assert raised.returncode == 0, raised.stderr
    assert f"${budget + 100:.2f}/day" in raised.stdout and "paused" not in raised.stdout, raised.stdout
    [handled] = await running.operator_inbox()
    assert handled["body"] == "e2e-12 handled"
    await running.call("lifecycle", "set_budget", name="alice", usd_per_day=None)


async def _until_turn_recorded(
    running: RunningHive,
    name: str,
    tool: str | None,
    reason: str | None = None,
    kind: str = "wake",
    timeout: float = 30,
    after: str | None = None,
) -> dict[str, Any]:
    """The newest recorded turn of `name` like this; `after`: one that started later than that
    (ISO time), so an earlier test's turn of the same kind is never taken for the one awaited."""
    deadline = time.monotonic() + timeout
    while True:
        turns = (await running.call("lifecycle", "agent_stats", name=name))["turns"]
        for turn in reversed(turns):
            if turn["kind"] != kind or (tool is not None and tool not in turn["tool_calls"]):
                continue
            if after is not None and turn["started_at"] <= after:
                continue
            if reason is None or turn["terminal_reason"] == reason:
                found: dict[str, Any] = turn
                return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no such turn of {name}: {turns}")
        await asyncio.sleep(0.2)


def _processes_under(home: Path) -> list[str]:
    """Processes still running with the hive home in their command line (harnesses, Claude Code)."""
    deadline = time.monotonic() + 10
    while True:
        left = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    command = cmdline(int(entry.name))
                    environ = (entry / "environ").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if (str(home) in command or str(home) in environ) and not gone(int(entry.name), within=0):
                    left.append(f"{entry.name}: {command[:120]}")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


FACT = "e2e-13 the launch code is PURPLE-OTTER-42"


@pytest.mark.timeout(360)
async def test_13_alices_conversation_survives_renewal_crash_rebuild_and_idle_close_until_a_reset(
    running: RunningHive,
) -> None:
    """A fact told to alice is in the conversation her Claude Code sends the model after (a) a token
    renewal, (b) kill -9 of her harness mid-turn (and the crash note says so), (c) a rebuild and (d) an
    idle close and a wake: one session throughout; `hive reset-session` then starts an empty one."""
    api = running.api

    async def wake(body: str, *, position: int = 0) -> Request:
        api.script(agent="alice", when=body, steps=[Say("ok")], times=1)
        await running.call("broker", "send", to="alice", body=body)
        return running.wait_for(
            f"alice woke on {body!r}",
            lambda r: r.agent == "alice" and body in r.wake and r.position == position,
            timeout=90,
        )

    def told(request: Request) -> bool:
        return FACT in json.dumps(request.messages)

    first = await wake(f"e2e-13 remember this: {FACT}")
    session = first.session
    assert session and told(first)
    await running.until("alice", lambda s: s["turn"]["state"] == "idle")
    before = await running.status("alice")

    # (a) A token renewal: a lifecycle server that starts renews every running agent's token at once.
    # It also reads hive.toml again: alice's next runs close an idle Claude Code after 4 s, for (d).
    with (running.home / "hive.toml").open("a") as toml:
        toml.write("[harness]\nidle_close_seconds = 4\n")
    tokens = _alice_tokens(running)
    [lifecycle] = [pid for pid in children_of(running.up.pid) if " serve lifecycle " in cmdline(pid)]
    os.kill(lifecycle, signal.SIGKILL)  # hive up starts it again; alice's sandbox runs on, adopted
    deadline = time.monotonic() + 60
    while _alice_tokens(running) == tokens:
        assert time.monotonic() < deadline, "the restarted lifecycle server renewed no token"
        await asyncio.sleep(0.3)
    renewed = await wake("e2e-13 after the renewal")
    assert told(renewed) and renewed.session == session
    assert (await running.status("alice"))["started_at"] == before["started_at"]  # the same run of the sandbox

    # (b) kill -9 of the harness in the middle of a turn: lifecycle restarts the sandbox, the message
    # comes again, and the first wake says what happened.
    holding = threading.Event()
    api.script(agent="alice", when="e2e-13 crash", steps=[Hold(holding, seconds=120), Say("never")], times=1)
    await running.call("broker", "send", to="alice", body="e2e-13 crash in this turn")
    running.wait_for("alice's turn started", lambda r: r.agent == "alice" and "e2e-13 crash" in r.wake)
    await running.until("alice", lambda s: s["turn"]["state"] == "running")
    os.kill(_harness_pid(running, "alice"), signal.SIGKILL)
    holding.set()
    again = running.wait_for(
        "alice's restarted harness took the message again",
        lambda r: r.agent == "alice" and "e2e-13 crash" in r.wake and "restarted after a crash" in r.wake,
        timeout=90,
    )
    assert re.search(
        r"\[hyperhive\] Your sandbox was restarted after a crash \((exit 137|killed by SIGKILL)\) while your last "
        r"turn was running: it may not have finished",
        again.wake,
    ), again.wake
    assert told(again) and again.session == session
    status = await running.until("alice", lambda s: s["turn"]["state"] == "idle")
    assert status["restart_count"] > before["restart_count"]

    # (c) A rebuild: a new run of the sandbox, told of it in one line, same conversation.
    rebuilt = running.hive("rebuild", "alice")
    assert rebuilt.returncode == 0, rebuilt.stderr
    await running.until("alice", lambda s: s["state"] == "running" and s["turn"]["state"] == "idle")
    after_rebuild = await wake("e2e-13 after the rebuild")
    assert "Your sandbox was rebuilt (by operator) since your last turn" in after_rebuild.wake, after_rebuild.wake
    assert told(after_rebuild) and after_rebuild.session == session

    # (d) An idle close (4 s without a wake, as this run's hive.json says) and a wake: resumed.
    closing = "no wake for"
    closes = running.log("alice").count(closing)
    deadline = time.monotonic() + 30
    while running.log("alice").count(closing) == closes:
        assert time.monotonic() < deadline, f"alice's Claude Code was never closed\n{running.log('alice')}"
        await asyncio.sleep(0.3)
    assert not [pid for pid in _sandbox_pids(running, "alice") if "claude" in cmdline(pid).split(" ")[0]]
    after_idle = await wake("e2e-13 after the idle close")
    assert told(after_idle) and after_idle.session == session

    # The operator resets the session: the next wake starts an empty conversation that says why.
    reset = running.hive("reset-session", "alice")
    assert reset.returncode == 0, reset.stderr
    fresh = await wake("e2e-13 after the reset")
    assert not told(fresh) and fresh.session != session
    assert "new Claude Code session: the operator asked for a fresh session" in fresh.wake, fresh.wake


def _alice_tokens(running: RunningHive) -> dict[str, str]:
    """alice's token files on the host (each run of her sandbox has its own dir), by path."""
    root = running.home / "instance-credentials" / "alice"
    return {str(path): path.read_text() for path in root.glob("*/token")}


def _sandbox_pids(running: RunningHive, name: str) -> list[int]:
    """The processes in `name`'s sandbox (its pid namespace), bwrap's own init left out."""
    record = json.loads((running.config.run_dir / "lifecycle" / "bwrap" / f"{name}.json").read_text())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != record["init_pid"]:
            try:
                if str((entry / "ns" / "pid").readlink()) == f"pid:[{record['pidns']}]":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _harness_pid(running: RunningHive, name: str) -> int:
    [pid] = [pid for pid in _sandbox_pids(running, name) if "-m hyperhive.harness" in cmdline(pid)]
    return pid


# ------------------------------------------------------------------------------ the forge, for real

# What ann, ben and cal run with: plain git through Claude Code's Bash tool.
FORGE_AGENT_TOML = 'role = "agent"\nbash = ["git:*"]\nshared = "{shared}"\n'


@pytest.mark.timeout(420)
async def test_14_agents_share_code_through_the_forge_and_files_through_the_shared_workspace(
    running: RunningHive,
) -> None:
    """ann, ben and cal in their own sandboxes, each running plain git in Claude Code's Bash tool with
    the harness's credential helper: ann creates `app` and pushes; ben gets a 403 until granted, then
    reads but cannot push, then pushes with write and ann hears of it in her wake; ben cannot push to
    `docs`. ann and ben hand each other files in /hive/shared with Claude Code's file tools; cal,
    shared = "none", has no /hive/shared at all."""
    url = forge_git_url(running.config)
    assert url is not None
    states = {
        name: Path((await _spawn(running, name, FORGE_AGENT_TOML.format(shared=shared)))["state_dir"])
        for name, shared in (("ann", "rw"), ("ben", "rw"), ("cal", "none"))
    }
    ann, ben = states["ann"], states["ben"]

    # ann: a repo of her own, a first commit, pushed over her sandbox's network.
    created, cloned, written, _, committed, pushed = await _turn(
        running,
        "ann",
        "e2e-14 create app",
        [
            ToolCall("mcp__forge__create_repo", {"name": "app", "description": "ann's app"}),
            *_clone_commit_push(f"{url}/app.git", ann / "app", "README.md", "ann's app\n", "ann: the first commit"),
        ],
    )
    assert f'"clone_url":"{url}/app.git"' in created.replace(" ", ""), created
    assert "empty repository" in cloned and "[error]" not in written, (cloned, written)
    assert "ann: the first commit" in committed and "[error]" not in pushed, (committed, pushed)
    log = await running.call("forge", "repo_log", repo="app")
    assert [(c["subject"], c["author"]) for c in log["commits"]] == [
        ("ann: the first commit", "ann <ann@hyperhive.local>")
    ]

    # ben, without a grant: git says 403 in the Bash result the model gets.
    [denied] = await _turn(
        running, "ben", "e2e-14 clone app", [ToolCall("Bash", {"command": f"git clone {url}/app.git {ben}/app"})]
    )
    assert "403" in denied and not (ben / "app").exists(), denied

    # With read: ben clones, and his push is refused.
    [granted] = await _turn(
        running,
        "ann",
        "e2e-14 grant read",
        [ToolCall("mcp__forge__grant", {"repo": "app", "who": "ben", "access": "read"})],
    )
    assert '"changed":true' in granted.replace(" ", ""), granted
    cloned, _, _, _, refused = await _turn(
        running,
        "ben",
        "e2e-14 clone app again",
        _clone_commit_push(f"{url}/app.git", ben / "app", "NOTES.md", "ben was here\n", "ben: notes"),
    )
    assert "[error]" not in cloned and (ben / "app" / "README.md").read_text() == "ann's app\n", cloned
    assert "403" in refused and "not push to it" in refused, refused
    assert len((await running.call("forge", "repo_log", repo="app"))["commits"]) == 1

    # With write: ben's push goes through, and ann hears of it in her next wake.
    await _turn(
        running,
        "ann",
        "e2e-14 grant write",
        [ToolCall("mcp__forge__grant", {"repo": "app", "who": "ben", "access": "write"})],
    )
    [pushed] = await _turn(
        running, "ben", "e2e-14 push", [ToolCall("Bash", {"command": f"git -C {ben}/app push origin main"})]
    )
    assert "[error]" not in pushed and "main -> main" in pushed, pushed
    heard = running.wait_for("ann hears of ben's push", lambda r: r.agent == "ann" and "repo_pushed" in r.wake)
    assert "ben" in heard.wake and "app" in heard.wake and "refs/heads/main" in heard.wake, heard.wake
    head = (await running.call("forge", "repo_log", repo="app"))["commits"][0]
    assert (head["subject"], head["author"]) == ("ben: notes", "ben <ben@hyperhive.local>")
    assert head["sha"][:7] in heard.wake, heard.wake

    # docs: every agent clones it; an agent cannot push to it.
    cloned, _, _, _, refused = await _turn(
        running,
        "ben",
        "e2e-14 docs",
        _clone_commit_push(f"{url}/docs.git", ben / "docs", "mine.md", "ben's runbook\n", "ben: a runbook"),
    )
    assert "[error]" not in cloned and "403" in refused, (cloned, refused)
    [docs] = [r for r in (await running.call("forge", "list_repos"))["repos"] if r["name"] == "docs"]
    assert "pushed_at" not in docs, docs  # never pushed to
    gits = [cmdline(p) for name in ("ann", "ben") for p in _sandbox_pids(running, name)]
    assert not [c for c in gits if Path(c.split(" ")[0]).name.startswith("git")], gits  # none left running

    # The shared workspace: ann and ben write there and read each other's files; cal has none.
    shared = Path("/hive/shared")
    [wrote] = await _turn(
        running, "ann", "e2e-14 share", [ToolCall("Write", {"file_path": f"{shared}/ann.md", "content": "from ann\n"})]
    )
    assert "[error]" not in wrote, wrote
    wrote, read = await _turn(
        running,
        "ben",
        "e2e-14 share",
        [
            ToolCall("Write", {"file_path": f"{shared}/ben.md", "content": "from ben\n"}),
            ToolCall("Read", {"file_path": f"{shared}/ann.md"}),
        ],
    )
    assert "[error]" not in wrote and "from ann" in read, (wrote, read)
    [read] = await _turn(running, "ann", "e2e-14 read", [ToolCall("Read", {"file_path": f"{shared}/ben.md"})])
    assert "from ben" in read and "[error]" not in read, read
    host = running.home / "shared"
    uids = {name: (await running.status(name))["uid"] for name in ("ann", "ben")}
    assert {p.name: p.stat().st_uid for p in host.iterdir()} == {"ann.md": uids["ann"], "ben.md": uids["ben"]}
    # What git says of the place: "not a git repository" where it is there, "No such file" where not.
    look = ToolCall("Bash", {"command": f"git -C {shared} status"})
    [there] = await _turn(running, "ben", "e2e-14 look", [look])
    missing, read = await _turn(
        running, "cal", "e2e-14 look", [look, ToolCall("Read", {"file_path": f"{shared}/ann.md"})]
    )
    assert "No such file or directory" not in there and "No such file or directory" in missing, (there, missing)
    assert "[error]" in read and "from ann" not in read, read


def _clone_commit_push(url: str, clone: Path, file: str, content: str, message: str) -> list[ToolCall]:
    """What an agent does to change a repo: git clone, Write a file, git add, git commit, git push."""
    return [
        ToolCall("Bash", {"command": f"git clone {url} {clone}"}),
        ToolCall("Write", {"file_path": f"{clone}/{file}", "content": content}),
        ToolCall("Bash", {"command": f"git -C {clone} add {file}"}),
        ToolCall("Bash", {"command": f"git -C {clone} commit -m '{message}'"}),
        ToolCall("Bash", {"command": f"git -C {clone} push origin main"}),
    ]


async def _spawn(running: RunningHive, name: str, agent_toml: str) -> dict[str, Any]:
    """Create `name` from a draft whose agent.toml is `agent_toml`, as the operator; wait until it idles."""
    draft = await running.call("lifecycle", "create_draft", name=name)
    sha = await repos.commit_files(Path(draft["config_dir"]), {AGENT_TOML: agent_toml}, f"{name} for e2e-14")
    await running.call("lifecycle", "create_agent", name=name, sha=sha)
    return await running.until(name, lambda s: s["state"] == "running" and s["turn"] and s["turn"]["state"] == "idle")


async def _turn(running: RunningHive, agent: str, marker: str, calls: list[ToolCall]) -> list[str]:
    """Wake `agent` with `marker`: the scripted model makes `calls` one after another in one turn; the
    text of each result Claude Code sent back, in order (an error's starts with "[error]")."""
    running.api.script(agent=agent, when=marker, steps=[*calls, Say("done")], times=1)
    await running.call("broker", "send", to=agent, body=marker)
    results = []
    for position in range(1, len(calls) + 1):
        request = running.wait_for(
            f"{agent} got the result of call {position} of {marker!r}",
            lambda r, p=position: r.agent == agent and marker in r.wake and r.position == p,  # type: ignore[misc]
            timeout=90,
        )
        results.append(request.tool_result_text())
    return results
