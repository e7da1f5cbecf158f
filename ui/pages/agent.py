"""One agent's page: its live log, applied config, state files and turn-stats charts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nicegui import ui

from hyperhive.ui.hive_view import HiveView, SwarmAgent
from hyperhive.ui.pages.widgets import act, section, spend_text


def agent_page(hive: HiveView, name: str) -> None:
    section(name)
    known = hive.state.agents.get(name)
    if known is not None and known.info.kind == "peer":
        peer_page(hive, name)
        return

    async def reset_session() -> None:
        call = hive.call(hive.lifecycle.reset_session(name))
        await act(f"reset {name}'s session", call, f"{name}: its next turn starts a fresh session")

    async def resume() -> None:
        call = hive.call(hive.lifecycle.resume_agent(name))
        await act(f"resume {name}", call, f"{name}: resumed; its day starts afresh")

    with ui.row().classes("items-center"):
        cost = ui.label("").mark("agent-cost")
        resume_button = ui.button("resume", on_click=resume).props("dense color=warning").mark("resume")
        resume_button.tooltip(
            "its own daily budget is reached: start its day afresh now (its cost so far stops counting)"
        )
        ui.link("terminal", f"/agent/{name}/terminal").mark("open-terminal").tooltip(
            "a shell in its sandbox, as its uid (audited; it closes when you leave that page)"
        )
        ui.button("reset session", on_click=reset_session).props("flat dense").mark("reset-session").tooltip(
            "drop its conversation: the next turn starts a fresh Claude Code session (notes.md stays)"
        )

    def show_cost(agent: SwarmAgent) -> None:
        if agent.info.name != name:
            return
        spend = agent.info.spend
        cost.set_text(" · ".join(filter(None, [spend_text(spend), spend.paused if spend else None])))
        cost.classes(replace="text-warning" if spend is not None and spend.paused else "")
        resume_button.set_visibility(spend is not None and spend.paused_by == "agent")

    resume_button.set_visibility(False)
    if name in hive.state.agents:
        show_cost(hive.state.agents[name])
    hive.agent_changed.subscribe(show_cost)
    with ui.tabs() as tabs:
        for tab in ("log", "config", "files", "stats"):
            ui.tab(tab).mark(f"tab-{tab}")
    with ui.tab_panels(tabs, value="log").classes("w-full"):
        with ui.tab_panel("log"):
            log = ui.log(max_lines=1000).classes("w-full h-96 hh-mono").mark("log")
            seen = {"last": ""}

            async def follow() -> None:
                result = await act("logs", hive.call(hive.lifecycle.logs(name, 200)))
                lines = result.lines if result else []
                start = lines.index(seen["last"]) + 1 if seen["last"] in lines else 0
                for text in lines[start:]:
                    log.push(text)
                if lines:
                    seen["last"] = lines[-1]

            ui.timer(1.0, follow)
        with ui.tab_panel("config"):
            applied_config(hive, name)
        with ui.tab_panel("files"):
            path = ui.input("file in its state dir", value="notes.md").props("dense").mark("file-path")
            content = ui.code("", language="markdown").classes("w-full").mark("file")

            async def read() -> None:
                result = await act(f"read {path.value}", hive.call(hive.lifecycle.read_state_file(name, path.value)))
                content.set_content(result.text if result else "")

            ui.button("read", on_click=read).props("dense").mark("file-read")
        with ui.tab_panel("stats"):
            stats_panel(hive, name)


PEER_TEXT = (
    "A peer: a Claude Code session outside the hive (the operator's own terminal, say) that messages the "
    "swarm like an agent, under the allow-lists below. The hive runs nothing of it: no sandbox, no log, no "
    "state dir. Its Claude Code fetches a short-lived token with `hive peer token` each time it connects; "
    "`hive peer remove {name}` revokes it at once."
)


def peer_page(hive: HiveView, name: str) -> None:
    """A peer's page: what a peer is, and its applied config (its allow-lists)."""
    ui.label(PEER_TEXT.format(name=name)).classes("text-grey-5 max-w-3xl").mark("peer-note")
    applied_config(hive, name)


def applied_config(hive: HiveView, name: str) -> None:
    """Its applied agent.toml, loaded once the page is shown."""
    config = ui.code("", language="toml").classes("w-full").mark("config")

    async def load() -> None:
        result = await act("config", hive.call(hive.lifecycle.agent_config(name)))
        if result:
            config.set_content(result.agent_toml)

    ui.timer(0.1, load, once=True)


def stats_panel(hive: HiveView, name: str) -> None:
    summary = ui.label("").mark("stats-summary")
    charts = ui.row().classes("w-full")

    async def load() -> None:
        result = await act("stats", hive.call(hive.lifecycle.agent_stats(name)))
        if not result:
            return
        s = result.summary
        summary.set_text(
            f"{s.turns} turns · {s.errors} errors"
            f" · p50 {s.duration_p50 or 0:.1f} s · p95 {s.duration_p95 or 0:.1f} s"
            f" · tokens {s.tokens_in:,} in / {s.tokens_out:,} out · ${s.cost_usd:.4f}"
        )
        turns = result.turns
        charts.clear()
        with charts:
            per_hour: dict[str, int] = {}
            for turn in turns:
                hour = datetime.fromtimestamp(turn.started_at, UTC).strftime("%m-%d %H:00")
                per_hour[hour] = per_hour.get(hour, 0) + 1
            _chart("turns per hour", list(per_hour), [{"type": "bar", "data": list(per_hour.values())}])
            _chart("duration (s) and inbox depth", [str(i) for i in range(len(turns))], [
                {"type": "line", "name": "seconds", "data": [round(t.ended_at - t.started_at, 1) for t in turns]},
                {"type": "line", "name": "inbox", "data": [t.inbox_depth for t in turns]},
            ])  # fmt: skip
            tools = dict(sorted(s.tool_calls.items(), key=lambda item: -item[1]))  # most used first
            _chart("tool calls", list(tools), [{"type": "bar", "data": list(tools.values())}])
            _chart("tokens and cost", [str(i) for i in range(len(turns))], [
                {"type": "line", "name": "tokens in", "data": [t.tokens_in for t in turns]},
                {"type": "line", "name": "tokens out", "data": [t.tokens_out for t in turns]},
                {"type": "bar", "name": "cost $", "yAxisIndex": 1, "data": [t.cost_usd for t in turns]},
            ], second_axis=True)  # fmt: skip

    ui.timer(0.1, load, once=True)
    ui.button("refresh", on_click=load).props("flat dense")


def _chart(title: str, x: list[str], series: list[dict[str, Any]], *, second_axis: bool = False) -> None:
    ui.echart(
        {
            "title": {"text": title, "textStyle": {"fontSize": 12, "color": "#bbb"}},
            "tooltip": {"trigger": "axis"},
            "xAxis": {"type": "category", "data": x},
            "yAxis": [{"type": "value"}, {"type": "value"}] if second_axis else {"type": "value"},
            "series": series,
            "animation": False,
        }
    ).classes("w-96 h-56")
