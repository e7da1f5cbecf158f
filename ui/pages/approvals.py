"""The manager's requests: each with its diff and widenings, approve or deny with a note; history."""

from __future__ import annotations

from collections.abc import Sequence

from nicegui import ui

from hyperhive.servers.approvals.models import Request
from hyperhive.servers.common.formatting import age, approval_outcome, request_kind, request_title, when
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.widgets import OUTCOME_TOASTS, Toast, act, section, stale_when, toast


def approvals_page(hive: HiveView) -> None:
    section("approvals")
    pending = ui.column().classes("w-full gap-3")
    stale_when(hive, pending, "approvals")

    def show(requests: Sequence[Request]) -> None:
        pending.clear()
        with pending:
            if not requests:
                ui.label("no requests waiting").classes("text-grey-6")
            for request in requests:
                approval_card(hive, request)

    show(hive.state.approvals)
    hive.approvals_changed.subscribe(show)
    section("history")
    history = ui.column().classes("w-full gap-1 hh-mono")

    async def load_history() -> None:
        result = await act("history", hive.call(hive.approvals.approval_history(50)))
        history.clear()
        with history:
            for request in result.requests if result else []:
                by = request.resolved_by or "-"
                outcome = request.state + (f": {request.note}" if request.note else "")
                outcome += f": {request.error}" if request.error else ""
                ui.label(f"{request_title(request)} · {outcome} · by {by} · {when(request.resolved_at)}")

    ui.timer(0.1, load_history, once=True)
    hive.approvals_changed.subscribe(lambda _: load_history())


def approved(request: Request) -> Toast:
    """What approving did: applied (green), approved but not yet carried out, or failed with why (red)."""
    outcome, how = approval_outcome(request)
    return f"#{request.id} {outcome}", OUTCOME_TOASTS[how]


def approval_card(hive: HiveView, request: Request) -> None:
    rid = request.id
    with ui.card().classes("w-full"):
        with ui.row().classes("items-center w-full"):
            ui.label(f"#{rid} {request_kind(request.kind)} · {request.agent}").classes("text-lg")
            ui.label(f"asked by {request.requested_by} {age(request.requested_at)} ago").classes("text-grey-6")
            if request.state == "approving":
                ui.badge("being carried out", color="info")
        for widening in request.widenings:  # what the new config may do that the old could not
            ui.label(f"widens {widening}").classes("text-warning text-weight-bold").mark(f"widening-{rid}")
        if request.diff:
            ui.code(language="diff").classes("w-full").set_content(request.diff)
        with ui.row().classes("items-center"):

            async def approve() -> None:
                approve_button.props("loading")  # carrying out a spawn or rebuild takes seconds
                await act(f"approve #{rid}", hive.call(hive.approvals.approve(rid)), approved)
                if not approve_button.is_deleted:  # the card usually goes with the request it showed
                    approve_button.props(remove="loading")

            approve_button = ui.button("approve", color="positive", on_click=approve).mark(f"approve-{rid}")
            note = ui.input("why not (shown to the manager)").props("dense").classes("w-96").mark(f"note-{rid}")

            async def deny() -> None:
                if not (note.value or "").strip():
                    toast("say why, for the manager", "warning")
                    return
                await act(f"deny #{rid}", hive.call(hive.approvals.deny(rid, note.value)), f"#{rid} denied")

            ui.button("deny", color="negative", on_click=deny).props("outline").mark(f"deny-{rid}")
