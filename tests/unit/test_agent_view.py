"""What the agent page and the swarm decide without a browser: the actions a state offers (one
definition for both, and the swarm's bulk actions), the stats line."""

from __future__ import annotations

from typing import Any

from hyperhive.servers.lifecycle.models import AgentInfo, Turn
from hyperhive.ui.actions import actions_for, bulk_question, skipped_text, split, why_not
from hyperhive.ui.pages.agent import plural, stats_summary


def _agent(name: str, state: str, **more: Any) -> AgentInfo:
    return AgentInfo.model_validate(
        {"name": name, "role": "worker", "state": state, "desired": None, "model": "sonnet", "started_at": None,
         "last_exit_code": None, "last_signal": None, "restart_count": 0, "applied_sha": None,
         "needs_update": False, **more}
    )  # fmt: skip


def test_the_actions_match_the_state() -> None:
    """What the lifecycle server does with each call: no start on a running agent, no kill on one
    that is not running (it refuses), no stop on a stopped one; nothing on a peer."""
    assert actions_for(_agent("a", "running")) == ["stop", "restart", "kill", "rebuild"]
    assert actions_for(_agent("a", "stopped")) == ["start", "rebuild"]
    assert actions_for(_agent("a", "failed")) == ["start", "stop", "restart", "rebuild"]
    assert actions_for(_agent("a", "starting")) == ["stop", "restart", "kill", "rebuild"]
    assert actions_for(_agent("a", "restarting")) == ["stop", "restart", "rebuild"]
    assert actions_for(_agent("a", "stopping")) == []
    assert actions_for(_agent("a", "peer", kind="peer")) == []


def test_a_bulk_action_skips_the_agents_it_does_not_apply_to_and_says_why() -> None:
    agents = [_agent("c", "stopped"), _agent("a", "running"), _agent("b", "stopped"), _agent("d", "failed")]
    applies, skipped = split("stop", agents)
    assert applies == ["a", "d"]
    assert skipped == {"b": "already stopped", "c": "already stopped"}
    assert bulk_question("stop", applies, skipped) == "stop 2 agents: a, d? (skipped: b, c: already stopped)"
    applies, skipped = split("kill", agents)
    assert applies == ["a"]
    assert skipped_text(skipped) == "b, c: not running (stopped); d: not running (failed)"
    assert bulk_question("kill", applies, {}) == "kill 1 agent: a?"
    assert why_not("start", _agent("a", "running")) == "already running"
    assert why_not("restart", _agent("p", "peer", kind="peer")) == "a peer, outside the hive"


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
