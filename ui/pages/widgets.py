"""What every page uses: the one toast, an operator action's toasts, following the hive view's events
while shown, greying out stale data, checking what is typed before it is sent, a confirmation, a
section title, a cost."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, Literal, ParamSpec, TypeVar

from fastmcp.exceptions import ToolError
from nicegui import Event, context, ui
from nicegui.element import Element
from pydantic import ValidationError

from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.formatting import Outcome
from hyperhive.servers.common.names import InvalidName, check_agent_name
from hyperhive.servers.lifecycle.models import Spend
from hyperhive.ui.hive_view import HiveView

R = TypeVar("R")
P = ParamSpec("P")
ToastKind = Literal["positive", "negative", "info", "warning"]
Toast = tuple[str, ToastKind]  # a toast's text and colour, when success is not all a result can say
_POSITIVE: ToastKind = "positive"
OUTCOME_TOASTS: dict[Outcome, ToastKind] = {"done": "positive", "waiting": "info", "failed": "negative"}
TOAST_SECONDS: Final = 6  # a success, a note or a warning fades after this; a failure stays
STALE_CSS: Final = ".hh-stale { opacity: 0.5; filter: grayscale(1); transition: opacity 0.3s; }"


def toast(text: str, kind: ToastKind = "info") -> None:
    """The dashboard's one toast (every page's, every kind): bottom-right, never over the header.

    A success, a note or a warning fades after TOAST_SECONDS; a failure stays until it is closed.
    The same toast again merges into the one shown (Quasar's `group`), which then counts the repeats.
    Call it in a page's context (a handler, an event subscriber, `with client:`).
    """
    failure = kind == "negative"
    ui.notify(
        text,
        type=kind,
        position="bottom-right",
        multi_line=failure or len(text) > 80,
        close_button="close" if failure else False,
        timeout=0 if failure else TOAST_SECONDS * 1000,
        group=f"{kind}:{text}",
    )


class _Subscription(ui.element):
    """An invisible element that holds one subscription: deleting it (with the part of the page it
    sits in) unsubscribes at once."""

    def __init__(self, event: Event[P], callback: Callable[P, Any] | Callable[[], Any]) -> None:
        super().__init__()
        self.style("display: none")  # no box, and no gap in a flex row or column
        self.event: Event[Any] = event
        self.callback: Callable[..., Any] = callback
        # Not also on the client's deletion: this element goes with the client, and so does the handler.
        event.subscribe(callback, unsubscribe_on_delete=False)

    def _handle_delete(self) -> None:  # NiceGUI's documented clean-up hook
        self.event.unsubscribe(self.callback)
        super()._handle_delete()


def while_shown(event: Event[P], callback: Callable[P, Any] | Callable[[], Any]) -> None:
    """Subscribe `callback` to `event` for as long as the part of the page this is called from is shown.

    NiceGUI unsubscribes a page's handlers when the browser tab goes; navigating to another
    sub-page deletes the page's elements long before that, and without this its handlers would stay,
    one more set with each visit. Call it where the page (or the card, the panel) is being built.
    """
    _Subscription(event, callback)


def stale_when(hive: HiveView, element: Element, *servers: str) -> None:
    """Grey `element` out (CSS class hh-stale) while what it shows from any of `servers` is stale:
    the server is down, so the view holds its last answer, not the hive as it is now."""

    def show(_: object = None) -> None:
        stale = not all(hive.is_fresh(server) for server in servers)
        element.classes(add="hh-stale" if stale else None, remove=None if stale else "hh-stale")

    show()
    while_shown(hive.health_changed, show)


Check = Callable[[str], str | None]  # what is wrong with a typed (stripped, non-empty) value, None if nothing


def agent_name_error(name: str) -> str | None:
    """What is wrong with `name` as an agent's name: the one rule every server checks (names.py)."""
    try:
        check_agent_name(name)
    except InvalidName as e:
        return str(e)
    return None


def model_error(model: str) -> str | None:
    """What is wrong with `model` as a model name: agent.toml's rule, which set_model checks too."""
    try:
        AgentConfig(model=model)
    except ValidationError as e:
        return str(e.errors()[0]["msg"]).removeprefix("Value error, ")
    return None


def check_as_typed(field: ui.input, check: Check, *buttons: ui.button, required: bool = True) -> None:
    """Say what is wrong with `field`'s value under it as the operator types (its error line), and
    enable `buttons` only while there is nothing wrong (and, if `required`, something typed): a
    mistake shows before anything is sent, not as a refusal after."""

    def typed() -> str:
        return str(field.value or "").strip()

    def error(_: object = None) -> str | None:
        return check(typed()) if typed() else None

    def enable(_: object = None) -> None:
        ok = error() is None and (bool(typed()) or not required)
        for button in buttons:
            button.set_enabled(ok)

    field.validation = error  # checked now, and at every change
    field.on_value_change(enable)
    enable()


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
    except (ToolError, ServerUnavailable, AuthRefused) as e:
        with client:
            toast(f"{what}: {e}", "negative")
        return None
    if done:
        said = done if isinstance(done, str) else done(result)
        text, kind = said if isinstance(said, tuple) else (said, _POSITIVE)
        with client:
            toast(text, kind)  # a failure (an approval whose apply failed) stays, like a refusal's
    return result


async def confirm(text: str, action: str = "confirm") -> bool:
    with ui.dialog() as dialog, ui.card():
        dialog.props(f"aria-labelledby={ui.label(text).html_id}")  # the dialog is named by its question
        with ui.row():
            ui.button("cancel", on_click=lambda: dialog.submit(False)).props("flat")
            ui.button(action, color="negative", on_click=lambda: dialog.submit(True)).mark("confirm")
    result = await dialog
    dialog.delete()
    return bool(result)


def section(title: str) -> None:
    ui.label(f"◆ {title}").classes("text-lg text-grey-4")


def spend_text(spend: Spend | None) -> str:
    """Cost today (of the daily budget) and this week: "$1.20 of $5.00 today · $8.40 this week"."""
    if spend is None:
        return ""
    budget = f" of ${spend.usd_per_day:.2f}" if spend.usd_per_day is not None else ""
    return f"${spend.today_usd:.2f}{budget} today · ${spend.week_usd:.2f} this week"


Action = Callable[[], Any]  # what a control does: a function of nothing, sync or async
E = TypeVar("E", bound=Element)


def activates(element: E, action: Action) -> E:
    """Make `element` (a label, a row) a real control rather than only a thing to click: a button to a
    screen reader (role=button, named by its text: its icons are hidden from it), in the Tab order, with
    a focus ring (look.py's .hh-clickable), and `action` on a click, on Enter and on Space (Space then
    does not scroll the page). The one way the dashboard makes anything but a button or a link act."""
    element.classes("hh-clickable cursor-pointer")  # 32 px high, and the focus ring (look.py)
    element.props["role"] = "button"
    element.props["tabindex"] = "0"
    for event in ("click", "keydown.enter", "keydown.space.prevent"):
        element.on(event, action)
    return element


def clickable(text: str, action: Action) -> ui.label:
    """A label that acts (a tree entry, a commit, a breadcrumb) without leaving the page's URL: on a
    click, or focused with Tab and Enter or Space (`activates`)."""
    return activates(ui.label(text).classes("text-primary"), action)


def breadcrumbs(row: ui.row, top: str, path: str, open_dir: Callable[[str], Awaitable[None]]) -> None:
    """`row` becomes "top/ a/ b/", each part opening its directory (`open_dir("a")`, "" for the top)."""
    row.clear()
    with row:
        clickable(f"{top}/", lambda: open_dir("")).mark("crumb-top")
        parts = path.split("/") if path else []
        for i, part in enumerate(parts):
            target = "/".join(parts[: i + 1])
            clickable(f"{part}/", partial(open_dir, target)).mark(f"crumb-{target}")


def text_block(text: str, marker: str) -> None:
    """Agent-written text, escaped, monospace and wrapped."""
    ui.html(f"<pre class='hh-diff'>{html.escape(text)}</pre>").classes("w-full").mark(marker)
