"""The idle harness against a real broker over HTTP: its small MCP client, the wait that hands
messages over in wake.json, and the turn loop that takes them (or gives them back) and goes idle."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hivetest import BrokerEndpoint, BrokerProcess, Hive, free_port

from hyperhive.harness.idle import HANDOFF_FRESH, WakeHandoff, take_wake, wait_for_messages
from hyperhive.harness.lean_client import LeanMcpClient, ToolCallFailed
from hyperhive.harness.loop import Harness
from hyperhive.servers.broker.models import RecvBatchResult
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.harnessdir import (
    CREDENTIALS,
    HIVE_JSON,
    WAKE_FILE,
    HarnessInfo,
    SandboxStart,
    TurnState,
)


async def _send(broker: BrokerEndpoint, sender: str, to: str, body: str) -> int:
    sent = await broker.client(sender).call("send", {"to": to, "body": body})
    return int(sent["id"])


def _info(tmp_path: Path, hive: Hive, url: str, agent: str, **changes: object) -> HarnessInfo:
    token = tmp_path / "harness" / "credentials" / "token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(hive.token(agent))
    (tmp_path / "state").mkdir(exist_ok=True)
    return HarnessInfo.model_validate(
        {
            "agent": agent, "role": "agent", "model": "sonnet", "servers": {"broker": url},
            "tools": {"broker": ["recv"]}, "bash": [], "mcp_servers": {}, "env": {}, "prompt": "",
            "state_dir": str(tmp_path / "state"), "harness_dir": str(tmp_path / "harness"),
            "token_file": str(token), "batch_max": 2, **changes,
        }
    )  # fmt: skip


def _lean(info: HarnessInfo) -> LeanMcpClient:
    token = Path(info.token_file)
    return LeanMcpClient(info.servers["broker"], lambda: token.read_text().strip())


async def test_the_lean_client_calls_tools_with_the_current_token_and_tells_failures_apart(
    hive: Hive, broker: BrokerEndpoint, tmp_path: Path
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    info = _info(tmp_path, hive, broker.url, bob)
    client = _lean(info)
    first = await _send(broker, alice, bob, "one")
    args = {"max": 5, "wait_seconds": 1, "ack": False}
    try:
        batch = RecvBatchResult.model_validate(
            await asyncio.to_thread(client.call_tool, "recv_batch", args, timeout=10)
        )
        assert [m.id for m in batch.messages] == [first] and batch.messages[0].body == "one"

        Path(info.token_file).write_text(hive.token(bob, ttl=600))  # renewed: the next request sends the new one
        assert await asyncio.to_thread(client.call_tool, "pending_count", {}, timeout=10) == {"queued": 0, "leased": 1}

        with pytest.raises(ToolCallFailed, match="max: Input should be greater than or equal to 1"):
            await asyncio.to_thread(client.call_tool, "recv_batch", {"max": 0}, timeout=10)

        client._session = "forgotten-by-the-server"  # as after a broker restart: a new session, the call again
        assert await asyncio.to_thread(client.call_tool, "pending_count", {}, timeout=10) == {"queued": 0, "leased": 1}

        Path(info.token_file).write_text("not-a-token")
        with pytest.raises(AuthRefused):
            await asyncio.to_thread(client.call_tool, "pending_count", {}, timeout=10)
        Path(info.token_file).unlink()
        with pytest.raises(AuthRefused, match="no token"):
            await asyncio.to_thread(client.call_tool, "pending_count", {}, timeout=10)
    finally:
        await asyncio.to_thread(client.close)

    nobody = LeanMcpClient(f"http://127.0.0.1:{free_port()}/mcp", lambda: "t")
    with pytest.raises(ServerUnavailable, match=r"127\.0\.0\.1"):
        nobody.call_tool("pending_count", {}, timeout=5)
    with pytest.raises(ValueError):
        LeanMcpClient("file:///etc/passwd", lambda: "t")


def test_the_lean_client_rides_out_a_broker_restart(hive: Hive, broker_process: BrokerProcess, tmp_path: Path) -> None:
    bob = hive.add_agent("bob")
    broker_process.start()
    client = _lean(_info(tmp_path, hive, broker_process.url, bob))
    assert client.call_tool("pending_count", {}, timeout=10) == {"queued": 0, "leased": 0}
    broker_process.stop()
    with pytest.raises(ServerUnavailable):
        client.call_tool("pending_count", {}, timeout=10)
    broker_process.start()  # a new process: the old MCP session is gone, the client opens another
    assert client.call_tool("pending_count", {}, timeout=10) == {"queued": 0, "leased": 0}
    client.close()


async def test_the_idle_waiter_hands_leased_messages_over_once_and_only_fresh(
    hive: Hive, broker: BrokerEndpoint, tmp_path: Path
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    info = _info(tmp_path, hive, broker.url, bob)
    harness_dir = Path(info.harness_dir)
    waiting = asyncio.create_task(asyncio.to_thread(wait_for_messages, info))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # it long-polls
    state = TurnState.model_validate_json((harness_dir / "turn.json").read_text())
    assert state.state == "idle"
    first = await _send(broker, alice, bob, "wake up")
    batch = await asyncio.wait_for(waiting, 10)
    assert [m.id for m in batch.messages] == [first]
    assert await broker.client(bob).call("pending_count", {}) == {"queued": 0, "leased": 1}  # leased, not taken
    assert (harness_dir / WAKE_FILE).stat().st_mode & 0o777 == 0o600

    handed = take_wake(harness_dir, time.time())
    assert handed is not None and [m.id for m in handed.messages] == [first]
    assert take_wake(harness_dir, time.time()) is None  # once

    old = WakeHandoff(batch=batch, received_at=time.time() - HANDOFF_FRESH - 1)
    (harness_dir / WAKE_FILE).write_text(old.model_dump_json())
    assert take_wake(harness_dir, time.time()) is None  # may have been delivered again since
    future = WakeHandoff(batch=batch, received_at=time.time() + 60)
    (harness_dir / WAKE_FILE).write_text(future.model_dump_json())
    assert take_wake(harness_dir, time.time()) is None
    (harness_dir / WAKE_FILE).write_text(json.dumps({"messages": "planted"}))
    assert take_wake(harness_dir, time.time()) is None and not (harness_dir / WAKE_FILE).exists()


def _harness_process_config(info: HarnessInfo) -> None:
    hive_json = Path(info.harness_dir) / CREDENTIALS / HIVE_JSON
    hive_json.parent.mkdir(parents=True, exist_ok=True)
    hive_json.write_text(info.model_dump_json())


def _harness_process(info: HarnessInfo, *args: str) -> subprocess.Popen[bytes]:
    """`python -m hyperhive.harness` as the lifecycle server starts it, hive.json in its credentials dir."""
    _harness_process_config(info)
    log = (Path(info.harness_dir).parent / "harness.log").open("ab")
    command = [sys.executable, "-m", "hyperhive.harness", "--agent", info.agent, "--harness-dir", info.harness_dir]
    return subprocess.Popen([*command, *args], stdout=log, stderr=log)


def _until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.1)


def _turn_state(info: HarnessInfo) -> TurnState | None:
    try:
        return TurnState.model_validate_json((Path(info.harness_dir) / "turn.json").read_bytes())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    """Its arguments; [] while it is between two programs (an exec under way reads as empty)."""
    return [arg for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if arg]


@pytest.mark.slow
def test_the_idle_harness_says_why_it_cannot_reach_the_broker_and_stops_on_sigterm(hive: Hive, tmp_path: Path) -> None:
    info = _info(tmp_path, hive, f"http://127.0.0.1:{free_port()}/mcp", hive.add_agent("bob"))
    process = _harness_process(info, "--idle")
    try:
        _until(lambda: (state := _turn_state(info)) is not None and state.state == "error", "an error state")
        state = _turn_state(info)
        assert state is not None and state.reason
        assert "waiting for messages" in state.reason and "trying again in" in state.reason
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_the_harness_process_execs_into_its_idle_form_and_back_keeping_its_pid(
    hive: Hive, broker_process: BrokerProcess, tmp_path: Path
) -> None:
    bob = hive.add_agent("bob")
    broker_process.start()
    info = _info(
        tmp_path, hive, broker_process.url, bob, idle_close_seconds=1.0, env={"ANTHROPIC_API_KEY": "sk-x"},
        start=SandboxStart(reason="crashed", detail="exit 1"),
    )  # fmt: skip
    # It ran before, idle: the crash note is due at its first wake, which comes only after an idle spell.
    (Path(info.harness_dir) / "turn.json").write_text(TurnState(state="idle", since=time.time()).model_dump_json())
    process = _harness_process(info)
    try:
        _until(lambda: "--idle" in _cmdline(process.pid), "the idle form (exec after idle_close_seconds)")
        assert "--note-pending" in _cmdline(process.pid)  # the crash note was not said: carried over
        assert not Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()  # no Claude Code
        _until(lambda: (state := _turn_state(info)) is not None and state.state == "idle", "idle in turn.json")
        # Each form reads hive.json as it starts: the turn loop the next exec starts has no credentials,
        # so all it can do with the wake is hand it back, which shows it ran and took the handoff.
        _harness_process_config(info.model_copy(update={"env": {"CLAUDE_CONFIG_DIR": str(tmp_path / "none")}}))

        asyncio.run(hive_call(hive, broker_process, "send", to=bob, body="wake up"))
        _until(
            lambda: (args := _cmdline(process.pid)) and "--idle" not in args, "the turn loop again (exec on a message)"
        )
        assert {"--from-idle", "--note-pending"} <= set(_cmdline(process.pid))
        _until(
            lambda: (
                asyncio.run(hive_call(hive, broker_process, "pending_count", as_name=bob)) == {"queued": 1, "leased": 0}
            ),
            "the message handed back: this turn loop has no credentials",
        )
        assert process.poll() is None  # one process all along, waiting for credentials
        # It hands the message back, then says why in turn.json (a moment later under load).
        _until(lambda: (state := _turn_state(info)) is not None and state.state == "error", "the error in turn.json")
        state = _turn_state(info)
        assert state is not None and "no Claude credentials" in (state.reason or "")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        process.kill()
        process.wait()


async def hive_call(
    hive: Hive, broker: BrokerProcess, tool: str, as_name: str = "operator", **arguments: object
) -> object:
    async with HiveClient(ServerAddress("broker", broker.url), hive.token(as_name), retry_seconds=0) as client:
        return await client.call(tool, dict(arguments))


async def test_the_turn_loop_takes_the_handoff_first_and_goes_idle_when_no_wake_comes(
    hive: Hive, broker: BrokerEndpoint, tmp_path: Path
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    info = _info(tmp_path, hive, broker.url, bob, idle_close_seconds=1.0)
    first = await _send(broker, alice, bob, "handed over")
    batch = await asyncio.to_thread(wait_for_messages, info)
    harness = Harness(info)
    handled: list[list[int]] = []

    async def handle(messages: list[object], queued: int) -> None:
        ids = [m.id for m in messages]  # type: ignore[attr-defined]
        handled.append(ids)
        await harness.broker.ack(ids)

    harness._handle = handle  # type: ignore[method-assign]
    harness.session.env["ANTHROPIC_API_KEY"] = "sk-test"  # credentials are there: no wait for them
    started = time.monotonic()
    went_idle = await asyncio.wait_for(harness.run(), 20)
    assert went_idle and handled == [[m.id for m in batch.messages]] == [[first]]
    assert time.monotonic() - started >= 1.0  # it waited idle_close_seconds for another wake first
    assert await broker.client(bob).call("pending_count", {}) == {"queued": 0, "leased": 0}


async def test_a_handoff_the_turn_loop_cannot_take_now_goes_back_to_the_inbox(
    hive: Hive, broker: BrokerEndpoint, tmp_path: Path
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    info = _info(tmp_path, hive, broker.url, bob, env={"CLAUDE_CONFIG_DIR": str(tmp_path / "empty")})
    await _send(broker, alice, bob, "handed over")
    await asyncio.to_thread(wait_for_messages, info)
    harness = Harness(info)
    assert not harness.session.env.get("ANTHROPIC_API_KEY")  # no credentials: it must wait
    running = asyncio.create_task(harness.run())
    deadline = time.monotonic() + 10
    while await broker.client(bob).call("pending_count", {}) != {"queued": 1, "leased": 0}:
        assert time.monotonic() < deadline, "the handed-over message was not released"
        await asyncio.sleep(0.1)
    assert harness.recorder.state.state == "error"  # waiting for credentials, as it says
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_a_restart_after_its_messages_were_acked_does_not_hang_on_releasing_them(
    hive: Hive, broker: BrokerEndpoint, tmp_path: Path
) -> None:
    """turn.json still named the messages of a turn whose ack went through (the harness died right
    after it): handing them back is refused by the broker, and that must not stall the harness."""
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    info = _info(tmp_path, hive, broker.url, bob, idle_close_seconds=1.0, env={"ANTHROPIC_API_KEY": "sk-x"})
    first = await _send(broker, alice, bob, "handled already")
    await broker.client(bob).call("recv", {"ack": False})
    await broker.client(bob).call("ack", {"ids": [first]})
    left = TurnState(state="running", since=time.time(), turn=1, messages=1, leased=[first])
    (Path(info.harness_dir) / "turn.json").write_text(left.model_dump_json())
    assert await asyncio.wait_for(Harness(info).run(), 15)  # went idle, not stuck releasing


def test_a_turn_loop_that_went_on_from_its_idle_form_says_a_restart_note_only_if_it_is_still_due(
    hive: Hive, tmp_path: Path
) -> None:
    crashed = SandboxStart(reason="crashed", detail="exit 137")
    info = _info(tmp_path, hive, "http://127.0.0.1:1/mcp", hive.add_agent("bob"), start=crashed)
    idle = TurnState(state="idle", since=time.time())
    (Path(info.harness_dir) / "turn.json").write_text(idle.model_dump_json())

    async def note(**flags: bool) -> str | None:
        harness = Harness(info, **flags)
        harness.session.env["ANTHROPIC_API_KEY"] = "sk-x"
        harness._wake = lambda: asyncio.sleep(0, result=None)  # type: ignore[method-assign]
        await harness.run()
        return harness._restart_note

    assert "after a crash (exit 137)" in (asyncio.run(note()) or "")  # the run's first turn loop
    assert "after a crash (exit 137)" in (asyncio.run(note(from_idle=True, note_pending=True)) or "")
    assert asyncio.run(note(from_idle=True)) is None  # said already before it went idle: not again
