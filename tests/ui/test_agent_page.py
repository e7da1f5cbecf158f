"""An agent's page against the real servers, through NiceGUI's simulated user: its header and
actions, its log's filter and search, its inbox and threads, its file tree, its stats' empty state,
and the 404 page of an unknown name."""

from __future__ import annotations

import asyncio

import pytest
from hivetest import Servers
from nicegui.testing import User
from uitest import log_in, message_rows, message_shown, the_hive

from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = pytest.mark.slow

HARNESS = "2026-11-21 15:30:00,123 ada hyperhive.harness"


async def _spawned(servers: Servers, name: str) -> AgentPaths:
    await servers.call("lifecycle", "create_agent", name=name)
    for _ in range(100):
        if (await servers.call("lifecycle", "agent_status", name=name))["state"] == "running":
            break
        await asyncio.sleep(0.1)
    return AgentPaths.of(servers.config, name)


async def test_the_header_shows_the_agent_and_only_the_actions_its_state_allows(
    user: User, servers: Servers, password: str
) -> None:
    await _spawned(servers, "ada")
    try:
        await log_in(user, password)
        await user.open("/agent/ada")
        await user.should_see(marker="agent-state", content="running", retries=50)
        await user.should_see(marker="agent-model", content="model sonnet")
        await user.should_see(marker="agent-uptime", content="up ")
        await user.should_see(marker="agent-restarts", content="0 restarts")
        await user.should_see(marker="agent-inbox", content="inbox 0")
        await user.should_see(marker="agent-cost", content="$0.00 today")
        await user.should_see(marker="stop")
        await user.should_not_see(marker="start")  # it runs: nothing to start
        user.find(marker="stop").click()
        await user.should_see("stop ada?")
        user.find(marker="confirm").click()
        await user.should_see(marker="agent-state", content="stopped", retries=100)
        await user.should_see(marker="agent-uptime", content="not running")
        await user.should_see(marker="start")
        await user.should_not_see(marker="stop")
        await user.should_not_see(marker="kill")
        user.find(marker="start").click()  # no question: starting interrupts nothing
        await user.should_see(marker="agent-state", content="running", retries=100)
        audit = await servers.call("lifecycle", "audit", agent="ada", limit=2)
        assert [e["action"] for e in audit["entries"]] == ["start", "stop"]
    finally:
        await servers.call("lifecycle", "destroy", name="ada", purge=True)


async def test_the_log_filters_by_level_and_searches(user: User, servers: Servers, password: str) -> None:
    paths = await _spawned(servers, "ada")
    try:
        with paths.log.open("a") as log:
            log.write(f"{HARNESS} INFO turn 1 took 3 s\n")
            log.write(f"{HARNESS} WARNING the broker is slow\n")
            log.write(f"{HARNESS} ERROR the turn failed\n")
            log.write("Traceback (most recent call last):\n")
            log.write("ValueError: needle in the traceback\n")
            log.write(f"{HARNESS} INFO another needle, at info\n")
        await log_in(user, password)
        await user.open("/agent/ada")
        await user.should_see(f"{HARNESS} INFO turn 1 took 3 s", retries=50)
        await user.should_see("ValueError: needle in the traceback")
        user.find(marker="log-level").elements.pop().set_value("warning")  # type: ignore[attr-defined]
        await user.should_not_see(f"{HARNESS} INFO turn 1 took 3 s")
        await user.should_see(f"{HARNESS} WARNING the broker is slow")
        await user.should_see("ValueError: needle in the traceback")  # a traceback's lines: its error's level
        await user.should_see(marker="log-count", content="4 of ")
        user.find(marker="log-search").type("NEEDLE")
        await user.should_see("ValueError: needle in the traceback")
        await user.should_not_see(f"{HARNESS} WARNING the broker is slow")
        await user.should_not_see(f"{HARNESS} INFO another needle, at info")  # below the level
        user.find(marker="log-level").elements.pop().set_value("debug")  # type: ignore[attr-defined]
        await user.should_see(f"{HARNESS} INFO another needle, at info")
        # A line written now arrives while the filter is on, if it passes it.
        with paths.log.open("a") as log:
            log.write(f"{HARNESS} INFO a late needle\n")
            log.write(f"{HARNESS} INFO a late line without it\n")
        await user.should_see(f"{HARNESS} INFO a late needle", retries=50)
        await user.should_not_see(f"{HARNESS} INFO a late line without it")
    finally:
        await servers.call("lifecycle", "destroy", name="ada", purge=True)


async def test_the_inbox_shows_read_state_and_links_each_thread(user: User, servers: Servers, password: str) -> None:
    await _spawned(servers, "ada")
    try:
        await log_in(user, password)
        await user.open("/agent/ada")
        user.find(marker="tab-messages").click()
        await user.should_see(marker="inbox-empty", retries=50)
        sent = await servers.call("broker", "send", to="ada", body="please review the plan")
        await user.should_see("please review the plan", retries=50)
        await message_shown(
            user, "agent-inbox-list", sent["id"], lambda row: row.state == "pending"
        )  # /messages' words
        await user.should_see(marker="agent-inbox", content="inbox 1", retries=50)
        [link] = user.find(marker=f"thread-{sent['id']}").elements
        assert link.props["href"] == f"/messages?thread={sent['id']}"
        await servers.call("broker", "recv_batch", as_name="ada", max=10, ack=True)
        await user.should_see(marker="agent-inbox", content="inbox 0", retries=50)
        await message_shown(user, "agent-inbox-list", sent["id"], lambda row: row.state == "read")
        newer = await servers.call("broker", "send", to="ada", body="and the tests")
        await user.should_see("and the tests", retries=50)
        rows = [row.id for row in message_rows(user, "agent-inbox-list")]
        assert rows == [newer["id"], sent["id"]]  # newest at the top, as on /messages
        await user.should_not_see(marker="inbox-empty")
        user.find(marker="agent-inbox-list").trigger("thread", sent["id"])  # its thread, in /messages' side panel
        await user.should_see(marker="thread-title", content=f"thread of #{sent['id']}", retries=50)
    finally:
        await servers.call("lifecycle", "destroy", name="ada", purge=True)


async def test_the_file_tree_opens_a_directory_and_a_file(user: User, servers: Servers, password: str) -> None:
    paths = await _spawned(servers, "ada")
    try:
        state = paths.state
        (state / "notes.md").write_text("# notes\nremember the milk\n")
        (state / "work").mkdir()
        (state / "work" / "plan.md").write_text("step one\n")
        (state / "work" / "blob.bin").write_bytes(b"\x00\x01\x02")
        (state / "secrets").symlink_to("/etc")
        await log_in(user, password)
        await user.open("/agent/ada")
        user.find(marker="tab-files").click()
        await user.should_see("remember the milk", retries=50)  # notes.md opens by itself
        await user.should_see(marker="other-secrets", content="a link, not followed")
        await user.should_not_see(marker="file-work/plan.md")  # listed when its directory is opened
        user.find(marker="dir-work").click()
        await user.should_see(marker="file-work/plan.md", retries=50)
        user.find(marker="file-work/plan.md").click()
        await user.should_see("step one", retries=50)
        await user.should_see(marker="file-title", content="work/plan.md · 9 bytes")
        user.find(marker="file-work/blob.bin").click()
        await user.should_see(marker="file-binary", content="binary file (3 bytes): not shown", retries=50)
        user.find(marker="dir-work").click()  # closes it
        await user.should_not_see(marker="file-work/plan.md")
        audit = await servers.call("lifecycle", "audit", agent="ada", limit=3)
        assert [e["detail"] for e in audit["entries"]] == ["path=work/blob.bin", "path=work/plan.md", "path=notes.md"]
    finally:
        await servers.call("lifecycle", "destroy", name="ada", purge=True)


async def test_no_notes_and_no_turns_are_empty_states_not_errors(user: User, servers: Servers, password: str) -> None:
    await _spawned(servers, "ada")
    try:
        await log_in(user, password)
        await user.open("/agent/ada")
        user.find(marker="tab-files").click()
        await user.should_see(marker="notes-empty", retries=50)
        user.find(marker="tab-stats").click()
        await user.should_see(marker="stats-empty", retries=50)
        await user.should_see("no turns recorded yet")
        user.find(marker="tab-config").click()
        await user.should_see('role = "agent"', retries=50)
        assert not [m for m in user.notify.messages if "does not exist" in m or "stats" in m], user.notify.messages
    finally:
        await servers.call("lifecycle", "destroy", name="ada", purge=True)


async def test_an_unknown_agent_is_a_404_page(user: User, servers: Servers, password: str) -> None:
    await log_in(user, password)
    # Before lifecycle's first answer the page waits for it (a 200 that turns into the 404 page):
    # run alone, this test may ask before the view's first poll is over.
    for _ in range(60):
        response = await user.http_client.get("/agent/nobody")
        if response.status_code == 404:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == 404
    assert "no agent named &#x27;nobody&#x27;" in response.text or "no agent named 'nobody'" in response.text
    user.navigate.to("/agent/nobody")  # navigating inside the dashboard: the same page
    await user.should_see(marker="not-found", retries=50)
    await user.should_see("no agent named 'nobody'")
    [back] = user.find(marker="back-to-swarm").elements
    assert back.props["href"] == "/"
    response = await user.http_client.get("/agent/manager")
    assert response.status_code == 200


async def test_leaving_the_page_drops_its_subscriptions(user: User, servers: Servers, password: str) -> None:
    """Navigating inside the dashboard deletes the page, not the browser tab: its handlers go at the
    next event instead of piling up with each visit."""

    def mine() -> int:
        pages = ("AgentPage.", "MessagesPanel.")  # the agent page's handlers
        return sum(any(p in c.func.__qualname__ for p in pages) for c in hive.agent_changed.callbacks)

    await log_in(user, password)
    hive = the_hive()
    for _ in range(3):
        user.navigate.to("/agent/manager")
        await user.should_see(marker="agent-state", retries=50)
        user.navigate.to("/")
        await user.should_see("◆ swarm", retries=50)
    user.navigate.to("/agent/manager")
    await user.should_see(marker="agent-state", retries=50)
    await servers.call("lifecycle", "set_model", name="manager", model="haiku")  # an agent_changed event
    try:
        await user.should_see(marker="agent-model", content="model haiku", retries=50)
        assert mine() == 2  # the page shown: its header's and its inbox's
    finally:
        await servers.call("lifecycle", "set_model", name="manager", model=None)
