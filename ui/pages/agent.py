"""One agent's page, full width: a header (its state, model, uptime, restarts, inbox, cost today)
with the actions its state allows, then tabs: its log (full height, wrapped, following the end,
filtered by level and searched), its messages (inbox with read state, threads), its files (a tree
of its state dir, opened a directory at a time), its turn stats and its applied config.

An unknown name is a 404 page (a real 404 status when the page is loaded by its URL). A peer has
no sandbox: its page says what a peer is and shows its allow-lists.
"""

from __future__ import annotations

import asyncio
import zoneinfo
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from fastmcp.exceptions import ToolError
from nicegui import context, ui

from hyperhive.servers.broker.models import ListedMessage
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.formatting import age, plural, turn_text, when
from hyperhive.servers.lifecycle.models import FileEntry, Turn
from hyperhive.servers.lifecycle.state_view import STATE_FILE_CAP
from hyperhive.ui.actions import ACTION_TIPS, AGENT_ACTIONS, CONFIRMED, AgentAction, actions_for
from hyperhive.ui.hive_view import HiveView, SwarmAgent
from hyperhive.ui.logview import LEVELS, Level, LogBuffer, LogLine, passes
from hyperhive.ui.pages.message_list import (
    DELIVERY_STATES,
    MessageListElement,
    MessageRowData,
    local_time,
    message_data,
)
from hyperhive.ui.pages.message_list import UTC as UTC_ZONE
from hyperhive.ui.pages.messages import learn_timezone
from hyperhive.ui.pages.widgets import act, activates, confirm, section, spend_text, text_block, while_shown

T = TypeVar("T")

READ_SECONDS: Final = 10.0  # a read the page repeats (the log, the inbox) gives up after this
FIRST_POLL_SECONDS: Final = 5.0  # a page opened before the dashboard heard from lifecycle waits this long
LOG_FETCHED: Final = 200  # lines each look at the log's end reads
LOG_FIRST: Final = 1000  # lines the page starts with
LOG_KEPT: Final = 2000  # lines the page keeps (and searches)
INBOX_SHOWN: Final = 20  # the agent's newest incoming messages, newest at the top (the messages page's order)
MESSAGES_READ: Final = 200  # its messages (sent and received) its threads are made of
THREADS_SHOWN: Final = 20
NAME_SHOWN: Final = 60  # of an unknown name in the 404 page
NOTES: Final = "notes.md"

AGENT_CSS = """
.hh-log { height: calc(100vh - 22rem); min-height: 18rem; font-size: 13px; }
.hh-log .q-scrollarea__content { white-space: pre-wrap; overflow-wrap: anywhere; width: 100%; }
.hh-log .q-scrollarea__content > div { min-width: 0; }
.hh-facts { display: flex; flex-wrap: wrap; column-gap: 1.25rem; row-gap: 0.25rem; }
.hh-wrap { overflow-wrap: anywhere; min-width: 0; }
.hh-tree-row { display: flex; align-items: center; gap: 0.35rem; min-height: 2rem; }
"""

STATE_COLOURS: Final[dict[str, str]] = {
    "running": "positive", "starting": "info", "stopping": "warning", "restarting": "warning",
    "stopped": "grey", "failed": "negative", "peer": "purple", "unreachable": "negative",
}  # fmt: skip
LEVEL_CLASSES: Final[dict[Level, str]] = {
    "debug": "text-grey-6",
    "info": "",
    "warning": "text-warning",
    "error": "text-negative",
}
LEVEL_CHOICES: Final[dict[Level, str]] = {
    "debug": "every line",
    "info": "info and up",
    "warning": "warnings and errors",
    "error": "errors only",
}


async def quietly(call: Awaitable[T]) -> T | None:
    """A read the page repeats: a refusal or a server that is down is None (the frame's banner says
    a server is down; a toast every second would bury the page)."""
    try:
        return await call
    except (ToolError, ServerUnavailable, AuthRefused):
        return None


def agent_page(hive: HiveView, name: str) -> Awaitable[None] | None:
    ui.add_css(AGENT_CSS)
    if name in hive.state.agents:
        _build(hive, name)
        return None
    if hive.first_poll.is_set():
        not_found(name)
        return None
    return _after_first_poll(hive, name)  # the dashboard has just started: wait for what lifecycle says


async def _after_first_poll(hive: HiveView, name: str) -> None:
    waiting = ui.label("waiting for the lifecycle server…").classes("text-grey-6")
    try:
        async with asyncio.timeout(FIRST_POLL_SECONDS):
            await hive.first_poll.wait()
    except TimeoutError:
        pass
    waiting.delete()
    if name in hive.state.agents:
        _build(hive, name)
    else:
        not_found(name)


def open_thread(message_id: int) -> None:
    """A message's thread, in the messages page's side panel."""
    ui.navigate.to(f"/messages?thread={message_id}")


def not_found(name: str) -> None:
    """The 404 page: a 404 status when loaded by URL (NiceGUI sends the client's status_code)."""
    context.client.status_code = 404
    shown = name if len(name) <= NAME_SHOWN else name[:NAME_SHOWN] + "…"
    section("404")
    with ui.column().classes("gap-2").mark("not-found"):
        ui.label(f"no agent named {shown!r}").classes("text-lg hh-wrap")
        ui.label("it may have been destroyed, or the name is mistyped (agent names: a-z, 0-9, -)").classes(
            "text-grey-5"
        )
        ui.link("← back to the swarm", "/").mark("back-to-swarm")


def _build(hive: HiveView, name: str) -> None:
    if hive.state.agents[name].info.kind == "peer":
        section(name)
        peer_page(hive, name)
        return
    AgentPage(hive, name)


class AgentPage:
    """The page of a sandboxed agent; its header follows the hive view's events."""

    def __init__(self, hive: HiveView, name: str) -> None:
        self.hive = hive
        self.name = name
        self.reads = hive.lifecycle.with_timeout(READ_SECONDS)
        self.agent = hive.state.agents[name]
        self.header()
        with ui.tabs().classes("w-full").props("align=left dense mobile-arrows") as tabs:
            for tab in ("log", "messages", "files", "stats", "config"):
                ui.tab(tab).mark(f"tab-{tab}")
        with ui.tab_panels(tabs, value="log").classes("w-full").props("keep-alive"):
            with ui.tab_panel("log").classes("p-0 pt-2"):
                LogPanel(self)
            with ui.tab_panel("messages").classes("px-0"):
                MessagesPanel(hive, name)
            with ui.tab_panel("files").classes("px-0"):
                FilesPanel(hive, name)
            with ui.tab_panel("stats").classes("px-0"):
                stats_panel(hive, name)
            with ui.tab_panel("config").classes("px-0"):
                applied_config(hive, name)
        self.show(self.agent)
        while_shown(hive.agent_changed, self.changed)
        while_shown(hive.agent_removed, self.removed)
        ui.timer(1.0, self.tick)

    # ------------------------------------------------------------------------------ the header
    def header(self) -> None:
        name = self.name
        with ui.row().classes("items-center w-full gap-3"):
            ui.label(f"◆ {name}").classes("text-xl text-grey-3")
            self.state = ui.badge("").mark("agent-state")
            self.turn = ui.label("").classes("hh-wrap").mark("agent-turn")
            self.update = ui.badge("needs update", color="warning").mark("agent-needs-update")
            self.update.tooltip("built by another hyperhive version or from an older applied config: rebuild it")
        with ui.element().classes("hh-facts text-grey-4 w-full"):
            self.model = ui.label("").mark("agent-model")
            self.uptime = ui.label("").mark("agent-uptime")
            self.restarts = ui.label("").mark("agent-restarts")
            self.inbox = ui.label("").mark("agent-inbox")
            self.cost = ui.label("").classes("hh-wrap").mark("agent-cost")
        self.problem = ui.label("").classes("text-negative hh-wrap").mark("agent-problem")
        with ui.row().classes("items-center gap-1 w-full").mark("agent-actions") as self.actions:
            self.buttons: dict[str, ui.button] = {}
            for action in AGENT_ACTIONS:
                button = ui.button(action, on_click=lambda a=action: self.do(a)).props("outline dense")
                self.buttons[action] = button.mark(action).tooltip(ACTION_TIPS[action])
            self.resume = ui.button("resume", on_click=self.resume_agent).props("dense color=warning").mark("resume")
            self.resume.tooltip(
                "its own daily budget is reached: start its day afresh now (its cost so far stops counting)"
            )
            ui.button("reset session", on_click=self.reset_session).props("flat dense").mark("reset-session").tooltip(
                "drop its conversation: the next turn starts a fresh Claude Code session (notes.md stays)"
            )
            ui.link("terminal", f"/agent/{self.name}/terminal").mark("open-terminal").tooltip(
                "a shell in its sandbox, as its uid (audited; it closes when you leave that page)"
            )

    def changed(self, agent: SwarmAgent) -> None:
        if agent.info.name == self.name:
            self.show(agent)

    def removed(self, name: str) -> None:
        if name == self.name:
            self.state.set_text("destroyed")
            self.state.props("color=grey")
            self.actions.set_visibility(False)

    def show(self, agent: SwarmAgent) -> None:
        self.agent = agent
        info = agent.info
        self.state.set_text(info.state)
        self.state.props(f"color={STATE_COLOURS.get(info.state, 'grey')}")
        self.update.set_visibility(info.needs_update)
        self.model.set_text(f"model {info.model}")
        self.restarts.set_text(plural(info.restart_count, "restart"))
        self.restarts.props.set_optional(
            "title", f"last exit {info.last_exit_code}" + (f" ({info.last_signal})" if info.last_signal else "")
        )
        inbox = f"inbox {agent.pending}" + (
            f" · {plural(agent.pending_reminders, 'reminder')}" if agent.pending_reminders else ""
        )
        self.inbox.set_text(inbox)
        spend = info.spend
        self.cost.set_text(" · ".join(filter(None, [spend_text(spend), spend.paused if spend else None])) or "no cost")
        self.cost.classes(replace="hh-wrap" + (" text-warning" if spend is not None and spend.paused else ""))
        self.problem.set_text(info.problem or "")
        self.problem.set_visibility(bool(info.problem))
        allowed = set(actions_for(info))
        for action, button in self.buttons.items():
            button.set_visibility(action in allowed)
        self.resume.set_visibility(spend is not None and spend.paused_by == "agent")
        self.tick()

    def tick(self) -> None:
        info = self.agent.info
        turn = info.turn
        self.turn.set_text(turn_text(turn, info.state == "running"))
        colour = {"error": "text-negative", "unreadable": "text-negative", "paused": "text-warning"}
        self.turn.classes(replace="hh-wrap " + (colour.get(turn.state, "text-grey-5") if turn else "text-grey-5"))
        if info.state == "running" and info.started_at:
            self.uptime.set_text(f"up {age(info.started_at)}")
        else:
            self.uptime.set_text("not running")

    # ----------------------------------------------------------------------------- the actions
    async def do(self, action: AgentAction) -> None:
        if action in CONFIRMED and not await confirm(f"{action} {self.name}?", action):
            return
        call = self.hive.call(AGENT_ACTIONS[action](self.hive.lifecycle, self.name))
        await act(f"{action} {self.name}", call, f"{self.name}: {action}")

    async def reset_session(self) -> None:
        call = self.hive.call(self.hive.lifecycle.reset_session(self.name))
        await act(f"reset {self.name}'s session", call, f"{self.name}: its next turn starts a fresh session")

    async def resume_agent(self) -> None:
        call = self.hive.call(self.hive.lifecycle.resume_agent(self.name))
        await act(f"resume {self.name}", call, f"{self.name}: resumed; its day starts afresh")


class LogPanel:
    """The agent's log: a look at its end every second; new lines pushed, the rest stays in the browser.

    ui.log follows the end while it is scrolled to the bottom and stays put once the operator
    scrolls up; "end" scrolls back down (and so follows again).
    """

    def __init__(self, page: AgentPage) -> None:
        self.page = page
        self.buffer = LogBuffer(LOG_KEPT)
        self.started = False
        with ui.row().classes("items-center w-full gap-2"):
            self.level = ui.select(LEVEL_CHOICES, value="debug", on_change=self.refilter, label="level")
            self.level.props("dense outlined options-dense").classes("w-48").mark("log-level")
            self.search = ui.input("search", on_change=self.refilter).props("dense outlined clearable")
            self.search.classes("grow max-w-md").mark("log-search")
            self.count = ui.label("").classes("text-grey-6").mark("log-count")
            ui.space()
            ui.button("end", icon="vertical_align_bottom", on_click=self.to_end).props("flat dense").mark(
                "log-end"
            ).tooltip("scroll to the newest line and follow it")
        self.log = ui.log(max_lines=LOG_KEPT).classes("w-full hh-log").mark("log")
        self.shown = 0
        ui.timer(1.0, self.follow)

    def chosen(self) -> tuple[Level, str]:
        level: Level = next((known for known in LEVELS if known == self.level.value), "debug")
        return level, str(self.search.value or "").strip()

    async def follow(self) -> None:
        lines = LOG_FETCHED if self.started else LOG_FIRST
        result = await quietly(self.page.reads.logs(self.page.name, lines))
        if result is None:
            return
        self.started = True
        added = self.buffer.add(result.lines)
        level, search = self.chosen()
        for line in added:
            if passes(line, level, search):
                self.push(line)
        self.show_count()

    def push(self, line: LogLine) -> None:
        self.log.push(line.text, classes=LEVEL_CLASSES[line.level] or None)
        self.shown = min(self.shown + 1, LOG_KEPT)

    def refilter(self) -> None:
        self.log.clear()
        self.shown = 0
        for line in self.buffer.matching(*self.chosen()):
            self.push(line)
        self.show_count()

    def show_count(self) -> None:
        total = len(self.buffer.lines)
        level, search = self.chosen()
        if level == "debug" and not search:
            self.count.set_text(plural(total, "line"))
        else:
            self.count.set_text(f"{self.shown:,} of {plural(total, 'line')}")

    def to_end(self) -> None:
        ui.run_javascript(
            f"const log = getElement({self.log.id}); log.shouldScroll = true;"
            " log.$refs.qRef.setScrollPosition('vertical', log.$refs.qRef.getScrollTarget().scrollHeight);"
        )


class MessagesPanel:
    """Its inbox (its newest incoming messages, with their read state) and its threads, re-read when
    a message to or from it passes by, or its inbox count changes."""

    def __init__(self, hive: HiveView, name: str) -> None:
        self.hive = hive
        self.name = name
        self.pending = -1
        with ui.row().classes("w-full gap-6 items-start"):
            with ui.column().classes("grow min-w-0 gap-1").style("flex-basis: 28rem"):
                ui.label("inbox").classes("text-grey-4 text-base")
                self.inbox_empty = ui.label("nothing sent to it yet").classes("text-grey-6").mark("inbox-empty")
                self.inbox_empty.set_visibility(False)
                # the messages page's rows, which stack their columns when narrow (a phone)
                self.inbox = MessageListElement().mark("agent-inbox-list")
                self.inbox.on("thread", lambda e: open_thread(int(e.args)))
            with ui.column().classes("min-w-0 gap-1").style("flex: 1 1 18rem"):
                ui.label("threads").classes("text-grey-4 text-base")
                self.threads = ui.column().classes("w-full gap-1").mark("agent-threads")
        self.loading = asyncio.Lock()
        self.view: dict[str, zoneinfo.ZoneInfo] = {"tz": UTC_ZONE}  # the browser's, once it says
        self.client = context.client
        while_shown(hive.messages_added, self.passing)
        while_shown(hive.agent_changed, self.changed)
        ui.timer(0.1, self.start, once=True)

    async def start(self) -> None:
        await learn_timezone(self.client, self.view)  # first, so each row is drawn once, in local time
        await self.load()

    async def passing(self, messages: list[ListedMessage]) -> None:
        if any(m.sender == self.name or self.name in [d.to for d in m.deliveries] for m in messages):
            await self.load()

    async def changed(self, agent: SwarmAgent) -> None:
        if agent.info.name == self.name and agent.pending != self.pending:
            self.pending = agent.pending
            await self.load()

    async def load(self) -> None:
        async with self.loading:  # one at a time: the last one read shows
            await self._load()

    async def _load(self) -> None:
        reads = self.hive.broker.with_timeout(READ_SECONDS)
        result = await quietly(reads.list_messages(agent=self.name, limit=MESSAGES_READ))
        if result is None:
            return
        messages = result.messages
        incoming = [m for m in messages if self.name in [d.to for d in m.deliveries]][-INBOX_SHOWN:]
        self.inbox_empty.set_visibility(not incoming)
        self.inbox.show([self.inbox_line(message) for message in incoming])
        self.show_threads(messages)

    def inbox_line(self, message: ListedMessage) -> MessageRowData:
        """The messages page's row (local time, from → to, body, read state), its thread a click away."""
        delivery = next(d for d in message.deliveries if d.to == self.name)
        return message_data(message, self.name, DELIVERY_STATES[delivery.state], self.view["tz"], thread=True)

    def show_threads(self, messages: list[ListedMessage]) -> None:
        threads: dict[int, list[ListedMessage]] = {}
        for message in messages:
            threads.setdefault(message.thread_id, []).append(message)
        newest = sorted(threads.items(), key=lambda item: -max(m.id for m in item[1]))[:THREADS_SHOWN]
        self.threads.clear()
        with self.threads:
            if not newest:
                ui.label("no threads yet").classes("text-grey-6").mark("threads-empty")
            for thread, members in newest:
                first = min(members, key=lambda m: m.id)
                subject = first.body.splitlines()[0][:80] if first.body else ""
                with ui.column().classes("gap-0 w-full min-w-0"):
                    ui.link(f"#{thread} {subject}", f"/messages?thread={thread}").classes("hh-wrap").mark(
                        f"thread-{thread}"
                    )
                    last = max(members, key=lambda m: m.id)
                    last_at = local_time(last.sent_at, self.view["tz"])
                    ui.label(f"{plural(len(members), 'message')} · last {last_at}").classes("text-grey-6 text-xs")


class FilesPanel:
    """A tree of its state dir, each directory listed when first opened (lifecycle's list_state_dir),
    and the file clicked (read_state_file): text, or its size when binary or too big."""

    def __init__(self, hive: HiveView, name: str) -> None:
        self.hive = hive
        self.name = name
        self.opened: dict[str, tuple[ui.column, ui.icon]] = {}
        with ui.row().classes("w-full gap-4 items-start"):
            with ui.column().classes("gap-0 hh-mono min-w-0").style("flex: 1 1 18rem; max-width: 30rem"):
                with ui.row().classes("items-center w-full"):
                    ui.label("state dir").classes("text-grey-4")
                    ui.space()
                    ui.button(icon="refresh", on_click=self.refresh).props(
                        'flat dense round size=sm aria-label="refresh the tree"'
                    ).tooltip("list it again")
                self.tree = ui.column().classes("w-full gap-0").mark("file-tree")
            self.viewer = ui.column().classes("min-w-0 gap-2").style("flex: 3 1 24rem").mark("file-viewer")
        ui.timer(0.1, self.start, once=True)

    async def start(self) -> None:
        entries = await self.fill(self.tree, "", 0)
        if entries is None:
            return
        notes = next((e for e in entries if e.name == NOTES and e.kind == "file"), None)
        if notes is not None:
            await self.open_file(NOTES, notes)
        else:
            self.viewer.clear()
            with self.viewer:
                ui.label(f"no {NOTES} yet").classes("text-grey-4").mark("notes-empty")
                ui.label(
                    f"the agent keeps what it must remember across sessions in {NOTES}; it has not written one"
                ).classes("text-grey-6 hh-wrap")

    async def refresh(self) -> None:
        self.opened.clear()
        await self.fill(self.tree, "", 0)

    async def fill(self, into: ui.column, path: str, depth: int) -> list[FileEntry] | None:
        """List `path` into `into`, one row an entry; None when it cannot be listed (a toast says why)."""
        result = await act(f"list {path or 'its state dir'}", self.hive.lifecycle.list_state_dir(self.name, path))
        into.clear()
        if result is None:
            return None
        indent = f"padding-left: {depth * 1.1}rem"
        with into:
            if not result.entries:
                ui.label("(empty)" if path else "its state dir is empty").classes("text-grey-6").style(indent).mark(
                    "tree-empty" if not path else f"tree-empty-{path}"
                )
            for entry in result.entries:
                child = f"{path}/{entry.name}" if path else entry.name
                self.entry_row(entry, child, depth)
            if result.truncated:
                ui.label("… more entries than a listing shows").classes("text-warning").style(indent)
        return result.entries

    def entry_row(self, entry: FileEntry, path: str, depth: int) -> None:
        indent = f"padding-left: {depth * 1.1}rem"
        size = "" if entry.kind == "dir" else f"{entry.size:,} B"
        if entry.kind == "dir":
            with ui.row().classes("hh-tree-row").style(indent) as row:
                icon = ui.icon("chevron_right", size="1.1rem").classes("text-grey-5")
                ui.icon("folder", size="1.1rem").classes("text-amber-7")
                ui.label(f"{entry.name}/").classes("text-primary hh-wrap")
            children = ui.column().classes("w-full gap-0")
            children.set_visibility(False)
            activates(row, lambda: self.toggle(path, row, children, icon, depth + 1)).mark(f"dir-{path}")
            row.props["aria-expanded"] = "false"
        elif entry.kind == "file":
            with ui.row().classes("hh-tree-row").style(indent) as row:
                ui.icon("description", size="1.1rem").classes("text-grey-5 ml-5")
                ui.label(entry.name).classes("text-primary hh-wrap")
                ui.label(size).classes("text-grey-6 text-xs")
            activates(row, lambda: self.open_file(path, entry)).mark(f"file-{path}")  # named "notes.md 38 B"
        else:
            what = "a link, not followed" if entry.kind == "link" else "not a regular file"
            with ui.row().classes("hh-tree-row text-grey-6").style(indent):
                ui.icon("link" if entry.kind == "link" else "block", size="1.1rem").classes("ml-5")
                ui.label(f"{entry.name} ({what})").classes("hh-wrap").mark(f"other-{path}")

    async def toggle(self, path: str, row: ui.row, children: ui.column, icon: ui.icon, depth: int) -> None:
        opening = not children.visible
        children.set_visibility(opening)
        icon.name = "expand_more" if opening else "chevron_right"
        row.props["aria-expanded"] = "true" if opening else "false"  # a screen reader says open or closed
        if not opening:
            return
        if path not in self.opened:
            self.opened[path] = (children, icon)
            with children:
                ui.label("listing…").classes("text-grey-6")
            await self.fill(children, path, depth)

    async def open_file(self, path: str, entry: FileEntry) -> None:
        self.viewer.clear()
        with self.viewer:
            title = ui.label(f"{path} · {entry.size:,} bytes · modified {when(entry.modified)} UTC")
            title.classes("hh-mono hh-wrap text-grey-4").mark("file-title")
            if entry.size > STATE_FILE_CAP:
                ui.label(f"too big to show here: files up to {STATE_FILE_CAP:,} bytes are").classes(
                    "text-warning"
                ).mark("file-too-big")
                return
        result = await act(f"read {path}", self.hive.lifecycle.read_state_file(self.name, path))
        if result is None:
            return
        title.set_text(f"{path} · {result.size:,} bytes · modified {when(entry.modified)} UTC")
        with self.viewer:
            if result.binary:
                ui.label(f"binary file ({result.size:,} bytes): not shown").classes("text-warning").mark("file-binary")
            elif not result.text:
                ui.label("(empty file)").classes("text-grey-6").mark("file-empty")
            else:
                text_block(result.text, "file")


PEER_TEXT = (
    "A peer: a Claude Code session outside the hive (the operator's own terminal, say) that messages the "
    "swarm like an agent, under the allow-lists below. The hive runs nothing of it: no sandbox, no log, no "
    "state dir. Its Claude Code fetches a short-lived token with `hive peer token` each time it connects; "
    "`hive peer remove {name}` revokes it at once."
)


def peer_page(hive: HiveView, name: str) -> None:
    """A peer's page: what a peer is, and its applied config (its allow-lists)."""
    ui.label(PEER_TEXT.format(name=name)).classes("text-grey-5 max-w-3xl").mark("peer-note")
    applied_config(hive, name)


def applied_config(hive: HiveView, name: str) -> None:
    """Its applied agent.toml, loaded once the page is shown."""
    config = ui.code("", language="toml").classes("w-full").mark("config")

    async def load() -> None:
        result = await act("config", hive.call(hive.lifecycle.agent_config(name)))
        if result:
            config.set_content(result.agent_toml)

    ui.timer(0.1, load, once=True)


def stats_summary(turns: list[Turn]) -> str:
    """'3 turns · 1 error · avg 4.2 s · p95 9.0 s · tokens 900 in / 40 out · $0.0123'."""
    if not turns:
        return ""
    durations = sorted(t.ended_at - t.started_at for t in turns)
    p95 = durations[min(len(durations) - 1, int(len(durations) * 0.95))]
    errors = sum(not t.ok for t in turns)
    return (
        f"{plural(len(turns), 'turn')} · {plural(errors, 'error')}"
        f" · avg {sum(durations) / len(durations):.1f} s · p95 {p95:.1f} s"
        f" · tokens {sum(t.tokens_in for t in turns):,} in / {sum(t.tokens_out for t in turns):,} out"
        f" · ${sum(t.cost_usd for t in turns):.4f}"
    )


def stats_panel(hive: HiveView, name: str) -> None:
    summary = ui.label("").classes("hh-wrap").mark("stats-summary")
    tools = ui.label("").classes("hh-wrap text-grey-5").mark("stats-tools")
    empty = ui.column().classes("gap-1")
    charts = ui.row().classes("w-full")

    async def load() -> None:
        result = await act("stats", hive.call(hive.lifecycle.agent_stats(name)))
        if not result:
            return
        turns = result.turns
        empty.clear()
        charts.clear()
        summary.set_text(stats_summary(turns))
        calls = result.summary.tool_calls  # most used first
        tools.set_text(
            "top tools: " + ", ".join(f"{tool} ×{count}" for tool, count in list(calls.items())[:5]) if calls else ""
        )
        if not turns:
            with empty:
                ui.label("no turns recorded yet").classes("text-grey-4").mark("stats-empty")
                ui.label(
                    "its harness reports each turn once it has taken one: turns, time, tokens, cost and tools show here"
                ).classes("text-grey-6 hh-wrap")
            return
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
            _chart("tool calls", list(calls), [{"type": "bar", "data": list(calls.values())}])
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
    ).classes("hh-chart h-56")
