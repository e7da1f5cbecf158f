"""The swarm table: what one agent's row shows (SwarmRowData, made from the hive's state by
`row_data`) and the one element that shows them all (SwarmTableElement, rendered in the browser by
swarm_table.js).

One element for the whole table, its rows plain HTML: a NiceGUI element per cell (17 a row) made
the page with 50 agents take seconds to build in the browser, one per row still ~2.5 ms a row. A
change to an agent sends its row again (a few hundred bytes), a new order the list of names; the
relative times ("working 12s", "3m ago") tick in the browser."""

from __future__ import annotations

import time
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from hyperhive.servers.common.formatting import Health, HealthText, duration, health_text, last_turn_words
from hyperhive.servers.lifecycle.models import AgentInfo, TurnTotals
from hyperhive.ui.actions import AgentAction, can
from hyperhive.ui.hive_view import SwarmAgent
from hyperhive.ui.pages.delta_element import DeltaElement
from hyperhive.ui.pages.widgets import spend_text

HEALTH_COLOURS: Final[dict[Health, str]] = {
    "failed": "negative", "error": "negative", "unreachable": "negative", "paused": "warning",
    "restarting": "warning", "starting": "info", "working": "primary", "idle": "grey-8", "stopped": "grey-9",
    "peer": "purple",
}  # fmt: skip
MENU_ACTIONS: Final[tuple[AgentAction, ...]] = ("restart", "kill", "rebuild")  # the rarer ones, in its menu
RowControl = Literal["update", "cancel", "start", "stop"]  # what its actions cell shows, in this order
RowAction = Literal["model", "cancel", "start", "stop", "restart", "kill", "rebuild", "destroy"]


class SwarmRowData(BaseModel):
    """What one agent's row shows, as swarm_table.js reads it."""

    model_config = ConfigDict(frozen=True)

    name: str
    host: str  # the host it lives on, in a hive across hosts ("" on one host)
    peer: bool  # a Claude Code session outside the hive: nothing here steers it
    kind: Health
    colour: str  # the health badge's Quasar colour
    prefix: str  # the badge's text: prefix, the time since `since` (None: no time), suffix
    since: float | None
    suffix: str
    role: str
    model: str
    turns: int  # today's
    avg: str  # average turn time, "-" for none
    cost: str  # today's (of the daily budget)
    cost_title: str  # and this week's, on hover
    paused: bool
    tools: str  # the most used, "Bash 4, send 2"
    inbox: int  # waiting messages
    reminders: int  # pending reminders it set
    fired: int  # its reminders delivered in the last 24 h
    delivered: int  # messages it took in the last 24 h
    turn_running: bool
    last_turn_at: float | None
    controls: tuple[RowControl, ...]
    menu: tuple[tuple[RowAction, bool], ...]  # the menu's actions, each enabled or not

    def health(self, now: float | None = None) -> str:
        """The badge's text as the browser shows it at `now`."""
        return HealthText(self.kind, self.prefix, self.since, self.suffix).text(now)

    def last_turn(self, now: float | None = None) -> str:
        """When its last turn ended, as the browser shows it at `now`: "now", "3m ago", "never"."""
        return last_turn_words(self.turn_running, self.last_turn_at, now=now)

    def texts(self) -> list[str]:
        """What the row shows as text (the time as of now): for search and the tests' `should_see`."""
        numbers = [str(self.turns), self.avg, str(self.inbox), str(self.reminders), str(self.delivered)]
        texts = [self.name, self.health(), self.role, self.model, self.cost, self.tools, self.last_turn()]
        texts += [self.host] if self.host else []
        return texts + numbers + list(self.controls)


def top_tools(totals: TurnTotals | None) -> str:
    if totals is None or not totals.top_tools:
        return ""
    return ", ".join(f"{name.rsplit('__', 1)[-1]} {count}" for name, count in totals.top_tools.items())


def cost_texts(info: AgentInfo) -> tuple[str, str]:
    """Today's cost (of the budget, "paused"), and the whole spend for its hover text."""
    spend = info.spend
    if spend is None:
        return "", ""
    budget = f"/{spend.usd_per_day:.2f}" if spend.usd_per_day is not None else ""
    text = f"${spend.today_usd:.2f}{budget}" + (" paused" if spend.paused else "")
    return text, " · ".join(filter(None, [spend_text(spend), spend.paused]))


def row_data(agent: SwarmAgent, totals: TurnTotals | None) -> SwarmRowData:
    info = agent.info
    badge = health_text(info)
    turn = info.turn
    running = info.state == "running"
    controls: list[RowControl] = ["update"] if info.needs_update else []
    if turn is not None and turn.state == "running" and running:
        controls.append("cancel")
    controls += [control for control in ("start", "stop") if can(control, info)]
    cost, cost_title = cost_texts(info)
    avg = totals.avg_seconds if totals else None
    return SwarmRowData(
        name=info.name,
        host=info.host or "",
        peer=info.kind == "peer",
        kind=badge.kind,
        colour=HEALTH_COLOURS[badge.kind],
        prefix=badge.prefix,
        since=badge.since,
        suffix=badge.suffix,
        role=info.role,
        model=info.model,
        turns=totals.turns if totals else 0,
        avg=duration(avg) if avg is not None else "-",
        cost=cost,
        cost_title=cost_title,
        paused=bool(info.spend and info.spend.paused),
        tools=top_tools(totals),
        inbox=agent.pending,
        reminders=agent.pending_reminders,
        fired=agent.reminders_24h,
        delivered=agent.delivered_24h,
        turn_running=turn is not None and turn.state == "running",
        last_turn_at=turn.last_turn_at if turn else None,
        controls=tuple(controls),
        menu=(*((action, can(action, info)) for action in MENU_ACTIONS), ("destroy", True)),
    )


TableView = list[tuple[Literal["row", "group"], str]]  # what the table shows, in order: rows and group labels


class SwarmTableElement(DeltaElement, component="swarm_table.js"):
    """The swarm table: its header and every row in one element (swarm_table.js renders them).

    `rows` holds each agent's data; `view` is what shows, in order (a filtered-out row is not in it).
    Each change goes to the browser as a small method call (a DeltaElement), and only when something
    changed. The table's state is not in the element's props (NiceGUI wraps every nested dict put there in an
    observable, ~0.3 ms a row) but joins them whenever the element is sent whole (`_to_dict`: the
    page's HTML, a reconnect). Its clicks come back as events: `act` [name, action], `select`
    [name, chosen], `sort` key. The host column (key "host") shows only in a hive across hosts
    (`show_hosts`)."""

    def __init__(self, columns: list[tuple[str, str, bool]]) -> None:
        super().__init__()
        self.columns = columns
        self.hosts = False
        self.rows: dict[str, SwarmRowData] = {}
        self.row_json: dict[str, dict[str, Any]] = {}  # each row as the browser gets it
        self.view: TableView = []
        self.selected: frozenset[str] = frozenset()
        self.sort: tuple[str, bool] = ("", False)
        self.live = False
        self._props["columns"] = [list(column) for column in columns if column[1] != "host"]
        self._props["hosts"] = False
        self._props["clock"] = int(time.time() * 1000)  # the server's time: the browser's times tick against it

    def _to_dict(self) -> dict[str, Any]:
        element = super()._to_dict()
        element["props"] = {
            **element.get("props", {}),
            "rows": self.row_json,
            "view": [list(item) for item in self.view],
            "selected": sorted(self.selected),
            "sort": list(self.sort),
        }
        return element

    def go_live(self) -> None:
        """From now on send each change: call it once the page is built. What changed before goes
        with the page's HTML; sending it too would make the browser build it twice."""
        self.live = True

    def _send(self, method: str, *args: Any) -> None:
        if self.live:
            super()._send(method, *args)

    def show_hosts(self, shown: bool) -> None:
        """Show the host column (a hive across hosts) or not. Rare (a hive's hosts are its settings): the
        table goes out whole, its grid one column wider or narrower."""
        if shown != self.hosts:
            self.hosts = shown
            self._props["hosts"] = shown
            self._props["columns"] = [list(column) for column in self.columns if shown or column[1] != "host"]
            if self.live:
                self.update()

    def put(self, row: SwarmRowData) -> None:
        """Show `row` (an agent's data, new or changed); nothing goes out if it is as shown."""
        if self.rows.get(row.name) != row:
            self.rows[row.name] = row
            self.row_json[row.name] = data = row.model_dump(mode="json")
            self._send("put", data)

    def drop(self, name: str) -> None:
        if self.rows.pop(name, None) is not None:
            del self.row_json[name]
            self._send("drop", name)

    def arrange(self, view: TableView) -> None:
        """Show the rows and group labels of `view`, in its order."""
        if view != self.view:
            self.view = view
            self._send("arrange", [list(item) for item in view])

    def select(self, names: frozenset[str]) -> None:
        if names != self.selected:
            self.selected = names
            self._send("select", sorted(names))

    def sort_by(self, key: str, descending: bool) -> None:
        """Mark the column the rows are sorted by (the rows themselves come in `arrange`'s order)."""
        if (key, descending) != self.sort:
            self.sort = (key, descending)
            self._send("sortBy", key, descending)

    def shown(self) -> list[SwarmRowData]:
        """The rows the table shows, in its order."""
        return [self.rows[name] for kind, name in self.view if kind == "row" and name in self.rows]

    def _displayed_contents(self, *, only_visible: bool) -> list[Any]:
        groups = [name for kind, name in self.view if kind == "group"]
        return groups + [text for row in self.shown() for text in row.texts()]
