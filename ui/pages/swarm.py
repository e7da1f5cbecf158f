"""The swarm: a row per agent (its state, turn, inbox and actions), update all, spawn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nicegui import ui

from hyperhive.servers.common.formatting import last_turn_text, turn_text
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.models import AgentInfo, RebuildResult
from hyperhive.ui.hive_view import HiveView, SwarmAgent
from hyperhive.ui.pages.widgets import act, confirm, section, spend_text, stale_when

STATE_COLOURS = {
    "running": "positive", "starting": "info", "stopping": "warning", "restarting": "warning",
    "stopped": "grey", "failed": "negative", "peer": "purple",
}  # fmt: skip
TURN_COLOURS = {
    "idle": "grey-7",
    "running": "primary",
    "error": "negative",
    "paused": "warning",
    "starting": "info",
    "unreadable": "negative",
}
# The swarm table is a CSS grid: one template for the header and every row, so a row's cells are
# its elements themselves (no wrappers: 50 agents stay a light page).
SWARM_COLUMNS = ["agent", "state", "role", "model", "turn", "last turn", "inbox", "rem", "today", "", ""]
SWARM_CSS = """
.hh-swarm { display: grid; grid-template-columns: 8rem 5.5rem 4.5rem 7.5rem 16rem 5.5rem 3rem 3rem 9rem 6.5rem 1fr;
            align-items: center; justify-items: start; column-gap: 0.75rem; width: 100%; }
.hh-swarm > .hh-num { justify-self: end; }
.hh-swarm > .hh-actions { justify-self: end; display: flex; }
.hh-turn { display: flex; align-items: center; gap: 0.25rem; max-width: 16rem; }
"""


# The swarm's per-agent buttons and menu items, by the name they show.
AGENT_ACTIONS: dict[str, Callable[[LifecycleClient, str], Awaitable[AgentInfo]]] = {
    "start": LifecycleClient.start,
    "stop": LifecycleClient.stop,
    "restart": LifecycleClient.restart,
    "kill": LifecycleClient.kill,
    "rebuild": LifecycleClient.rebuild,
}


class SwarmRow:
    """One agent's row; `show` changes its elements in place, `tick` its relative times."""

    def __init__(self, hive: HiveView, agent: SwarmAgent) -> None:
        self.hive = hive
        self.name = name = agent.info.name
        self.agent = agent
        with ui.element().classes("hh-swarm hh-mono") as self.row:
            ui.link(name, f"/agent/{name}").classes("font-bold truncate max-w-full")
            self.state = ui.badge("").mark(f"state-{name}")
            self.role = ui.label("").classes("text-grey-5")
            self.model = ui.button("", icon="psychology", on_click=self.change_model).mark(f"model-{name}")
            self.model.props('outline rounded dense size=sm title="change the model"')
            with ui.element().classes("hh-turn"):
                self.turn = ui.label("").classes("truncate").mark(f"turn-{name}")
                self.cancel = ui.button("cancel", on_click=self.cancel_turn).mark(f"cancel-{name}")
                self.cancel.props('flat dense size=sm color=warning title="cancel the running turn"')
            self.last_turn = ui.label("").classes("text-grey-5").mark(f"last-turn-{name}")
            self.inbox = ui.label("").classes("hh-num").mark(f"inbox-{name}")
            self.reminders = ui.label("").classes("hh-num text-grey-5").mark(f"reminders-{name}")
            self.cost = ui.label("").classes("truncate").mark(f"cost-{name}")  # today (of budget); week on hover
            self.update = ui.badge("needs update", color="warning").mark(f"update-{name}")
            with ui.element().classes("hh-actions") as self.actions:
                for action in ("start", "stop"):
                    ui.button(action, on_click=lambda a=action: self.do(a)).props("flat dense size=sm").mark(
                        f"{action}-{name}"
                    )
                self.more = ui.button(icon="more_horiz", on_click=self.more_actions).mark(f"more-{name}")
                self.more.props('flat dense round size=sm title="restart, kill, rebuild, destroy"')
        self.menu: ui.menu | None = None
        self.show(agent)

    def more_actions(self) -> None:
        """The rarer actions, built on first use: a swarm page of 50 agents need not carry 200 buttons."""
        if self.menu is None:
            with self.more, ui.menu() as self.menu:
                for action in ("restart", "kill", "rebuild"):
                    ui.menu_item(action, on_click=lambda a=action: self.do(a)).mark(f"{action}-{self.name}")
                ui.menu_item("destroy", on_click=self.destroy).classes("text-negative").mark(f"destroy-{self.name}")
        self.menu.open()

    def show(self, agent: SwarmAgent) -> None:
        self.agent = agent
        info, turn = agent.info, agent.info.turn
        self.state.set_text(info.state)
        self.state.props(f"color={STATE_COLOURS.get(info.state, 'grey')}")
        # A peer runs outside the hive: nothing here starts, stops or steers it, and its model is its own.
        sandboxed = info.kind != "peer"
        self.state.props.set_optional("title", None if sandboxed else "a peer: a Claude Code session outside the hive")
        self.actions.set_visibility(sandboxed)
        self.model.set_visibility(sandboxed)
        self.role.set_text(info.role)
        self.model.set_text(info.model)
        self.turn.classes(replace=f"truncate text-{TURN_COLOURS.get(turn.state, 'grey-7') if turn else 'grey-7'}")
        self.turn.props.set_optional("title", turn.reason if turn else None)  # the whole reason on hover
        self.cancel.set_visibility(turn is not None and turn.state == "running")
        self.inbox.set_text(str(agent.pending))
        self.reminders.set_text(str(agent.pending_reminders))
        self.update.set_visibility(info.needs_update)
        self.show_cost(info)
        self.tick()

    def show_cost(self, info: AgentInfo) -> None:
        spend = info.spend
        if spend is None:
            self.cost.set_text("")
            return
        budget = f"/{spend.usd_per_day:.2f}" if spend.usd_per_day is not None else ""
        self.cost.set_text(f"${spend.today_usd:.2f}{budget}" + (" paused" if spend.paused else ""))
        self.cost.classes(replace=f"truncate {'text-warning' if spend.paused else ''}")
        self.cost.props.set_optional("title", " · ".join(filter(None, [spend_text(spend), spend.paused])))

    def tick(self) -> None:
        info = self.agent.info
        self.turn.set_text(turn_text(info.turn, info.state == "running"))
        self.last_turn.set_text(last_turn_text(info.turn))

    async def do(self, action: str) -> None:
        with self.row:  # its dialog: not inside the menu the click came from, which closes
            # All but start interrupt what the agent is doing (rebuild restarts a running one).
            if action != "start" and not await confirm(f"{action} {self.name}?", action):
                return
        await act(f"{action} {self.name}", self.hive.call(AGENT_ACTIONS[action](self.hive.lifecycle, self.name)),
                  f"{self.name}: {action}")  # fmt: skip

    async def destroy(self) -> None:
        with self.row, ui.dialog() as dialog, ui.card():
            ui.label(f"destroy {self.name}? its sandbox goes; its repos and files stay unless purged")
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
        with ui.dialog() as dialog, ui.card():
            ui.label(f"model for {self.name}'s next turns")
            model = ui.input("model", value=self.model.text).mark("model-input")
            with ui.row():
                ui.button("back to agent.toml's", on_click=lambda: dialog.submit("")).props("flat")
                ui.button("set", on_click=lambda: dialog.submit(model.value)).mark("set-model")
        chosen = await dialog
        dialog.delete()
        if chosen is None:
            return
        call = self.hive.call(self.hive.lifecycle.set_model(self.name, chosen or None))
        await act(f"set {self.name}'s model", call, f"{self.name}: model {chosen or 'from agent.toml'}")


def swarm_page(hive: HiveView) -> None:
    with ui.row().classes("items-center w-full"):
        section("swarm")
        summary = ui.label("").classes("text-grey-6").mark("swarm-summary")
        ui.space()

        def updated(result: RebuildResult) -> str:
            return f"rebuilt {', '.join(result.rebuilt)}" if result.rebuilt else "every agent is up to date"

        async def update_all() -> None:
            await act("update all", hive.call(hive.lifecycle.rebuild_stale()), updated)

        ui.button("update all", on_click=update_all).props("outline dense").mark("update-all")
    rows: dict[str, SwarmRow] = {}
    with ui.element().classes("hh-swarm text-grey-6 text-xs"):
        for label in SWARM_COLUMNS:
            ui.label(label).classes("hh-num" if label in ("inbox", "rem") else "")
    table = ui.column().classes("w-full gap-1")
    stale_when(hive, table, "lifecycle", "broker")

    def show(agent: SwarmAgent) -> None:
        row = rows.get(agent.info.name)
        if row is None:
            with table:
                rows[agent.info.name] = SwarmRow(hive, agent)
        else:
            row.show(agent)
        show_summary()

    def show_summary(*_: object) -> None:
        spend = hive.state.hive_spend
        hive_cost = f" · hive {spend_text(spend)}" + (f" · {spend.paused}" if spend.paused else "") if spend else ""
        summary.set_text(f"{len(hive.state.agents)} agents · {hive.state.backend}{hive_cost}")
        summary.classes(replace="text-warning" if spend is not None and spend.paused else "text-grey-6")

    def remove(name: str) -> None:
        row = rows.pop(name, None)
        if row is not None:
            row.row.delete()

    for agent in hive.state.agents.values():
        show(agent)
    hive.agent_changed.subscribe(show)
    hive.hive_spend_changed.subscribe(show_summary)
    hive.agent_removed.subscribe(remove)

    def tick() -> None:  # "running 12 s": only texts that changed go out
        for row in rows.values():
            row.tick()

    ui.timer(1.0, tick)

    section("spawn")
    with ui.row().classes("items-center"):
        name = ui.input("name", placeholder="a-z, 0-9, -").props("dense").mark("spawn-name")

        async def spawn() -> None:
            if await act(
                f"spawn {name.value}",
                hive.call(hive.lifecycle.create_agent(name.value)),
                f"{name.value}: spawned",
            ):
                name.set_value("")

        ui.button("spawn", on_click=spawn).props("dense").mark("spawn")
