"""The swarm page against the real servers, through NiceGUI's simulated user: the needs-you strip,
the health badges, grouped errors with their fix, turns today, sort, filter, group and bulk actions.

The test plays the agents' harnesses: it writes their turn.json as the real one does (TurnRecorder)
and reports turns to the lifecycle server as they do (record_turn)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from hivetest import Servers
from nicegui.testing import User
from uitest import log_in, swarm_click, swarm_order, swarm_see, swarm_table, swarm_text, swarm_view

from hyperhive.harness.claude import NO_CREDENTIALS, TurnOutcome
from hyperhive.harness.stats import TurnRecorder, turn_row
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = pytest.mark.slow

AGENTS = ("sw-cred-a", "sw-cred-b", "sw-busy", "sw-idle")


@pytest.fixture
async def swarm(servers: Servers) -> AsyncIterator[dict[str, TurnRecorder]]:
    """Four sleepers: two without Claude credentials, one in a turn calling Bash, one idle."""
    recorders: dict[str, TurnRecorder] = {}
    for name in AGENTS:
        await servers.call("lifecycle", "create_agent", name=name)
        recorders[name] = recorder = TurnRecorder(AgentPaths.of(servers.config, name).harness)
        await recorder.open()
    for name in ("sw-cred-a", "sw-cred-b"):
        await recorders[name].set("error", reason=NO_CREDENTIALS)
    await recorders["sw-busy"].set("running", turn=7, leased=[1, 2])
    await recorders["sw-busy"].set_tool("Bash: git diff --stat")
    await recorders["sw-idle"].set("idle")
    yield recorders
    for name in AGENTS:
        await servers.call("lifecycle", "destroy", name=name, purge=True)


def order_of(user: User) -> list[str]:
    """The test's agents in the order the swarm shows them."""
    return [name for name in swarm_order(user) if name in AGENTS]


async def test_the_strip_counts_what_needs_the_operator_and_links_to_it(
    user: User, servers: Servers, password: str, swarm: dict[str, TurnRecorder]
) -> None:
    await servers.call("broker", "recv_batch", max=50)  # earlier tests' messages to the operator: read
    await servers.call("broker", "send", as_name="manager", to="operator", body="a word for you")
    await servers.call("broker", "send", as_name="manager", to="operator", body="and another")
    await log_in(user, password)
    await user.should_see(marker="need-unread", content="2 unread messages", retries=50)
    await user.should_see(marker="need-errors", content="2 erroring", retries=50)
    await user.should_see(marker="need-failed", content="0 failed")
    await user.should_see(marker="need-approvals", content="approvals")
    links = {
        m: user.find(marker=m).elements.pop().props["href"] for m in ("need-approvals", "need-questions", "need-unread")
    }
    assert links == {"need-approvals": "/approvals", "need-questions": "/questions", "need-unread": "/messages"}
    # Two agents, one problem: said once, with its fix.
    await user.should_see(marker="problem", content="2 agents: no Claude credentials → add ANTHROPIC_API_KEY")
    assert [e.text for e in user.find(marker="problem").elements] == [  # type: ignore[attr-defined]
        "2 agents: no Claude credentials → add ANTHROPIC_API_KEY to hive.toml [harness.env] "
        "or run `hive claude NAME auth login`"
    ]
    # `hive agents` says the same, once, under its table.
    listed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hyperhive.servers.cli", "agents", "--home", str(servers.home)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    problems = [line for line in listed.stdout.splitlines() if line.startswith("! ")]
    assert problems == ["! 2 agents: no Claude credentials → add ANTHROPIC_API_KEY to hive.toml [harness.env] "
                        "or run `hive claude NAME auth login`"]  # fmt: skip
    # The erroring count is a filter of the swarm.
    user.find(marker="need-errors").click()
    await swarm_see(user, "state-sw-idle", shown=False)
    await swarm_see(user, "state-sw-cred-a")
    await servers.call("broker", "recv_batch", max=50)


async def test_badges_say_what_each_agent_does_and_rows_sort_by_what_needs_you(
    user: User, servers: Servers, password: str, swarm: dict[str, TurnRecorder]
) -> None:
    turn = TurnOutcome(ok=True, cost_usd=0.5)
    turn.tool_calls.update({"Bash": 4, "mcp__broker__send": 2, "Read": 1, "Grep": 1})
    row = turn_row("wake", time.time() - 8, "sonnet", turn, messages=1, queued=0)
    await servers.call("lifecycle", "record_turn", as_name="sw-idle", turn=row.model_dump())
    await log_in(user, password)
    await swarm_see(user, "state-sw-busy", "working", retries=50)
    # One host: no host column, no strip of hosts (test_hosts_page.py has a hive across two).
    assert not swarm_table(user).hosts and "host" not in [key for _, key, _ in swarm_table(user)._props["columns"]]
    await user.should_not_see(marker="hosts")
    await swarm_see(user, "host-sw-busy", shown=False)
    assert swarm_text(user, "state-sw-busy").endswith("· 2 msgs · Bash: git diff --stat")
    assert swarm_text(user, "state-sw-cred-a").startswith("error: no Claude credentials")
    await swarm_see(user, "state-sw-idle", "idle")
    await swarm_see(user, "turns-sw-idle", "1", retries=150)  # swarm_stats, every 10 s
    assert swarm_text(user, "tools-sw-idle") == "Bash 4, send 2, Grep 1"
    assert swarm_text(user, "avg-sw-idle").endswith("s")
    await swarm_see(user, "cancel-sw-busy")  # a running turn can be cancelled, an idle one not
    await swarm_see(user, "cancel-sw-idle", shown=False)

    # failed → error → needs update → working → idle, by name within.
    await swarm_see(user, "state-sw-busy", "working", retries=10)
    assert order_of(user) == ["sw-cred-a", "sw-cred-b", "sw-busy", "sw-idle"]
    assert swarm_table(user).sort == ("health", False)
    user.find(marker="swarm-table").trigger("sort", "name")  # any column: by name now
    assert swarm_table(user).sort == ("name", False)  # its header shows "agent ↑"
    assert order_of(user) == ["sw-busy", "sw-cred-a", "sw-cred-b", "sw-idle"]
    user.find(marker="swarm-table").trigger("sort", "name")  # again: the other way
    assert swarm_table(user).sort == ("name", True)
    assert order_of(user) == ["sw-idle", "sw-cred-b", "sw-cred-a", "sw-busy"]
    user.find(marker="swarm-table").trigger("sort", "inbox")  # a number: the most first
    assert swarm_table(user).sort == ("inbox", True)

    user.find(marker="group-state").click()  # by state, each group under its label, by inbox within
    view = [item for item in swarm_view(user) if item[0] == "group" or item[1] in AGENTS]
    after_error = view.index(("group", "error")) + 1
    assert set(view[after_error : after_error + 2]) == {("row", "sw-cred-a"), ("row", "sw-cred-b")}
    assert view.index(("group", "error")) < view.index(("group", "working")) < view.index(("row", "sw-busy"))
    user.find(marker="chip-working").click()  # a filter leaves the labels of the groups it hides out
    assert [item for item in swarm_view(user) if item[0] == "group"] == [("group", "working")]
    sent = swarm_table(user)._to_dict()["props"]  # what a browser gets when the page is sent again
    assert sent["view"] == [list(i) for i in swarm_view(user)] and sent["sort"] == ["inbox", True]
    assert set(sent["rows"]) >= set(AGENTS) and sent["rows"]["sw-busy"]["kind"] == "working"


async def test_search_and_chips_filter_the_rows(
    user: User, servers: Servers, password: str, swarm: dict[str, TurnRecorder]
) -> None:
    await log_in(user, password)
    await swarm_see(user, "state-sw-busy", "working", retries=50)
    user.find(marker="swarm-search").type("git diff")  # a tool the badge shows
    await swarm_see(user, "state-sw-idle", shown=False)
    await swarm_see(user, "state-manager", shown=False)
    await swarm_see(user, "state-sw-busy")
    user.find(marker="swarm-search").clear()
    await swarm_see(user, "state-sw-idle")
    user.find(marker="chip-idle").click()
    await swarm_see(user, "state-sw-busy", shown=False)
    await swarm_see(user, "state-sw-idle")
    user.find(marker="chip-all").click()
    await swarm_see(user, "state-sw-busy")


async def test_bulk_stop_confirms_with_the_agents_and_controls_follow_the_state(
    user: User, servers: Servers, password: str, swarm: dict[str, TurnRecorder]
) -> None:
    await log_in(user, password)
    await swarm_see(user, "state-sw-idle", "idle", retries=50)
    await swarm_see(user, "stop-sw-idle")
    await swarm_see(user, "start-sw-idle", shown=False)  # no start on a running agent
    swarm_click(user, "select-sw-idle")
    swarm_click(user, "select-sw-busy")
    await user.should_see(marker="bulk-count", content="2 selected")
    user.find(marker="bulk-stop").click()
    await user.should_see("stop 2 agents: sw-busy, sw-idle?")  # what it acts on, by name
    user.find(marker="confirm").click()
    await user.should_see("stop: 2 agents done", retries=100)
    await swarm_see(user, "state-sw-idle", "stopped", retries=50)
    await swarm_see(user, "state-sw-busy", "stopped", retries=50)
    for name in ("sw-idle", "sw-busy"):
        assert (await servers.call("lifecycle", "agent_status", name=name))["state"] == "stopped"
    assert (await servers.call("lifecycle", "agent_status", name="sw-cred-a"))["state"] == "running"
    await swarm_see(user, "start-sw-idle")  # stopped: start, and no stop
    await swarm_see(user, "stop-sw-idle", shown=False)
    # A stopped agent cannot be stopped again: nothing to do, and why.
    user.find(marker="bulk-stop").click()
    await user.should_see("stop: nothing to do (sw-busy, sw-idle: already stopped)")
    # With a running one selected too, the confirmation lists it and says which it skips.
    swarm_click(user, "select-sw-cred-a")
    await user.should_see(marker="bulk-count", content="3 selected")
    user.find(marker="bulk-stop").click()
    await user.should_see("stop 1 agent: sw-cred-a? (skipped: sw-busy, sw-idle: already stopped)")
    user.find("cancel").click()
    assert (await servers.call("lifecycle", "agent_status", name="sw-cred-a"))["state"] == "running"
