"""The dashboard's pages: one NiceGUI single-page app (a frame with the navigation, the
"unreachable" banner and the pending questions, around sub-pages), plus /login.

Every page reads the backend's state when it is built and then follows its events, changing
its own elements in place (a badge's text, a row's buttons); nothing on a page polls the hive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from fastapi.responses import RedirectResponse
from fastmcp.exceptions import ToolError
from nicegui import app, context, ui

from hyperhive.servers.approvals.models import Request
from hyperhive.servers.broker.models import ListedMessage, RecvBatchResult
from hyperhive.servers.common.client import AuthRefused, ServerUnavailable
from hyperhive.servers.common.names import OPERATOR
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.models import AgentInfo, RebuildResult
from hyperhive.servers.operator.models import PendingQuestion
from hyperhive.ui.auth import Credentials
from hyperhive.ui.backend import MESSAGES_KEPT, Backend, Notice, SwarmAgent

STATE_COLOURS = {
    "running": "positive", "starting": "info", "stopping": "warning", "restarting": "warning",
    "stopped": "grey", "failed": "negative",
}  # fmt: skip
INBOX_SHOWN = 20  # the operator's newest messages on /messages
TURN_COLOURS = {
    "idle": "grey-7",
    "running": "primary",
    "error": "negative",
    "starting": "info",
    "unreadable": "negative",
}
R = TypeVar("R")
ToastKind = Literal["positive", "negative", "info", "warning"]
Toast = tuple[str, ToastKind]  # a toast's text and colour, when success is not all a result can say
_POSITIVE: ToastKind = "positive"


class _Hive:
    backend: Backend
    credentials: Credentials


hive = _Hive()


def register(backend: Backend, credentials: Credentials) -> None:
    hive.backend, hive.credentials = backend, credentials
    ui.button.default_props("no-caps")  # labels as written: lowercase, as everywhere in hyperhive

    @ui.page("/login")
    async def login(redirect_to: str = "/", code: str = "") -> RedirectResponse | None:
        if code and credentials.code_ok(code):  # the one-time link `hive up` prints
            app.storage.user["operator"] = True
            return RedirectResponse(_local(redirect_to))
        if app.storage.user.get("operator"):
            return RedirectResponse("/")

        async def try_login() -> None:
            given = secret.value or ""
            if credentials.password_ok(given) or await credentials.token_ok(given):
                app.storage.user["operator"] = True
                ui.navigate.to(_local(redirect_to))
            else:
                ui.notify("not the dashboard password or an operator token", type="negative")

        with ui.card().classes("absolute-center w-96"):
            ui.label("◆ hyperhive").classes("text-xl")
            if code:
                ui.label("that login link was used or has expired: log in with the password").classes(
                    "text-warning"
                ).mark("code-spent")
            secret = ui.input("password or operator token", password=True).props("autofocus").classes("w-full")
            secret.mark("secret")
            secret.on("keydown.enter", try_login)
            ui.button("log in", on_click=try_login).mark("login")
        return None


def _local(path: str) -> str:
    """Only a path on this dashboard: never another site ("//evil.example" is one)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


# ------------------------------------------------------------------------------------------- frame


def root() -> None:
    """The frame every page shares; the sub-page below it follows the URL."""
    ui.dark_mode(True)
    ui.add_css(
        ".hh-mono { font-family: ui-monospace, monospace; } .q-badge { text-transform: lowercase; }"
        " .hh-question { border-left: 4px solid var(--q-warning); }" + SWARM_CSS
    )

    backend = hive.backend
    with ui.header().classes("items-center gap-4 py-1 bg-grey-10"):
        ui.link("◆ hyperhive", "/").classes("text-lg text-white no-underline")
        ui.link("swarm", "/").classes("text-white")
        approvals_link = ui.link("approvals", "/approvals").classes("text-white")
        questions_link = ui.link("questions", "/questions").classes("text-white")
        ui.link("messages", "/messages").classes("text-white")
        ui.space()
        ui.button(icon="notifications", on_click=_enable_desktop_notifications).props("flat dense round").tooltip(
            "desktop notifications"
        )
        ui.button("log out", on_click=_logout).props("flat dense")
    banner = ui.label().classes("w-full bg-negative text-white p-2").mark("banner")
    strip = ui.column().classes("w-full gap-1")

    def show_reachability(reachable: dict[str, bool]) -> None:
        down = [server for server, up in reachable.items() if not up]
        banner.set_text(f"{', '.join(down)} unreachable: retrying every second" if down else "")
        banner.set_visibility(bool(down))

    def show_counts(*_: object) -> None:
        approvals_link.set_text(
            f"approvals ({len(backend.state.approvals)})" if backend.state.approvals else "approvals"
        )
        questions_link.set_text(
            f"questions ({len(backend.state.questions)})" if backend.state.questions else "questions"
        )

    cards: dict[int, ui.card] = {}

    def show_questions(questions: list[PendingQuestion]) -> None:
        """Add new questions' cards and drop answered ones; a half-typed answer elsewhere stays."""
        show_counts()
        pending = {q.id for q in questions}
        for qid in [qid for qid in cards if qid not in pending]:
            cards.pop(qid).delete()
        for question in questions:
            if question.id not in cards:
                with strip:
                    cards[question.id] = question_card(question)

    def notify(notice: Notice) -> None:
        colour: Literal["negative", "warning", "info"] = (
            "negative" if notice.kind == "crash" else "warning" if notice.kind == "question" else "info"
        )
        ui.notify(f"{notice.title}: {notice.body}", type=colour, position="top-right", close_button="ok")
        ui.run_javascript(
            'if ("Notification" in window && Notification.permission === "granted") '
            f"new Notification({json.dumps(notice.title)}, {{body: {json.dumps(notice.body)}}});"
        )

    show_reachability(backend.state.reachable)
    show_questions(backend.state.questions)
    backend.reachability_changed.subscribe(show_reachability)
    backend.questions_changed.subscribe(show_questions)
    backend.approvals_changed.subscribe(show_counts)
    backend.notice.subscribe(notify)
    with ui.column().classes("w-full p-4 gap-3"):
        ui.sub_pages(
            {
                "/": swarm_page,
                "/approvals": approvals_page,
                "/questions": questions_page,
                "/messages": messages_page,
                "/agent/{name}": agent_page,
            }
        )


def _enable_desktop_notifications() -> None:
    ui.run_javascript('if ("Notification" in window) Notification.requestPermission()')
    ui.notify("desktop notifications: allow them in the browser's prompt")


def _logout() -> None:
    app.storage.user.clear()
    ui.navigate.to("/login")


async def act(what: str, call: Awaitable[R], done: str | Callable[[R], str | Toast] | None = None) -> R | None:
    """Run an operator action; a refusal or an unreachable server becomes a red toast, never a traceback.

    `done` is the (green) toast on success, or makes it from the result: a text, or a text and its
    colour for a result that reports a failure of its own (an approval whose apply failed).
    """
    # The toast goes to the page, not the caller's slot: the card whose button started the action is
    # often redrawn (and deleted) by the live update its own action caused before the call returns.
    client = context.client
    try:
        result = await call
    except ToolError as e:
        with client:
            ui.notify(f"{what}: {e}", type="negative", multi_line=True, close_button="ok")
        return None
    except (ServerUnavailable, AuthRefused) as e:
        with client:
            ui.notify(f"{what}: {e}", type="negative", close_button="ok")
        return None
    if done:
        toast = done if isinstance(done, str) else done(result)
        text, kind = toast if isinstance(toast, tuple) else (toast, _POSITIVE)
        with client:
            if kind == "negative":  # a failure stays until it is read, like a refusal's
                ui.notify(text, type=kind, multi_line=True, close_button="ok")
            else:
                ui.notify(text, type=kind)
    return result


async def confirm(text: str, action: str = "confirm") -> bool:
    with ui.dialog() as dialog, ui.card():
        ui.label(text)
        with ui.row():
            ui.button("cancel", on_click=lambda: dialog.submit(False)).props("flat")
            ui.button(action, color="negative", on_click=lambda: dialog.submit(True)).mark("confirm")
    result = await dialog
    dialog.delete()
    return bool(result)


def since(timestamp: float | str | None) -> str:
    """'12 s', '3 min', '2 h' ago."""
    if timestamp is None:
        return "-"
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    seconds = max(0, int(time.time() - timestamp))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def section(title: str) -> None:
    ui.label(f"◆ {title}").classes("text-lg text-grey-4")


# ------------------------------------------------------------------------------------------- swarm


# The swarm table is a CSS grid: one template for the header and every row, so a row's cells are
# its elements themselves (no wrappers: 50 agents stay a light page).
SWARM_COLUMNS = ["agent", "state", "role", "model", "turn", "last turn", "inbox", "rem", "", ""]
SWARM_CSS = """
.hh-swarm { display: grid; grid-template-columns: 8rem 5.5rem 4.5rem 7.5rem 16rem 5.5rem 3rem 3rem 6.5rem 1fr;
            align-items: center; justify-items: start; column-gap: 0.75rem; width: 100%; }
.hh-swarm > .hh-num { justify-self: end; }
.hh-swarm > .hh-actions { justify-self: end; display: flex; }
.hh-turn { display: flex; align-items: center; gap: 0.25rem; max-width: 16rem; }
"""


# The swarm's per-agent buttons and menu items, by the name they show.
AGENT_ACTIONS: dict[str, Callable[[LifecycleClient, str], Awaitable[AgentInfo]]] = {
    "start": LifecycleClient.start,
    "stop": LifecycleClient.stop,
    "restart": LifecycleClient.restart,
    "kill": LifecycleClient.kill,
    "rebuild": LifecycleClient.rebuild,
}


class AgentRow:
    """One agent's row; `show` changes its elements in place, `tick` its relative times."""

    def __init__(self, agent: SwarmAgent) -> None:
        self.name = name = agent.info.name
        self.backend = hive.backend
        self.agent = agent
        with ui.element().classes("hh-swarm hh-mono") as self.row:
            ui.link(name, f"/agent/{name}").classes("font-bold truncate max-w-full")
            self.state = ui.badge("").mark(f"state-{name}")
            self.role = ui.label("").classes("text-grey-5")
            self.model = ui.button("", icon="psychology", on_click=self.change_model).mark(f"model-{name}")
            self.model.props('outline rounded dense size=sm title="change the model"')
            with ui.element().classes("hh-turn"):
                self.turn = ui.label("").classes("truncate").mark(f"turn-{name}")
                self.cancel = ui.button("cancel", on_click=self.cancel_turn).mark(f"cancel-{name}")
                self.cancel.props('flat dense size=sm color=warning title="cancel the running turn"')
            self.last_turn = ui.label("").classes("text-grey-5").mark(f"last-turn-{name}")
            self.inbox = ui.label("").classes("hh-num").mark(f"inbox-{name}")
            self.reminders = ui.label("").classes("hh-num text-grey-5").mark(f"reminders-{name}")
            self.update = ui.badge("needs update", color="warning").mark(f"update-{name}")
            with ui.element().classes("hh-actions"):
                for action in ("start", "stop"):
                    ui.button(action, on_click=lambda a=action: self.do(a)).props("flat dense size=sm").mark(
                        f"{action}-{name}"
                    )
                self.more = ui.button(icon="more_horiz", on_click=self.more_actions).mark(f"more-{name}")
                self.more.props('flat dense round size=sm title="restart, kill, rebuild, destroy"')
        self.menu: ui.menu | None = None
        self.show(agent)

    def more_actions(self) -> None:
        """The rarer actions, built on first use: a swarm page of 50 agents need not carry 200 buttons."""
        if self.menu is None:
            with self.more, ui.menu() as self.menu:
                for action in ("restart", "kill", "rebuild"):
                    ui.menu_item(action, on_click=lambda a=action: self.do(a)).mark(f"{action}-{self.name}")
                ui.menu_item("destroy", on_click=self.destroy).classes("text-negative").mark(f"destroy-{self.name}")
        self.menu.open()

    def show(self, agent: SwarmAgent) -> None:
        self.agent = agent
        info, turn = agent.info, agent.info.turn
        self.state.set_text(info.state)
        self.state.props(f"color={STATE_COLOURS.get(info.state, 'grey')}")
        self.role.set_text(info.role)
        self.model.set_text(info.model)
        self.turn.classes(replace=f"truncate text-{TURN_COLOURS.get(turn.state, 'grey-7') if turn else 'grey-7'}")
        self.turn.props.set_optional("title", turn.reason if turn else None)  # the whole reason on hover
        self.cancel.set_visibility(turn is not None and turn.state == "running")
        self.inbox.set_text(str(agent.pending))
        self.reminders.set_text(str(agent.pending_reminders))
        self.update.set_visibility(info.needs_update)
        self.tick()

    def tick(self) -> None:
        turn = self.agent.info.turn
        if turn is None:
            text = "no harness" if self.agent.info.state == "running" else "-"
        elif turn.state == "running":
            text = f"running {since(turn.since)} · {turn.messages} msg"
        elif turn.state == "error":
            text = f"error: {turn.reason or '?'}"
        else:
            text = f"{turn.state} {since(turn.since)}"
        self.turn.set_text(text)
        last = turn.last_turn_at if turn else None
        running = turn is not None and turn.state == "running"
        self.last_turn.set_text("now" if running else f"{since(last)} ago" if last else "never")

    async def do(self, action: str) -> None:
        with self.row:  # its dialog: not inside the menu the click came from, which closes
            # All but start interrupt what the agent is doing (rebuild restarts a running one).
            if action != "start" and not await confirm(f"{action} {self.name}?", action):
                return
        await act(f"{action} {self.name}", self.backend.call(AGENT_ACTIONS[action](self.backend.lifecycle, self.name)),
                  f"{self.name}: {action}")  # fmt: skip

    async def destroy(self) -> None:
        with self.row, ui.dialog() as dialog, ui.card():
            ui.label(f"destroy {self.name}? its sandbox goes; its repos and files stay unless purged")
            purge = ui.checkbox("also purge its repos, files, token and logs").mark("purge")
            with ui.row():
                ui.button("cancel", on_click=lambda: dialog.submit(None)).props("flat")
                ui.button("destroy", color="negative", on_click=lambda: dialog.submit(purge.value)).mark("confirm")
        choice = await dialog
        dialog.delete()
        if choice is None:
            return
        force = self.name == "manager"
        call = self.backend.call(self.backend.lifecycle.destroy(self.name, purge=bool(choice), force=force))
        await act(f"destroy {self.name}", call, f"{self.name}: destroyed")

    async def cancel_turn(self) -> None:
        await act(
            f"cancel {self.name}'s turn",
            self.backend.call(self.backend.lifecycle.cancel_turn(self.name)),
            "turn cancelled",
        )

    async def change_model(self) -> None:
        with ui.dialog() as dialog, ui.card():
            ui.label(f"model for {self.name}'s next turns")
            model = ui.input("model", value=self.model.text).mark("model-input")
            with ui.row():
                ui.button("back to agent.toml's", on_click=lambda: dialog.submit("")).props("flat")
                ui.button("set", on_click=lambda: dialog.submit(model.value)).mark("set-model")
        chosen = await dialog
        dialog.delete()
        if chosen is None:
            return
        call = self.backend.call(self.backend.lifecycle.set_model(self.name, chosen or None))
        await act(f"set {self.name}'s model", call, f"{self.name}: model {chosen or 'from agent.toml'}")


def swarm_page() -> None:
    backend = hive.backend
    with ui.row().classes("items-center w-full"):
        section("swarm")
        summary = ui.label("").classes("text-grey-6")
        ui.space()

        def updated(result: RebuildResult) -> str:
            return f"rebuilt {', '.join(result.rebuilt)}" if result.rebuilt else "every agent is up to date"

        async def update_all() -> None:
            await act("update all", backend.call(backend.lifecycle.rebuild_stale()), updated)

        ui.button("update all", on_click=update_all).props("outline dense").mark("update-all")
    rows: dict[str, AgentRow] = {}
    with ui.element().classes("hh-swarm text-grey-6 text-xs"):
        for label in SWARM_COLUMNS:
            ui.label(label).classes("hh-num" if label in ("inbox", "rem") else "")
    table = ui.column().classes("w-full gap-1")

    def show(agent: SwarmAgent) -> None:
        row = rows.get(agent.info.name)
        if row is None:
            with table:
                rows[agent.info.name] = AgentRow(agent)
        else:
            row.show(agent)
        summary.set_text(f"{len(backend.state.agents)} agents · {backend.state.backend}")

    def remove(name: str) -> None:
        row = rows.pop(name, None)
        if row is not None:
            row.row.delete()

    for agent in backend.state.agents.values():
        show(agent)
    backend.agent_changed.subscribe(show)
    backend.agent_removed.subscribe(remove)

    def tick() -> None:  # "running 12 s": only texts that changed go out
        for row in rows.values():
            row.tick()

    ui.timer(1.0, tick)

    section("spawn")
    with ui.row().classes("items-center"):
        name = ui.input("name", placeholder="a-z, 0-9, -").props("dense").mark("spawn-name")

        async def spawn() -> None:
            if await act(
                f"spawn {name.value}",
                backend.call(backend.lifecycle.create_agent(name.value)),
                f"{name.value}: spawned",
            ):
                name.set_value("")

        ui.button("spawn", on_click=spawn).props("dense").mark("spawn")


# --------------------------------------------------------------------------------------- approvals


def approvals_page() -> None:
    backend = hive.backend
    section("approvals")
    pending = ui.column().classes("w-full gap-3")

    def show(requests: Sequence[Request]) -> None:
        pending.clear()
        with pending:
            if not requests:
                ui.label("no requests waiting").classes("text-grey-6")
            for request in requests:
                approval_card(request)

    show(backend.state.approvals)
    backend.approvals_changed.subscribe(show)
    section("history")
    history = ui.column().classes("w-full gap-1 hh-mono")

    async def load_history() -> None:
        result = await act("history", backend.call(backend.approvals.approval_history(50)))
        history.clear()
        with history:
            for request in result.requests if result else []:
                by = request.resolved_by or "-"
                outcome = request.state + (f": {request.note}" if request.note else "")
                outcome += f": {request.error}" if request.error else ""
                ui.label(
                    f"#{request.id} {request.kind.replace('_', ' ')} {request.agent} · {outcome} · by {by} "
                    f"· {(request.resolved_at or '')[:19].replace('T', ' ')}"
                )

    ui.timer(0.1, load_history, once=True)
    backend.approvals_changed.subscribe(lambda _: load_history())


def approved(request: Request) -> Toast:
    """What approving did: applied (green), approved but not yet carried out, or failed with why (red)."""
    if request.state == "failed":
        return f"#{request.id} approved but failed: {request.error or 'no reason given'}", "negative"
    if request.state == "approving":
        return f"#{request.id} approved; it is carried out when the lifecycle server answers", "info"
    return f"#{request.id} approved", "positive"


def approval_card(request: Request) -> None:
    backend = hive.backend
    rid = request.id
    with ui.card().classes("w-full"):
        with ui.row().classes("items-center w-full"):
            ui.label(f"#{rid} {request.kind.replace('_', ' ')} · {request.agent}").classes("text-lg")
            ui.label(f"asked by {request.requested_by} {since(request.requested_at)} ago").classes("text-grey-6")
            if request.state == "approving":
                ui.badge("being carried out", color="info")
        for widening in request.widenings:  # what the new config may do that the old could not
            ui.label(f"widens {widening}").classes("text-warning text-weight-bold").mark(f"widening-{rid}")
        if request.diff:
            ui.code(language="diff").classes("w-full").set_content(request.diff)
        with ui.row().classes("items-center"):

            async def approve() -> None:
                approve_button.props("loading")  # carrying out a spawn or rebuild takes seconds
                await act(f"approve #{rid}", backend.call(backend.approvals.approve(rid)), approved)
                if not approve_button.is_deleted:  # the card usually goes with the request it showed
                    approve_button.props(remove="loading")

            approve_button = ui.button("approve", color="positive", on_click=approve).mark(f"approve-{rid}")
            note = ui.input("why not (shown to the manager)").props("dense").classes("w-96").mark(f"note-{rid}")

            async def deny() -> None:
                if not (note.value or "").strip():
                    ui.notify("say why, for the manager", type="warning")
                    return
                await act(f"deny #{rid}", backend.call(backend.approvals.deny(rid, note.value)), f"#{rid} denied")

            ui.button("deny", color="negative", on_click=deny).props("outline").mark(f"deny-{rid}")


# --------------------------------------------------------------------------------------- questions


def question_card(question: PendingQuestion) -> ui.card:
    """A pending question with its answer form and a countdown, for the strip at the top of every page."""
    backend = hive.backend
    qid = question.id
    deadline = datetime.fromisoformat(question.expires_at.replace("Z", "+00:00")).timestamp()
    with ui.card().classes("w-full bg-grey-9 hh-question").props("flat bordered") as card:
        with ui.row().classes("items-center w-full no-wrap"):
            ui.label(f"? #{qid} {question.asker}:").classes("font-bold")
            ui.label(question.question).classes("grow")
            countdown = ui.chip("", icon="timer", color="orange").props("dense").mark(f"ttl-{qid}")

            def tick() -> None:
                left = int(deadline - time.time())
                countdown.set_text(f"{max(0, left) // 60}:{max(0, left) % 60:02d}")

            tick()
            ui.timer(1.0, tick)
        with ui.row().classes("items-center"):
            options = question.options
            if options:
                answer: Any = ui.select(options, multiple=bool(question.multi), label="answer").props("dense")
                answer.classes("w-72").mark(f"answer-{qid}")
            else:
                answer = ui.input("answer").props("dense").classes("w-96").mark(f"answer-{qid}")

            async def send() -> None:
                value = answer.value  # several options of a multi question go as a list
                if not value:
                    ui.notify("pick or write an answer first", type="warning")
                    return
                await act(f"answer #{qid}", backend.call(backend.operator.answer(qid, value)), f"#{qid} answered")

            ui.button("answer", on_click=send).props("dense").mark(f"send-{qid}")
            ui.button(
                "cancel",
                on_click=lambda: act(
                    f"cancel #{qid}", backend.call(backend.operator.cancel_question(qid)), f"#{qid} cancelled"
                ),
            ).props("flat dense").mark(f"cancel-question-{qid}")
    return card


def questions_page() -> None:
    backend = hive.backend
    section("questions")
    ui.label("pending questions are at the top of every page").classes("text-grey-6")
    section("history")
    history = ui.column().classes("w-full gap-1 hh-mono")

    async def load() -> None:
        result = await act("history", backend.call(backend.operator.question_history(50)))
        history.clear()
        with history:
            for q in result.questions if result else []:
                asked = f"#{q.id} {q.asker} → {q.to}: {q.question}"
                ui.label(f"{asked} · {q.state}: {q.answer or '-'}")

    ui.timer(0.1, load, once=True)
    backend.questions_changed.subscribe(lambda _: load())


# ---------------------------------------------------------------------------------------- messages


def messages_page() -> None:
    backend = hive.backend
    reply_to: dict[str, int | None] = {"id": None}

    with ui.row().classes("items-center w-full"):
        section("your inbox")
        unread = ui.label("").classes("text-grey-6").mark("unread")
        ui.space()

        def marked(taken: RecvBatchResult) -> str:
            more = f", {taken.queued} more waiting" if taken.queued else ""
            return f"{len(taken.messages)} marked read{more}"

        async def mark_read() -> None:
            await act("mark read", backend.call(backend.broker.recv_batch(max=50, ack=True)), marked)

        ui.button("mark read", on_click=mark_read).props("outline dense").mark("mark-read").tooltip(
            "take the oldest 50 (as `hive inbox` does): the broker stops counting them as waiting"
        )
    inbox = ui.column().classes("w-full gap-0 hh-mono").mark("inbox")

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
            ui.label(f"#{message.id} {message.sent_at[11:19]} {message.sender}: {message.body}")
            if message.sender in backend.state.agents:
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
                ui.notify("pick who it is for", type="warning")
                return
            call = backend.call(backend.broker.send(to.value, body.value, reply_to["id"]))
            if await act("send", call, "sent"):
                body.set_value("")
                reply_to["id"] = None
                replying.set_visibility(False)

        body.on("keydown.enter", send)

        def recipients(*_: object) -> None:  # agents come and go
            if not backend.state.agents:  # not heard from the lifecycle server yet: keep the defaults
                return
            names = ["*", *sorted(backend.state.agents)]
            if list(to.options) != names:
                to.set_options(names, value=to.value if to.value in names else "manager")
                agent_filter.set_options(["everyone", *names[1:], OPERATOR], value=agent_filter.value)

        backend.agent_changed.subscribe(recipients)
        ui.button("send", on_click=send).props("dense").mark("compose-send")
    with ui.row().classes("items-center"):
        section("messages")
        agent_filter = ui.select(["everyone", "manager", OPERATOR], value="everyone", label="agent")
        agent_filter.props("dense").classes("w-40").mark("filter-agent")
        thread = (
            ui.number("thread of message #", format="%d").props("dense clearable").classes("w-44").mark("filter-thread")
        )
    flow = ui.column().classes("w-full gap-0 hh-mono")

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
            head = f"#{message.id} {message.sent_at[11:19]} {message.sender} → {recipients}{reply}"
            text = ui.label(f"{head}: {message.body}").classes("whitespace-pre-wrap cursor-pointer")
            text.props["title"] = "click: follow its thread"  # an attribute, not a tooltip element per line
            text.on("click", lambda m=message: thread.set_value(m.id))
        while len(flow.default_slot.children) > MESSAGES_KEPT:  # a page open for days stays small
            flow.default_slot.children[0].delete()

    def redraw(*_: object) -> None:
        flow.clear()
        for message in backend.state.messages:
            line(message)

    def add(messages: list[ListedMessage]) -> None:
        for message in messages:
            line(message)
            inbox_line(message)

    recipients()
    redraw()
    for message in backend.state.messages:
        inbox_line(message)
    show_unread(backend.state.unread)
    agent_filter.on_value_change(redraw)
    thread.on_value_change(redraw)
    backend.messages_added.subscribe(add)
    backend.unread_changed.subscribe(show_unread)


# ------------------------------------------------------------------------------------------- agent


def agent_page(name: str) -> None:
    backend = hive.backend
    section(name)
    with ui.tabs() as tabs:
        for tab in ("log", "config", "files", "stats"):
            ui.tab(tab).mark(f"tab-{tab}")
    with ui.tab_panels(tabs, value="log").classes("w-full"):
        with ui.tab_panel("log"):
            log = ui.log(max_lines=1000).classes("w-full h-96 hh-mono").mark("log")
            seen = {"last": ""}

            async def follow() -> None:
                result = await act("logs", backend.call(backend.lifecycle.logs(name, 200)))
                lines = result.lines if result else []
                start = lines.index(seen["last"]) + 1 if seen["last"] in lines else 0
                for text in lines[start:]:
                    log.push(text)
                if lines:
                    seen["last"] = lines[-1]

            ui.timer(1.0, follow)
        with ui.tab_panel("config"):
            config = ui.code("", language="toml").classes("w-full").mark("config")

            async def load_config() -> None:
                result = await act("config", backend.call(backend.lifecycle.agent_config(name)))
                if result:
                    config.set_content(result.agent_toml)

            ui.timer(0.1, load_config, once=True)
        with ui.tab_panel("files"):
            path = ui.input("file in its state dir", value="notes.md").props("dense").mark("file-path")
            content = ui.code("", language="markdown").classes("w-full").mark("file")

            async def read() -> None:
                result = await act(
                    f"read {path.value}", backend.call(backend.lifecycle.read_state_file(name, path.value))
                )
                content.set_content(result.text if result else "")

            ui.button("read", on_click=read).props("dense").mark("file-read")
        with ui.tab_panel("stats"):
            stats_panel(name)


def stats_panel(name: str) -> None:
    backend = hive.backend
    summary = ui.label("").mark("stats-summary")
    charts = ui.row().classes("w-full")

    async def load() -> None:
        result = await act("stats", backend.call(backend.lifecycle.agent_stats(name)))
        if not result:
            return
        s = result.summary
        summary.set_text(
            f"{s.turns} turns · {s.errors} errors"
            f" · p50 {s.duration_p50 or 0:.1f} s · p95 {s.duration_p95 or 0:.1f} s"
            f" · tokens {s.tokens_in:,} in / {s.tokens_out:,} out · ${s.cost_usd:.4f}"
        )
        turns = result.turns
        charts.clear()
        with charts:
            per_hour: dict[str, int] = {}
            for turn in turns:
                hour = datetime.fromtimestamp(turn.started_at, UTC).strftime("%m-%d %H:00")
                per_hour[hour] = per_hour.get(hour, 0) + 1
            _chart("turns per hour", list(per_hour), [{"type": "bar", "data": list(per_hour.values())}])
            _chart("duration (s) and inbox depth", [str(i) for i in range(len(turns))], [
                {"type": "line", "name": "seconds", "data": [round(t.ended_at - t.started_at, 1) for t in turns]},
                {"type": "line", "name": "inbox", "data": [t.inbox_depth for t in turns]},
            ])  # fmt: skip
            tools = dict(sorted(s.tool_calls.items(), key=lambda item: -item[1]))  # most used first
            _chart("tool calls", list(tools), [{"type": "bar", "data": list(tools.values())}])
            _chart("tokens and cost", [str(i) for i in range(len(turns))], [
                {"type": "line", "name": "tokens in", "data": [t.tokens_in for t in turns]},
                {"type": "line", "name": "tokens out", "data": [t.tokens_out for t in turns]},
                {"type": "bar", "name": "cost $", "yAxisIndex": 1, "data": [t.cost_usd for t in turns]},
            ], second_axis=True)  # fmt: skip

    ui.timer(0.1, load, once=True)
    ui.button("refresh", on_click=load).props("flat dense")


def _chart(title: str, x: list[str], series: list[dict[str, Any]], *, second_axis: bool = False) -> None:
    ui.echart(
        {
            "title": {"text": title, "textStyle": {"fontSize": 12, "color": "#bbb"}},
            "tooltip": {"trigger": "axis"},
            "xAxis": {"type": "category", "data": x},
            "yAxis": [{"type": "value"}, {"type": "value"}] if second_axis else {"type": "value"},
            "series": series,
            "animation": False,
        }
    ).classes("w-96 h-56")
