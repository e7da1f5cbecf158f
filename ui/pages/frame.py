"""The frame around every page: navigation, the "unreachable" banner, the pending questions (a
badge in the header, a drawer), toasts; the page under it follows the URL (one NiceGUI
single-page app)."""

from __future__ import annotations

import json
from typing import Literal

from nicegui import app, ui

from hyperhive.ui.hive_view import HiveView, Notice
from hyperhive.ui.pages.agent import agent_page
from hyperhive.ui.pages.approvals import APPROVALS_CSS, approvals_page
from hyperhive.ui.pages.messages import messages_page
from hyperhive.ui.pages.questions import QUESTIONS_CSS, QuestionQueue, questions_page
from hyperhive.ui.pages.repos import REPOS_CSS, repo_page, repos_page
from hyperhive.ui.pages.shared import shared_page
from hyperhive.ui.pages.swarm import SWARM_CSS, swarm_page


def frame(hive: HiveView) -> None:
    """The frame every page shares; the sub-page below it follows the URL."""
    ui.dark_mode(True)
    ui.add_css(
        ".hh-mono { font-family: ui-monospace, monospace; } .q-badge { text-transform: lowercase; }"
        + SWARM_CSS
        + REPOS_CSS
        + APPROVALS_CSS
        + QUESTIONS_CSS
    )
    questions = QuestionQueue(hive)

    with ui.header().classes("items-center gap-4 py-1 bg-grey-10"):
        ui.link("◆ hyperhive", "/").classes("text-lg text-white no-underline")
        ui.link("swarm", "/").classes("text-white")
        approvals_link = ui.link("approvals", "/approvals").classes("text-white")
        questions_link = ui.link("questions", "/questions").classes("text-white")
        ui.link("messages", "/messages").classes("text-white")
        ui.link("repos", "/repos").classes("text-white")
        ui.link("shared", "/shared").classes("text-white")
        ui.space()
        questions.button()
        ui.button(icon="notifications", on_click=_enable_desktop_notifications).props("flat dense round").tooltip(
            "desktop notifications"
        )
        ui.button("log out", on_click=_logout).props("flat dense")
    banner = ui.label().classes("w-full bg-negative text-white p-2").mark("banner")

    def show_reachability(reachable: dict[str, bool]) -> None:
        down = [server for server, up in reachable.items() if not up]
        banner.set_text(f"{', '.join(down)} unreachable: retrying every second" if down else "")
        banner.set_visibility(bool(down))

    def show_counts(*_: object) -> None:
        approvals_link.set_text(f"approvals ({len(hive.state.approvals)})" if hive.state.approvals else "approvals")
        questions_link.set_text(f"questions ({len(hive.state.questions)})" if hive.state.questions else "questions")

    def notify(notice: Notice) -> None:
        colour: Literal["negative", "warning", "info"] = (
            "negative" if notice.kind == "crash" else "warning" if notice.kind == "question" else "info"
        )
        ui.notify(f"{notice.title}: {notice.body}", type=colour, position="top-right", close_button="ok")
        ui.run_javascript(
            'if ("Notification" in window && Notification.permission === "granted") '
            f"new Notification({json.dumps(notice.title)}, {{body: {json.dumps(notice.body)}}});"
        )

    show_reachability(hive.state.reachable)
    show_counts()
    questions.show(hive.state.questions)
    hive.reachability_changed.subscribe(show_reachability)
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
                "/repos": repos_page,
                "/repos/{name}": repo_page,
                "/shared": shared_page,
            },
            data={"hive": hive},  # each page's `hive` parameter
        )


def _enable_desktop_notifications() -> None:
    ui.run_javascript('if ("Notification" in window) Notification.requestPermission()')
    ui.notify("desktop notifications: allow them in the browser's prompt")


def _logout() -> None:
    app.storage.user.clear()
    ui.navigate.to("/login")
