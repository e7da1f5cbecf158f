"""Questions to the operator: a badge with their count in every page's header, a drawer listing them
(each with its answer form, a countdown and a link to the asker's messages), the count in the tab
title; the history on /questions."""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import urlencode

from nicegui import context, ui

from hyperhive.servers.common.formatting import countdown, epoch
from hyperhive.servers.operator.models import PendingQuestion
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.widgets import act, section, toast, while_shown

TITLE: Final = "hyperhive"
URGENT_SECONDS: Final = 300  # under 5 minutes left, the countdown turns red
QUESTIONS_CSS: Final = (
    " .hh-question { border-left: 4px solid var(--q-warning); }"
    " .hh-question-text { white-space: pre-wrap; overflow-wrap: anywhere; }"
)


def tab_title(count: int) -> str:
    """The browser tab's title: the number of questions waiting first, '(2) hyperhive'."""
    return f"({count}) {TITLE}" if count else TITLE


def thread_link(question: PendingQuestion) -> str:
    """Where the asker's conversation is: the thread of the message it asks about (`about`), else the
    messages page filtered to the asker."""
    if question.about is not None:
        return "/messages?" + urlencode({"thread": question.about})
    return "/messages?" + urlencode({"agent": question.asker})


class QuestionQueue:
    """The header's badge and the drawer of pending questions; a half-typed answer survives updates."""

    def __init__(self, hive: HiveView) -> None:
        self.hive = hive
        with ui.right_drawer(value=False, fixed=True, bordered=True).props("width=360 overlay") as drawer:
            drawer.classes("bg-grey-10 p-3").mark("questions-drawer")
            with ui.row().classes("items-center w-full"):
                self.heading = ui.label("questions").classes("text-lg")
                ui.space()
                ui.link("history", "/questions").classes("text-grey-4")
                ui.button(icon="close", on_click=drawer.hide).props("flat dense round aria-label=close").tooltip(
                    "close"
                )
            self.empty = ui.label("no questions waiting").classes("text-grey-5")
            self.list = ui.column().classes("w-full gap-2")
        self.drawer = drawer
        self.client = context.client  # this page's: the tab whose title counts the questions
        self.cards: dict[int, ui.card] = {}

    def button(self) -> None:
        """The header's button: a badge with the count; it opens and closes the drawer."""
        with (
            ui.button(icon="help_outline", on_click=self.drawer.toggle)
            .props("flat dense round aria-label=questions")
            .mark("questions-button") as self.toggle
        ):
            self.badge = ui.badge("", color="warning").props("floating text-color=black").mark("questions-count")
        self.toggle.tooltip("questions waiting for you")

    def show(self, questions: list[PendingQuestion]) -> None:
        """Add new questions' cards and drop answered ones (a toast says when one arrives)."""
        count = len(questions)
        self.badge.set_text(str(count))
        self.badge.set_visibility(bool(count))
        # its name says what it shows, the count as a word of its own (axe: label-content-name-mismatch)
        self.toggle.props(f'aria-label="questions, {count} waiting"' if count else "aria-label=questions")
        self.heading.set_text(f"questions ({count})" if count else "questions")
        self.empty.set_visibility(not count)
        with self.client:  # an update may come in another client's context
            ui.page_title(tab_title(count))
        pending = {q.id for q in questions}
        for qid in [qid for qid in self.cards if qid not in pending]:
            self.cards.pop(qid).delete()
        new = [question for question in questions if question.id not in self.cards]
        for question in new:
            with self.list:
                self.cards[question.id] = question_card(self.hive, question)
        if not count:
            self.drawer.hide()


def question_card(hive: HiveView, question: PendingQuestion) -> ui.card:
    """A pending question with its answer form, a countdown and a link to the asker's messages."""
    qid = question.id
    deadline = epoch(question.expires_at)
    with ui.card().classes("w-full hh-question").props("flat bordered").mark(f"question-{qid}") as card:
        with ui.row().classes("items-center w-full no-wrap gap-2"):
            ui.label(f"#{qid}").classes("text-grey-5")
            ui.link(question.asker, thread_link(question)).classes("font-bold").mark(f"asker-{qid}").tooltip(
                f"{question.asker}'s messages"
            )
            ui.space()
            timer_chip = ui.chip("", icon="timer").props("dense").mark(f"ttl-{qid}")

            def tick() -> None:
                left = deadline - time.time()
                timer_chip.set_text(countdown(left))
                urgent = left < URGENT_SECONDS
                timer_chip.props(f"color={'negative' if urgent else 'grey-8'} text-color=white")

            tick()
            ui.timer(1.0, tick)
        ui.label(question.question).classes("hh-question-text w-full")
        with ui.row().classes("items-center w-full gap-2"):
            options = question.options
            if options:
                answer: Any = ui.select(options, multiple=bool(question.multi), label="answer").props("dense")
                answer.classes("grow").mark(f"answer-{qid}")
            else:
                answer = ui.input("answer").props("dense").classes("grow").mark(f"answer-{qid}")

            async def send() -> None:
                value = answer.value  # several options of a multi question go as a list
                if not value:
                    toast("pick or write an answer first", "warning")
                    return
                await act(f"answer #{qid}", hive.call(hive.operator.answer(qid, value)), f"#{qid} answered")

            ui.button("answer", on_click=send).props("dense").mark(f"send-{qid}")
            ui.button(
                "cancel",
                on_click=lambda: act(
                    f"cancel #{qid}", hive.call(hive.operator.cancel_question(qid)), f"#{qid} cancelled"
                ),
            ).props("flat dense").mark(f"cancel-question-{qid}")
    return card


def questions_page(hive: HiveView) -> None:
    section("questions")
    ui.label("pending questions are in the drawer the header's ? button opens").classes("text-grey-5")
    section("history")
    history = ui.column().classes("w-full gap-1 hh-mono")

    async def load() -> None:
        result = await act("history", hive.call(hive.operator.question_history(50)))
        history.clear()
        with history:
            for q in result.questions if result else []:
                asked = f"#{q.id} {q.asker} → {q.to}: {q.question}"
                ui.label(f"{asked} · {q.state}: {q.answer or '-'}").classes("hh-question-text")

    ui.timer(0.1, load, once=True)
    while_shown(hive.questions_changed, lambda _: load())
