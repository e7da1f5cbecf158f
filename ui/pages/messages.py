"""Messages: the operator's inbox (reply, mark read), compose, and the live flow with its filters."""

from __future__ import annotations

from nicegui import ui

from hyperhive.servers.broker.models import ListedMessage, RecvBatchResult
from hyperhive.servers.common.formatting import clock
from hyperhive.servers.common.names import OPERATOR
from hyperhive.ui.hive_view import MESSAGES_KEPT, HiveView
from hyperhive.ui.pages.widgets import act, section, stale_when, toast

INBOX_SHOWN = 20  # the operator's newest messages on /messages


def messages_page(hive: HiveView) -> None:
    reply_to: dict[str, int | None] = {"id": None}

    with ui.row().classes("items-center w-full"):
        section("your inbox")
        unread = ui.label("").classes("text-grey-6").mark("unread")
        ui.space()

        def marked(taken: RecvBatchResult) -> str:
            more = f", {taken.queued} more waiting" if taken.queued else ""
            return f"{len(taken.messages)} marked read{more}"

        async def mark_read() -> None:
            await act("mark read", hive.call(hive.broker.recv_batch(max=50, ack=True)), marked)

        ui.button("mark read", on_click=mark_read).props("outline dense").mark("mark-read").tooltip(
            "take the oldest 50 (as `hive inbox` does): the broker stops counting them as waiting"
        )
    inbox = ui.column().classes("w-full gap-0 hh-mono").mark("inbox")
    stale_when(hive, inbox, "broker")

    def show_unread(count: int) -> None:
        unread.set_text(f"{count} unread" if count else "nothing unread")

    def reply(message: ListedMessage) -> None:
        to.set_value(message.sender)
        reply_to["id"] = message.id
        replying.set_text(f"re #{message.id}")
        replying.set_visibility(True)
        body.run_method("focus")

    def inbox_line(message: ListedMessage) -> None:
        if OPERATOR not in [d.to for d in message.deliveries]:
            return
        with inbox, ui.row().classes("items-center no-wrap gap-2") as row:
            ui.label(f"#{message.id} {clock(message.sent_at)} {message.sender}: {message.body}")
            if message.sender in hive.state.agents:
                ui.button("reply", on_click=lambda m=message: reply(m)).props("flat dense size=sm").mark(
                    f"reply-{message.id}"
                )
        row.move(inbox, target_index=0)  # newest first
        while len(inbox.default_slot.children) > INBOX_SHOWN:
            inbox.default_slot.children[-1].delete()

    section("compose")
    with ui.row().classes("items-center w-full"):
        to = ui.select(["*", "manager"], value="manager", label="to")
        to.props("dense").classes("w-40").mark("compose-to")
        replying = ui.chip("", icon="reply", removable=True, color="grey-8").props("dense").mark("replying")
        replying.on("remove", lambda: reply_to.update(id=None))
        replying.set_visibility(False)
        body = ui.input("message").props("dense").classes("grow").mark("compose-body")

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

        def recipients(*_: object) -> None:  # agents come and go
            if not hive.state.agents:  # not heard from the lifecycle server yet: keep the defaults
                return
            names = ["*", *sorted(hive.state.agents)]
            if list(to.options) != names:
                to.set_options(names, value=to.value if to.value in names else "manager")
                agent_filter.set_options(["everyone", *names[1:], OPERATOR], value=agent_filter.value)

        hive.agent_changed.subscribe(recipients)
        ui.button("send", on_click=send).props("dense").mark("compose-send")
    with ui.row().classes("items-center"):
        section("messages")
        agent_filter = ui.select(["everyone", "manager", OPERATOR], value="everyone", label="agent")
        agent_filter.props("dense").classes("w-40").mark("filter-agent")
        thread = (
            ui.number("thread of message #", format="%d").props("dense clearable").classes("w-44").mark("filter-thread")
        )
    flow = ui.column().classes("w-full gap-0 hh-mono")
    stale_when(hive, flow, "broker")

    def wanted(message: ListedMessage) -> bool:
        who = agent_filter.value
        if who not in (None, "everyone"):
            recipients = [d.to for d in message.deliveries]
            if message.sender != who and who not in recipients:
                return False
        return not thread.value or message.thread_id == thread_roots.get(int(thread.value))

    thread_roots: dict[int, int] = {}

    def line(message: ListedMessage) -> None:
        thread_roots[message.id] = message.thread_id
        if not wanted(message):
            return
        recipients = ",".join(d.to for d in message.deliveries) or "?"
        reply = f" re #{message.in_reply_to}" if message.in_reply_to else ""
        with flow:
            head = f"#{message.id} {clock(message.sent_at)} {message.sender} → {recipients}{reply}"
            text = ui.label(f"{head}: {message.body}").classes("whitespace-pre-wrap cursor-pointer")
            text.props["title"] = "click: follow its thread"  # an attribute, not a tooltip element per line
            text.on("click", lambda m=message: thread.set_value(m.id))
        while len(flow.default_slot.children) > MESSAGES_KEPT:  # a page open for days stays small
            flow.default_slot.children[0].delete()

    def redraw(*_: object) -> None:
        flow.clear()
        for message in hive.state.messages:
            line(message)

    def add(messages: list[ListedMessage]) -> None:
        for message in messages:
            line(message)
            inbox_line(message)

    recipients()
    redraw()
    for message in hive.state.messages:
        inbox_line(message)
    show_unread(hive.state.unread)
    agent_filter.on_value_change(redraw)
    thread.on_value_change(redraw)
    hive.messages_added.subscribe(add)
    hive.unread_changed.subscribe(show_unread)
