"""agent.toml [budget] usd_per_turn against the real Claude Code and the scripted model: what
--max-budget-usd (ClaudeAgentOptions.max_budget_usd) caps when one Claude Code process runs many
turns, and what each turn's recorded cost is after a resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.anthropic_api import Say, ScriptedAPI

from hyperhive.harness.claude import ClaudeSession
from hyperhive.servers.common.harnessdir import HarnessInfo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# What the bundled Claude Code prices a sonnet turn of 20,000 output tokens (and ~4,000 in) at.
TOKENS = 20_000
COST = 0.21


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    with ScriptedAPI() as fake:
        yield fake


def _session(api: ScriptedAPI, tmp_path: Path, usd_per_turn: float | None) -> ClaudeSession:
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "harness").mkdir(exist_ok=True)
    info = HarnessInfo.model_validate(
        {
            "agent": "solo", "role": "agent", "model": "sonnet", "servers": {}, "tools": {}, "bash": [],
            "mcp_servers": {}, "env": {**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0"}, "prompt": "",
            "state_dir": str(tmp_path / "state"), "harness_dir": str(tmp_path / "harness"),
            "token_file": str(tmp_path / "token"), "usd_per_turn": usd_per_turn,
        }
    )  # fmt: skip
    return ClaudeSession(info, stderr=lambda line: None)


async def test_each_turn_of_one_claude_code_gets_its_own_full_allowance(api: ScriptedAPI, tmp_path: Path) -> None:
    api.script(steps=[Say("costly", output_tokens=TOKENS)])
    session = _session(api, tmp_path, usd_per_turn=COST * 1.5)
    try:
        outcomes = [await session.turn(f"wake {i}", "sonnet") for i in range(3)]
    finally:
        await session.close()
    for outcome in outcomes:
        assert outcome.ok and outcome.terminal_reason == "completed", outcome
        assert outcome.cost_usd == pytest.approx(COST, rel=0.1), outcome
    assert len({request.session for request in api.snapshot()}) == 1


async def test_a_resumed_sessions_first_turn_costs_only_itself(api: ScriptedAPI, tmp_path: Path) -> None:
    api.script(steps=[Say("costly", output_tokens=TOKENS)])
    session = _session(api, tmp_path, usd_per_turn=None)
    try:
        first = await session.turn("wake one", "sonnet")
        await session.close()  # an idle close: the next turn resumes the session
        second = await session.turn("wake two", "sonnet")
    finally:
        await session.close()
    restarted = _session(api, tmp_path, usd_per_turn=None)  # a new harness process (the idle form's exec, a crash)
    try:
        third = await restarted.turn("wake three", "sonnet")
    finally:
        await restarted.close()
    assert len({request.session for request in api.snapshot()}) == 1
    for outcome in (first, second, third):
        assert outcome.cost_usd == pytest.approx(COST, rel=0.1), outcome


async def test_a_turn_past_its_allowance_stops(api: ScriptedAPI, tmp_path: Path) -> None:
    api.script(steps=[Say("costly", output_tokens=TOKENS)])
    session = _session(api, tmp_path, usd_per_turn=COST / 2)
    try:
        over = await session.turn("wake one", "sonnet")
    finally:
        await session.close()
    assert not over.ok and over.terminal_reason == "budget_exhausted", over
