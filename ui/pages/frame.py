"""The frame around every page: navigation, each server's health and how fresh the view is, the
"unreachable" banner, the pending questions (a badge in the header, a drawer), toasts; the page
under it follows the URL (one NiceGUI single-page app)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Final

from nicegui import app, ui

from hyperhive.servers.common.formatting import duration
from hyperhive.ui.hive_view import STALE_SECONDS, Health, HiveView, Notice, ServerHealth
from hyperhive.ui.pages.agent import agent_page
from hyperhive.ui.pages.approvals import APPROVALS_CSS, approvals_page
from hyperhive.ui.pages.message_list import MESSAGE_LIST_CSS
from hyperhive.ui.pages.messages import messages_page
from hyperhive.ui.pages.questions import QUESTIONS_CSS, QuestionQueue, questions_page
from hyperhive.ui.pages.repos import REPOS_CSS, repo_page, repos_page
from hyperhive.ui.pages.shared import shared_page
from hyperhive.ui.pages.swarm import SWARM_CSS, swarm_page
from hyperhive.ui.pages.terminal import terminal_page
from hyperhive.ui.pages.widgets import STALE_CSS, ToastKind, stale_when, toast

HEALTH_LOOK: Final = {
    "up": ("positive", "check_circle"),
    "slow": ("warning", "hourglass_top"),
    "down": ("negative", "error"),
}
HEALTH_CSS: Final = ".hh-health { font-size: 13px; } .hh-health .q-chip__icon { font-size: 15px; }"
# The header's pages: on a phone (under Quasar's 600 px breakpoint, `xs`) they, "updated N s ago", the
# notifications button and log out fold into the menu button; the health summary and the questions
# badge stay in the header.
NAV: Final = (
    ("swarm", "/"),
    ("approvals", "/approvals"),
    ("questions", "/questions"),
    ("messages", "/messages"),
    ("repos", "/repos"),
    ("shared", "/shared"),
)
MENU_CSS: Final = (
    " .hh-menu-link { display: flex; align-items: center; min-height: 40px; padding: 0 16px;"
    " color: #fff; text-decoration: none; font-size: 15px; }"
    " .hh-menu-link:hover, .hh-menu-link:focus-visible { background: rgba(255, 255, 255, 0.1); }"
)
TROUBLE: Final[tuple[Health, ...]] = ("down", "slow")  # worst first


def health_summary(health: Mapping[str, ServerHealth]) -> tuple[Health, str]:
    """Every server's health in one word for a phone's header: ("up", "all up"), ("down", "forge
    down"), ("slow", "2 slow"): the worst state and who is in it."""
    for state in TROUBLE:
        servers = [server for server, h in health.items() if h.state == state]
        if servers:
            return state, f"{servers[0] if len(servers) == 1 else len(servers)} {state}"
    return "up", "all up"


def frame(hive: HiveView) -> None:
    """The frame every page shares; the sub-page below it follows the URL."""
    ui.dark_mode(True)
    ui.add_css(
        ".hh-mono { font-family: ui-monospace, monospace; } .q-badge { text-transform: lowercase; }"
        + SWARM_CSS
        + REPOS_CSS
        + STALE_CSS
        + HEALTH_CSS
        + MESSAGE_LIST_CSS
        + APPROVALS_CSS
        + QUESTIONS_CSS
        + MENU_CSS
    )
    questions = QuestionQueue(hive)
    stale_when(hive, questions.list, "operator")

    links: dict[str, list[ui.link]] = {text: [] for text, _ in NAV}  # the header's and the menu's
    with ui.header().classes("items-center gap-x-4 gap-y-1 py-1 bg-grey-10 wrap"):
        ui.link("◆ hyperhive", "/").classes("text-lg text-white no-underline")
        for text, path in NAV:
            links[text].append(ui.link(text, path).classes("text-white gt-xs"))
        ui.space()
        summary = ui.chip().props("dense square").classes("xs").mark("health-summary")
        questions.button()
        with ui.row().classes("items-center gap-0 wrap gt-xs").mark("health"):
            chips: dict[str, tuple[ui.chip, ui.tooltip]] = {}
            for server in hive.state.health:
                with ui.chip(server).props("dense square").classes("hh-health").mark(f"health-{server}") as chip:
                    chips[server] = chip, ui.tooltip()
        updated = ui.label().classes("text-grey-4 hh-health gt-xs").mark("updated")
        ui.button(icon="notifications", on_click=_enable_desktop_notifications).props(
            'flat dense round aria-label="desktop notifications"'
        ).classes("gt-xs").tooltip("desktop notifications")
        ui.button("log out", on_click=_logout).props("flat dense").classes("gt-xs")
        menu = ui.button(icon="menu").props('flat dense round aria-label="menu"').classes("xs").mark("menu")
        with menu, ui.menu().props("auto-close").classes("bg-grey-10").mark("nav-menu"):
            for text, path in NAV:
                links[text].append(ui.link(text, path).props("role=menuitem").classes("hh-menu-link"))
            with ui.item().classes("text-grey-4"):
                menu_updated = ui.item_label().mark("menu-updated")
            ui.menu_item("desktop notifications", on_click=_enable_desktop_notifications)
            ui.menu_item("log out", on_click=_logout)
    banner = ui.label().classes("w-full bg-negative text-white p-2").mark("banner")

    def show_health(*_: object) -> None:
        """The chips, "updated N s ago" and the banner: on a change of health, and every second."""
        now = time.monotonic()
        for server, health in hive.state.health.items():
            chip, tooltip = chips[server]
            colour, icon = HEALTH_LOOK[health.state]
            chip.props(f"color={colour} icon={icon}")
            chip.classes(replace=f"hh-health hh-health-{health.state}")
            tooltip.set_text(health.describe(server, now))
        state, text = health_summary(hive.state.health)
        colour, icon = HEALTH_LOOK[state]
        summary.props(f"color={colour} icon={icon}")
        summary.classes(replace=f"xs hh-health hh-health-{state}")
        summary.set_text(text)
        updated_at = hive.state.updated_at()
        if updated_at is None:
            fresh = "waiting for the servers"
        else:
            ago = now - updated_at
            fresh = "updated just now" if ago < STALE_SECONDS else f"updated {duration(ago)} ago"
        updated.set_text(fresh)
        menu_updated.set_text(fresh)
        down = [_trouble(server, health, now) for server, health in hive.state.health.items() if not health.fresh]
        banner.set_text(f"{' · '.join(down)}: retrying" if down else "")
        banner.set_visibility(bool(down))

    def show_counts(*_: object) -> None:
        for text, waiting in (("approvals", hive.state.approvals), ("questions", hive.state.questions)):
            for link in links[text]:
                link.set_text(f"{text} ({len(waiting)})" if waiting else text)

    def notify(notice: Notice) -> None:
        colour: ToastKind = "negative" if notice.kind == "crash" else "warning" if notice.kind == "question" else "info"
        toast(f"{notice.title}: {notice.body}", colour)
        ui.run_javascript(
            'if ("Notification" in window && Notification.permission === "granted") '
            f"new Notification({json.dumps(notice.title)}, {{body: {json.dumps(notice.body)}}});"
        )

    show_health()
    show_counts()
    questions.show(hive.state.questions)
    hive.health_changed.subscribe(show_health)
    ui.timer(1.0, show_health)  # the seconds in "updated N s ago" and the banner
    hive.questions_changed.subscribe(show_counts)
    hive.questions_changed.subscribe(questions.show)
    hive.approvals_changed.subscribe(show_counts)
    hive.notice.subscribe(notify)
    with ui.column().classes("w-full p-4 gap-3"):
        ui.sub_pages(
            {
                "/": swarm_page,
                "/approvals": approvals_page,
                "/questions": questions_page,
                "/messages": messages_page,
                "/agent/{name}": agent_page,
                "/agent/{name}/terminal": terminal_page,
                "/repos": repos_page,
                "/repos/{name}": repo_page,
                "/shared": shared_page,
            },
            data={"hive": hive},  # each page's `hive` parameter
        ).classes("w-full")  # pages are as wide as the window, not as their content


def _enable_desktop_notifications() -> None:
    ui.run_javascript('if ("Notification" in window) Notification.requestPermission()')
    toast("desktop notifications: allow them in the browser's prompt")


def _trouble(server: str, health: ServerHealth, now: float) -> str:
    """A down server for the banner: "broker not answering for 4s", "approvals unreachable for 12s"."""
    silent = health.silent_for(now)
    return f"{server} {health.trouble}" + (f" for {duration(silent)}" if silent is not None else "")


def _logout() -> None:
    app.storage.user.clear()
    ui.navigate.to("/login")
