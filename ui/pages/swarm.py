"""The swarm: what needs the operator first, then a row per agent (one health badge, its turns today,
its inbox, its actions), filtered, searched, sorted and grouped (here: the table in the browser,
swarm_table.js, gets the order as a list of names), bulk actions, update all, spawn."""

from __future__ import annotations

import asyncio
from typing import Final

from fastmcp.exceptions import ToolError
from nicegui import ui
from nicegui.events import GenericEventArguments

from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.formatting import (
    HEALTH_ORDER,
    Health,
    health_rank,
    host_load,
    plural,
    unreachable_lines,
    when,
)
from hyperhive.servers.common.turn_reasons import group_problems
from hyperhive.servers.lifecycle.models import HostInfo, RebuildResult, TurnTotals
from hyperhive.ui.actions import (
    AGENT_ACTIONS,
    CONFIRMED,
    AgentAction,
    bulk_question,
    skipped_text,
    split,
)
from hyperhive.ui.hive_view import HiveView, SwarmAgent
from hyperhive.ui.pages.swarm_table import SwarmTableElement, TableView, row_data
from hyperhive.ui.pages.widgets import (
    act,
    agent_name_error,
    check_as_typed,
    confirm,
    model_error,
    section,
    spend_text,
    stale_when,
    toast,
    while_shown,
)

# The state chips: a filter each (needs update is not a health but sorts and filters like one).
CHIPS: Final = ("all", "failed", "error", "paused", "needs update", "working", "idle", "stopped")
# (label, sort key name); a header button sorts by it, again for the other way.
SWARM_COLUMNS: Final = [
    ("", ""), ("agent", "name"), ("host", "host"), ("health", "health"), ("role", "role"), ("model", "model"),
    ("turns", "turns"), ("avg", "avg"), ("today", "cost"), ("top tools", "tools"), ("inbox", "inbox"),
    ("rem/fired", "reminders"), ("24h", "delivered"), ("last turn", "last"), ("", ""),
]  # fmt: skip
NUMERIC: Final = {"turns", "avg", "cost", "inbox", "reminders", "delivered"}  # sorted the most first
RIGHT_ALIGNED: Final = NUMERIC - {"cost"}  # their cells (hh-num in swarm_table.js) and so their headers
# The swarm table is a CSS grid: one template for the header and every row (a row's cells are its
# children in swarm_table.js). Under 700 px a row is a card: its cells wrap, the
# header goes. Its controls are plain buttons, styled as the look's rules ask (32 px, 13 px and more).
SWARM_CSS = """
.hh-swarm { display: grid;
            grid-template-columns: 2rem 8rem 14rem 4.5rem 7rem 3rem 3.5rem 7rem 9rem 3rem 4rem 2.5rem 5rem 1fr;
            align-items: center; justify-items: start; column-gap: 0.5rem; width: 100%; min-height: 2rem; }
.hh-hosts .hh-swarm {  /* a hive across hosts: a host column after the name, health and top tools narrower */
  grid-template-columns: 2rem 8rem 5.5rem 11rem 4.5rem 7rem 3rem 3.5rem 7rem 6.5rem 3rem 4rem 2.5rem 5rem 1fr; }
.hh-hosts .hh-swarm .hh-health { max-width: 11rem; }
.hh-swarm > .hh-num { justify-self: end; }
.hh-swarm > .hh-actions { justify-self: end; display: flex; flex-wrap: wrap; justify-content: flex-end;
                          align-items: center; gap: 0.25rem; }
.hh-swarm .hh-btn, .hh-swarm .hh-tag { white-space: nowrap; overflow-wrap: normal; }
.hh-swarm-head .hh-btn { padding: 0 4px; }
.hh-swarm .hh-health { max-width: 14rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
                       display: block; padding: 2px 6px; border-radius: 4px; font-size: 13px; color: #fff; }
.hh-swarm .hh-health.bg-warning, .hh-swarm .hh-tag.bg-warning { color: #000; }
.hh-swarm .hh-tag { padding: 2px 6px; border-radius: 4px; font-size: 13px; white-space: nowrap; }
.hh-swarm .hh-name { font-weight: bold; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
                     max-width: 100%; color: var(--hh-primary-text); min-height: 32px; display: inline-flex;
                     align-items: center; }
.hh-swarm .hh-dim { color: #bdbdbd; }
.hh-swarm .hh-cut { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; max-width: 100%; }
.hh-swarm .hh-check { display: inline-flex; align-items: center; justify-content: center; min-width: 32px;
                      min-height: 32px; cursor: pointer; }
.hh-swarm .hh-check input { width: 16px; height: 16px; cursor: pointer; accent-color: var(--hh-primary-text); }
.hh-swarm .hh-btn { background: transparent; color: inherit; border: 0; border-radius: 4px; padding: 0 8px;
                    min-height: 32px; min-width: 32px; font: inherit; font-size: 14px; cursor: pointer; }
.hh-swarm .hh-btn:hover:not([disabled]) { background: rgba(255, 255, 255, 0.1); }
.hh-swarm .hh-btn:focus-visible, .hh-swarm .hh-item:focus-visible, .hh-swarm .hh-check:focus-within,
.hh-swarm .hh-name:focus-visible { outline: 2px solid var(--hh-primary-text); outline-offset: 1px; }
.hh-swarm .hh-outline { border: 1px solid #9e9e9e; border-radius: 16px; max-width: 100%; overflow: hidden;
                        text-overflow: ellipsis; white-space: nowrap; }
.hh-swarm .hh-btn.text-warning { color: #f2c037; }
.hh-swarm .hh-more { position: relative; display: inline-flex; }
.hh-swarm .hh-menu { position: absolute; right: 0; top: 100%; z-index: 10; display: flex; flex-direction: column;
                     background: #2a2a2a; border: 1px solid #616161; border-radius: 4px; padding: 4px 0;
                     min-width: 8rem; box-shadow: 0 4px 12px rgba(0, 0, 0, 0.5); }
.hh-swarm .hh-item { background: transparent; color: #fff; border: 0; text-align: left; padding: 0 12px;
                     min-height: 32px; font: inherit; font-size: 14px; cursor: pointer; }
.hh-swarm .hh-item.text-negative { color: var(--hh-negative-text); }
.hh-swarm .hh-item:hover:not([disabled]) { background: rgba(255, 255, 255, 0.1); }
.hh-swarm .hh-item[disabled] { color: #9e9e9e; cursor: default; }
.hh-table { width: 100%; }
.hh-rows { display: flex; flex-direction: column; gap: 0.25rem; width: 100%; }
.hh-group { font-weight: bold; color: #bdbdbd; padding-top: 0.5rem; }
.hh-strip a { text-decoration: none; }
.hh-strip, .hh-swarm { overflow-wrap: anywhere; min-width: 0; }
@media (max-width: 700px) {
  .hh-swarm-head { display: none !important; }
  .hh-swarm { display: flex; flex-wrap: wrap; gap: 0.25rem 0.75rem; padding: 0.5rem; border: 1px solid #424242;
              border-radius: 6px; }
  .hh-swarm > * { max-width: 100%; }
  .hh-swarm .hh-health { max-width: 100%; white-space: normal; overflow-wrap: anywhere; }
  .hh-swarm > .hh-actions { margin-left: auto; flex-wrap: wrap; justify-content: flex-end; }
  .hh-swarm .hh-more { flex-wrap: wrap; justify-content: flex-end; }
  .hh-swarm .hh-menu { position: static; flex-direction: row; flex-wrap: wrap; width: 100%; box-shadow: none; }
  .hh-num::before { content: attr(data-label) " "; color: #9e9e9e; }
}
"""

BULK_ACTIONS: Final[tuple[AgentAction, ...]] = ("stop", "restart", "rebuild")
CALL_ERRORS: Final = (ToolError, ServerUnavailable, AuthRefused)


def set_prop(element: ui.element, key: str, value: str | None) -> None:
    """Set (None: drop) one prop, sending the element again only if it changed: a NiceGUI prop
    assignment always does."""
    if element.props.get(key) != value:
        element.props.set_optional(key, value)


class SwarmRow:
    """One agent's row: its data (shown by the page's SwarmTableElement), and what its clicks do."""

    def __init__(self, page: SwarmPage, agent: SwarmAgent, totals: TurnTotals | None) -> None:
        self.page = page
        self.hive = page.hive
        self.name = agent.info.name
        self.agent = agent
        self.totals = totals
        self.data = row_data(agent, totals)
        page.table.put(self.data)

    @property
    def kind(self) -> Health:
        return self.data.kind

    def show(self, agent: SwarmAgent) -> None:
        self.agent = agent
        self.data = row_data(agent, self.totals)
        self.page.table.put(self.data)

    def show_totals(self, totals: TurnTotals | None) -> None:
        self.totals = totals
        self.show(self.agent)

    async def clicked(self, action: str) -> None:
        if action == "model":
            await self.change_model()
        elif action == "cancel":
            await self.cancel_turn()
        elif action == "destroy":
            await self.destroy()
        elif action in AGENT_ACTIONS:
            await self.do(action)

    def matches(self, query: str, chip: str) -> bool:
        info = self.agent.info
        if chip == "needs update" and not info.needs_update:
            return False
        if chip not in ("all", "needs update") and chip != self.kind:
            return False
        if not query:
            return True
        haystack = f"{info.name} {info.host or ''} {info.role} {info.model} {self.data.health()} {self.data.tools}"
        haystack = haystack.lower()
        return all(word in haystack for word in query.lower().split())

    def sort_value(self, key: str) -> tuple[float | str, ...]:
        info, totals = self.agent.info, self.totals
        values: dict[str, tuple[float | str, ...]] = {
            "name": (info.name,),
            "host": (info.host or "",),
            "health": (health_rank(info),),
            "role": (info.role,),
            "model": (info.model,),
            "turns": (totals.turns if totals else 0,),
            "avg": (totals.avg_seconds or 0.0 if totals else 0.0,),
            "cost": (info.spend.today_usd if info.spend else 0.0,),
            "tools": (self.data.tools,),
            "inbox": (self.agent.pending,),
            "reminders": (self.agent.pending_reminders,),
            "delivered": (self.agent.delivered_24h,),
            "last": (-(info.turn.last_turn_at or 0.0) if info.turn else 0.0,),
        }
        return values[key]

    async def do(self, action: AgentAction) -> None:
        with self.page.dialogs:
            if action in CONFIRMED and not await confirm(f"{action} {self.name}?", action):
                return
        await act(f"{action} {self.name}", self.hive.call(AGENT_ACTIONS[action](self.hive.lifecycle, self.name)),
                  f"{self.name}: {action}")  # fmt: skip

    async def destroy(self) -> None:
        with self.page.dialogs, ui.dialog() as dialog, ui.card():
            title = ui.label(f"destroy {self.name}? its sandbox goes; its repos and files stay unless purged")
            dialog.props(f"aria-labelledby={title.html_id}")
            purge = ui.checkbox("also purge its repos, files, token and logs").mark("purge")
            with ui.row():
                ui.button("cancel", on_click=lambda: dialog.submit(None)).props("flat")
                ui.button("destroy", color="negative", on_click=lambda: dialog.submit(purge.value)).mark("confirm")
        choice = await dialog
        dialog.delete()
        if choice is None:
            return
        force = self.name == "manager"
        call = self.hive.call(self.hive.lifecycle.destroy(self.name, purge=bool(choice), force=force))
        await act(f"destroy {self.name}", call, f"{self.name}: destroyed")

    async def cancel_turn(self) -> None:
        await act(
            f"cancel {self.name}'s turn",
            self.hive.call(self.hive.lifecycle.cancel_turn(self.name)),
            "turn cancelled",
        )

    async def change_model(self) -> None:
        with self.page.dialogs, ui.dialog() as dialog, ui.card():
            title = ui.label(f"model for {self.name}'s next turns")
            dialog.props(f"aria-labelledby={title.html_id}")
            model = ui.input("model", value=self.agent.info.model).mark("model-input")
            model.props('hint="empty: back to agent.toml\'s" clearable')
            with ui.row():
                ui.button("back to agent.toml's", on_click=lambda: dialog.submit("")).props("flat").mark("model-reset")
                chosen_button = ui.button("set", on_click=lambda: dialog.submit(str(model.value or "").strip()))
                chosen_button.mark("set-model")
            check_as_typed(model, model_error, chosen_button, required=False)
        chosen = await dialog
        dialog.delete()
        if chosen is None:
            return
        call = self.hive.call(self.hive.lifecycle.set_model(self.name, chosen or None))
        await act(f"set {self.name}'s model", call, f"{self.name}: model {chosen or 'from agent.toml'}")


class SwarmPage:
    """The page's state: rows, the filter, the sort, the grouping and the selection."""

    def __init__(self, hive: HiveView) -> None:
        self.hive = hive
        self.rows: dict[str, SwarmRow] = {}
        self.query = ""
        self.chip = "all"
        self.sort_key, self.descending = "health", False
        self.group = "none"  # none | role | state
        self.chosen: set[str] = set()
        self.dirty = True  # the order or the filter needs doing again (at the next tick)
        self.problem_texts: list[str] = []
        self.build()

    # ------------------------------------------------------------------------------------ building
    def build(self) -> None:
        hive = self.hive
        with ui.row().classes("items-center w-full"):
            section("swarm")
            self.summary = ui.label("").classes("text-grey-6").mark("swarm-summary")
            ui.space()
            ui.button("update all", on_click=self.update_all).props("outline dense").mark("update-all")
        # A hive across hosts: each host up or down, its agents of its capacity (one host: hidden).
        self.hosts_strip = ui.row().classes("items-center gap-3 hh-strip").mark("hosts")
        with ui.column().classes("w-full gap-1 hh-strip").mark("needs-you"):
            with ui.row().classes("items-center gap-2"):
                ui.label("needs you:").classes("text-grey-5")
                self.need_approvals = ui.link("", "/approvals").mark("need-approvals")
                self.need_questions = ui.link("", "/questions").mark("need-questions")
                self.need_unread = ui.link("", "/messages").mark("need-unread")
                self.need_failed = ui.button("", on_click=lambda: self.set_chip("failed")).mark("need-failed")
                self.need_errors = ui.button("", on_click=lambda: self.set_chip("error")).mark("need-errors")
                for button in (self.need_failed, self.need_errors):
                    button.props("flat dense no-caps")
            self.problems = ui.column().classes("gap-0")
        with ui.row().classes("items-center w-full gap-2"):
            search = ui.input(placeholder="search name, role, model, state, tool")
            search.props('dense clearable aria-label="search agents"')
            search.classes("w-64").mark("swarm-search")
            search.on_value_change(lambda e: self.set_query(e.value or ""))
            self.chips = {
                chip: ui.button(chip, on_click=lambda c=chip: self.set_chip(c)).mark(f"chip-{chip}") for chip in CHIPS
            }
            ui.space()
            ui.label("group:").classes("text-grey-5")
            self.group_buttons = {
                group: ui.button(group, on_click=lambda g=group: self.set_group(g)).mark(f"group-{group}")
                for group in ("none", "role", "state")
            }
            for button in [*self.chips.values(), *self.group_buttons.values()]:
                button.props("dense no-caps")
        with ui.row().classes("items-center gap-2") as self.bulk_bar:
            self.bulk_label = ui.label("").mark("bulk-count")
            for action in BULK_ACTIONS:
                ui.button(action, on_click=lambda a=action: self.bulk(a)).props("outline dense").mark(f"bulk-{action}")
            ui.button("clear", on_click=self.clear_selection).props("flat dense").mark("bulk-clear")
        # Greyed out as a whole while stale: a class on the table itself would send all its rows again.
        with ui.element().classes("w-full") as shell:
            columns = [(label, key, key in RIGHT_ALIGNED) for label, key in SWARM_COLUMNS]
            self.table = SwarmTableElement(columns).mark("swarm-table")
        stale_when(hive, shell, "lifecycle", "broker")
        self.table.on("act", self.clicked)
        self.table.on("select", lambda e: self.select(str(e.args[0]), bool(e.args[1])))
        self.table.on("sort", lambda e: self.set_sort(str(e.args)))
        self.dialogs = ui.element()  # a row's dialogs: here, out of the table
        for agent in hive.state.agents.values():
            self.show(agent)
        self.show_totals(hive.state.turn_totals)
        self.show_hosts(hive.state.hosts)
        while_shown(hive.hosts_changed, self.show_hosts)
        while_shown(hive.agent_changed, self.show)
        while_shown(hive.agent_removed, self.remove)
        while_shown(hive.turn_totals_changed, self.show_totals)
        while_shown(hive.hive_spend_changed, self.show_summary)
        while_shown(hive.approvals_changed, self.show_strip)
        while_shown(hive.questions_changed, self.show_strip)
        while_shown(hive.unread_changed, self.show_strip)
        self.show_chips()
        self.show_selection()
        self.arrange()
        self.table.go_live()
        ui.timer(1.0, self.tick)

    # ------------------------------------------------------------------------------------- changes
    def show(self, agent: SwarmAgent) -> None:
        row = self.rows.get(agent.info.name)
        if row is None:
            row = SwarmRow(self, agent, self.hive.state.turn_totals.get(agent.info.name))
            self.rows[agent.info.name] = row
        else:
            row.show(agent)
        self.table.show_hosts(self.hive.state.spans_hosts)
        self.dirty = True
        self.show_summary()

    def remove(self, name: str) -> None:
        self.rows.pop(name, None)
        self.chosen.discard(name)
        self.table.drop(name)
        self.table.select(frozenset(self.chosen))
        self.table.show_hosts(self.hive.state.spans_hosts)
        self.dirty = True

    def show_hosts(self, hosts: list[HostInfo]) -> None:
        """The hive's hosts (none on one host): "beta down since 2026-01-02 03:04:05 · 2/5 agents"."""
        self.hosts_strip.clear()
        self.hosts_strip.set_visibility(bool(hosts))
        with self.hosts_strip:
            ui.label("hosts:").classes("text-grey-5")
            for host in hosts:
                state = "up" if host.up else f"down since {when(host.down_since or host.last_seen)}"
                label = ui.label(f"{host.name} {state} · {host_load(host)} agents").mark(f"host-{host.name}")
                if not host.up:
                    label.classes("text-negative font-bold")
                labels = f" · labels: {', '.join(host.labels)}" if host.labels else ""
                label.props.set_optional("title", f"lifecycle {host.lifecycle_url or 'on loopback'}{labels}")

    def show_totals(self, totals: dict[str, TurnTotals]) -> None:
        for name, row in self.rows.items():
            if row.totals != totals.get(name):
                row.show_totals(totals.get(name))
        self.dirty = True

    def show_summary(self, *_: object) -> None:
        spend = self.hive.state.hive_spend
        hive_cost = f" · hive {spend_text(spend)}" + (f" · {spend.paused}" if spend.paused else "") if spend else ""
        count = len(self.hive.state.agents)
        self.summary.set_text(f"{count} agent{'' if count == 1 else 's'} · {self.hive.state.backend}{hive_cost}")
        self.summary.classes(replace="text-warning" if spend is not None and spend.paused else "text-grey-6")

    def show_strip(self, *_: object) -> None:
        state = self.hive.state
        kinds = [row.kind for row in self.rows.values()]
        counts = [
            (self.need_approvals, len(state.approvals), "approval", "approvals"),
            (self.need_questions, len(state.questions), "question", "questions"),
            (self.need_unread, state.unread, "unread message", "unread messages"),
            (self.need_failed, kinds.count("failed"), "failed", "failed"),
            (self.need_errors, kinds.count("error"), "erroring", "erroring"),
        ]
        for element, count, one, many in counts:
            element.set_text(f"{count} {one if count == 1 else many}")
            element.classes(replace="text-warning font-bold" if count else "text-grey-6")
        self.show_problems()

    def show_problems(self) -> None:
        """Agents in error or paused, one line per problem with its fix, most agents first; then the
        unreachable ones, a line per host."""
        stuck = [
            (row.name, row.agent.info.problem or (row.agent.info.turn.reason if row.agent.info.turn else None))
            for row in self.rows.values()
            if row.kind in ("error", "paused")
        ]
        lines = group_problems(stuck)
        lines += [(line, []) for line in unreachable_lines(row.agent.info for row in self.rows.values())]
        texts = [text for text, _ in lines]
        if texts == self.problem_texts:
            return
        self.problem_texts = texts
        self.problems.clear()
        with self.problems:
            for text, names in lines:
                ui.label(text).classes("text-negative").props(f'title="{", ".join(sorted(names))}"').mark("problem")

    async def clicked(self, event: GenericEventArguments) -> None:
        """A row's control or menu item: the event's args are [name, action]."""
        name, action = (str(arg) for arg in event.args)
        row = self.rows.get(name)
        if row is not None:
            await row.clicked(action)

    def tick(self) -> None:  # the rows' times tick in the browser: only a changed order goes out
        if self.dirty:
            self.arrange()

    # -------------------------------------------------------------------------- filter, sort, group
    def set_query(self, query: str) -> None:
        self.query = query.strip()
        self.arrange()

    def set_chip(self, chip: str) -> None:
        self.chip = chip
        self.show_chips()
        self.arrange()

    def set_group(self, group: str) -> None:
        self.group = group
        self.show_chips()
        self.arrange()

    def set_sort(self, key: str) -> None:
        self.descending = not self.descending if self.sort_key == key else key in NUMERIC
        self.sort_key = key
        self.show_chips()
        self.arrange()

    def show_chips(self) -> None:
        for chip, button in self.chips.items():
            set_prop(button, "color", "primary" if chip == self.chip else "grey-9")
        for group, button in self.group_buttons.items():
            set_prop(button, "color", "primary" if group == self.group else "grey-9")
        self.table.sort_by(self.sort_key, self.descending)

    def arrange(self) -> None:
        """Send the table its order: the rows that pass the filter, sorted, each group after its label."""
        self.dirty = False
        rows = sorted(self.rows.values(), key=lambda row: row.name)  # stable: by name within equal values
        rows.sort(key=lambda row: row.sort_value(self.sort_key), reverse=self.descending)
        if self.group != "none":
            rows.sort(key=self.group_of)  # stable: the chosen sort within each group
        view: TableView = []
        group: str | None = None
        for row in rows:
            if not row.matches(self.query, self.chip):
                continue
            if self.group != "none" and self.group_label(row) != group:
                group = self.group_label(row)
                view.append(("group", group))
            view.append(("row", row.name))
        self.table.arrange(view)
        self.show_strip()

    def group_of(self, row: SwarmRow) -> tuple[int | str, ...]:
        if self.group == "role":
            return (row.agent.info.role,)
        return (HEALTH_ORDER[row.kind],)

    def group_label(self, row: SwarmRow) -> str:
        return row.agent.info.role if self.group == "role" else row.kind

    # ---------------------------------------------------------------------------------- selection
    def select(self, name: str, chosen: bool) -> None:
        if name in self.rows:
            (self.chosen.add if chosen else self.chosen.discard)(name)
        self.table.select(frozenset(self.chosen))
        self.show_selection()

    def clear_selection(self) -> None:
        self.chosen.clear()
        self.table.select(frozenset())
        self.show_selection()

    def show_selection(self) -> None:
        count = len(self.chosen)
        self.bulk_label.set_text(f"{count} selected" if count else "select agents for stop, restart, rebuild")

    async def bulk(self, action: AgentAction) -> None:
        """`action` on every selected agent it applies to, after a confirmation that lists them and the
        ones it skips (an agent already stopped, for a stop) with why."""
        names, skipped = split(action, [self.rows[name].agent.info for name in self.chosen if name in self.rows])
        if not names:
            why = f"{action}: nothing to do ({skipped_text(skipped)})" if skipped else "select agents first"
            toast(why, "warning")
            return
        if not await confirm(bulk_question(action, names, skipped), action):
            return
        calls = [self.hive.call(AGENT_ACTIONS[action](self.hive.lifecycle, name)) for name in names]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, CALL_ERRORS):
                failed.append(f"{name}: {result}")
            elif isinstance(result, BaseException):
                raise result
        done = len(names) - len(failed)
        skipped_note = f" · skipped {skipped_text(skipped)}" if skipped else ""
        if failed:
            toast(f"{action}: {done} done; " + "; ".join(failed) + skipped_note, "negative")
        else:
            toast(f"{action}: {plural(done, 'agent')} done{skipped_note}", "positive")

    async def update_all(self) -> None:
        stale = sorted(name for name, agent in self.hive.state.agents.items() if agent.info.needs_update)
        if not stale:
            toast("every agent is up to date")
            return
        if not await confirm(f"update all: rebuild and restart {', '.join(stale)}?", "update all"):
            return

        def updated(result: RebuildResult) -> str:
            return f"rebuilt {', '.join(result.rebuilt)}" if result.rebuilt else "every agent is up to date"

        await act("update all", self.hive.call(self.hive.lifecycle.rebuild_stale()), updated)


def swarm_page(hive: HiveView) -> None:
    SwarmPage(hive)
    section("spawn")
    with ui.row().classes("items-center"):
        name = ui.input("name", placeholder="a-z, 0-9, -").props("dense").mark("spawn-name")

        async def spawn() -> None:
            chosen = str(name.value or "").strip()
            if spawn_error(hive, chosen) is not None:
                return  # the button is disabled, and the field says why; Enter lands here too
            if await act(f"spawn {chosen}", hive.call(hive.lifecycle.create_agent(chosen)), f"{chosen}: spawned"):
                name.set_value("")

        button = ui.button("spawn", on_click=spawn).props("dense").mark("spawn")
        check_as_typed(name, lambda typed: spawn_error(hive, typed), button)
        name.on("keydown.enter", spawn)


def spawn_error(hive: HiveView, name: str) -> str | None:
    """What is wrong with `name` for a new agent: the name rule, or an agent (or peer) has it already."""
    if not name:
        return "name the agent: 1-11 characters, lowercase letters, digits and '-', starting with a letter"
    if name in hive.state.agents:
        return f"{name} exists already"
    return agent_name_error(name)
