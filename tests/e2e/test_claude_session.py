"""The harness's ClaudeSession with the real Claude Code against the scripted model: when it keeps
its session (across token renewals, closes and restarts: it resumes the recorded one), when it
starts a fresh one, and what a turn's outcome says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.anthropic_api import Fail, Request, Say, ScriptedAPI

from hyperhive.harness.claude import ClaudeSession
from hyperhive.servers.common.harnessdir import CREDENTIALS, RESET_FILE, SESSION_FILE, HarnessInfo, SessionRecord

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    with ScriptedAPI() as fake:
        yield fake


FACT = "the launch code is PURPLE-OTTER-42"


def _told(request: Request) -> bool:
    """Whether the fact told in the first turn is in the conversation this request carries."""
    return FACT in json.dumps(request.messages)


def _session(api: ScriptedAPI, tmp_path: Path, **changes: object) -> ClaudeSession:
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
    return ClaudeSession(info, stderr=lambda line: None)


async def test_one_session_across_turns_and_token_renewals_until_the_context_is_too_big(
    api: ScriptedAPI, tmp_path: Path
) -> None:
    session = _session(api, tmp_path, context_reset_tokens=50_000)
    try:
        first = await session.turn("wake one", "sonnet")
        assert first.ok and first.terminal_reason == "completed" and first.tokens_in > 0 and first.model_turns == 1
        second = await session.turn("wake two", "haiku")  # a new model: set between turns, same session
        assert second.ok and session.reset_wanted is None
        one, two = api.snapshot()
        assert one.session == two.session and "haiku" in two.body["model"] and "sonnet" in one.body["model"]

        (tmp_path / "token").write_text("t2")  # lifecycle renewed the token: Claude Code reads it itself
        await session.turn("wake three", "haiku")
        assert api.snapshot()[-1].session == two.session

        session.info = session.info.model_copy(update={"context_reset_tokens": 1000})
        big = await session.turn("wake four", "haiku")
        assert big.context_tokens > 1000 and session.reset_wanted and "context reached" in session.reset_wanted
        await session.turn("wake five", "haiku")
        four, five = api.snapshot()[-2:]
        assert four.session != five.session  # (and that one is past 1,000 tokens too: the next is fresh again)
        assert "new Claude Code session: its context reached" in five.wake and "notes.md" in five.wake
    finally:
        await session.close()


async def test_an_api_failure_is_an_outcome_to_retry_and_the_session_survives(api: ScriptedAPI, tmp_path: Path) -> None:
    api.script(when="flaky", steps=[Fail(529, times=1), Say()], times=1)
    session = _session(api, tmp_path)
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
    session = _session(api, tmp_path)
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


async def test_the_conversation_survives_a_close_and_a_new_harness_and_a_reset_starts_empty(
    api: ScriptedAPI, tmp_path: Path
) -> None:
    session = _session(api, tmp_path)
    try:
        assert (await session.turn(f"remember this: {FACT}", "sonnet")).ok
        first = api.snapshot()[-1]
        record = SessionRecord.model_validate_json((tmp_path / "harness" / SESSION_FILE).read_text())
        assert record.resumable and record.session_id == first.session

        await session.close()  # an idle close: the next wake starts Claude Code again, resuming
        assert (await session.turn("after an idle close", "sonnet")).ok
        assert _told(api.snapshot()[-1]) and api.snapshot()[-1].session == first.session
    finally:
        await session.close()

    restarted = _session(api, tmp_path)  # a new harness (a restart, a crash, a rebuild): same harness dir
    try:
        assert (await restarted.turn("after a restart", "sonnet")).ok
        assert _told(api.snapshot()[-1]) and api.snapshot()[-1].session == first.session

        (tmp_path / "harness" / CREDENTIALS).mkdir()
        (tmp_path / "harness" / CREDENTIALS / RESET_FILE).write_text("1700000000000\n")  # reset_session
        assert (await restarted.turn("after the reset", "sonnet")).ok
        reset = api.snapshot()[-1]
        assert not _told(reset) and reset.session != first.session
        assert "the operator asked for a fresh session" in reset.wake and "notes.md" in reset.wake
        assert (await restarted.turn("later", "sonnet")).ok  # the same request is carried out once
        assert api.snapshot()[-1].session == reset.session and "fresh session" not in api.snapshot()[-1].wake
    finally:
        await restarted.close()
    again = _session(api, tmp_path)  # nor again after a restart
    try:
        assert (await again.turn("after another restart", "sonnet")).ok
        assert api.snapshot()[-1].session == reset.session
    finally:
        await again.close()


async def test_a_session_that_cannot_be_resumed_twice_is_replaced(api: ScriptedAPI, tmp_path: Path) -> None:
    lost = SessionRecord(session_id="6f1c9a3e-0000-4000-8000-000000000000", started_at=0, resumable=True)
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / SESSION_FILE).write_text(lost.model_dump_json())  # Claude Code has no such session
    session = _session(api, tmp_path)
    try:
        for _ in range(2):
            failed = await session.turn("wake", "sonnet")
            assert not failed.ok and failed.retry and "No conversation found" in (failed.error or "")
        assert not api.snapshot()
        fresh = await session.turn("wake", "sonnet")
        assert fresh.ok and "resuming your previous session failed 2 times" in api.snapshot()[-1].wake
        assert session.record is not None and session.record.session_id != lost.session_id
    finally:
        await session.close()


async def test_a_resumed_session_runs_with_the_prompt_of_the_config_now(api: ScriptedAPI, tmp_path: Path) -> None:
    """A rebuild with a new agent.toml prompt resumes the conversation, under the new instructions."""
    session = _session(api, tmp_path)
    try:
        assert (await session.turn(f"remember this: {FACT}", "sonnet")).ok
    finally:
        await session.close()
    rebuilt = _session(api, tmp_path, prompt="Be brief.")
    try:
        assert (await rebuilt.turn("after the rebuild", "sonnet")).ok
        request = api.snapshot()[-1]
        assert _told(request)
        assert "Be brief." in request.system_text
    finally:
        await rebuilt.close()


async def test_the_reset_note_survives_a_restart_before_the_fresh_sessions_first_turn_ran_through(
    api: ScriptedAPI, tmp_path: Path
) -> None:
    """The note that says the conversation is new is kept in session.json until a turn of the fresh
    session runs through: a harness that restarts (or a turn that fails) before that says it again."""
    session = _session(api, tmp_path)
    try:
        assert (await session.turn(f"remember this: {FACT}", "sonnet")).ok
        (tmp_path / "harness" / CREDENTIALS).mkdir()
        (tmp_path / "harness" / CREDENTIALS / RESET_FILE).write_text("1700000000000\n")
        api.script(when="first after the reset", steps=[Fail(529, times=1)], times=1)
        failed = await session.turn("first after the reset", "sonnet")
        assert not failed.ok and failed.retry
        assert "the operator asked for a fresh session" in api.snapshot()[-1].wake
    finally:
        await session.close()  # the harness restarts (a crash, a rebuild) before the retry

    restarted = _session(api, tmp_path)
    try:
        assert (await restarted.turn("the retry after a restart", "sonnet")).ok
        retry = api.snapshot()[-1]
        assert not _told(retry) and "the retry after a restart" in retry.wake
        assert "new Claude Code session: the operator asked for a fresh session" in retry.wake
        assert (await restarted.turn("the next wake", "sonnet")).ok  # said until a turn ran through, then not
        assert "new Claude Code session" not in api.snapshot()[-1].wake
    finally:
        await restarted.close()
    record = SessionRecord.model_validate_json((tmp_path / "harness" / SESSION_FILE).read_text())
    assert record.fresh_note is None and record.session_id == retry.session


async def test_the_reset_note_survives_a_fresh_session_that_never_started(api: ScriptedAPI, tmp_path: Path) -> None:
    """Claude Code fails to start for the fresh session (nothing to resume yet): the next harness starts
    another new session, and still says why the conversation is new."""
    session = _session(api, tmp_path)
    try:
        assert (await session.turn(f"remember this: {FACT}", "sonnet")).ok
    finally:
        await session.close()
    (tmp_path / "harness" / CREDENTIALS).mkdir()
    (tmp_path / "harness" / CREDENTIALS / RESET_FILE).write_text("1700000000000\n")
    broken = _session(api, tmp_path, state_dir=str(tmp_path / "missing"))  # its cwd is gone: it cannot start
    try:
        assert (await broken.turn("never seen", "sonnet")).terminal_reason == "cli_error"
    finally:
        await broken.close()
    restarted = _session(api, tmp_path)
    try:
        assert (await restarted.turn("after the restart", "sonnet")).ok
        request = api.snapshot()[-1]
        assert not _told(request) and "new Claude Code session: the operator asked for a fresh session" in request.wake
    finally:
        await restarted.close()
