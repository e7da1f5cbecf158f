"""The CLI does what the dashboard does (issue 16 §6): spawn, set-model, update-all, stats, config,
audit and --json, against real servers; `hive up` twice on one home; `hive init --port-base`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TypeVar

import pytest
from hivetest import Hive, Hivemind, free_block, free_port, in_process, start_hive_up, toml_list
from pydantic import TypeAdapter

from hyperhive.servers.approvals.models import Request, ReviewedRequest
from hyperhive.servers.cli import SERVERS
from hyperhive.servers.cli.reports import AuditLine
from hyperhive.servers.lifecycle.models import AgentInfo, AgentStats
from hyperhive.servers.operator.models import PendingQuestion

pytestmark = pytest.mark.slow

T = TypeVar("T")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(3600)"]


def _hive(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "hyperhive.servers.cli", *args, "--home", str(home)],
        capture_output=True, text=True, timeout=120, input=stdin,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def hive_cli(hivemind: Hivemind, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`hive ARGS` as its own process, beside the servers running in this event loop."""
    return await asyncio.to_thread(_hive, hivemind.hive.home, *args, stdin=stdin)


def parsed(kind: type[T], output: str) -> list[T]:
    """--json output parsed back into the tool's model: one array."""
    return TypeAdapter(list[kind]).validate_json(output)  # type: ignore[valid-type]


async def test_spawn_set_model_config_update_all_and_agents_json(hivemind: Hivemind) -> None:
    spawned = await hive_cli(hivemind, "spawn", "alice")
    assert spawned.returncode == 0, spawned.stderr
    assert spawned.stdout.startswith("◆ alice: created (config ") and "· sonnet" in spawned.stdout, spawned.stdout
    await hivemind.until_state("alice", "running")
    again = await hive_cli(hivemind, "spawn", "alice")
    assert again.returncode == 1 and again.stderr == "Error: alice already exists\n", again.stderr
    bad = await hive_cli(hivemind, "spawn", "Alice_Long_Name")
    assert bad.returncode == 1 and "invalid agent name 'Alice_Long_Name'" in bad.stderr, bad.stderr

    listing = await hive_cli(hivemind, "agents", "--json")
    agents = {agent.name: agent for agent in parsed(AgentInfo, listing.stdout)}
    assert set(agents) == {"manager", "alice"} and agents["alice"].state == "running"
    assert (await hive_cli(hivemind, "agents")).stdout.startswith("◆ 2 agents · ")

    opus = await hive_cli(hivemind, "set-model", "alice", "opus")
    assert opus.stdout == "◆ alice: next turns use opus\n", opus.stderr
    assert {a.name: a.model for a in parsed(AgentInfo, (await hive_cli(hivemind, "agents", "--json")).stdout)}[
        "alice"
    ] == "opus"
    back = await hive_cli(hivemind, "set-model", "alice", "default")
    assert back.stdout == "◆ alice: next turns use sonnet (agent.toml's)\n", back.stderr
    ghost = await hive_cli(hivemind, "set-model", "ghost", "opus")
    assert ghost.returncode == 1
    assert ghost.stderr == "Error: no agent named 'ghost'; `hive agents` shows the agents there are\n"  # a verb

    config = await hive_cli(hivemind, "config", "alice")
    applied = await hivemind.call("agent_config", name="alice")
    assert config.stdout.splitlines()[0] == (
        f"# alice: applied config {applied['sha'][:12]} (from proposed {applied['proposed_sha'][:12]})"
    )
    assert applied["agent_toml"].strip() in config.stdout and "# agent.toml" in config.stdout

    assert (await hive_cli(hivemind, "update-all")).stdout == "◆ every agent is up to date\n"
    with sqlite3.connect(hivemind.hive.config.db_path("lifecycle")) as db:  # built by an old hyperhive
        db.execute("UPDATE agents SET built_version = '0.0.1' WHERE name = 'alice'")
    declined = await hive_cli(hivemind, "update-all", stdin="n\n")
    assert declined.returncode == 1 and "◆ 1 agent to rebuild:\n  alice  running  (restarts)\n" in declined.stdout
    assert "Rebuild it? [y/N]" in declined.stdout
    assert [a.needs_update for a in parsed(AgentInfo, (await hive_cli(hivemind, "agents", "--json")).stdout)
            if a.name == "alice"] == [True]  # fmt: skip
    updated = await hive_cli(hivemind, "update-all", "--yes")
    assert updated.returncode == 0 and updated.stdout.endswith("◆ rebuilt 1 agent: alice\n"), updated.stdout
    await hivemind.until_state("alice", "running")
    assert not any(a.needs_update for a in parsed(AgentInfo, (await hive_cli(hivemind, "agents", "--json")).stdout))


@pytest.mark.stores  # the approvals' and operator's trails, on sqlite and on PostgreSQL
async def test_stats_and_merged_audit_with_json(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    now = time.time()
    alice = hivemind.lifecycle.client("alice")
    for key, ok, cost, tools in (("t1", True, 0.25, {"Bash": 3, "send": 1}), ("t2", False, 0.5, {"Bash": 1})):
        turn = {"key": key, "started_at": now - 60, "ended_at": now - 30, "ok": ok, "terminal_reason": None,
                "model": "sonnet", "model_turns": 2, "tool_calls": tools, "tokens_in": 100, "tokens_out": 20,
                "cost_usd": cost, "messages": 1, "inbox_depth": 0, "error": None if ok else "boom"}  # fmt: skip
        await alice.call("record_turn", {"turn": turn})

    table = (await hive_cli(hivemind, "stats")).stdout.splitlines()
    assert table[0] == "◆ turns ended within 24h"
    row = next(line.split() for line in table if line.strip().startswith("alice"))
    assert row[:4] == ["alice", "2", "1", "30s"] and "Bash 4, send 1" in " ".join(row), table
    hive_row = next(line.split() for line in table if line.strip().startswith("(hive)"))
    assert hive_row[:6] == ["(hive)", "2", "1", "30s", "0.75", "2"], table
    stats = parsed(AgentStats, (await hive_cli(hivemind, "stats", "--json")).stdout)
    assert {s.name: s.summary.turns for s in stats} == {"manager": 0, "alice": 2}
    one = await hive_cli(hivemind, "stats", "alice", "--since", "7d")
    assert "1 message  error: boom" in one.stdout and "$0.25" in one.stdout, one.stdout
    assert "alice ended no turn within 10s" in (await hive_cli(hivemind, "stats", "alice", "--since", "10s")).stdout
    bad = await hive_cli(hivemind, "stats", "--since", "soon")
    assert bad.returncode == 2 and "'soon' is not a duration" in bad.stderr

    async with in_process(hivemind.hive, "approvals") as approvals, in_process(hivemind.hive, "operator") as operator:
        request = await approvals.client("manager", timeout=60).call(
            "request_spawn", {"name": "bob", "reason": "a second pair of hands"}
        )
        question = await operator.client("manager").call("ask_operator", {"question": "Ship it?", "about": 7})
        waiting = parsed(Request, (await hive_cli(hivemind, "approvals", "--json")).stdout)
        assert [r.id for r in waiting] == [request["id"]]
        asked = parsed(PendingQuestion, (await hive_cli(hivemind, "questions", "--json")).stdout)
        assert [(q.id, q.asker, q.about) for q in asked] == [(question["id"], "manager", 7)]
        said = (await hive_cli(hivemind, "questions")).stdout
        assert f"#{question['id']} from manager · " in said and "about message #7 (`hive thread 7`)" in said, said
        assert (await hive_cli(hivemind, "deny", str(request["id"]), "--note", "not now")).returncode == 0
        history = parsed(ReviewedRequest, (await hive_cli(hivemind, "approvals", "--history", "5", "--json")).stdout)
        assert [(r.id, r.state, r.note) for r in history] == [(request["id"], "denied", "not now")]

        lines = parsed(AuditLine, (await hive_cli(hivemind, "audit", "--json")).stdout)
        seen = {(line.server, line.action, line.actor) for line in lines}
        assert ("lifecycle", "create_agent", "operator") in seen
        assert ("approvals", "requested", "manager") in seen and ("approvals", "denied", "operator") in seen
        assert ("operator", "asked", "manager") in seen
        assert [line.at for line in lines] == sorted((line.at for line in lines), reverse=True)  # newest first
        assert len(parsed(AuditLine, (await hive_cli(hivemind, "audit", "--json", "--limit", "2")).stdout)) == 2
        mine = parsed(AuditLine, (await hive_cli(hivemind, "audit", "--json", "--agent", "alice")).stdout)
        assert mine and {line.server for line in mine} == {"lifecycle"}  # the manager's request and question
        assert all(line.subject == "alice" for line in mine)
        managers = parsed(AuditLine, (await hive_cli(hivemind, "audit", "--json", "--agent", "manager")).stdout)
        assert {line.server for line in managers} == {"approvals", "operator"}  # it asked; nothing was done to it
        text = (await hive_cli(hivemind, "audit", "--server", "approvals")).stdout.splitlines()
        assert text[0].split(" ", 2)[2].startswith("approvals denied by") is False  # columns: date time server …
        assert all(" approvals " in line for line in text) and any("· not now" in line for line in text), text

    # The approvals and operator servers are down: their trails are named as missing, lifecycle's shown.
    down = await hive_cli(hivemind, "audit")
    assert down.returncode == 0, down.stderr
    assert "✗ approvals: " in down.stderr and "✗ operator: " in down.stderr and "trail is left out" in down.stderr
    assert " lifecycle " in down.stdout and "create_agent alice ok" in down.stdout


def test_hive_up_twice_says_it_is_running_and_init_port_base_runs_a_second_hive(tmp_path: Path) -> None:
    first = Hive(tmp_path / "one")
    first.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n[dashboard]\nport = {free_port()}")
    up, output = start_hive_up(first.home)
    try:
        record = json.loads((first.config.run_dir / "up.json").read_text())
        assert record["pid"] == up.pid and set(record["urls"]) == {*SERVERS, "dashboard"}
        again = _hive(first.home, "up")
        assert again.returncode == 1, again
        assert "is in use" not in again.stderr + again.stdout
        dashboard = record["urls"]["dashboard"][0]
        assert again.stderr.startswith(f"Error: the hive at {first.home} is already running: `hive up` pid {up.pid}")
        assert f"dashboard {dashboard}" in again.stderr and f"`kill {up.pid}`" in again.stderr
        assert up.poll() is None  # the running one is untouched

        # A second hive on this host: its own block of ports, up beside the first.
        base = free_block()
        made = _hive(tmp_path / "two", "init", "--port-base", str(base))
        assert made.returncode == 0, made.stderr
        second, second_output = start_hive_up(tmp_path / "two")
        try:
            text = "".join(second_output)
            assert f"broker     http://127.0.0.1:{base + 1}/mcp" in text and f"http://127.0.0.1:{base + 5}" in text
            assert _hive(tmp_path / "two", "agents").stdout.startswith("◆ 1 agent · ")
        finally:
            second.send_signal(signal.SIGINT)
            assert second.wait(60) == 0
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    assert not (first.config.run_dir / "up.json").exists()
    assert "".join(output).count("◆ hive up") == 1


def test_hive_up_on_a_home_whose_servers_run_as_services_says_so(hive: Hive) -> None:
    """No `hive up` holds the lock, but this home's lifecycle server answers its token on its port."""
    from hivetest import ServerProcess, bwrap_pids, gone

    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}")
    servers = [ServerProcess(hive, name) for name in ("broker", "lifecycle")]
    for server in servers:
        server.start()
    try:
        up = _hive(hive.home, "up")
        assert up.returncode == 1
        assert "is already running outside `hive up` (its lifecycle server answers on 127.0.0.1:" in up.stderr
    finally:
        for server in reversed(servers):
            server.kill_if_running()
        # Sandboxes outlive their lifecycle server by design (the next one adopts them): the manager
        # it started would be left running after this test.
        for pid in bwrap_pids(str(hive.home)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert all(gone(pid) for pid in bwrap_pids(str(hive.home)))
