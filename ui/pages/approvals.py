"""The manager's requests: each with its reason, commit message, a spawn's summary or a change's
diff, and its widenings flagged risky; approve or deny with a note. The history below, each line
expanding to its diff; a failed approval is red, never shown as approved."""

from __future__ import annotations

from collections.abc import Sequence

from nicegui import ui

from hyperhive.servers.approvals.models import Request
from hyperhive.servers.common.formatting import (
    age,
    approval_outcome,
    request_kind,
    request_title,
    summary_rows,
    when,
)
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.widgets import OUTCOME_TOASTS, Toast, act, check_as_typed, section, stale_when, while_shown

APPROVALS_CSS = (
    " .hh-why { white-space: pre-wrap; overflow-wrap: anywhere; min-width: 0; }"
    " .hh-summary { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; }"
    " .hh-summary > * { overflow-wrap: anywhere; min-width: 0; }"
)
DENY_HINT = "required to deny: the manager reads why"
# How a resolved request reads in the history: its colour says how it ended.
STATE_COLOURS = {"applied": "text-positive", "denied": "text-warning", "failed": "text-negative"}


def approvals_page(hive: HiveView) -> None:
    section("approvals")
    empty = ui.label("no requests waiting").classes("text-grey-5")
    pending = ui.column().classes("w-full gap-3")
    stale_when(hive, pending, "approvals")
    # Each request's card, kept while the request stays as it was shown: rebuilding every card on
    # each change lost a click on a button that was just replaced, and the deny note being typed.
    cards: dict[int, tuple[Request, ui.card]] = {}

    def show(requests: Sequence[Request]) -> None:
        wanted = {request.id: request for request in requests}
        for rid, (shown, card) in list(cards.items()):
            if wanted.get(rid) != shown:
                pending.remove(card)
                del cards[rid]
        for index, request in enumerate(requests):
            if request.id not in cards:
                with pending:
                    cards[request.id] = (request, approval_card(hive, request))
            card = cards[request.id][1]
            if pending.default_slot.children.index(card) != index:
                card.move(target_index=index)
        empty.set_visibility(not requests)

    show(hive.state.approvals)
    while_shown(hive.approvals_changed, show)
    section("history")
    history = ui.column().classes("w-full gap-0")

    async def load_history() -> None:
        result = await act("history", hive.call(hive.approvals.approval_history(50)))
        history.clear()
        with history:
            for request in result.requests if result else []:
                history_line(request)

    ui.timer(0.1, load_history, once=True)
    while_shown(hive.approvals_changed, lambda _: load_history())


def history_line(request: Request) -> None:
    """One resolved request: how it ended (coloured) in its title, its diff and reason inside."""
    outcome = request.state + (f": {request.note}" if request.note else "")
    outcome += f": {request.error}" if request.error else ""
    title = f"{request_title(request)} · {outcome} · by {request.resolved_by or '-'} · {when(request.resolved_at)}"
    colour = STATE_COLOURS.get(request.state, "")
    with (
        ui.expansion(title, icon="error" if request.state == "failed" else None)
        .classes(f"w-full hh-mono {colour}")
        .props("dense")
        .mark(f"history-{request.id}")
    ):
        explanation(request)
        if request.diff:
            ui.code(request.diff, language="diff").classes("w-full")


def explanation(request: Request) -> None:
    """Why the manager asks (its reason) and what its commit says."""
    if request.reason:
        with ui.row().classes("w-full no-wrap gap-2"):
            ui.label("why").classes("text-grey-5 shrink-0")
            ui.label(request.reason).classes("hh-why").mark(f"reason-{request.id}")
    if request.message:
        with ui.row().classes("w-full no-wrap gap-2"):
            ui.label("commit").classes("text-grey-5 shrink-0")
            ui.label(request.message).classes("hh-why hh-mono").mark(f"message-{request.id}")


def approved(request: Request) -> Toast:
    """What approving did: applied (green), approved but not yet carried out, or failed with why (red)."""
    outcome, how = approval_outcome(request)
    return f"#{request.id} {outcome}", OUTCOME_TOASTS[how]


def approval_card(hive: HiveView, request: Request) -> ui.card:
    rid = request.id
    with ui.card().classes("w-full").mark(f"request-{rid}") as card:
        with ui.row().classes("items-center w-full"):
            ui.label(f"#{rid} {request_kind(request.kind)} · {request.agent}").classes("text-lg")
            ui.label(f"asked by {request.requested_by} {age(request.requested_at)} ago").classes("text-grey-5")
            if request.widenings:
                ui.badge(f"risky: widens {len(request.widenings)}", color="warning").props("text-color=black").mark(
                    f"risky-{rid}"
                )
            if request.state == "approving":
                ui.badge("being carried out", color="info")
        explanation(request)
        for widening in request.widenings:  # what the new config may do that the old could not
            ui.label(f"widens {widening}").classes("text-warning text-weight-bold hh-why").mark(f"widening-{rid}")
        if request.summary is not None:  # a new agent: what it would be, read from its agent.toml
            with ui.element("div").classes("hh-summary w-full").mark(f"summary-{rid}"):
                for row in summary_rows(request.summary):
                    ui.label(row.label).classes("text-grey-5")
                    with ui.row().classes("items-center gap-2"):
                        ui.label(row.value).classes("text-warning text-weight-bold" if row.risky else "")
                        if row.risky:
                            ui.badge("risky", color="warning").props("text-color=black").mark(
                                f"risky-{rid}-{row.label}"
                            )
            if request.diff:
                lines = request.diff.count("\n")
                with ui.expansion(f"the config as a diff ({lines} lines)").classes("w-full").props("dense"):
                    ui.code(request.diff, language="diff").classes("w-full")
        elif request.diff:
            ui.code(request.diff, language="diff").classes("w-full")
        with ui.row().classes("items-center w-full"):

            async def approve() -> None:
                approve_button.props("loading")  # carrying out a spawn or rebuild takes seconds
                await act(f"approve #{rid}", hive.call(hive.approvals.approve(rid)), approved)
                if not approve_button.is_deleted:  # the card usually goes with the request it showed
                    approve_button.props(remove="loading")

            approve_button = ui.button("approve", color="positive", on_click=approve).mark(f"approve-{rid}")
            note = ui.input("why not (shown to the manager)").props("dense").classes("w-96 max-w-full")
            note.props(f'hint="{DENY_HINT}"').mark(f"note-{rid}")

            async def deny() -> None:
                why = (note.value or "").strip()
                if not why:
                    return  # the button is disabled until a reason is typed
                await act(f"deny #{rid}", hive.call(hive.approvals.deny(rid, why)), f"#{rid} denied")

            deny_button = ui.button("deny", color="negative", on_click=deny).props("outline").mark(f"deny-{rid}")
            check_as_typed(note, lambda _: None, deny_button)  # required: deny waits for a reason
    return card
