"""One agent's Claude Code, through claude-agent-sdk: a persistent session that runs turns.

The session keeps Claude Code running between wakes (a turn then costs only model time). Its id is
recorded in session.json and resumed whenever Claude Code starts again: after an idle close, a
failed CLI, a restart of the harness or of its sandbox. Claude Code reads the agent's current token
through a headers helper, so a renewed token changes nothing. The session is replaced only when the
operator asks, when its context grew past the reset threshold, or when resuming it fails twice; the
agent's notes.md carries what matters across.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    ResultMessage,
    SystemMessage,
    ToolUseBlock,
)
from claude_agent_sdk.types import McpServerConfig

from hyperhive.harness.prompts import system_prompt
from hyperhive.servers.common.binds import SHARED_MOUNT
from hyperhive.servers.common.catalog import HARNESS_ONLY
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.formatting import tool_text
from hyperhive.servers.common.harnessdir import CREDENTIALS, RESET_FILE, SESSION_FILE, HarnessInfo, SessionRecord

log = logging.getLogger("hyperhive.harness.claude")

# The built-in tools an agent has. Bash only runs what agent.toml's bash patterns allow; the file
# tools only work inside the agent's state dir (its cwd). Web, task and notebook tools are left out.
BUILTIN_TOOLS: Final = ("Bash", "Read", "Write", "Edit", "Glob", "Grep", "TodoWrite")
# Environment variables that Claude Code reads its credentials from.
CREDENTIAL_VARS: Final = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
RESUME_ATTEMPTS: Final = 2  # resuming the recorded session failed this often in a row: a fresh one
NO_CREDENTIALS: Final = (
    "no Claude credentials: set ANTHROPIC_API_KEY or run `claude login` "
    "(hive.toml [harness.env], or `hive claude NAME auth login`)"
)


@dataclass
class TurnOutcome:
    ok: bool
    terminal_reason: str | None = None
    error: str | None = None
    model_turns: int = 0
    tool_calls: Counter[str] = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    context_tokens: int = 0  # the context's size at the last model call
    retry: bool = False  # it failed for a reason that may pass (API, CLI): run the same wake again


def claude_dirs(harness_dir: Path) -> tuple[Path, Path, Path]:
    """Claude Code's HOME, CLAUDE_CONFIG_DIR (where `claude auth login` keeps credentials) and TMPDIR."""
    return harness_dir / "home", harness_dir / "claude", harness_dir / "tmp"


def claude_env(info: HarnessInfo, harness_dir: Path) -> dict[str, str]:
    """Claude Code's whole environment: its own HOME and config dir, and what the hive configured."""
    home, config_dir, tmp = claude_dirs(harness_dir)
    for directory in (home, config_dir, tmp):
        directory.mkdir(mode=0o700, exist_ok=True)
    # git reaches the forge with the agent's current token (a credential helper reading token_file).
    gitconfig = home / ".gitconfig"
    text = info.gitconfig()
    if not gitconfig.is_file() or gitconfig.read_text() != text:
        write_atomic(gitconfig, text, mode=0o600)
    env = {
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(config_dir),
        "TMPDIR": str(tmp),
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "ENABLE_TOOL_SEARCH": "false",  # offer the (few) MCP tools directly, not behind a search
        # Its commits (the manager's, in config repos) say who made them.
        "GIT_AUTHOR_NAME": info.agent,
        "GIT_AUTHOR_EMAIL": f"{info.agent}@hyperhive.local",
        "GIT_COMMITTER_NAME": info.agent,
        "GIT_COMMITTER_EMAIL": f"{info.agent}@hyperhive.local",
        "DISABLE_AUTOUPDATER": "1",
    }
    env.update(info.env)
    return env


def has_credentials(env: dict[str, str]) -> bool:
    if any(env.get(key) for key in CREDENTIAL_VARS):
        return True
    return (Path(env["CLAUDE_CONFIG_DIR"]) / ".credentials.json").is_file()


def builtin_tools(info: HarnessInfo) -> list[str]:
    """Claude Code's own tools for this agent. Without bash patterns there is no Bash at all: Claude Code
    would still run commands it deems read-only (`id`, `cat` …) without asking."""
    return [tool for tool in BUILTIN_TOOLS if tool != "Bash" or info.bash]


def bundled_cli() -> str:
    """The Claude Code CLI that claude-agent-sdk ships with (the one the harness runs)."""
    import claude_agent_sdk

    bundled = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    return str(bundled) if bundled.exists() else "claude"


def allowed_tools(info: HarnessInfo) -> list[str]:
    """Exactly the hyperhive tools of its allow-list, its own MCP servers, its bash patterns, and file
    access to its state dir (and to the shared workspace, as its `shared` mode says)."""
    # "//" starts an absolute path in a rule; an Edit rule covers Write too. Reading, globbing and
    # grepping inside the cwd (the state dir) need no rule; bare Read/Edit/Glob/Grep would allow any path.
    # The manager also edits every agent's proposed config repo.
    state = info.state_dir.rstrip("/")
    trees = [f"/{state}/**"] + ([f"/{info.agents_dir.rstrip('/')}/*/config/**"] if info.agents_dir else [])
    shared = [f"/{SHARED_MOUNT}/**"] if info.shared else []
    return [
        *info.tool_names(),
        *(f"mcp__{name}" for name in info.mcp_servers),
        *(f"Bash({pattern})" for pattern in info.bash),
        *(f"Read({tree})" for tree in trees + shared),
        *(f"Edit({tree})" for tree in trees + (shared if info.shared == "rw" else [])),
        "TodoWrite",
    ]


def harness_only_tools() -> list[str]:
    """The harness's own tools (record_turn): kept out of the model's sight even where hive.json's
    tools would list them; the harness already leaves them out of the MCP config's allow-list."""
    return sorted(f"mcp__{server}__{tool}" for server, tool in HARNESS_ONLY)


class ClaudeSession:
    """One agent's Claude Code session, recorded in session.json and resumed whenever Claude Code is
    started again (after close(), a failed CLI, a restart). It is replaced by a fresh one only when
    `reset_wanted` says why: the operator asked (reset_session), the context passed
    context_reset_tokens, or resuming failed RESUME_ATTEMPTS times in a row; the fresh session's first
    prompt then says so."""

    def __init__(self, info: HarnessInfo, stderr: Callable[[str], None]) -> None:
        self.info = info
        self._stderr = stderr
        self._last_stderr: deque[str] = deque(maxlen=5)  # the CLI's last words: why it failed
        # Told each tool call of a turn as it starts ("Bash: git diff"): turn.json shows it (see loop.py).
        self.on_tool: Callable[[str], Awaitable[None]] | None = None
        self.env = claude_env(info, Path(info.harness_dir))
        self._client: ClaudeSDKClient | None = None
        self._model: str | None = None
        # The session's running total_cost_usd as last reported: a resumed session's first result
        # carries the earlier processes' turns too (the total its transcript saved). Kept in
        # session.json, so a new harness process (a restart, the idle form's exec) knows it.
        self._cost_so_far = 0.0
        self._spent_here = 0.0  # by this Claude Code process: what --max-budget-usd counts
        self._record_path = Path(info.harness_dir) / SESSION_FILE
        self._reset_path = Path(info.harness_dir) / CREDENTIALS / RESET_FILE
        self.record = load_session_record(self._record_path)
        self._resuming = False  # the live Claude Code resumed the record's session; no turn has ended in it yet
        self.reset_wanted: str | None = None  # why the next turn starts a fresh session
        # The broker address the harness's own client last reached (loop.py sets it before each
        # turn): after a failover Claude Code's MCP config names it rather than hive.json's first,
        # so the model's own calls (send …) reach a live broker process too.
        self.broker_url: str | None = None
        self._client_broker: str | None = None  # the broker URL the live Claude Code was given

    def _broker(self) -> str | None:
        return self.broker_url or self.info.servers.get("broker")

    def options(self, model: str, *, resume: str | None = None, session_id: str | None = None) -> ClaudeAgentOptions:
        info, broker = self.info, self._broker()
        if broker is not None and broker != info.servers.get("broker"):
            info = info.model_copy(update={"servers": {**info.servers, "broker": broker}})
        servers: dict[str, McpServerConfig] = info.mcp_config()  # type: ignore[assignment]
        return ClaudeAgentOptions(
            model=model,
            cwd=self.info.state_dir,
            env=self.env,
            mcp_servers=servers,
            strict_mcp_config=True,
            tools=builtin_tools(self.info),
            allowed_tools=allowed_tools(self.info),
            disallowed_tools=harness_only_tools(),
            # agent.toml [budget] usd_per_turn. Claude Code counts it over the whole process (every
            # turn since it started), not per turn: _ready starts a new process for a turn once this
            # one has spent anything, so each turn gets the full allowance.
            max_budget_usd=self.info.usd_per_turn,
            permission_mode="dontAsk",  # whatever is not allowed above is refused, never asked about
            setting_sources=[],
            system_prompt={"type": "preset", "preset": "claude_code", "append": system_prompt(self.info)},
            # By default Claude Code records a conversation's system prompt once and resends it on
            # resume: a rebuilt agent would keep its old instructions for the rest of its session.
            extra_args={"system-prompt-snapshot": "off"},
            stderr=self._on_stderr,
            resume=resume,
            session_id=session_id,
        )

    def _on_stderr(self, line: str) -> None:
        if line.strip():
            self._last_stderr.append(line.strip())
        self._stderr(line)

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def turn(self, prompt: str, model: str) -> TurnOutcome:
        self._last_stderr.clear()
        try:
            client = await self._ready(model)
            note = self.record.fresh_note if self.record else None
            await client.query(f"{note}\n\n{prompt}" if note else prompt)
            outcome = await self._collect(client)
        except ClaudeSDKError as e:
            await self.close()  # a failed CLI: the next turn starts Claude Code again
            why = f"Claude Code failed: {self._last_stderr[-1]}" if self._last_stderr else _first_line(e)
            if self._resuming:
                self._resume_failed(why)
            return TurnOutcome(ok=False, terminal_reason="cli_error", error=why, retry=True)
        self._resuming = False
        record = self.record
        if record is not None:  # written only when it changes
            update: dict[str, object] = {}
            if not record.resumable or record.resume_failures:
                update.update(resumable=True, resume_failures=0)
            if outcome.ok and record.fresh_note:  # said until a turn of the new session ran through
                update.update(fresh_note=None)
            if record.cost_usd != self._cost_so_far:
                update.update(cost_usd=self._cost_so_far)
            if update:
                self._save(record.model_copy(update=update))
        return outcome

    async def _ready(self, model: str) -> ClaudeSDKClient:
        request = self._new_reset_request()
        if request is not None:
            self.reset_wanted = "the operator asked for a fresh session (reset_session)"
        handled = request or (self.record.reset_request if self.record else None)
        note = None
        if self.reset_wanted:
            log.info("starting a fresh Claude Code session: %s", self.reset_wanted)
            await self.close()
            note = fresh_session_note(self.reset_wanted)
            self._save(None)
            self.reset_wanted = None
        if self._client is not None and self.info.usd_per_turn is not None and self._spent_here > 0:
            await self.close()  # resumed below, with a fresh per-turn allowance
        if self._client is not None and self._client_broker != self._broker():
            log.info("the broker moved to %s: Claude Code starts again there, its session resumed", self._broker())
            await self.close()  # resumed below, its MCP config naming the broker that answers
        if self._client is None:
            record = self.record
            if record is not None and record.resumable:
                log.info("resuming Claude Code session %s", record.session_id)
                options = self.options(model, resume=record.session_id)
            else:  # nothing to resume (none yet, or its first turn never ended): a new one, still saying why
                note = note or (record.fresh_note if record else None)
                record = SessionRecord(
                    session_id=str(uuid.uuid4()), started_at=time.time(), reset_request=handled, fresh_note=note
                )
                self._save(record)
                options = self.options(model, session_id=record.session_id)
            self._resuming = record.resumable
            client = ClaudeSDKClient(options)
            await client.connect()
            self._client, self._model = client, model
            self._client_broker = self._broker()
            self._spent_here = 0.0
            self._cost_so_far = record.cost_usd
        elif model != self._model:
            await self._client.set_model(model)
            self._model = model
        return self._client

    def _resume_failed(self, why: str) -> None:
        if self.record is None:
            return
        failures = self.record.resume_failures + 1
        self._save(self.record.model_copy(update={"resume_failures": failures}))
        log.warning("resuming session %s failed (%d in a row): %s", self.record.session_id, failures, why)
        if failures >= RESUME_ATTEMPTS:
            self.reset_wanted = f"resuming your previous session failed {failures} times ({why})"

    def _new_reset_request(self) -> str | None:
        """The operator's reset_session: a request id in the credentials dir, carried out once (the
        session record keeps the last one carried out, across restarts)."""
        try:
            request = self._reset_path.read_text().strip()[:100]
        except OSError:
            return None
        done = self.record.reset_request if self.record else None
        return request if request and request != done else None

    def _save(self, record: SessionRecord | None) -> None:
        if record is None:  # forgotten: the next connect starts a new session
            self._record_path.unlink(missing_ok=True)
        else:
            write_atomic(self._record_path, record.model_dump_json(), 0o600)
        self.record = record

    async def _collect(self, client: ClaudeSDKClient) -> TurnOutcome:
        outcome = TurnOutcome(ok=False)
        result: ResultMessage | None = None
        async for message in client.receive_response():
            if isinstance(message, AssistantMessage):
                count_step(outcome, message)
                calls = [block for block in message.content if isinstance(block, ToolUseBlock)]
                if calls and self.on_tool is not None:
                    await self.on_tool(tool_text(calls[-1].name, calls[-1].input))
            elif isinstance(message, SystemMessage) and message.subtype == "init":
                _log_failed_servers(message.data)
            elif isinstance(message, ResultMessage):
                result = message
        if result is None:
            return TurnOutcome(
                ok=False, terminal_reason="no_result", error="Claude Code ended without a result", retry=True
            )
        # The session's total_cost_usd adds up over its turns (and over a resume, when its transcript
        # saved the total): this turn cost the difference. Below the last total it started afresh.
        total = result.total_cost_usd or 0.0
        cost = total - self._cost_so_far if total >= self._cost_so_far else total
        self._cost_so_far = total
        self._spent_here += cost
        count_result(outcome, result, cost)
        if result.is_error:
            outcome.retry = result.api_error_status is not None or result.subtype == "success"
        if outcome.context_tokens > self.info.context_reset_tokens:
            self.reset_wanted = f"its context reached {outcome.context_tokens:,} tokens"
        return outcome

    async def interrupt(self) -> None:
        if self._client is not None:
            await self._client.interrupt()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception as e:  # a CLI that already died cannot disconnect cleanly
                log.debug("disconnecting Claude Code: %s", e)


def load_session_record(path: Path) -> SessionRecord | None:
    """The recorded session; None if there is none or it is not one (the harness dir is the agent's)."""
    try:
        return SessionRecord.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def fresh_session_note(why: str) -> str:
    """What the first prompt of a session that replaced another one starts with."""
    return (
        f"[hyperhive] This is a new Claude Code session: {why}. Your earlier conversation is gone; "
        "read notes.md in your state dir for what you kept from it before acting."
    )


# ------------------------------------------------------------------------------ turn statistics
# A turn's numbers are computed here and only here, for a wake (ClaudeSession) and a notes
# compaction (notes.py) alike.


def tokens_in(usage: Mapping[str, Any]) -> int:
    """The input tokens of a model call (or of a turn's calls, in a ResultMessage's usage): fresh
    input plus what was read from and written to the prompt cache. `input_tokens` alone is only the
    uncached tail, a handful of tokens in a cached session; the model read all of it."""
    keys = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    return sum(int(usage.get(key) or 0) for key in keys)


def count_step(outcome: TurnOutcome, message: AssistantMessage) -> None:
    """One model call of the turn: its tool calls, and the context's size so far."""
    outcome.tool_calls.update(block.name for block in message.content if isinstance(block, ToolUseBlock))
    if message.usage:
        outcome.context_tokens = tokens_in(message.usage)


def count_result(outcome: TurnOutcome, result: ResultMessage, cost_usd: float) -> None:
    """The turn's end: whether it ran through, its model calls, tokens in and out, and `cost_usd`."""
    usage = result.usage or {}
    outcome.ok = not result.is_error
    outcome.terminal_reason = result.terminal_reason or result.subtype
    outcome.model_turns = result.num_turns
    outcome.tokens_in = tokens_in(usage)
    outcome.tokens_out = int(usage.get("output_tokens") or 0)
    outcome.cost_usd = cost_usd
    if result.is_error:
        outcome.error = _result_error(result)


def _result_error(result: ResultMessage) -> str:
    parts = [str(e) for e in (result.errors or [])] or [str(result.result or result.subtype)]
    if result.api_error_status:
        parts.insert(0, f"API error {result.api_error_status}")
    return _first_line(": ".join(parts))


def _first_line(error: object) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]


def _log_failed_servers(data: dict[str, Any]) -> None:
    for server in data.get("mcp_servers", []):
        if isinstance(server, dict) and server.get("status") not in ("connected", None):
            log.warning(
                "MCP server %s is %s: its tools are not available this turn", server.get("name"), server["status"]
            )
