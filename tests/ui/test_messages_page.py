"""The messages page against the real servers: columns, read state, events, search, the thread panel."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hivetest import Servers
from nicegui.testing import User
from uitest import list_says, log_in, message_list, message_rows, message_shown

from hyperhive.servers.common.client import HiveClient
from hyperhive.servers.common.clock import parse_iso

pytestmark = pytest.mark.slow


async def row_shows(user: User, message_id: int, text: str) -> None:
    """The flow's row of message `message_id` (once it is on the page) shows `text`."""
    await message_shown(user, "flow", message_id, lambda row: any(text in shown for shown in row.texts()))


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
    await message_shown(user, "flow", mine["id"], lambda row: row.state == "pending")
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
    assert message_list(user, "flow").rows[reply["id"]].thread  # its button
    user.find(marker="flow").trigger("thread", reply["id"])
    await user.should_see(marker="thread-title", content=f"thread of #{reply['id']} · 2 messages")
    # newest at the top, as everywhere, and no button to the thread it is in
    assert [(row.first, row.thread) for row in message_rows(user, "thread-panel")] == [
        ("hi back", False), ("hello manager", False)
    ]  # fmt: skip
    await user.open(f"/messages?thread={mine['id']}")
    await user.should_see(marker="thread-title", content=f"thread of #{mine['id']} · 2 messages", retries=50)
    await message_shown(user, "flow", mine["id"], lambda row: row.state == "read")  # manager took and acked it
    await user.open("/messages?thread=no-such")
    await user.should_see("?thread='no-such' is not a message id")


async def test_the_operator_inbox_replies_marks_read_and_filters_by_agent(
    user: User, servers: Servers, password: str
) -> None:
    await servers.call("broker", "recv_batch", max=50)  # what earlier tests sent the operator: read
    asked = await servers.call("broker", "send", as_name="manager", to="operator", body="may I spawn three?")
    await log_in(user, password, "/messages")
    await user.should_see(marker="unread", content="1 unread", retries=50)
    await message_shown(user, "inbox", asked["id"], lambda row: row.reply)
    user.find(marker="inbox").trigger("reply", asked["id"])
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
    await list_says(user, "flow", "hello hal")
    await list_says(user, "flow", "may I spawn three?", shown=False, retries=1)
    [agent_filter] = user.find(marker="filter-agent").elements
    agent_filter.set_value("everyone")  # type: ignore[attr-defined]
    await list_says(user, "flow", "may I spawn three?")
    await servers.call("lifecycle", "destroy", name="hal", purge=True)


async def test_search_finds_shows_columns_and_explains_bad_syntax(user: User, servers: Servers, password: str) -> None:
    await servers.call("broker", "send", as_name="manager", to="operator", body="the deploy-bot broke staging")
    await servers.call("broker", "send", to="manager", body="nothing to see")
    await log_in(user, password, "/messages")
    await list_says(user, "flow", "nothing to see")
    flow = message_list(user, "flow")
    sent_whole: list[int] = []
    update = flow.update
    flow.update = lambda: (sent_whole.append(1), update())[1]  # type: ignore[method-assign]
    user.find(marker="search").type("staging").trigger("keydown.enter")
    await user.should_see(marker="search-note", content="1 found for 'staging'", retries=50)
    [hit] = message_rows(user, "search-results")
    assert (hit.first, hit.who) == ("the deploy-bot broke staging", "manager → operator")
    assert not sent_whole  # hiding the flow during a search does not send its 200 rows again
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
    row = message_list(user, "flow").rows[posted["id"]]
    assert (row.icon, row.icon_colour, row.kind) == ("error", "negative", "container_crash")
    assert row.first == "agent manager crashed (exit code 3; 0 restarts so far)"
    assert row.tail_label == "log tail (8 lines)" and row.tail == tuple(f"traceback line {n}" for n in range(8))
    assert not any("traceback" in text for text in row.texts())  # folded: shown on a click
    await servers.call("broker", "recv_batch", max=50)


async def test_an_open_message_flow_keeps_only_the_newest(user: User, servers: Servers, password: str) -> None:
    await log_in(user, password, "/messages")
    async with HiveClient.for_server(servers.config, "broker", servers.token("operator")) as broker:
        for n in range(220):
            await broker.call("send", {"to": "manager", "body": f"flood {n:03d}"})
    await list_says(user, "flow", "flood 219", retries=100)
    await list_says(user, "flow", "flood 020")
    await list_says(user, "flow", "flood 019", shown=False, retries=1)  # the page keeps the newest 200 rows
    assert len(message_rows(user, "flow")) == 200
    await servers.call("broker", "recv_batch", as_name="manager", max=50)


async def test_a_new_message_redraws_only_what_changed_in_the_inbox(
    user: User, servers: Servers, password: str
) -> None:
    """The inbox shows the oldest 20 waiting: a new one sends its row alone (the inbox was all
    redrawn: 31 KB to the browser for each message, in bench/dashboard.py)."""
    await servers.call("broker", "recv_batch", max=50)  # what earlier tests sent the operator: read
    first = await servers.call("broker", "send", as_name="manager", to="operator", body="the first")
    await log_in(user, password, "/messages")
    await message_shown(user, "inbox", first["id"])
    inbox = message_list(user, "inbox")
    sent: list[tuple[str, tuple[object, ...]]] = []
    send = inbox.run_method
    inbox.run_method = lambda name, *args, **kwargs: (sent.append((name, args)), send(name, *args, **kwargs))[1]  # type: ignore[method-assign]
    second = await servers.call("broker", "send", as_name="manager", to="operator", body="the second")
    await message_shown(user, "inbox", second["id"])
    # Its row alone, never the list again. (A busy machine may also send the first row again, alone:
    # its age changed between two refreshes.)
    assert sent and {name for name, _ in sent} == {"put"}, sent
    puts = [[row["id"] for row in args[0]] for _, args in sent]  # type: ignore[index, union-attr]
    assert [second["id"]] in puts and all(len(ids) == 1 for ids in puts), puts
    assert [row.id for row in message_rows(user, "inbox")] == [second["id"], first["id"]]  # newest at the top
    assert message_rows(user, "inbox")[0].reply  # from an agent: a reply button
    # A list not mounted (a tab or dialog not shown) does not take the call: the element goes whole.
    user.javascript_rules[re.compile(r"return runMethod\(")] = lambda _: None
    updates: list[int] = []
    update = inbox.update
    inbox.update = lambda: (updates.append(1), update())[1]  # type: ignore[method-assign]
    third = await servers.call("broker", "send", as_name="manager", to="operator", body="the third")
    await message_shown(user, "inbox", third["id"])
    for _ in range(50):
        if updates:
            break
        await asyncio.sleep(0.1)
    assert updates and [row["id"] for row in inbox._to_dict()["props"]["rows"]] == [
        third["id"],
        second["id"],
        first["id"],
    ]
    await servers.call("broker", "recv_batch", max=50)
    for _ in range(50):  # taken: gone from the inbox
        if first["id"] not in message_list(user, "inbox").rows:
            break
        await asyncio.sleep(0.1)
    assert first["id"] not in message_list(user, "inbox").rows
