"""Questions to the operator: a card with an answer form and a countdown (in every page's frame);
the history on /questions."""

from __future__ import annotations

import time
from typing import Any

from nicegui import ui

from hyperhive.servers.common.formatting import epoch
from hyperhive.servers.operator.models import PendingQuestion
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.widgets import act, section, toast


def question_card(hive: HiveView, question: PendingQuestion) -> ui.card:
    """A pending question with its answer form and a countdown, for the strip at the top of every page."""
    qid = question.id
    deadline = epoch(question.expires_at)
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
    ui.label("pending questions are at the top of every page").classes("text-grey-6")
    section("history")
    history = ui.column().classes("w-full gap-1 hh-mono")

    async def load() -> None:
        result = await act("history", hive.call(hive.operator.question_history(50)))
        history.clear()
        with history:
            for q in result.questions if result else []:
                asked = f"#{q.id} {q.asker} → {q.to}: {q.question}"
                ui.label(f"{asked} · {q.state}: {q.answer or '-'}")

    ui.timer(0.1, load, once=True)
    hive.questions_changed.subscribe(lambda _: load())
