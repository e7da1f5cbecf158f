"""What the agent page decides without a browser: the actions a state offers, the stats line."""

from __future__ import annotations

from hyperhive.servers.lifecycle.models import Turn
from hyperhive.ui.pages.agent import actions_for, plural, stats_summary


def test_the_actions_match_the_state() -> None:
    assert actions_for("running") == ["stop", "restart", "kill", "rebuild"]
    assert actions_for("stopped") == ["start", "rebuild"]
    assert actions_for("failed") == ["start", "restart", "rebuild"]
    assert actions_for("starting") == ["stop", "kill"]
    assert actions_for("stopping") == ["kill"]
    assert actions_for("peer") == []


def _turn(seconds: float, *, ok: bool = True, cost: float = 0.0) -> Turn:
    return Turn(
        started_at=1000.0, ended_at=1000.0 + seconds, ok=ok, terminal_reason=None, model="sonnet", model_turns=1,
        tool_calls={}, tokens_in=100, tokens_out=10, cost_usd=cost, messages=1, inbox_depth=0, error=None,
    )  # fmt: skip


def test_the_stats_line_counts_averages_and_says_plurals_right() -> None:
    assert stats_summary([]) == ""
    assert stats_summary([_turn(2.0, cost=0.01)]) == (
        "1 turn · 0 errors · avg 2.0 s · p95 2.0 s · tokens 100 in / 10 out · $0.0100"
    )
    two = stats_summary([_turn(1.0), _turn(3.0, ok=False)])
    assert two.startswith("2 turns · 1 error · avg 2.0 s · p95 3.0 s")
    assert plural(1, "restart") == "1 restart" and plural(1200, "line") == "1,200 lines"
