"""What the dashboard tests share besides fixtures."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Callable
from typing import Final

from nicegui.testing import User

from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.message_list import MessageListElement, MessageRowData
from hyperhive.ui.pages.swarm_table import SwarmRowData, SwarmTableElement

LOGIN_CODE: Final = "one-time-code-of-this-test"  # the dashboard's one-time login code in these tests


async def log_in(user: User, password: str, path: str = "/") -> None:
    # The simulated browser takes the method calls a DeltaElement's component answers (ui/pages/delta_element.py).
    user.javascript_rules[re.compile(r"return runMethod\(")] = lambda _: True
    await user.open(f"/login?redirect_to={path}")
    user.find(marker="secret").type(password)
    user.find(marker="login").click()
    await user.should_see("log out", retries=100)  # the frame's: only a logged-in page has it
    if path == "/":
        await user.should_see("◆ swarm", retries=100)


def the_hive() -> HiveView:
    """The dashboard's HiveView of this test (call it once logged in): an earlier test's, still in
    memory, has no page following it any more."""
    [hive] = [o for o in gc.get_objects() if isinstance(o, HiveView) and o.health_changed.callbacks]
    return hive


# ------------------------------------------------------------------------------------- swarm rows
# The swarm table is one element rendered in the browser (ui/pages/swarm_table.js): its rows and
# cells are not elements the simulated user can find. These read a cell from the row's data, as the browser shows
# it, and click through the events its buttons send. A "cell marker" is CELL-AGENT, e.g. state-alice.
CELLS: Final[dict[str, Callable[[SwarmRowData], str | None]]] = {
    "state": lambda row: row.health(),
    "host": lambda row: row.host or None,  # a hive across hosts only
    "role": lambda row: row.role,
    "model": lambda row: None if row.peer else row.model,  # a peer's model is not a button
    "turns": lambda row: str(row.turns),
    "avg": lambda row: row.avg,
    "cost": lambda row: row.cost,
    "tools": lambda row: row.tools,
    "inbox": lambda row: str(row.inbox),
    "reminders": lambda row: str(row.reminders),
    "delivered": lambda row: str(row.delivered),
    "last-turn": lambda row: row.last_turn(),
    # the controls a row shows for its state
    **{
        control: (lambda row, control=control: control if control in row.controls else None)
        for control in ("update", "cancel", "start", "stop")
    },
    "select": lambda row: None if row.peer else "",
}


def _cell(marker: str) -> tuple[str, str]:
    cell = next((cell for cell in sorted(CELLS, key=len, reverse=True) if marker.startswith(cell + "-")), None)
    assert cell is not None, f"{marker}: not a swarm cell ({', '.join(CELLS)})"
    return cell, marker[len(cell) + 1 :]


def swarm_table(user: User) -> SwarmTableElement:
    assert user.client is not None
    [table] = [e for e in user.client.elements.values() if isinstance(e, SwarmTableElement)]
    return table


def swarm_view(user: User) -> list[tuple[str, str]]:
    """What the swarm table shows, in order: ("row", NAME) and ("group", LABEL); [] when hidden."""
    table = swarm_table(user)
    if not (table.visible and all(e.visible for e in table.ancestors())):
        return []
    return list(table.view)


def swarm_order(user: User) -> list[str]:
    """The names of the rows the swarm shows, in its order."""
    return [name for kind, name in swarm_view(user) if kind == "row"]


def swarm_row(user: User, name: str) -> SwarmRowData | None:
    """Agent `name`'s row, if the swarm shows it (not filtered out)."""
    return swarm_table(user).rows.get(name) if ("row", name) in swarm_view(user) else None


def swarm_text(user: User, marker: str) -> str:
    cell, name = _cell(marker)
    row = swarm_row(user, name)
    assert row is not None, f"no row for {name}"
    text = CELLS[cell](row)
    assert text is not None, f"{name}'s row shows no {cell}"
    return text


async def swarm_see(user: User, marker: str, content: str = "", *, shown: bool = True, retries: int = 3) -> None:
    """Like user.should_see / should_not_see (shown=False) for a swarm cell: `state-alice` with "running"."""
    cell, name = _cell(marker)
    text: str | None = None
    for _ in range(retries):
        row = swarm_row(user, name)
        text = CELLS[cell](row) if row is not None else None
        if (text is not None and content in text) == shown:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"expected {'' if shown else 'not '}to see {cell} of {name} with {content!r}; it shows {text!r}"
    )


def swarm_click(user: User, marker: str) -> None:
    """Click a row's control or menu item (`stop-alice`, `destroy-alice`, `model-alice`), or its checkbox
    (`select-alice`, which toggles)."""
    action, name = marker.split("-", 1)
    row = swarm_row(user, name)
    assert row is not None, f"no row for {name}"
    table = user.find(marker="swarm-table")
    if action == "select":
        table.trigger("select", [name, name not in swarm_table(user).selected])
        return
    assert not row.peer, f"{name} is a peer: its row has no controls"
    offered = ("model", *row.controls, *(item for item, enabled in row.menu if enabled))
    assert action in offered, f"{name}'s row offers no {action} now, only {', '.join(offered)}"
    table.trigger("act", [name, action])


# ------------------------------------------------------------------------------------ message lists
# A list of messages is one element rendered in the browser (ui/pages/message_list.js): these read
# its rows (newest first) and wait for one, by the list's marker: flow, inbox, search-results,
# thread-panel, agent-inbox-list.
def message_list(user: User, marker: str) -> MessageListElement:
    [listing] = user.find(marker=marker).elements
    assert isinstance(listing, MessageListElement), f"{marker} is not a list of messages"
    return listing


def message_rows(user: User, marker: str) -> list[MessageRowData]:
    return message_list(user, marker).shown()


async def list_says(user: User, marker: str, text: str, *, shown: bool = True, retries: int = 50) -> None:
    """Like user.should_see (shown=False: should_not_see) within a list of messages: a row shows `text`."""
    for _ in range(retries):
        if any(text in said for row in message_rows(user, marker) for said in row.texts()) == shown:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{marker}: expected {'a' if shown else 'no'} row showing {text!r}")


async def message_shown(
    user: User,
    marker: str,
    message_id: int,
    check: Callable[[MessageRowData], bool] = lambda _: True,
    retries: int = 50,
) -> MessageRowData:
    """Message `message_id`'s row in list `marker` once it is there and passes `check`."""
    row: MessageRowData | None = None
    for _ in range(retries):
        row = message_list(user, marker).rows.get(message_id)
        if row is not None and check(row):
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"{marker}: message {message_id} is not shown as expected; its row: {row}")
