"""The harness's ClaudeSession with the real Claude Code against the scripted model: when it keeps
its session, when it starts a fresh one, and what a turn's outcome says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.anthropic_api import Fail, Say, ScriptedAPI

from hyperhive.harness.claude import ClaudeSession
from hyperhive.servers.common.harnessdir import HarnessInfo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    with ScriptedAPI() as fake:
        yield fake


def _session(api: ScriptedAPI, tmp_path: Path, token: list[str], **changes: object) -> ClaudeSession:
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "harness").mkdir(exist_ok=True)
    info = HarnessInfo.model_validate(
        {
            "agent": "solo",
            "role": "agent",
            "model": "sonnet",
            "servers": {},
            "tools": {},
            "bash": [],
            "mcp_servers": {},
            "env": {**api.env(), "CLAUDE_CODE_MAX_RETRIES": "0"},
            "prompt": "",
            "state_dir": str(tmp_path / "state"),
            "harness_dir": str(tmp_path / "harness"),
            "token_file": str(tmp_path / "token"),
            **changes,
        }
    )
    return ClaudeSession(info, lambda: token[0], stderr=lambda line: None)


async def test_one_session_across_turns_until_the_context_is_too_big_or_the_token_changes(
    api: ScriptedAPI, tmp_path: Path
) -> None:
    token = ["t1"]
    session = _session(api, tmp_path, token, context_reset_tokens=50_000)
    try:
        first = await session.turn("wake one", "sonnet")
        assert first.ok and first.terminal_reason == "completed" and first.tokens_in > 0 and first.model_turns == 1
        second = await session.turn("wake two", "haiku")  # a new model: set between turns, same session
        assert second.ok and session.reset_wanted is None
        one, two = api.snapshot()
        assert one.session == two.session and "haiku" in two.body["model"] and "sonnet" in one.body["model"]

        token[0] = "t2"  # lifecycle renewed the token: MCP servers need the new one
        await session.turn("wake three", "haiku")
        assert api.snapshot()[-1].session != two.session

        session.info = session.info.model_copy(update={"context_reset_tokens": 1000})
        big = await session.turn("wake four", "haiku")
        assert big.context_tokens > 1000 and session.reset_wanted and "context reached" in session.reset_wanted
        await session.turn("wake five", "haiku")
        four, five = api.snapshot()[-2:]
        assert four.session != five.session  # (and that one is past 1,000 tokens too: the next is fresh again)
    finally:
        await session.close()


async def test_an_api_failure_is_an_outcome_to_retry_and_the_session_survives(api: ScriptedAPI, tmp_path: Path) -> None:
    api.script(when="flaky", steps=[Fail(529, times=1), Say()], times=1)
    session = _session(api, tmp_path, ["t"])
    try:
        failed = await session.turn("flaky", "sonnet")
        assert (
            not failed.ok and failed.retry and failed.terminal_reason == "api_error" and "529" in (failed.error or "")
        )
        again = await session.turn("after", "sonnet")
        assert again.ok and api.snapshot()[0].session == api.snapshot()[-1].session
    finally:
        await session.close()


async def test_a_dead_cli_is_an_outcome_to_retry_and_the_next_turn_starts_afresh(
    api: ScriptedAPI, tmp_path: Path
) -> None:
    session = _session(api, tmp_path, ["t"])
    try:
        assert (await session.turn("one", "sonnet")).ok
        assert session.connected
        await session.close()  # gone, as if it had crashed
        session.info = session.info.model_copy(update={"state_dir": str(tmp_path / "missing")})
        broken = await session.turn("two", "sonnet")  # cannot start: its cwd does not exist
        assert not broken.ok and broken.retry and broken.terminal_reason == "cli_error" and broken.error
        assert not session.connected
        session.info = session.info.model_copy(update={"state_dir": str(tmp_path / "state")})
        assert (await session.turn("three", "sonnet")).ok
    finally:
        await session.close()
