"""Budgets through the real lifecycle server over HTTP, with real sandboxes: turns are recorded as
each agent's harness records them (record_turn with its own token), the harness's budget_check is
asked the same way, and the lifecycle server's clock is the real one shifted, so a test can stand
just before 00:00 UTC and step over it."""

from __future__ import annotations

import contextlib
import itertools
import math
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from fastmcp.exceptions import ToolError
from hivetest import PY, SLEEPER, Hive, Hivemind, in_process, toml_list

from hyperhive.servers.lifecycle.spending import day_start

pytestmark = pytest.mark.slow

_keys = itertools.count(1)


class ShiftedClock:
    """The real clock moved to `start`; `advance` moves it on. Time keeps flowing, so the server's own
    timers (crash watch, outbox retries) behave as they do in production."""

    def __init__(self, start: float) -> None:
        self.offset = start - time.time()

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    async def wait_until(self, deadline: float, wake: anyio.Event) -> None:
        with anyio.move_on_after(max(0.0, deadline - self.now())):
            await wake.wait()


def before_midnight(seconds: float = 60) -> float:
    """`seconds` before the last 00:00 UTC: yesterday, so recorded turns are never in the future."""
    return day_start(time.time()) - seconds


@contextlib.asynccontextmanager
async def swarm(hive: Hive, clock: ShiftedClock, hive_toml: str = "") -> AsyncIterator[Hivemind]:
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n{hive_toml}")
    async with (
        in_process(hive, "broker") as broker,
        in_process(hive, "lifecycle", stop_agents_on_exit=True, clock=clock) as lifecycle,
    ):
        yield Hivemind(hive, broker, lifecycle)


async def spend(hivemind: Hivemind, name: str, usd: float, at: float) -> None:
    """`name`'s harness records a turn that cost `usd`, started at `at`."""
    turn = {
        "key": f"k-{next(_keys)}", "kind": "wake", "started_at": at, "ended_at": at + 1, "ok": True,
        "terminal_reason": "completed", "model": "sonnet", "model_turns": 1, "tool_calls": {},
        "tokens_in": 10, "tokens_out": 10, "cost_usd": usd, "messages": 1, "inbox_depth": 0, "error": None,
    }  # fmt: skip
    assert await hivemind.lifecycle.client(name).call("record_turn", {"turn": turn}) == {"recorded": True}


async def check(hivemind: Hivemind, name: str) -> str | None:
    """What `name`'s harness hears before it takes messages."""
    paused: str | None = (await hivemind.lifecycle.client(name).call("budget_check", {}))["paused"]
    return paused


async def last_action(hivemind: Hivemind, name: str) -> tuple[str, str]:
    [entry, *_] = (await hivemind.call("audit", agent=name))["entries"]
    return entry["action"], entry["outcome"]


async def budgeted(hivemind: Hivemind, name: str, usd_per_day: float) -> None:
    await hivemind.create(name)
    await hivemind.call("set_budget", name=name, usd_per_day=usd_per_day)


async def no_event(hivemind: Hivemind, kind: str, wait: float = 1.0) -> None:
    with pytest.raises(AssertionError, match=f"no {kind} event"):
        await hivemind.event(kind, timeout=wait)


def budget_rows(hive: Hive) -> dict[str, list[Any]]:
    with contextlib.closing(sqlite3.connect(hive.config.db_path("lifecycle"))) as db:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY agent").fetchall()
            for table in ("budget_overrides", "budget_resumes")
        }


async def test_the_hives_budget_pauses_every_agent_and_resuming_one_is_refused(hive: Hive) -> None:
    clock = ShiftedClock(time.time())
    async with swarm(hive, clock, "[budget]\nusd_per_day = 1.0") as hivemind:
        await hivemind.create("alice")
        await hivemind.create("bob")
        await spend(hivemind, "alice", 0.6, clock.now())
        assert await check(hivemind, "bob") is None
        await spend(hivemind, "bob", 0.4, clock.now())  # together: the hive's $1.00
        for name in ("alice", "bob", "manager"):
            assert await check(hivemind, name) == "paused: hive budget $1.00/day reached"
        events = {(await hivemind.event("budget_exhausted"))["agent"] for _ in range(3)}
        assert events == {"alice", "bob", "manager"}
        listing = await hivemind.call("list_agents")
        assert listing["hive_spend"]["today_usd"] == 1.0
        assert listing["hive_spend"]["paused"] == "paused: hive budget $1.00/day reached"
        assert all(a["spend"]["paused"] == "paused: hive budget $1.00/day reached" for a in listing["agents"])

        with pytest.raises(ToolError, match=r"the hive's budget pauses every agent.*raise hive\.toml \[budget\]"):
            await hivemind.call("resume_agent", name="bob")
        assert budget_rows(hive)["budget_resumes"] == []
        assert await check(hivemind, "bob") is not None
        assert await last_action(hivemind, "bob") == ("resume_agent", "refused")


async def test_budget_exhausted_once_per_agent_per_utc_day_and_again_the_next_day(hive: Hive) -> None:
    clock = ShiftedClock(before_midnight(60))
    async with swarm(hive, clock) as hivemind:
        await budgeted(hivemind, "alice", 1.0)
        await spend(hivemind, "alice", 1.5, clock.now())
        for _ in range(3):  # the harness asks every few seconds while paused
            assert await check(hivemind, "alice") == "paused: budget $1.00/day reached"
        event = await hivemind.event("budget_exhausted")
        assert (event["agent"], event["scope"], event["spent_usd"]) == ("alice", "agent", 1.5)
        await no_event(hivemind, "budget_exhausted")

        clock.advance(120)  # 00:01 UTC: a new day, yesterday's cost no longer counts
        assert await check(hivemind, "alice") is None
        assert (await hivemind.call("agent_stats", name="alice"))["spend"]["today_usd"] == 0
        await spend(hivemind, "alice", 1.0, clock.now())
        assert await check(hivemind, "alice") == "paused: budget $1.00/day reached"
        assert await check(hivemind, "alice") is not None
        event = await hivemind.event("budget_exhausted")
        assert (event["agent"], event["spent_usd"]) == ("alice", 1.0)
        await no_event(hivemind, "budget_exhausted")


async def test_resume_starts_the_agents_day_afresh_and_its_next_pause_is_announced_again(hive: Hive) -> None:
    clock = ShiftedClock(time.time())
    async with swarm(hive, clock) as hivemind:
        await hivemind.create("alice")
        with pytest.raises(ToolError, match="alice is not paused; nothing to resume"):
            await hivemind.call("resume_agent", name="alice")
        await hivemind.call("set_budget", name="alice", usd_per_day=1.0)
        await spend(hivemind, "alice", 0.7, clock.now() - 30)
        await spend(hivemind, "alice", 0.5, clock.now() - 20)
        assert await check(hivemind, "alice") == "paused: budget $1.00/day reached"
        assert (await hivemind.event("budget_exhausted"))["spent_usd"] == 1.2

        cli = await anyio.run_process([PY, "-m", "hyperhive.servers.cli", "resume", "alice", "--home", str(hive.home)])
        assert b"alice: resumed" in cli.stdout, cli
        spent = (await hivemind.status("alice"))["spend"]
        assert spent["paused"] is None and spent["today_usd"] == 1.2 and spent["counted_usd"] == 0
        assert spent["resumed_at"] is not None
        assert await check(hivemind, "alice") is None
        with pytest.raises(ToolError, match="not paused; nothing to resume"):  # once is enough
            await hivemind.call("resume_agent", name="alice")

        clock.advance(5)
        await spend(hivemind, "alice", 0.6, clock.now())
        assert await check(hivemind, "alice") is None  # $0.60 of a fresh $1.00
        await spend(hivemind, "alice", 0.4, clock.now())
        assert await check(hivemind, "alice") == "paused: budget $1.00/day reached"
        again = await hivemind.event("budget_exhausted")  # a new allowance spent: the manager hears again
        assert (again["agent"], again["spent_usd"]) == ("alice", 1.0)
        assert await check(hivemind, "alice") is not None
        await no_event(hivemind, "budget_exhausted")
        status = await hivemind.status("alice")
        assert status["spend"]["today_usd"] == 2.2 and status["spend"]["counted_usd"] == 1.0
        assert (await hivemind.call("list_agents"))["hive_spend"]["today_usd"] == 2.2  # the hive counts it all
        assert await last_action(hivemind, "alice") == ("resume_agent", "refused")


async def test_a_resume_counts_until_the_day_ends_only(hive: Hive) -> None:
    clock = ShiftedClock(before_midnight(60))
    async with swarm(hive, clock) as hivemind:
        await budgeted(hivemind, "alice", 1.0)
        await spend(hivemind, "alice", 1.0, clock.now() - 10)
        assert await check(hivemind, "alice") is not None
        await hivemind.call("resume_agent", name="alice")
        clock.advance(120)  # tomorrow: an ordinary day, yesterday's resume plays no part
        await spend(hivemind, "alice", 1.0, clock.now())
        assert await check(hivemind, "alice") == "paused: budget $1.00/day reached"
        status = await hivemind.status("alice")
        assert status["spend"]["resumed_at"] is None and status["spend"]["counted_usd"] is None


@pytest.mark.parametrize(
    ("usd", "error"),
    [
        (-1.0, "greater than or equal to 0.01"),
        (0.0, "greater than or equal to 0.01"),
        # The MCP client would send NaN and infinity as null, which clears the override: refused before.
        (math.nan, "usd_per_day is nan: not a finite number"),
        (-math.inf, "usd_per_day is -inf: not a finite number"),
        (1e12, "less than or equal to 1000000"),
        ("lots", "valid number"),
    ],
)
async def test_set_budget_refuses_a_bad_amount_and_writes_nothing(hivemind: Hivemind, usd: Any, error: str) -> None:
    await hivemind.create("alice")
    with pytest.raises(ToolError, match=error):
        await hivemind.call("set_budget", name="alice", usd_per_day=usd)
    assert budget_rows(hivemind.hive) == {"budget_overrides": [], "budget_resumes": []}


@pytest.mark.parametrize(("name", "error"), [("ghost", "no agent named 'ghost'"), ("../x", "invalid agent name")])
async def test_budget_tools_refuse_an_unknown_agent_and_write_nothing(
    hivemind: Hivemind, name: str, error: str
) -> None:
    with pytest.raises(ToolError, match=error):
        await hivemind.call("set_budget", name=name, usd_per_day=5.0)
    with pytest.raises(ToolError, match=error):
        await hivemind.call("resume_agent", name=name)
    assert budget_rows(hivemind.hive) == {"budget_overrides": [], "budget_resumes": []}


async def test_an_override_and_a_resume_survive_a_lifecycle_restart(hive: Hive) -> None:
    clock = ShiftedClock(time.time())
    async with swarm(hive, clock) as hivemind:
        await hivemind.create("alice")
        await hivemind.create("bob")
        await hivemind.call("set_budget", name="bob", usd_per_day=7.5)
        await hivemind.call("set_budget", name="alice", usd_per_day=1.0)
        await spend(hivemind, "alice", 1.0, clock.now() - 10)
        assert await check(hivemind, "alice") is not None
        await hivemind.call("resume_agent", name="alice")
        assert await check(hivemind, "alice") is None
    async with swarm(hive, clock) as hivemind:  # the same home: a new lifecycle server
        await hivemind.until_state("alice", "running")
        assert await check(hivemind, "alice") is None  # still resumed: only the cost since counts
        bob = await hivemind.status("bob")
        assert bob["spend"]["usd_per_day"] == 7.5
        alice = await hivemind.status("alice")
        assert alice["spend"]["resumed_at"] is not None and alice["spend"]["today_usd"] == 1.0
