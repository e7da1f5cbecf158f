"""Messages, built for reading: what waits for the operator, compose, the flow in columns, search,
and a thread in a side panel.

One order everywhere: **newest at the top** (the flow, search results, the inbox, a thread, and the
agent page's inbox), each a MessageListElement (message_list.py: the columns, the events' icons and
folded log tails). `/messages?thread=ID` opens that thread's panel, `/messages?agent=NAME` filters by agent.
The newest 200 are shown (search finds the rest). Read state is as of the last load (opening the
page, a filter, ↻) plus what arrives since, not live.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import zoneinfo
from collections.abc import Sequence
from typing import Final

from fastmcp.exceptions import ToolError
from nicegui import Client, background_tasks, ui

from hyperhive.servers.broker.models import ListedMessage, PeekedMessage, RecvBatchResult
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.names import OPERATOR, SYSTEM, InvalidName, check_agent_name
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.message_list import (
    UTC,
    MessageListElement,
    MessageRowData,
    message_data,
    read_state,
    recipients_of,
)
from hyperhive.ui.pages.widgets import act, section, stale_when, toast, while_shown

ORDER: Final = "newest at the top"
INBOX_SHOWN: Final = 20  # the operator's oldest waiting messages shown on /messages
FLOW_SHOWN: Final = 200  # the newest messages in the flow (search finds the older ones)
SEARCH_SHOWN: Final = 100
THREAD_SHOWN: Final = 200
READ_SECONDS: Final = 10.0  # a page's own reads (a filter, a thread, a search): not an action's 120 s


# ----------------------------------------------------------------------------------------- the page
def messages_page(hive: HiveView, thread: str | None = None, agent: str | None = None) -> None:
    reads = hive.broker.with_timeout(READ_SECONDS)
    client = ui.context.client  # for the background tasks below, which have no UI context of their own
    view: dict[str, zoneinfo.ZoneInfo] = {"tz": UTC}
    reply_to: dict[str, int | None] = {"id": None}

    # ---- what waits for the operator (read with peek_inbox: looking takes nothing)
    with ui.row().classes("items-center w-full"):
        section("waiting for you")
        unread = ui.label("").classes("text-grey-5").mark("unread")
        ui.space()

        def marked(taken: RecvBatchResult) -> str:
            more = f", {taken.queued} more waiting" if taken.queued else ""
            return f"{len(taken.messages)} marked read{more}"

        async def mark_read() -> None:
            await act("mark read", hive.call(hive.broker.recv_batch(max=50, ack=True)), marked)
            await load_inbox()
            await load_flow()

        ui.button("mark read", on_click=mark_read).props("outline dense").mark("mark-read").tooltip(
            "take the oldest 50 (as `hive inbox` does): the broker stops counting them as waiting"
        )
    # Greyed out while stale in a wrapper: a class on the list itself would send all its rows again.
    with ui.element().classes("w-full") as inbox_shell:
        inbox = MessageListElement().mark("inbox")
    waiting_messages: dict[int, PeekedMessage] = {}  # what the inbox shows, by id: a reply's addressee
    inbox.on("thread", lambda e: open_thread(int(e.args)))
    inbox.on("reply", lambda e: reply(waiting_messages[int(e.args)]) if int(e.args) in waiting_messages else None)
    stale_when(hive, inbox_shell, "broker")

    def reply(message: PeekedMessage) -> None:
        to.set_value(message.sender)
        reply_to["id"] = message.id
        replying.set_text(f"re #{message.id}")
        replying.set_visibility(True)
        body.run_method("focus")

    async def load_inbox(*_: object) -> None:
        try:
            peeked = await reads.peek_inbox(INBOX_SHOWN)
        except (ToolError, ServerUnavailable, AuthRefused):
            return  # the frame's banner says the broker is unreachable
        # Only what changed goes out: a new message behind the 20 shown changes nothing here.
        waiting_messages.clear()
        waiting_messages.update((message.id, message) for message in peeked.messages)
        inbox.show([_inbox_row(message) for message in peeked.messages])
        total = peeked.queued + peeked.leased
        unread.set_text(f"{total} unread" if total else "nothing unread")

    def _inbox_row(message: PeekedMessage) -> MessageRowData:
        state = ("taken", "info") if message.state == "leased" else ("pending", "warning")
        return message_data(
            message, OPERATOR, state, view["tz"], thread=True, reply=message.sender in hive.state.agents
        )

    # ---- compose
    section("compose")
    with ui.row().classes("items-center w-full"):
        to = ui.select(["*", "manager"], value="manager", label="to")
        to.props("dense").classes("w-40").mark("compose-to")
        replying = ui.chip("", icon="reply", removable=True, color="grey-8").props("dense").mark("replying")
        replying.on("remove", lambda: reply_to.update(id=None))
        replying.set_visibility(False)
        body = ui.input("message").props("dense").classes("grow min-w-0").mark("compose-body")

        async def send() -> None:
            if not (body.value or "").strip():
                return
            if not to.value:
                toast("pick who it is for", "warning")
                return
            call = hive.call(hive.broker.send(to.value, body.value, reply_to["id"]))
            if await act("send", call, "sent"):
                body.set_value("")
                reply_to["id"] = None
                replying.set_visibility(False)

        body.on("keydown.enter", send)
        ui.button("send", on_click=send).props("dense").mark("compose-send")

    # ---- the flow, its filter and search
    with ui.row().classes("items-center w-full"):
        section("messages")
        ui.label(f"({ORDER})").classes("text-grey-5 text-sm")
        agent_filter = ui.select(["everyone", "manager", OPERATOR, SYSTEM], value="everyone", label="agent")
        agent_filter.props("dense").classes("w-40").mark("filter-agent")
        ui.button(icon="refresh", on_click=lambda: load_flow()).props("flat dense round aria-label=reload").tooltip(
            "reload (read state is as of the last load)"
        )
        search = ui.input("search").props("dense clearable type=search").classes("grow min-w-0").mark("search")
        search.props["aria-label"] = "search messages"
    search_note = ui.label("").classes("text-grey-5 text-sm").mark("search-note")
    search_error = ui.label("").classes("text-negative whitespace-pre-wrap").mark("search-error")
    search_error.set_visibility(False)
    results = MessageListElement().classes("hh-hits").mark("search-results")
    with ui.element().classes("w-full") as flow_shell:
        flow = MessageListElement().mark("flow")
    for listing in (results, flow):
        listing.on("thread", lambda e: open_thread(int(e.args)))
    stale_when(hive, flow_shell, "broker")

    def wanted(message: ListedMessage) -> bool:
        who = agent_filter.value
        if who in (None, "everyone"):
            return True
        return message.sender == who or who in [d.to for d in message.deliveries]

    def flow_data(message: ListedMessage) -> MessageRowData:
        return message_data(message, recipients_of(message), read_state(message), view["tz"], thread=True)

    def draw(messages: Sequence[ListedMessage]) -> None:
        """The flow becomes the newest FLOW_SHOWN of `messages` that pass the filter (only changes go out)."""
        shown = sorted((m for m in messages if wanted(m)), key=lambda m: m.id, reverse=True)[:FLOW_SHOWN]
        flow.show([flow_data(message) for message in shown])

    async def load_flow(*_: object) -> None:
        """The newest messages (for the filter) straight from the broker: fresh read states."""
        who = agent_filter.value
        try:
            listing = await reads.list_messages(agent=None if who in (None, "everyone") else who, limit=FLOW_SHOWN)
        except (ToolError, ServerUnavailable, AuthRefused):
            draw(list(hive.state.messages)[-FLOW_SHOWN:])  # what the view has, until the broker answers
            return
        draw(listing.messages)

    def add(messages: list[ListedMessage]) -> None:
        """New messages at the top; the page's own load and the view's poll overlap, so a row shown stays."""
        flow.put([flow_data(message) for message in messages if wanted(message) and message.id not in flow.rows])
        if len(flow.rows) > FLOW_SHOWN:  # a page open for days stays small
            flow.drop(sorted(flow.rows)[: len(flow.rows) - FLOW_SHOWN])

    async def run_search(*_: object) -> None:
        query = (search.value or "").strip()
        results.show([])
        search_error.set_visibility(False)
        flow_shell.set_visibility(not query)  # the list itself would be sent again, all its rows
        if not query:
            search_note.set_text("")
            return
        who = agent_filter.value
        try:
            found = await reads.search_messages(
                query, agent=None if who in (None, "everyone") else who, limit=SEARCH_SHOWN
            )
        except ToolError as e:
            search_error.set_text(str(e))
            search_error.set_visibility(True)
            search_note.set_text("")
            return
        except (ServerUnavailable, AuthRefused) as e:
            search_error.set_text(f"search: {e}")
            search_error.set_visibility(True)
            return
        shown = len(found.messages)
        limit = " (the newest 100: add words to narrow it)" if shown == SEARCH_SHOWN else ""
        search_note.set_text(f"{shown} found for {query!r}{limit} · clear the box to see the flow")
        results.show(
            [message_data(hit, recipients_of(hit), read_state(hit), view["tz"], thread=True) for hit in found.messages]
        )

    search.on("keydown.enter", run_search)
    search.on("clear", run_search)

    # ---- a thread, in a side panel
    with ui.dialog().props("position=right") as panel, ui.card().classes("hh-side-panel max-w-full h-full"):
        with ui.row().classes("items-center w-full no-wrap"):
            panel_title = ui.label("").classes("text-lg").mark("thread-title")
            panel.props(f"aria-labelledby={panel_title.html_id}")
            ui.space()
            ui.button(icon="close", on_click=panel.close).props("flat dense round aria-label='close the thread'")
        panel_note = ui.label("").classes("text-negative")
        panel_list = MessageListElement().mark("thread-panel")

    async def open_thread(message_id: int) -> None:
        panel_list.show([])
        panel_note.set_text("")
        panel_title.set_text(f"thread of #{message_id}")
        panel.open()
        try:
            listing = await reads.list_messages(thread=message_id, limit=THREAD_SHOWN)
        except (ToolError, ServerUnavailable, AuthRefused) as e:
            panel_note.set_text(str(e))
            return
        tz = view["tz"]
        panel_list.show([message_data(m, recipients_of(m), read_state(m), tz, thread=False) for m in listing.messages])
        panel_title.set_text(f"thread of #{message_id} · {len(listing.messages)} messages")

    # ---- recipients and the agent filter follow the hive's agents
    def recipients(*_: object) -> None:
        if not hive.state.agents:  # not heard from the lifecycle server yet: keep the defaults
            return
        names = ["*", *sorted(hive.state.agents)]
        if list(to.options) != names:
            to.set_options(names, value=to.value if to.value in names else "manager")
        wanted_names = ["everyone", *names[1:], OPERATOR, SYSTEM]
        if agent_filter.value not in wanted_names:
            wanted_names.append(agent_filter.value)  # ?agent= an agent gone since: still filterable
        if list(agent_filter.options) != wanted_names:
            agent_filter.set_options(wanted_names, value=agent_filter.value)

    while_shown(hive.agent_changed, recipients)
    recipients()
    if agent is not None:
        name = _valid_name(agent)
        if name is None:
            toast(f"?agent={agent[:40]!r} is not an agent's name: showing everyone", "warning")
        else:
            if name not in agent_filter.options:
                agent_filter.set_options([*agent_filter.options, name])
            agent_filter.set_value(name)
    agent_filter.on_value_change(lambda: background_tasks.create(_refilter(), name="messages-filter"))

    async def _refilter() -> None:
        await load_flow()
        if search.value:
            await run_search()

    async def first_load() -> None:
        # The browser's timezone first (a round trip, bounded), so each row is drawn once.
        await learn_timezone(client, view)
        await asyncio.gather(load_inbox(), load_flow())
        if thread is not None:
            if thread.isdigit() and 0 < int(thread) < 2**63:
                await open_thread(int(thread))
            else:
                with client:
                    toast(f"?thread={thread[:40]!r} is not a message id", "warning")

    background_tasks.create(first_load(), name="messages-first-load")
    while_shown(hive.messages_added, add)
    while_shown(hive.unread_changed, lambda _: background_tasks.create(load_inbox(), name="messages-inbox"))


async def learn_timezone(client: Client, view: dict[str, zoneinfo.ZoneInfo]) -> None:
    """Ask the browser its timezone (an IANA name, checked against the known ones); UTC if it will not say."""
    with contextlib.suppress(Exception):  # a page closed, or a browser that will not say: UTC
        await client.connected(timeout=5)
        name = await client.run_javascript("Intl.DateTimeFormat().resolvedOptions().timeZone", timeout=3)
        if isinstance(name, str) and name != "UTC" and name in _timezones():
            view["tz"] = zoneinfo.ZoneInfo(name)


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _valid_name(name: str) -> str | None:
    if name in (OPERATOR, SYSTEM):
        return name
    try:
        check_agent_name(name)
    except InvalidName:
        return None
    return name
