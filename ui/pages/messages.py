"""Messages, built for reading: what waits for the operator, compose, the flow in columns, search,
and a thread in a side panel.

One order everywhere: **newest at the top** (the flow, search results, the inbox, a thread, and the
agent page's inbox, which uses `message_row`). Columns: local date and time (the browser's timezone;
UTC if it does not say), from → to, the body (wrapping anywhere: one 300-character
word never widens the page), and read state (pending, taken = leased and not acked yet, read).
Helper events from `system` carry an icon, their first line, and the rest (a crash's log tail)
folded. `/messages?thread=ID` opens that thread's panel, `/messages?agent=NAME` filters by agent.
The newest 200 are shown (search finds the rest). Read state is as of the last load (opening the
page, a filter, ↻) plus what arrives since, not live.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import zoneinfo
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

from fastmcp.exceptions import ToolError
from nicegui import Client, background_tasks, ui

from hyperhive.servers.broker.models import ListedMessage, Message, PeekedMessage, RecvBatchResult, SearchHit
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.clock import parse_iso
from hyperhive.servers.common.names import BROADCAST, OPERATOR, SYSTEM, InvalidName, check_agent_name
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.widgets import act, section, stale_when, toast, while_shown

ORDER: Final = "newest at the top"
INBOX_SHOWN: Final = 20  # the operator's oldest waiting messages shown on /messages
FLOW_SHOWN: Final = 200  # the newest messages in the flow (search finds the older ones)
SEARCH_SHOWN: Final = 100
THREAD_SHOWN: Final = 200
READ_SECONDS: Final = 10.0  # a page's own reads (a filter, a thread, a search): not an action's 120 s
UTC: Final = zoneinfo.ZoneInfo("UTC")
# A helper event's icon, by its type (servers/common/events.py); an unknown type gets "info".
EVENT_ICONS: Final = {
    "container_crash": ("error", "negative"),
    "budget_exhausted": ("paid", "warning"),
    "state_over_budget": ("storage", "warning"),
    "repo_pushed": ("commit", "info"),
    "reservation_released": ("lock_open", "info"),
    "approval_resolved": ("gavel", "info"),
    "spawned": ("add_circle", "positive"),
    "rebuilt": ("build", "info"),
    "killed": ("cancel", "negative"),
    "destroyed": ("delete", "negative"),
    "operator_answered": ("question_answer", "info"),
    "question_asked": ("help", "warning"),
}
MESSAGES_CSS: Final = """
.hh-msgs { container-type: inline-size; width: 100%; min-width: 0; }
.hh-msg { display: grid; grid-template-columns: 10.5rem minmax(6rem, 13rem) minmax(0, 1fr) auto; gap: 0.1rem 0.75rem;
  align-items: start; width: 100%; padding: 0.35rem 0.25rem; border-bottom: 1px solid rgba(255,255,255,0.08); }
.hh-msg > * { min-width: 0; }
.hh-msg-time { color: #b0b0b0; font-variant-numeric: tabular-nums; }
.hh-msg-who, .hh-msg-body, .hh-msg-body * { overflow-wrap: anywhere; word-break: break-word; }
.hh-msg-body { white-space: pre-wrap; }
@container (max-width: 640px) {
  .hh-msg { grid-template-columns: minmax(0, 1fr) auto; }
  .hh-msg-who { grid-column: 1 / 2; } .hh-msg-body { grid-column: 1 / -1; }
}
"""


# ----------------------------------------------------------------------------------------- a row
# A delivery's state as every page says it: pending, taken (leased, not acked yet) or read.
DELIVERY_STATES: Final = {
    "queued": ("pending", "warning"),
    "leased": ("taken", "info"),
    "delivered": ("read", "positive"),
}


def read_state(message: ListedMessage) -> tuple[str, str]:
    """(text, colour) of a message's read state: pending, taken (leased, not acked) or read; a
    message to several inboxes says how many read it."""
    states = [d.state for d in message.deliveries]
    if not states:
        return "", "grey"
    if len(states) == 1:
        return DELIVERY_STATES[states[0]]
    read = sum(state == "delivered" for state in states)
    return f"{read}/{len(states)} read", "positive" if read == len(states) else "grey"


def local_time(sent_at: str, tz: zoneinfo.ZoneInfo) -> str:
    """'2026-12-01 14:05:33' in `tz` (the browser's), or with ' UTC' while it is unknown."""
    moment = datetime.fromtimestamp(parse_iso(sent_at), tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if tz is UTC else "")


def recipients_of(message: ListedMessage) -> str:
    if message.broadcast:
        return BROADCAST
    return ", ".join(d.to for d in message.deliveries) or "?"


def message_row(
    message: Message,
    to: str,
    state: tuple[str, str],
    tz: zoneinfo.ZoneInfo,
    on_thread: Callable[[int], object] | None = None,
    where: str = "message",
) -> ui.element:
    """One message in columns (time, from → to, body, state), marked `{where}-{id}`; the caller
    places it (newest at the top)."""
    with ui.element("div").classes("hh-msg").mark(f"{where}-{message.id}") as row:
        when = ui.label(local_time(message.sent_at, tz)).classes("hh-msg-time")
        when.props["title"] = message.sent_at  # UTC, exact
        reply = f" · re #{message.in_reply_to}" if message.in_reply_to else ""
        ui.label(f"{message.sender} → {to}{reply}").classes("hh-msg-who")
        with ui.element("div").classes("hh-msg-body"):
            _body(message, where)
        with ui.row().classes("items-center gap-1 no-wrap"):
            text, colour = state
            if text:
                ui.badge(text, color=colour).props("outline").mark(f"{where}-state-{message.id}")
            if on_thread is not None:
                # A title, not a tooltip element: hundreds of rows stay cheap to draw.
                ui.button(icon="forum", on_click=lambda: on_thread(message.id)).props(
                    f"flat dense round size=sm aria-label='open its thread' title='thread of #{message.id}'"
                ).mark(f"{where}-thread-{message.id}")
    return row


def _body(message: Message, where: str) -> None:
    first, _, rest = message.body.partition("\n")
    if message.sender != SYSTEM or message.event is None:
        ui.label(message.body)
        return
    kind = str(message.event.get("type", ""))
    icon, colour = EVENT_ICONS.get(kind, ("info", "grey"))
    with ui.row().classes("items-start gap-1 no-wrap"):
        ui.icon(icon, color=colour).classes("text-lg").props(f"aria-label='{kind or 'event'}'").mark(f"icon-{kind}")
        ui.label(first)
    lines = [line for line in rest.splitlines() if line.strip()]
    tail = message.event.get("last_lines")
    if isinstance(tail, list) and tail:  # a crash's log: all of it the event carries, not the summary's 5
        lines = [str(line) for line in tail]
    if lines:
        with (
            ui.expansion(f"log tail ({len(lines)} lines)" if tail else f"{len(lines)} more lines")
            .props("dense")
            .classes("w-full")
            .mark(f"{where}-tail-{message.id}")
        ):
            ui.label("\n".join(lines)).classes("hh-mono text-xs")


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
    inbox = ui.column().classes("hh-msgs gap-0").mark("inbox")
    inbox_rows: dict[int, tuple[str, ui.element]] = {}  # by message id: its state and timezone when drawn, its row
    stale_when(hive, inbox, "broker")

    def reply(message: Message) -> None:
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
        # Only what changed is drawn again: a new message behind the 20 shown changes nothing here.
        waiting = list(reversed(peeked.messages))  # newest at the top
        drawn_as = {message.id: f"{message.state} {view['tz']}" for message in waiting}  # redrawn when either changes
        for message_id, (state, row) in list(inbox_rows.items()):
            if drawn_as.get(message_id) != state:
                row.delete()
                del inbox_rows[message_id]
        with inbox:
            for index, message in enumerate(waiting):
                if message.id not in inbox_rows:
                    inbox_rows[message.id] = (drawn_as[message.id], _inbox_row(message))
                row = inbox_rows[message.id][1]
                if inbox.default_slot.children.index(row) != index:
                    row.move(inbox, target_index=index)
        total = peeked.queued + peeked.leased
        unread.set_text(f"{total} unread" if total else "nothing unread")

    def _inbox_row(message: PeekedMessage) -> ui.element:
        state = ("taken", "info") if message.state == "leased" else ("pending", "warning")
        row = message_row(message, OPERATOR, state, view["tz"], open_thread, where="inbox")
        if message.sender in hive.state.agents:
            with row.default_slot.children[-1]:
                ui.button("reply", on_click=lambda m=message: reply(m)).props("flat dense size=sm").mark(
                    f"reply-{message.id}"
                )
        return row

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
    results = ui.column().classes("hh-msgs gap-0").mark("search-results")
    flow = ui.column().classes("hh-msgs gap-0").mark("flow")
    stale_when(hive, flow, "broker")

    def wanted(message: ListedMessage) -> bool:
        who = agent_filter.value
        if who in (None, "everyone"):
            return True
        return message.sender == who or who in [d.to for d in message.deliveries]

    flow_rows: dict[int, ui.element] = {}  # by message id: the page's own load and the view's poll overlap

    def flow_row(message: ListedMessage) -> None:
        """Add one row where it belongs: a new message at the top, an older one (a first draw) below."""
        if message.id in flow_rows:
            return
        with flow:  # appended: no move, so drawing 200 rows sends the list once, not 200 times
            row = message_row(message, recipients_of(message), read_state(message), view["tz"], open_thread)
        newer = sum(1 for shown in flow_rows if shown > message.id)
        flow_rows[message.id] = row
        if newer < len(flow_rows) - 1:
            row.move(flow, target_index=newer)  # newest at the top
        while len(flow_rows) > FLOW_SHOWN:  # a page open for days stays small
            flow_rows.pop(min(flow_rows)).delete()

    def draw(messages: Sequence[ListedMessage]) -> None:
        flow.clear()
        flow_rows.clear()
        for message in sorted(messages, key=lambda m: m.id, reverse=True):
            if wanted(message):
                flow_row(message)

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
        for message in messages:
            if wanted(message):
                flow_row(message)

    async def run_search(*_: object) -> None:
        query = (search.value or "").strip()
        results.clear()
        search_error.set_visibility(False)
        flow.set_visibility(not query)
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
        with results:
            for hit in found.messages:  # the broker's order: newest first
                _hit_row(hit)

    def _hit_row(hit: SearchHit) -> None:
        row = message_row(hit, recipients_of(hit), read_state(hit), view["tz"], open_thread, where="hit")
        row.classes("hh-hit")

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
        panel_list = ui.column().classes("hh-msgs gap-0").mark("thread-panel")

    async def open_thread(message_id: int) -> None:
        panel_list.clear()
        panel_note.set_text("")
        panel_title.set_text(f"thread of #{message_id}")
        panel.open()
        try:
            listing = await reads.list_messages(thread=message_id, limit=THREAD_SHOWN)
        except (ToolError, ServerUnavailable, AuthRefused) as e:
            panel_note.set_text(str(e))
            return
        with panel_list:
            for message in reversed(listing.messages):  # newest at the top, as everywhere
                message_row(message, recipients_of(message), read_state(message), view["tz"], where="in-thread")
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
