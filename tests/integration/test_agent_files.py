"""The root lifecycle server never trusts a file an agent can write (issue 12, section 5).

Turn stats reach it over MCP (record_turn, only for the caller itself) and live in its own store;
a planted turn-stats.sqlite (a fifo, a link to another agent's stats) is never opened. turn.json is
read without following links, non-blocking and capped, and a bad one shows as "unreadable".
Each hostile case is bounded by a timeout so that a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from hivetest import SLEEPER, Hive, Hivemind, in_process, toml_list

from hyperhive.harness.claude import TurnOutcome
from hyperhive.harness.stats import StatsReporter, turn_row
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.models import SwarmStats
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.spending import day_start

pytestmark = pytest.mark.slow

BOUND = 10.0  # seconds: a call that takes longer than this hangs


def _turn(key: str, started: float, **overrides: Any) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "key": key,
        "kind": "wake",
        "started_at": started,
        "ended_at": started + 5,
        "ok": True,
        "terminal_reason": "completed",
        "model": "sonnet",
        "model_turns": 2,
        "tool_calls": {"mcp__broker__send": 1},
        "tokens_in": 100,
        "tokens_out": 20,
        "cost_usd": 0.01,
        "messages": 1,
        "inbox_depth": 1,
        "error": None,
    }
    return turn | overrides


def _unblock(fifo: Path) -> None:
    """Open the fifo's other end, so a reader stuck in open() (the old code) returns."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_agent_stats_never_opens_a_planted_turn_stats_file(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    await hivemind.create("bob", SLEEPER)
    alice, bob = (AgentPaths.of(hivemind.hive.config, n) for n in ("alice", "bob"))
    with sqlite3.connect(bob.harness / "turn-stats.sqlite") as db:  # bob's private numbers
        db.execute("CREATE TABLE turns (id INTEGER PRIMARY KEY, started_at REAL, secret TEXT)")
        db.execute("INSERT INTO turns (started_at, secret) VALUES (1, 'bob only')")
    fifo = alice.harness / "turn-stats.sqlite"
    os.mkfifo(fifo)
    try:
        stats = await asyncio.wait_for(hivemind.call("agent_stats", name="alice"), BOUND)
    finally:
        _unblock(fifo)
    assert stats["turns"] == [] and stats["summary"]["turns"] == 0

    fifo.unlink()
    fifo.symlink_to(bob.harness / "turn-stats.sqlite")
    stats = await asyncio.wait_for(hivemind.call("agent_stats", name="alice"), BOUND)
    assert stats["turns"] == []  # nothing of bob's


async def test_swarm_stats_adds_up_every_agents_turns_of_today_in_one_call(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    await hivemind.create("bob", SLEEPER)
    now = time.time()
    today = max(now - 100, day_start(now) + 1)  # a test run just after 00:00 UTC still has "today"
    alice, bob = hivemind.lifecycle.client("alice"), hivemind.lifecycle.client("bob")
    tools = {"Bash": 5, "Read": 2, "mcp__broker__send": 3, "Grep": 1}
    await alice.call("record_turn", {"turn": _turn("a-1", today, tool_calls=tools, cost_usd=0.25)})
    late = _turn("a-2", today + 1, ok=False, error="API error 529", cost_usd=0.5) | {"ended_at": today + 16}
    await alice.call("record_turn", {"turn": late})
    await alice.call("record_turn", {"turn": _turn("a-0", day_start(now) - 3600)})  # yesterday: not counted
    await bob.call("record_turn", {"turn": _turn("b-1", today)})
    stats = SwarmStats.model_validate(await hivemind.call("swarm_stats"))
    assert stats.since.startswith(time.strftime("%Y-%m-%dT00:00:00", time.gmtime(now)))
    by_name = {totals.name: totals for totals in stats.agents}
    assert set(by_name) == {"alice", "bob"}  # the manager took no turn: left out
    assert (by_name["alice"].turns, by_name["alice"].errors, by_name["alice"].cost_usd) == (2, 1, 0.75)
    assert by_name["alice"].avg_seconds == 10.0  # 5 s and 15 s
    assert by_name["alice"].top_tools == {"Bash": 5, "mcp__broker__send": 4, "Read": 2}  # the top three
    assert by_name["bob"].top_tools == {"mcp__broker__send": 1}
    with pytest.raises(ToolError):  # an agent reads no one's stats
        await alice.call("swarm_stats", {})


async def test_record_turn_is_for_the_caller_only_and_bounded(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    alice = hivemind.lifecycle.client("alice")
    now = time.time()
    assert (await alice.call("record_turn", {"turn": _turn("k-0000001", now - 100)})) == {"recorded": True}
    again = await alice.call("record_turn", {"turn": _turn("k-0000001", now - 100)})  # a retry of the same row
    assert again == {"recorded": False}
    await alice.call("record_turn", {"turn": _turn("k-0000002", now - 50, ok=False, error="API error 529")})
    stats = await hivemind.call("agent_stats", name="alice")
    assert [t["started_at"] for t in stats["turns"]] == [now - 100, now - 50]
    assert stats["summary"]["turns"] == 2 and stats["summary"]["errors"] == 1
    assert stats["summary"]["tool_calls"] == {"mcp__broker__send": 2}
    assert (await hivemind.call("agent_stats", name="manager"))["turns"] == []  # alice wrote only her own

    with pytest.raises(ToolError, match="unknown argument"):  # identity is the token's, never an argument
        await alice.call("record_turn", {"turn": _turn("k-0000003", now), "name": "manager"})
    bad = {
        "tokens_in": -1,
        "cost_usd": float("inf"),
        "tool_calls": {f"t{i}": 1 for i in range(1000)},
        "error": "x" * 100_000,
        "model_turns": 10**12,
        "ended_at": now - 10_000,  # before it started
        "started_at": now + 10 * 86_400,  # in the future
        "key": "../../etc",
        "kind": "anything",
    }
    for field, value in bad.items():
        with pytest.raises(ToolError, match=rf"invalid arguments for record_turn: turn\.{field}|turn: "):
            await alice.call("record_turn", {"turn": _turn("k-0000009", now) | {field: value}})
    assert len((await hivemind.call("agent_stats", name="alice"))["turns"]) == 2  # no half-written rows

    with pytest.raises(ToolError, match="is an agent tool"):  # the operator has no turns of its own to record
        await hivemind.call("record_turn", turn=_turn("k-0000004", now))


async def test_a_turn_older_than_the_retention_is_refused(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    alice = hivemind.lifecycle.client("alice")
    with pytest.raises(ToolError, match="older than the 90-day retention"):
        await alice.call("record_turn", {"turn": _turn("k-old", time.time() - 91 * 86_400)})


@pytest.mark.parametrize("plant", ["fifo", "shadow", "other agent", "huge", "garbage", "linked dir"])
async def test_a_hostile_turn_json_shows_as_unreadable_quickly(hivemind: Hivemind, plant: str) -> None:
    await hivemind.create("alice", SLEEPER)
    await hivemind.create("bob", SLEEPER)
    alice, bob = (AgentPaths.of(hivemind.hive.config, n) for n in ("alice", "bob"))
    bob.turn_state.write_text('{"state": "running", "since": 1.0, "turn": 7, "reason": "bob\'s own"}')
    turn_json = alice.turn_state
    turn_json.unlink(missing_ok=True)
    if plant == "fifo":
        os.mkfifo(turn_json)
    elif plant == "shadow":
        turn_json.symlink_to("/etc/shadow")
    elif plant == "other agent":
        turn_json.symlink_to(bob.turn_state)
    elif plant == "huge":
        with turn_json.open("wb") as f:
            f.truncate(50 * 1024 * 1024)
    elif plant == "linked dir":  # (only root could do this one; the walk refuses it all the same)
        alice.harness.rename(alice.root / "harness.real")
        alice.harness.symlink_to(bob.harness)
    elif plant == "garbage":
        turn_json.write_bytes(b'{"state": "running", "since": \xff\xfe' + b"[" * 10_000)
    try:
        status = await asyncio.wait_for(hivemind.status("alice"), BOUND)
        listing = await asyncio.wait_for(hivemind.call("list_agents"), BOUND)
    finally:
        if plant == "fifo":
            _unblock(turn_json)
    turn = status["turn"]
    assert turn is not None and turn["state"] == "unreadable", turn
    assert "turn.json" in turn["reason"] and "bob" not in turn["reason"]
    assert next(a for a in listing["agents"] if a["name"] == "alice")["turn"]["state"] == "unreadable"
    with pytest.raises(ToolError, match="not running a turn"):
        await asyncio.wait_for(hivemind.call("cancel_turn", name="alice"), BOUND)


async def test_the_harness_retries_its_reports_with_a_bounded_queue_and_logs_what_it_loses(
    hive: Hive, caplog: pytest.LogCaptureFixture
) -> None:
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}")
    # As the harness does: the token file's token of the moment (the lifecycle server starting the
    # manager below begins a new instance, and the old instance's token is refused from then on).
    lifecycle = LifecycleClient.for_server(hive.config, lambda: hive.token("manager"), retry_seconds=0)
    reporter = StatsReporter(lifecycle, queue_max=2)
    now = time.time()
    rows = [turn_row("wake", now - 30 + i, "sonnet", TurnOutcome(ok=True), 1, 0) for i in range(4)]
    for row in rows[:3]:  # the lifecycle server is not up: they wait, and the oldest makes room
        reporter.submit(row)
    assert (reporter.waiting, reporter.dropped) == (2, 1)
    assert "turn stats row of the turn started at" in caplog.text and "rows are waiting" in caplog.text
    await asyncio.sleep(1.5)  # a retry or two fail meanwhile
    async with in_process(hive, "broker"), in_process(hive, "lifecycle", stop_agents_on_exit=True) as server:
        deadline = time.monotonic() + 30
        while reporter.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        turns = (await server.client("operator").call("agent_stats", {"name": "manager"}))["turns"]
        assert [t["started_at"] for t in turns] == [rows[1].started_at, rows[2].started_at]
    # Down again, for longer than a row is retried: it is dropped, and the log says so.
    reporter.retry_for = 0.5
    reporter.submit(rows[3])
    deadline = time.monotonic() + 10
    while reporter.waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert (reporter.waiting, reporter.dropped) == (0, 2)
    assert "stayed unreachable for 0 s" in caplog.text or "stayed unreachable for 1 s" in caplog.text
    await reporter.close()
