"""A scripted Anthropic Messages API on loopback, for driving the real Claude Code in tests.

Claude Code works offline when ANTHROPIC_BASE_URL points at a server that speaks the Messages API.
This one runs in a background thread with the standard library only, so sync and async tests can use
it, and subprocesses and bubblewrap sandboxes (same network namespace) can reach it:

    with ScriptedAPI() as api:
        api.script(agent="manager", when="hello",
                   steps=[ToolCall("mcp__broker__send", {"to": "operator", "body": "hi"}), Say("done")])
        ...  # start Claude Code with env=api.env()
        request = api.wait_for(lambda r: r.position == 1 and r.agent == "manager")

How a reply is chosen, per `POST /v1/messages` request:

- The *agent* is the name in the line `hyperhive agent: <name>` anywhere in the system prompt.
- The *wake prompt* is the text of the last user message that holds no tool_result (more exactly, the
  last prompt text Claude Code sent: see `wake_of`).
- The *position* is the number of assistant messages after the wake prompt: the n-th reply step of a
  script answers position n (each earlier step produced one assistant message and a tool_result).
- The first request of a turn (a wake prompt in a session) picks the first registered rule that
  matches and has uses left, and takes one use; later requests of the same turn (and the CLI's retries)
  stay with that rule. A wake delivered again in a fresh session is a new turn and takes a new use, so
  with `times=1` it falls to the next matching rule. No rule: the default reply, end_turn "ok".
- `Hold` and `Fail` steps modify the reply step (`ToolCall`, `Say`) that follows them: `Hold` delays
  the response, `Fail` answers an HTTP error its first `times` times (counted per turn), then lets the
  step through. After the last step, or with no steps, the reply is end_turn "ok".

Streaming requests get the real SSE event sequence; `"stream": false` ones a plain JSON message.
Any other path gets 200 `{}`.
"""

from __future__ import annotations

import itertools
import json
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeAlias

AGENT_MARKER = re.compile(r"hyperhive agent: (\S+)")
DEFAULT_TEXT = "ok"
PING_SECONDS = 5.0

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


# ---------------------------------------------------------------------------------------------------
# Script steps


@dataclass(frozen=True)
class ToolCall:
    """Reply with a tool_use block (stop_reason tool_use), optionally after a text block.

    `name` is sent as it is when the request offers it, or when it contains `__`. A bare name (no `__`)
    that the request does not offer is resolved against the offered tools: `send` becomes
    `mcp__broker__send` if exactly one offered tool ends with `__send`. A name that is not offered is
    sent anyway (Claude Code is expected to refuse it). `input` may be a function of the request.
    """

    name: str
    input: Mapping[str, Any] | Callable[[Request], Mapping[str, Any]] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class Say:
    """Reply with text and end the turn (stop_reason end_turn). With `output_tokens` the reply's usage
    reports that many: Claude Code prices them (its total_cost_usd), so a script can make a turn cost."""

    text: str = "done"
    output_tokens: int | None = None


@dataclass(frozen=True)
class Hold:
    """Keep the response open until `event` is set or `seconds` pass, then send the next step's reply.

    With `started` the status line, headers and message_start go out first (the model is "thinking");
    without it nothing is sent while holding. A client that hangs up ends the hold.
    """

    event: threading.Event | None = None
    seconds: float = 30.0
    started: bool = True


@dataclass(frozen=True)
class Fail:
    """Answer HTTP `status` (529 overloaded, 500, 429 …) the first `times` times, then go on."""

    status: int = 529
    times: int = 1


Reply: TypeAlias = ToolCall | Say
Step: TypeAlias = ToolCall | Say | Hold | Fail
Matcher: TypeAlias = str | Callable[[str], bool] | None


@dataclass
class Rule:
    """A registered script. `used` counts the turns it has answered."""

    agent: str | None
    when: Matcher
    steps: tuple[Step, ...]
    times: int | None
    used: int = 0

    def matches(self, agent: str | None, wake: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.agent is not None and self.agent != agent:
            return False
        if self.when is None:
            return True
        if isinstance(self.when, str):
            return self.when in wake
        return self.when(wake)

    def slot(self, position: int, default_text: str = DEFAULT_TEXT) -> tuple[list[Hold | Fail], Reply]:
        """The modifiers and the reply for the `position`-th reply step; past the end, end_turn text."""
        modifiers: list[Hold | Fail] = []
        replies = 0
        for step in self.steps:
            if isinstance(step, Hold | Fail):
                modifiers.append(step)
                continue
            if replies == position:
                return modifiers, step
            replies += 1
            modifiers = []
        return (modifiers if replies == position else []), Say(default_text)


DEFAULT_RULE = Rule(agent=None, when=None, steps=(), times=None)


# ---------------------------------------------------------------------------------------------------
# Recorded requests


@dataclass
class Request:
    """One request to /v1/messages, as parsed, and what the fake answered."""

    body: dict[str, Any]
    path: str
    headers: dict[str, str]
    received: float  # time.monotonic()
    agent: str | None
    wake: str  # text of the wake prompt ("" if none)
    position: int
    tools: list[str]  # names of the offered tools
    rule: Rule | None = None  # None: the default reply
    reply: str = ""  # "tool_use <name>", "end_turn <text>", "error <status>"
    abandoned: bool = False  # the client hung up before the reply was complete (killed, interrupted)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body.get("messages") or []
        return messages

    @property
    def system_text(self) -> str:
        return system_text(self.body.get("system"))

    @property
    def session(self) -> str:
        return session_of(self.body, self.headers)

    @property
    def input_tokens(self) -> int:
        """The input_tokens the fake reports for this request: about a token per 4 characters."""
        return estimate_tokens([self.body.get("system"), self.messages, self.body.get("tools")])

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last user message (what the previous ToolCall got back).

        Claude Code may put a `role: "system"` message after it (a reminder), so that is skipped."""
        users = [m for m in self.messages if m.get("role") == "user"]
        if not users:
            return []
        return [b for b in blocks(users[-1].get("content")) if b.get("type") == "tool_result"]

    def tool_result_text(self) -> str:
        """The text of the last message's tool results, joined (with is_error results marked)."""
        parts = []
        for result in self.tool_results():
            prefix = "[error] " if result.get("is_error") else ""
            parts.append(prefix + text_of(result.get("content")))
        return "\n".join(parts)


def blocks(content: Any) -> list[dict[str, Any]]:
    """Message content as a list of blocks (a plain string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def text_of(content: Any) -> str:
    return "\n".join(str(b.get("text", "")) for b in blocks(content) if b.get("type") == "text")


def system_text(system: Any) -> str:
    return text_of(system)


def agent_of(body: Mapping[str, Any]) -> str | None:
    found = AGENT_MARKER.search(system_text(body.get("system")))
    return found.group(1) if found else None


def _is_prompt_text(text: str) -> bool:
    """Whether a user text block is something someone wrote, not one of Claude Code's additions."""
    text = text.strip()
    return bool(text) and not text.startswith("<system-reminder>") and not text.startswith("[Request interrupted")


def wake_of(messages: Sequence[Mapping[str, Any]]) -> tuple[int, int, str]:
    """Where the wake prompt is and what it says: (message index, prompt blocks in that message, text).

    The wake prompt is the last prompt text block of the last user message that has one; (-1, 0, "")
    if there is none. Claude Code adds `<system-reminder>` text blocks to prompts and tool results;
    they are not prompt text (a user message with nothing else and no tool_result still counts, with
    all its text). Claude Code merges consecutive user messages before sending them, so one message
    may hold several prompts and tool results:
    - after an interrupt, `[tool_result, "[Request interrupted by user]", "second"]`;
    - after a turn that ended in an API error (its reply is not sent back), `["first", "second"]`.
    The newest prompt is the last block.
    """
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") != "user":
            continue
        content = blocks(message.get("content"))
        texts = [str(b.get("text", "")) for b in content if b.get("type") == "text"]
        prompts = [t for t in texts if _is_prompt_text(t)]
        if prompts:
            return index, len(prompts), prompts[-1]
        if not any(b.get("type") == "tool_result" for b in content):
            return index, 0, "\n".join(texts)
    return -1, 0, ""


def session_of(body: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    """Claude Code's session id, from its header or the request metadata ("" if absent)."""
    for name, value in headers.items():
        if name.lower() == "x-claude-code-session-id":
            return value
    metadata = body.get("metadata")
    user_id = metadata.get("user_id", "") if isinstance(metadata, dict) else ""
    return str(user_id)


def tool_names(body: Mapping[str, Any]) -> list[str]:
    return [str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict)]


def resolve_tool(name: str, offered: Sequence[str]) -> str:
    """`name` if offered or qualified (has `__`); else the one offered `mcp__<server>__<name>`, if unique."""
    if name in offered or "__" in name:
        return name
    candidates = [t for t in offered if t.endswith(f"__{name}")]
    return candidates[0] if len(candidates) == 1 else name


def estimate_tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return max(1, len(text) // 4)


# ---------------------------------------------------------------------------------------------------
# The server


@dataclass
class _Turn:
    rule: Rule
    fails: dict[tuple[int, int], int] = field(default_factory=dict)  # (position, step index) → errors sent


@dataclass
class _Plan:
    holds: list[Hold]
    fail: Fail | None
    reply: Reply


class ScriptedAPI:
    """The fake Messages API. Use as a context manager, or start() and close()."""

    def __init__(self, *, default_text: str = DEFAULT_TEXT, host: str = "127.0.0.1") -> None:
        self.default_text = default_text
        self.requests: list[Request] = []  # every /v1/messages request, in order of arrival
        self.other_paths: list[str] = []  # every other request, "METHOD path"
        self._host = host
        self._rules: list[Rule] = []
        self._turns: dict[tuple[str | None, str, int, int, str], _Turn] = {}  # see _record
        self._changed = threading.Condition()  # guards everything above; notified on each request
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> ScriptedAPI:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self._host, 0), _handler_class(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="scripted-api", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # ends every Hold
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> ScriptedAPI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the scripted API is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """For ANTHROPIC_BASE_URL: `http://127.0.0.1:PORT`, no /v1."""
        return f"http://{self._host}:{self.port}"

    def env(self) -> dict[str, str]:
        """What Claude Code needs to talk to this fake and nothing else."""
        return {
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-scripted-test-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "ENABLE_TOOL_SEARCH": "false",  # offer MCP tools directly, not behind ToolSearch
        }

    # -- scripting

    def script(
        self,
        *,
        agent: str | None = None,
        when: Matcher = None,
        steps: Sequence[Step] = (),
        times: int | None = None,
    ) -> Rule:
        """Answer turns of `agent` (any agent if None) whose wake prompt contains `when` (a substring, or a
        predicate on the wake text; None: any) with `steps`, for at most `times` turns (None: no limit).
        Rules are tried in the order they were registered."""
        rule = Rule(agent=agent, when=when, steps=tuple(steps), times=times)
        with self._changed:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget the rules (recorded requests stay)."""
        with self._changed:
            self._rules.clear()
            self._turns.clear()

    # -- waiting on requests

    def snapshot(self) -> list[Request]:
        with self._changed:
            return list(self.requests)

    def wait_for(self, predicate: Callable[[Request], bool] = lambda r: True, timeout: float = 30) -> Request:
        """The first recorded request (already received or still to come) that satisfies `predicate`.

        The predicate is tried again on every request whenever one arrives or is abandoned."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    summary = [(r.agent, r.wake[:40], r.position, r.reply) for r in self.requests[-10:]]
                    raise TimeoutError(f"no matching request within {timeout} s; last requests: {summary}")
                self._changed.wait(remaining)

    def wait_count(self, count: int, timeout: float = 30) -> list[Request]:
        """Wait until at least `count` requests have arrived; all of them."""
        self.wait_for(lambda _: len(self.requests) >= count, timeout)
        return self.snapshot()

    # -- deciding (called from the handler threads)

    def _record(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[Request, _Plan]:
        messages = body.get("messages") or []
        wake_index, prompts, wake = wake_of(messages)
        position = sum(1 for m in messages[wake_index + 1 :] if m.get("role") == "assistant")
        request = Request(
            body=body,
            path=path,
            headers=headers,
            received=time.monotonic(),
            agent=agent_of(body),
            wake=wake,
            position=position,
            tools=tool_names(body),
        )
        with self._changed:
            key = (request.agent, request.session, wake_index, prompts, wake)
            turn = self._turns.get(key)
            if turn is None:
                rule = next((r for r in self._rules if r.matches(request.agent, wake)), None)
                if rule is not None:
                    rule.used += 1
                turn = self._turns[key] = _Turn(rule or DEFAULT_RULE)
            plan = self._plan(turn, position)
            request.rule = None if turn.rule is DEFAULT_RULE else turn.rule
            request.reply = self._describe(plan, request)
            self.requests.append(request)
            self._changed.notify_all()
        return request, plan

    def _plan(self, turn: _Turn, position: int) -> _Plan:
        modifiers, reply = turn.rule.slot(position, self.default_text)
        holds: list[Hold] = []
        for index, step in enumerate(modifiers):
            if isinstance(step, Hold):
                holds.append(step)
                continue
            sent = turn.fails.get((position, index), 0)
            if sent < step.times:
                turn.fails[(position, index)] = sent + 1
                return _Plan(holds=holds, fail=step, reply=reply)
        return _Plan(holds=holds, fail=None, reply=reply)

    @staticmethod
    def _describe(plan: _Plan, request: Request) -> str:
        if plan.fail is not None:
            return f"error {plan.fail.status}"
        if isinstance(plan.reply, ToolCall):
            return f"tool_use {resolve_tool(plan.reply.name, request.tools)}"
        return f"end_turn {plan.reply.text}"

    def _held(self, hold: Hold, connection: socket.socket, ping: Callable[[], None] | None) -> None:
        """Wait out a Hold: until its event is set, its time passes, the fake closes or the client hangs up.

        `ping` (once the stream has started) is called every PING_SECONDS, as the real API sends pings."""
        deadline = time.monotonic() + hold.seconds
        next_ping = time.monotonic() + PING_SECONDS
        while not self._closing.is_set() and (hold.event is None or not hold.event.is_set()):
            now = time.monotonic()
            if now >= deadline or _hung_up(connection):
                return
            if ping is not None and now >= next_ping:
                ping()
                next_ping = now + PING_SECONDS
            (hold.event or self._closing).wait(min(0.05, deadline - now))

    def _abandoned(self, request: Request) -> None:
        with self._changed:
            request.abandoned = True
            self._changed.notify_all()

    def _content(self, reply: Reply, request: Request) -> tuple[list[dict[str, Any]], str]:
        """The reply's content blocks and stop reason."""
        if isinstance(reply, Say):
            return [{"type": "text", "text": reply.text}], "end_turn"
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        arguments = reply.input(request) if callable(reply.input) else reply.input
        tool_id = f"toolu_{next(self._ids):04d}{uuid.uuid4().hex[:20]}"
        name = resolve_tool(reply.name, request.tools)
        content.append({"type": "tool_use", "id": tool_id, "name": name, "input": dict(arguments)})
        return content, "tool_use"


def _hung_up(connection: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _message(request: Request, content: list[dict[str, Any]], stop_reason: str | None) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": request.body.get("model", "claude-scripted"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": request.input_tokens,
            "output_tokens": estimate_tokens(content) if content else 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _stream_events(message: dict[str, Any]) -> Iterator[bytes]:
    """The SSE events of a complete message, after message_start."""
    yield _sse("ping", {"type": "ping"})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
    yield _sse("message_stop", {"type": "message_stop"})


def _handler_class(api: ScriptedAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._other()

        def do_HEAD(self) -> None:
            self._other()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            if path != "/v1/messages":
                self._other()
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                error = {"type": "invalid_request_error", "message": "the body is not a JSON object"}
                self._json(400, {"type": "error", "error": error})
                return
            self._messages(body)

        def _other(self) -> None:
            with api._changed:
                api.other_paths.append(f"{self.command} {self.path}")
            self._json(200, {})

        def _messages(self, body: dict[str, Any]) -> None:
            request, plan = api._record(self.path, dict(self.headers.items()), body)
            try:
                self._reply(request, plan)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                api._abandoned(request)

        def _reply(self, request: Request, plan: _Plan) -> None:
            started = False
            for hold in plan.holds:
                if hold.started and not started and plan.fail is None and request.stream:
                    self._start_stream(request)
                    started = True
                api._held(hold, self.connection, self._ping if started else None)
                if _hung_up(self.connection):
                    self.close_connection = True
                    api._abandoned(request)
                    return
            if plan.fail is not None:
                error = {"type": ERROR_TYPES.get(plan.fail.status, "api_error"), "message": "scripted failure"}
                self._json(plan.fail.status, {"type": "error", "error": error})
                return
            content, stop_reason = api._content(plan.reply, request)
            message = _message(request, content, stop_reason)
            if isinstance(plan.reply, Say) and plan.reply.output_tokens is not None:
                message["usage"]["output_tokens"] = plan.reply.output_tokens
            if not request.stream:
                self._json(200, message)
                return
            if not started:
                self._start_stream(request)
            for event in _stream_events(message):
                self.wfile.write(event)
            self.wfile.flush()
            self.close_connection = True

        def _ping(self) -> None:
            self.wfile.write(_sse("ping", {"type": "ping"}))
            self.wfile.flush()

        def _start_stream(self, request: Request) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
            self.end_headers()
            start = _message(request, [], None)
            start["usage"]["output_tokens"] = 1
            self.wfile.write(_sse("message_start", {"type": "message_start", "message": start}))
            self.wfile.flush()

        def _json(self, status: int, payload: Mapping[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
            self.end_headers()
            self.wfile.write(data)

    return Handler
