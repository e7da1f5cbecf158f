"""The scripted Messages API (tests/fakes/anthropic_api.py) drives the real Claude Code, offline.

The fast tests talk to the fake over plain HTTP. The slow ones run the Claude Code CLI bundled with
claude-agent-sdk through `ClaudeSDKClient`, against the fake and a tiny FastMCP server on loopback,
and pin down what the harness relies on: complete turns with an MCP call, persistent sessions,
retries and API errors, interrupts, which tools are offered and refused, file tool confinement, and
where the CLI writes its files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    Message,
    ResultError,
    ResultMessage,
    SystemMessage,
    ToolResultBlock,
    UserMessage,
    query,
)
from fakes.anthropic_api import Fail, Hold, Say, ScriptedAPI, Step, ToolCall, wake_of
from fastmcp import FastMCP
from hivetest import free_port

AGENT = "worker"


# ---------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    with ScriptedAPI() as fake:
        yield fake


@dataclass
class EchoServer:
    """A FastMCP server over streamable HTTP with tools `echo` and `secret`; `calls` records both."""

    url: str
    calls: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[EchoServer]:
    port = free_port()
    server = EchoServer(url=f"http://127.0.0.1:{port}/mcp")
    mcp: FastMCP[Any] = FastMCP("echo")

    @mcp.tool
    def echo(text: str) -> str:
        """Echo the text back."""
        server.calls.append(f"echo {text}")
        return f"echo: {text}"

    @mcp.tool
    def secret(text: str) -> str:
        """A tool the agents are not allowed to use."""
        server.calls.append(f"secret {text}")
        return "secret"

    http = uvicorn.Server(uvicorn.Config(mcp.http_app(path="/mcp"), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not http.started:
        assert time.monotonic() < deadline, "the MCP server did not start"
        time.sleep(0.02)
    yield server
    http.should_exit = True
    thread.join(timeout=10)


def options(api: ScriptedAPI, mcp: EchoServer, home: Path, **overrides: Any) -> ClaudeAgentOptions:
    """Claude Code for agent AGENT: only the fake and the echo server, its own HOME, no user settings."""
    home.mkdir(parents=True, exist_ok=True)
    inherited = {k: "" for k in os.environ if k.startswith(("ANTHROPIC_", "CLAUDE_"))}  # no leaks from outside
    env = {**inherited, **api.env(), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")}
    env.update(overrides.pop("env", {}))
    settings: dict[str, Any] = {
        "mcp_servers": {"t": {"type": "http", "url": mcp.url}},
        "strict_mcp_config": True,
        "tools": [],  # no built-in tools: smaller requests
        "allowed_tools": ["mcp__t__echo"],
        "system_prompt": {"type": "preset", "preset": "claude_code", "append": f"hyperhive agent: {AGENT}"},
        "setting_sources": [],
        "model": "claude-sonnet-4-5",
        "cwd": str(home),
        "env": env,
    }
    settings.update(overrides)
    return ClaudeAgentOptions(**settings)


@pytest.fixture
async def client(api: ScriptedAPI, mcp_server: EchoServer, tmp_path: Path) -> AsyncIterator[ClaudeSDKClient]:
    async with ClaudeSDKClient(options(api, mcp_server, tmp_path / "home")) as connected:
        yield connected


async def turn(client: ClaudeSDKClient, prompt: str) -> list[Message]:
    """Send a prompt and collect the messages up to and including the ResultMessage."""
    await client.query(prompt)
    return [message async for message in client.receive_response()]


def result_of(messages: list[Message]) -> ResultMessage:
    results = [m for m in messages if isinstance(m, ResultMessage)]
    assert len(results) == 1, messages
    return results[0]


def tool_results(messages: list[Message]) -> list[ToolResultBlock]:
    return [b for m in messages if isinstance(m, UserMessage) for b in m.content if isinstance(b, ToolResultBlock)]


def system_events(messages: list[Message], subtype: str) -> list[dict[str, Any]]:
    return [m.data for m in messages if isinstance(m, SystemMessage) and m.subtype == subtype]


def request_body(*messages: dict[str, Any], agent: str = AGENT, stream: bool = True) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "system": [{"type": "text", "text": "You are a test."}, {"type": "text", "text": f"hyperhive agent: {agent}"}],
        "messages": list(messages),
        "tools": [{"name": "mcp__broker__send", "input_schema": {"type": "object"}}],
        "stream": stream,
    }


def post(api: ScriptedAPI, body: dict[str, Any], session: str = "s1", path: str = "/v1/messages?beta=true") -> Any:
    """POST to the fake: (status, parsed JSON) or (status, [(event, data), ...]) for a stream."""
    request = urllib.request.Request(
        api.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Claude-Code-Session-Id": session},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, kind = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    if kind != "text/event-stream":
        return status, json.loads(raw)
    events = []
    for chunk in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return status, events


def user(*content: Any) -> dict[str, Any]:
    return {
        "role": "user",
        "content": list(content) if len(content) != 1 or not isinstance(content[0], str) else content[0],
    }


def called(tool_id: str, name: str = "mcp__broker__send") -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": name, "input": {}}]}


def result(tool_id: str, text: str = "sent") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": text}


# ---------------------------------------------------------------------------------------------------
# The fake alone


def test_a_tool_call_is_streamed_as_the_real_event_sequence(api: ScriptedAPI) -> None:
    api.script(agent=AGENT, when="hello", steps=[ToolCall("send", {"to": "operator", "body": "hi"}), Say("done")])

    status, events = post(api, request_body(user("hello")))

    assert status == 200
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    block = events[2][1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "mcp__broker__send"  # resolved from the bare name
    assert block["id"].startswith("toolu_")
    delta = events[3][1]["delta"]
    assert delta["type"] == "input_json_delta"
    assert json.loads(delta["partial_json"]) == {"to": "operator", "body": "hi"}
    assert events[5][1]["delta"]["stop_reason"] == "tool_use"
    assert events[0][1]["message"]["usage"]["input_tokens"] > 10
    assert events[5][1]["usage"]["output_tokens"] > 1
    (recorded,) = api.requests
    assert (recorded.agent, recorded.wake, recorded.position, recorded.tools) == (
        AGENT,
        "hello",
        0,
        ["mcp__broker__send"],
    )
    assert recorded.reply == "tool_use mcp__broker__send"


def test_the_position_in_the_script_follows_the_conversation(api: ScriptedAPI) -> None:
    rule = api.script(agent=AGENT, when="hello", steps=[ToolCall("send"), ToolCall("send"), Say("done")], times=1)
    first = user("hello")

    post(api, request_body(first))
    post(api, request_body(first, called("t1"), user(result("t1"))))
    _, events = post(api, request_body(first, called("t1"), user(result("t1")), called("t2"), user(result("t2"))))
    post(api, request_body(first, called("t1"), user(result("t1")), called("t2"), user(result("t2")),
                                       {"role": "assistant", "content": "done"}, user(result("t3"))))  # fmt: skip

    assert [r.position for r in api.requests] == [0, 1, 2, 3]
    assert [r.reply for r in api.requests] == [
        "tool_use mcp__broker__send",
        "tool_use mcp__broker__send",
        "end_turn done",
        "end_turn ok",  # the steps ran out
    ]
    assert events[2][1]["content_block"] == {"type": "text", "text": ""}
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "done"}
    assert events[5][1]["delta"]["stop_reason"] == "end_turn"
    assert rule.used == 1  # one turn, however many requests


def test_rules_are_per_agent_and_used_up_by_turns(api: ScriptedAPI) -> None:
    api.script(agent=AGENT, when="hello", steps=[Say("first time")], times=1)
    api.script(agent=AGENT, steps=[Say("any wake")])
    api.script(agent="other", when=lambda wake: wake.startswith("hel"), steps=[Say("other agent")])

    post(api, request_body(user("hello")), session="s1")
    post(api, request_body(user("hello")), session="s1")  # a retry of the same turn: same rule
    post(api, request_body(user("hello")), session="s2")  # redelivered in a fresh session: a new turn
    post(api, request_body(user("bye")), session="s2")
    post(api, request_body(user("hello"), agent="other"), session="s3")
    post(api, request_body(user("bye"), agent="other"), session="s3")
    post(api, request_body(user("hello"), agent="nobody"), session="s4")

    assert [r.reply for r in api.requests] == [
        "end_turn first time",
        "end_turn first time",
        "end_turn any wake",
        "end_turn any wake",
        "end_turn other agent",
        "end_turn ok",
        "end_turn ok",
    ]
    assert [r.agent for r in api.requests][-3:] == ["other", "other", "nobody"]


def test_failures_are_counted_per_turn_then_the_step_goes_through(api: ScriptedAPI) -> None:
    api.script(when="hello", steps=[Fail(529, times=2), Say("finally")])

    answers = [post(api, request_body(user("hello"))) for _ in range(3)]
    other_turn, _ = post(api, request_body(user("hello")), session="s2")

    assert [status for status, _ in answers] == [529, 529, 200]
    assert answers[0][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "scripted failure"}}
    assert other_turn == 529  # a new turn counts again
    assert [r.reply for r in api.requests] == ["error 529", "error 529", "end_turn finally", "error 529"]


def test_a_hold_keeps_the_response_open_until_its_event(api: ScriptedAPI) -> None:
    release = threading.Event()
    api.script(when="hello", steps=[Hold(release, seconds=20), Say("released")])
    answer: list[Any] = []
    poster = threading.Thread(target=lambda: answer.append(post(api, request_body(user("hello")))))
    poster.start()

    held = api.wait_for(lambda r: r.wake == "hello", timeout=5)
    time.sleep(0.3)
    assert not answer and held.reply == "end_turn released"
    release.set()
    poster.join(timeout=5)

    status, events = answer[0]
    assert status == 200 and events[0][0] == "message_start"
    assert events[-4][1]["delta"]["text"] == "released"
    assert not held.abandoned


def test_non_streaming_requests_get_json_and_other_paths_get_an_empty_object(api: ScriptedAPI) -> None:
    api.script(when="title", steps=[Say("A title")])

    status, message = post(api, request_body(user("title please"), stream=False))
    other = post(api, {}, path="/api/event_logging/batch")

    assert status == 200
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    assert message["content"] == [{"type": "text", "text": "A title"}]
    assert message["usage"]["input_tokens"] > 0
    assert other == (200, {})
    assert api.other_paths == ["POST /api/event_logging/batch"]


def test_the_wake_prompt_is_the_newest_prompt_text() -> None:
    reminder = {"type": "text", "text": "<system-reminder>\nstuff\n</system-reminder>"}
    first = user(reminder, {"type": "text", "text": "first"})
    tool_turn = [first, called("t1"), user(result("t1"))]

    assert wake_of([first]) == (0, 1, "first")
    assert wake_of([{"role": "system", "content": "x"}, user("plain string")]) == (1, 1, "plain string")
    assert wake_of(tool_turn) == (0, 1, "first")
    interrupted = user(result("t1"), {"type": "text", "text": "[Request interrupted by user]"},
                       {"type": "text", "text": "second"})  # fmt: skip
    assert wake_of([first, called("t1"), interrupted]) == (2, 1, "second")
    after_an_api_error = user(reminder, {"type": "text", "text": "first"}, {"type": "text", "text": "again"})
    assert wake_of([after_an_api_error]) == (0, 2, "again")
    assert wake_of([user(reminder)]) == (0, 0, reminder["text"])
    assert wake_of([]) == (-1, 0, "")


# ---------------------------------------------------------------------------------------------------
# The real Claude Code against the fake


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_turn_calls_an_mcp_tool_and_ends(api: ScriptedAPI, mcp_server: EchoServer, tmp_path: Path) -> None:
    api.script(agent=AGENT, when="hello", steps=[ToolCall("echo", {"text": "hi"}), Say("done")], times=1)
    home = tmp_path / "home"

    async with ClaudeSDKClient(options(api, mcp_server, home)) as client:
        messages = await turn(client, "hello there")

    init = system_events(messages, "init")[0]
    assert init["mcp_servers"] == [{"name": "t", "status": "connected", "source": "dynamic"}]
    assert init["tools"] == ["mcp__t__echo", "mcp__t__secret"]  # tools=[]: no built-in tools at all
    assert init["permissionMode"] == "default"
    assert mcp_server.calls[-1] == "echo hi"
    (echoed,) = tool_results(messages)
    assert echoed.content == '{"result":"echo: hi"}' and not echoed.is_error
    final = result_of(messages)
    assert (final.subtype, final.is_error, final.result, final.num_turns) == ("success", False, "done", 2)
    assert (final.stop_reason, final.terminal_reason) == ("end_turn", "completed")
    first, second = api.requests
    assert final.usage is not None
    assert final.usage["input_tokens"] == first.input_tokens + second.input_tokens  # what the fake reported
    assert final.total_cost_usd is not None and final.total_cost_usd > 0  # priced from those numbers
    assert (first.agent, first.wake, first.position, second.position) == (AGENT, "hello there", 0, 1)
    assert "mcp__t__echo" in first.tools and "ToolSearch" not in first.tools  # ENABLE_TOOL_SEARCH=false
    assert first.stream and second.tool_result_text().startswith('{"result":"echo: hi"}')
    assert first.session == final.session_id
    assert api.other_paths == []  # nothing but /v1/messages with CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC
    # Where the CLI writes with HOME and CLAUDE_CONFIG_DIR set: nothing else under HOME.
    written = {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}
    slug = re.sub(r"[^A-Za-z0-9]", "-", str(home))
    assert ".claude/.claude.json" in written
    assert f".claude/projects/{slug}/{final.session_id}.jsonl" in written
    assert {w.split("/")[0] for w in written} == {".claude", ".cache"}


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_two_turns_in_one_session(api: ScriptedAPI, client: ClaudeSDKClient) -> None:
    api.script(agent=AGENT, when="one", steps=[ToolCall("echo", {"text": "1"}), Say("first done")], times=1)
    api.script(agent=AGENT, when="two", steps=[ToolCall("echo", {"text": "2"}, text="Echoing."), Say("second done")])

    first = result_of(await turn(client, "one"))
    second_messages = await turn(client, "two")
    second = result_of(second_messages)

    assert (first.result, second.result) == ("first done", "second done")
    assert first.session_id == second.session_id and second.num_turns == 2  # num_turns: this turn's requests
    requests = api.snapshot()
    assert [(r.wake, r.position) for r in requests] == [("one", 0), ("one", 1), ("two", 0), ("two", 1)]
    assert [m["role"] for m in requests[2].messages] == ["user", "assistant", "user", "assistant", "user"]
    # A text block and a tool_use in one reply stay one assistant message: the position still counts 1.
    texts = [b for m in second_messages if isinstance(m, AssistantMessage) for b in m.content]
    assert [type(b).__name__ for b in texts] == ["TextBlock", "ToolUseBlock", "TextBlock"]
    # usage is this turn's; total_cost_usd and model_usage add up over the session.
    assert first.usage and second.usage and first.model_usage and second.model_usage
    assert first.usage["input_tokens"] == requests[0].input_tokens + requests[1].input_tokens
    assert second.usage["input_tokens"] == requests[2].input_tokens + requests[3].input_tokens
    assert first.total_cost_usd and second.total_cost_usd and second.total_cost_usd > first.total_cost_usd
    model_usage = second.model_usage["claude-sonnet-4-5"]
    assert model_usage["inputTokens"] == sum(r.input_tokens for r in requests)
    assert model_usage["costUSD"] == pytest.approx(second.total_cost_usd)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_api_errors_are_retried_and_a_failed_turn_leaves_the_session_usable(
    api: ScriptedAPI, mcp_server: EchoServer, tmp_path: Path
) -> None:
    api.script(agent=AGENT, when="flaky", steps=[Fail(500, times=2), ToolCall("echo", {"text": "x"}), Say("recovered")])
    api.script(agent=AGENT, when="doomed", steps=[Fail(529, times=100)])
    api.script(agent=AGENT, when="after", steps=[Say("fine again")])
    settings = options(api, mcp_server, tmp_path / "home", env={"CLAUDE_CODE_MAX_RETRIES": "2"})

    async with ClaudeSDKClient(settings) as client:
        flaky = await turn(client, "flaky")
        doomed = await turn(client, "doomed")  # no exception from a persistent session
        after = await turn(client, "after")

    retries = system_events(flaky, "api_retry")
    assert [(r["attempt"], r["max_retries"], r["error_status"]) for r in retries] == [(1, 2, 500), (2, 2, 500)]
    assert result_of(flaky).result == "recovered" and not result_of(flaky).is_error
    failed = result_of(doomed)
    assert len(system_events(doomed, "api_retry")) == 2
    assert (failed.subtype, failed.is_error, failed.terminal_reason, failed.api_error_status) == (
        "success",  # subtype says success: check is_error
        True,
        "api_error",
        529,
    )
    assert failed.result is not None and failed.result.startswith("API Error: 529")
    assert [r.reply for r in api.requests if r.wake == "doomed"] == ["error 529"] * 3  # 1 + 2 retries
    assert result_of(after).result == "fine again"
    # The failed turn's reply is not sent back: the next prompt is merged into the same user message.
    assert api.requests[-1].wake == "after" and api.requests[-1].position == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_one_shot_query_raises_result_error_after_an_api_error(
    api: ScriptedAPI, mcp_server: EchoServer, tmp_path: Path
) -> None:
    api.script(agent=AGENT, steps=[Fail(500, times=100)])
    settings = options(api, mcp_server, tmp_path / "home", env={"CLAUDE_CODE_MAX_RETRIES": "0"})
    seen: list[Message] = []

    with pytest.raises(ResultError) as raised:
        async for message in query(prompt="hello", options=settings):
            seen.append(message)

    assert (raised.value.terminal_reason, raised.value.api_error_status, raised.value.subtype) == (
        "api_error",
        500,
        "success",
    )
    assert result_of(seen).is_error  # the ResultMessage still comes first
    assert len(api.requests) == 1  # CLAUDE_CODE_MAX_RETRIES=0: no retry


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_an_interrupt_ends_a_held_turn_and_the_session_goes_on(api: ScriptedAPI, client: ClaudeSDKClient) -> None:
    release = threading.Event()
    api.script(agent=AGENT, when="long", steps=[ToolCall("echo", {"text": "1"}), Hold(release, 30), Say("never")])
    api.script(agent=AGENT, when="next", steps=[Say("next done")])

    await client.query("long")
    collected: list[Message] = []

    async def collect() -> None:
        async for message in client.receive_response():
            collected.append(message)

    reader = asyncio.create_task(collect())
    held = await asyncio.to_thread(api.wait_for, lambda r: r.wake == "long" and r.position == 1, 20)
    await client.interrupt()
    await asyncio.wait_for(reader, 10)

    interrupted = result_of(collected)
    assert (interrupted.subtype, interrupted.is_error, interrupted.terminal_reason) == (
        "error_during_execution",
        True,
        "aborted_streaming",
    )
    markers = [b.text for m in collected if isinstance(m, UserMessage) for b in m.content if hasattr(b, "text")]
    assert markers == ["[Request interrupted by user]"]
    await asyncio.to_thread(api.wait_for, lambda r: r is held and r.abandoned, 5)  # the CLI hung up

    following = result_of(await turn(client, "next"))
    assert following.result == "next done" and not following.is_error
    assert api.requests[-1].wake == "next"  # merged after the interrupted turn's tool_result


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_tools_outside_the_allow_list_are_offered_but_refused(
    api: ScriptedAPI, mcp_server: EchoServer, tmp_path: Path
) -> None:
    steps: list[Step] = [
        ToolCall("mcp__t__secret", {"text": "x"}),
        ToolCall("mcp__t__missing", {"text": "y"}),
        Say("done"),
    ]
    api.script(agent=AGENT, steps=steps)

    async with ClaudeSDKClient(options(api, mcp_server, tmp_path / "allowed")) as client:
        allowed_only = await turn(client, "go")
    async with ClaudeSDKClient(
        options(api, mcp_server, tmp_path / "dis", disallowed_tools=["mcp__t__secret"])
    ) as client:
        disallowed = await turn(client, "go")

    offered_first, offered_second = (r.tools for r in api.requests if r.position == 0)
    assert offered_first == ["mcp__t__echo", "mcp__t__secret"]  # allowed_tools does not filter what is offered
    assert offered_second == ["mcp__t__echo"]  # disallowed_tools does
    assert "secret x" not in mcp_server.calls
    denied, missing = tool_results(allowed_only)
    assert denied.is_error and "haven't granted it yet" in str(denied.content)
    assert missing.is_error and "No such tool available: mcp__t__missing" in str(missing.content)
    assert [d["tool_name"] for d in system_events(allowed_only, "permission_denied")] == ["mcp__t__secret"]
    assert [d["tool_name"] for d in result_of(allowed_only).permission_denials or []] == ["mcp__t__secret"]
    removed = tool_results(disallowed)[0]
    assert removed.is_error and "No such tool available: mcp__t__secret" in str(removed.content)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_file_tools_are_confined_to_the_granted_directory(
    api: ScriptedAPI, mcp_server: EchoServer, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("notes\n")
    (tmp_path / "private.txt").write_text("private\n")
    outside = tmp_path / "outside.txt"
    (work / "escape").symlink_to(tmp_path)
    api.script(
        agent=AGENT,
        steps=[
            ToolCall("Read", {"file_path": str(work / "notes.txt")}),
            ToolCall("Write", {"file_path": str(work / "new.txt"), "content": "new\n"}),
            ToolCall("Edit", {"file_path": str(work / "notes.txt"), "old_string": "notes", "new_string": "edited"}),
            ToolCall("Write", {"file_path": str(outside), "content": "no\n"}),
            ToolCall("Write", {"file_path": str(work / "escape" / "outside.txt"), "content": "no\n"}),
            ToolCall("Read", {"file_path": str(tmp_path / "private.txt")}),
            ToolCall("Read", {"file_path": "/etc/hostname"}),
            Say("done"),
        ],
    )
    settings = options(
        api,
        mcp_server,
        tmp_path / "home",
        cwd=str(work),
        tools=["Read", "Write", "Edit"],
        allowed_tools=[f"Edit(/{work}/**)"],  # `//` + absolute path; Edit rules cover Write too
        permission_mode="dontAsk",
    )

    async with ClaudeSDKClient(settings) as client:
        messages = await turn(client, "go")

    results = tool_results(messages)
    assert [r.is_error for r in results] == [None, None, None, True, True, True, True]
    assert "notes" in str(results[0].content)  # Read in the working directory needs no rule
    assert (work / "new.txt").read_text() == "new\n" and (work / "notes.txt").read_text() == "edited\n"
    assert not outside.exists()
    assert all("denied because Claude Code is running in don't ask mode" in str(r.content) for r in results[3:])
    assert len(result_of(messages).permission_denials or []) == 4


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_write_rule_does_not_grant_the_write_tool(
    api: ScriptedAPI, mcp_server: EchoServer, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    api.script(agent=AGENT, steps=[ToolCall("Write", {"file_path": str(work / "new.txt"), "content": "x"}), Say("ok")])
    settings = options(
        api, mcp_server, tmp_path / "home", cwd=str(work), tools=["Write"], allowed_tools=[f"Write(/{work}/**)"]
    )

    async with ClaudeSDKClient(settings) as client:
        messages = await turn(client, "go")

    (refused,) = tool_results(messages)
    assert refused.is_error and "haven't granted it yet" in str(refused.content)
    assert not (work / "new.txt").exists()
