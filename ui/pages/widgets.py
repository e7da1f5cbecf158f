"""What every page uses: an operator action's toasts, a confirmation, a section title."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from fastmcp.exceptions import ToolError
from nicegui import context, ui

from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.formatting import Outcome

R = TypeVar("R")
ToastKind = Literal["positive", "negative", "info", "warning"]
Toast = tuple[str, ToastKind]  # a toast's text and colour, when success is not all a result can say
_POSITIVE: ToastKind = "positive"
OUTCOME_TOASTS: dict[Outcome, ToastKind] = {"done": "positive", "waiting": "info", "failed": "negative"}


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


def section(title: str) -> None:
    ui.label(f"◆ {title}").classes("text-lg text-grey-4")
