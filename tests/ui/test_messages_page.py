"""The messages page against the real servers: columns, read state, events, search, the thread panel."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hivetest import Servers
from nicegui import ui
from nicegui.testing import User
from uitest import log_in

from hyperhive.servers.common.client import HiveClient
from hyperhive.servers.common.clock import parse_iso

pytestmark = pytest.mark.slow


async def row_shows(user: User, message_id: int, text: str) -> None:
    """The row of message `message_id` (once it is on the page) shows `text`."""
    await user.should_see(marker=f"message-{message_id}", retries=50)
    with user.scope(marker=f"message-{message_id}"):
        await user.should_see(text)


async def test_compose_columns_read_state_and_the_thread_panel(user: User, servers: Servers, password: str) -> None:
    user.javascript_rules[re.compile(r".*resolvedOptions\(\)\.timeZone")] = lambda _: "Asia/Tokyo"
    await log_in(user, password, "/messages")
    user.find(marker="compose-body").type("hello manager")
    user.find(marker="compose-send").click()
    await user.should_see("sent")
    await user.should_see("hello manager", retries=50)
    listed = await servers.call("broker", "list_messages", agent="manager")
    [mine] = [m for m in listed["messages"] if m["body"] == "hello manager"]
    await row_shows(user, mine["id"], "operator → manager")
    await user.should_see(marker=f"message-state-{mine['id']}", content="pending")
    # The time column is the browser's local time (Tokyo here), with the date.
    tokyo = datetime.fromtimestamp(parse_iso(mine["sent_at"]), ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")
    await user.should_see(tokyo, retries=50)

    inbox = await servers.call("broker", "recv_batch", as_name="manager", max=50)
    assert "hello manager" in [m["body"] for m in inbox["messages"]]
    reply = await servers.call(
        "broker", "send", as_name="manager", to="operator", body="hi back", in_reply_to=mine["id"]
    )
    await row_shows(user, reply["id"], f"manager → operator · re #{mine['id']}")

    # A thread opens in the side panel, from a row's button or from the URL (the approvals page links there).
    user.find(marker=f"message-thread-{reply['id']}").click()
    await user.should_see(marker="thread-title", content=f"thread of #{reply['id']} · 2 messages")
    with user.scope(marker="thread-panel"):  # newest at the top, as everywhere
        await user.should_see("hi back")
        await user.should_see("hello manager")
    await user.open(f"/messages?thread={mine['id']}")
    await user.should_see(marker="thread-title", content=f"thread of #{mine['id']} · 2 messages", retries=50)
    await user.should_see(marker=f"message-state-{mine['id']}", content="read")  # manager took and acked it
    await user.open("/messages?thread=no-such")
    await user.should_see("?thread='no-such' is not a message id")


async def test_the_operator_inbox_replies_marks_read_and_filters_by_agent(
    user: User, servers: Servers, password: str
) -> None:
    await servers.call("broker", "recv_batch", max=50)  # what earlier tests sent the operator: read
    asked = await servers.call("broker", "send", as_name="manager", to="operator", body="may I spawn three?")
    await log_in(user, password, "/messages")
    await user.should_see(marker="unread", content="1 unread", retries=50)
    await user.should_see(marker=f"inbox-{asked['id']}")
    user.find(marker=f"reply-{asked['id']}").click()
    await user.should_see(marker="replying", content=f"re #{asked['id']}")
    user.find(marker="compose-body").type("two is enough")
    user.find(marker="compose-send").click()
    await user.should_see("sent", retries=50)
    inbox = await servers.call("broker", "recv_batch", as_name="manager", max=50)
    [answer] = [m for m in inbox["messages"] if m["body"] == "two is enough"]
    assert answer["in_reply_to"] == asked["id"] and answer["sender"] == "operator"
    assert (await servers.call("broker", "pending_count")) == {"queued": 1, "leased": 0}  # the page only peeked

    user.find(marker="mark-read").click()
    await user.should_see(marker="unread", content="nothing unread", retries=50)
    assert (await servers.call("broker", "pending_count")) == {"queued": 0, "leased": 0}

    await servers.call("lifecycle", "create_agent", name="hal")
    await servers.call("broker", "send", to="hal", body="hello hal")
    await user.open("/messages?agent=hal")
    with user.scope(marker="flow"):
        await user.should_see("hello hal", retries=50)
        await user.should_not_see("may I spawn three?")
    [agent_filter] = user.find(marker="filter-agent").elements
    agent_filter.set_value("everyone")  # type: ignore[attr-defined]
    with user.scope(marker="flow"):
        await user.should_see("may I spawn three?", retries=50)
    await servers.call("lifecycle", "destroy", name="hal", purge=True)


async def test_search_finds_shows_columns_and_explains_bad_syntax(user: User, servers: Servers, password: str) -> None:
    await servers.call("broker", "send", as_name="manager", to="operator", body="the deploy-bot broke staging")
    await servers.call("broker", "send", to="manager", body="nothing to see")
    await log_in(user, password, "/messages")
    user.find(marker="search").type("staging").trigger("keydown.enter")
    await user.should_see(marker="search-note", content="1 found for 'staging'", retries=50)
    with user.scope(marker="search-results"):
        await user.should_see("the deploy-bot broke staging")
        await user.should_see("manager → operator")
        await user.should_not_see("nothing to see")
    user.find(marker="search").clear().type("deploy-bot").trigger("keydown.enter")
    await user.should_see(marker="search-error", content='double quotes ("foo-bar"', retries=50)
    user.find(marker="search").clear().type('"deploy-bot"').trigger("keydown.enter")
    await user.should_see(marker="search-note", content="1 found", retries=50)


async def test_helper_events_show_an_icon_and_fold_their_log_tail(user: User, servers: Servers, password: str) -> None:
    crash = {
        "type": "container_crash",
        "agent": "manager",
        "exit_code": 3,
        "last_lines": [f"traceback line {n}" for n in range(8)],
    }
    posted = await servers.call("broker", "post_event", as_name="service:lifecycle", to="operator", event=crash)
    await log_in(user, password, "/messages")
    await row_shows(user, posted["id"], "system → operator")
    with user.scope(marker=f"message-{posted['id']}"):
        await user.should_see(marker="icon-container_crash")
        await user.should_see("agent manager crashed (exit code 3; 0 restarts so far)")
    [tail] = user.find(marker=f"message-tail-{posted['id']}").elements
    assert isinstance(tail, ui.expansion) and tail.text == "log tail (8 lines)" and not tail.value  # folded
    await servers.call("broker", "recv_batch", max=50)


async def test_an_open_message_flow_keeps_only_the_newest(user: User, servers: Servers, password: str) -> None:
    await log_in(user, password, "/messages")
    async with HiveClient.for_server(servers.config, "broker", servers.token("operator")) as broker:
        for n in range(220):
            await broker.call("send", {"to": "manager", "body": f"flood {n:03d}"})
    with user.scope(marker="flow"):
        await user.should_see("flood 219", retries=100)
        await user.should_see("flood 020")
        await user.should_not_see("flood 019")  # the page keeps the newest 200 rows
    await servers.call("broker", "recv_batch", as_name="manager", max=50)


async def test_a_new_message_redraws_only_what_changed_in_the_inbox(
    user: User, servers: Servers, password: str
) -> None:
    """The inbox shows the oldest 20 waiting: a new one behind them draws nothing again (it was all
    redrawn: 31 KB to the browser for each message, in bench/dashboard.py)."""
    await servers.call("broker", "recv_batch", max=50)  # what earlier tests sent the operator: read
    first = await servers.call("broker", "send", as_name="manager", to="operator", body="the first")
    await log_in(user, password, "/messages")
    await user.should_see(marker=f"inbox-{first['id']}", retries=50)
    [drawn] = user.find(marker=f"inbox-{first['id']}").elements
    second = await servers.call("broker", "send", as_name="manager", to="operator", body="the second")
    await user.should_see(marker=f"inbox-{second['id']}", retries=50)
    assert user.find(marker=f"inbox-{first['id']}").elements == {drawn}  # the same row, not drawn again
    [inbox] = user.find(marker="inbox").elements
    assert [sorted(child._markers)[0] for child in inbox.default_slot.children] == [
        f"inbox-{second['id']}", f"inbox-{first['id']}"
    ]  # fmt: skip  # newest at the top
    await servers.call("broker", "recv_batch", max=50)
    await user.should_not_see(marker=f"inbox-{first['id']}", retries=50)  # taken: gone from the inbox
