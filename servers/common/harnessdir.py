"""The files between the lifecycle server and an agent's harness, stated once for both sides.

The lifecycle server writes the harness's instructions into the agent's credentials dir, which
the sandbox sees read-only at harness/credentials: hive.json (who it is, its servers and tools),
the token, the model override (set_model) and a cancel request (cancel_turn). The agent cannot
change them. The harness writes turn.json (its turn state, shown by agent_status) and session.json (the
Claude Code session it resumes) into its harness dir, which the agent can write too: the lifecycle
server reads turn.json without trusting it, and never needs session.json. Turn stats go to the
lifecycle server over MCP (record_turn), never through a file.
"""

from __future__ import annotations

import shlex
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, field_validator

CREDENTIALS: Final = "credentials"  # in the harness dir: a read-only bind of the agent's credentials dir
# In CREDENTIALS, written by lifecycle:
HIVE_JSON: Final = "hive.json"  # HarnessInfo, written at each start
INSTANCE_DIR: Final = "instance"  # holds TOKEN_FILE, the live instance's bearer token, refreshed while it runs
TOKEN_FILE: Final = "token"
MODEL_FILE: Final = "model"  # the runtime model override (set_model); absent: agent.toml's model
CANCEL_FILE: Final = "cancel"  # the id of a turn the operator cancelled (cancel_turn)
RESET_FILE: Final = "reset"  # a request id: the operator asked for a fresh session (reset_session)
# In the harness dir, written by the harness:
TURN_STATE: Final = "turn.json"  # TurnState
TURN_STATE_MAX_BYTES: Final = 16 * 1024
TOOL_TEXT_MAX: Final = 80  # TurnState.tool's length at most
SESSION_FILE: Final = "session.json"  # SessionRecord: kept across harness restarts, crashes and rebuilds
WAKE_FILE: Final = "wake.json"  # messages the idle waiter received, for the turn loop it execs (harness/idle.py)


# Why lifecycle started this run of the sandbox (HarnessInfo.start): the harness's first wake says it.
StartReason = Literal["created", "started", "restarted", "crashed", "rebuilt", "boot"]


class SandboxStart(BaseModel):
    """Why this run of the sandbox started: its first start (created), a start after a stop (started),
    a restart (restarted), a restart after a crash (crashed, detail: how it ended), a rebuild (rebuilt,
    detail: why) or the lifecycle server coming up with the agent meant to run (boot)."""

    model_config = ConfigDict(extra="forbid")

    reason: StartReason
    detail: str = ""  # "exit 137", "killed by SIGKILL", "a new config was applied", "by operator" …


class ServerEndpoint(BaseModel):
    """One address of a hyperhive server as the sandbox reaches it."""

    model_config = ConfigDict(extra="forbid")

    url: str  # its MCP URL
    tls_cert: str | None = None  # the PEM certificate an https URL is trusted by; None: the system's CAs


class HarnessInfo(BaseModel):
    """hive.json: who the agent is, where its servers are, and what its Claude Code may do."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    role: str
    model: str  # agent.toml's; the override file wins
    servers: dict[str, str]  # hyperhive server -> MCP URL reachable from inside the sandbox
    # hyperhive server -> the PEM certificate its https URL is trusted by (servers over TLS only): the
    # text, not hive.toml's path, which the sandbox may not have.
    tls_certs: dict[str, str] = {}
    # hyperhive server -> its other processes (hive.toml's [servers.broker] failover: the broker's), in
    # the order the harness tries them when the one in `servers` does not answer.
    failover: dict[str, list[ServerEndpoint]] = {}
    tools: dict[str, list[str]]  # hyperhive server -> the tools this agent may call there
    bash: list[str]  # Claude Code allowedTools patterns for Bash ("git diff:*")
    mcp_servers: dict[str, dict[str, Any]]  # its own extra MCP servers, as Claude Code's --mcp-config has them
    env: dict[str, str]  # configured environment for Claude Code (hive.toml [harness.env] + agent.toml [env])
    prompt: str  # agent.toml's addendum to the system prompt
    state_dir: str
    harness_dir: str
    token_file: str
    agents_dir: str | None = None  # the manager's: where every agent's proposed config repo is
    shared: str | None = None  # the shared workspace, /hive/shared: "rw", "ro", or None (not there)
    binds: list[str] = []  # agent.toml's [[binds]], "PATH (ro)": host paths in its sandbox
    batch_max: int = 10
    notes_max_bytes: int = 32 * 1024
    context_reset_tokens: int = 150_000
    usd_per_turn: float | None = None  # agent.toml [budget]: Claude Code's --max-budget-usd
    idle_close_seconds: float = 300.0  # Claude Code is closed after this long without a wake
    start: SandboxStart | None = None  # why this run started (None: not said, e.g. `hive mcp-config`)
    git_url: str | None = None  # the forge's git over HTTP(S) (http://127.0.0.1:7806/git): <git_url>/<repo>.git

    def endpoints(self, server: str) -> list[ServerEndpoint]:
        """Every address of `server` (which `servers` names), its failover ones after the first."""
        first = ServerEndpoint(url=self.servers[server], tls_cert=self.tls_certs.get(server))
        return [first, *self.failover.get(server, [])]

    def tool_names(self) -> list[str]:
        """Claude Code's names for the hyperhive tools it may call: mcp__<server>__<tool>."""
        return [f"mcp__{server}__{tool}" for server, tools in self.tools.items() for tool in sorted(tools)]

    def headers_helper(self) -> str:
        """The command Claude Code runs for the hyperhive servers' headers: it prints the agent's CURRENT
        token, read from token_file each time it connects (and again after a 401), so a renewed token
        needs no new session. Plain sh, no Python: it runs in the sandbox with a scrubbed environment."""
        return f'printf \'{{"Authorization":"Bearer %s"}}\' "$(cat {shlex.quote(self.token_file)})"'

    def gitconfig(self) -> str:
        """Claude Code's ~/.gitconfig: who commits, and for the forge's URL only a credential helper that
        answers with the agent's CURRENT token (read from token_file at each request, so renewals keep
        working) as the Basic password git sends. Plain sh, like the headers helper."""
        lines = ["[user]", f"\tname = {self.agent}", f"\temail = {self.agent}@hyperhive.local"]
        if self.git_url:
            base = self.git_url.rsplit("/", 1)[0]  # without /git: credentials match scheme, host and port
            helper = (
                "!f() { test \"$1\" = get || exit 0; printf 'username=%s\\npassword=%s\\n' "
                f'{shlex.quote(self.agent)} "$(cat {shlex.quote(self.token_file)})"; }}; f'
            )
            quoted = helper.replace("\\", "\\\\").replace('"', '\\"')
            lines += [f'[credential "{base}"]', f'\thelper = "{quoted}"']
        return "\n".join(lines) + "\n"

    def mcp_config(self, token: str | None = None, *, headers_helper: str | None = None) -> dict[str, dict[str, Any]]:
        """The `mcpServers` of Claude Code's --mcp-config: the hyperhive servers it may use, then its own.
        With `token`, that fixed token (`hive mcp-config`); else `headers_helper` (a peer's: `hive peer
        token`), else the harness's headers helper."""
        helper = headers_helper or self.headers_helper()
        auth: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}} if token else {"headersHelper": helper}
        servers: dict[str, dict[str, Any]] = {
            server: {"type": "http", "url": url, **auth}
            for server, url in self.servers.items()
            if self.tools.get(server)
        }
        servers.update(self.mcp_servers)
        return servers


# "unreadable" is never written: the lifecycle server shows it for a turn.json it cannot read.
# "paused": lifecycle's budget_check said no (its or the hive's daily budget is reached); messages wait.
HarnessState = Literal["starting", "idle", "running", "error", "paused", "unreadable"]


class TurnState(BaseModel):
    """turn.json: what the harness is doing now."""

    state: HarnessState
    since: float  # epoch seconds: when it entered this state
    turn: int | None = None  # the running turn's id (cancel_turn names it)
    messages: int = 0  # messages the running turn consumes
    leased: list[int] = []  # their ids: a harness that died mid-turn releases them at its next start
    reason: str | None = None  # for an error: what went wrong and what happens next
    last_turn_at: float | None = None  # epoch seconds: when its last turn ended (kept across restarts)
    # What the running turn is calling now, in a few words ("Bash: git diff --stat", "send → manager");
    # formatting.tool_text writes it. Cut, not refused: the file is the agent's to scribble on.
    tool: str | None = None

    @field_validator("tool")
    @classmethod
    def _short_tool(cls, tool: str | None) -> str | None:
        if tool is None:
            return None
        tool = "".join(c if c.isprintable() else " " for c in tool[: TOOL_TEXT_MAX * 4])  # no terminal escapes
        return tool if len(tool) <= TOOL_TEXT_MAX else tool[: TOOL_TEXT_MAX - 1] + "…"


class SessionRecord(BaseModel):
    """session.json: the Claude Code session the harness resumes (claude-agent-sdk `resume`) whenever it
    connects again — after an idle close, a failed CLI, a restart of the harness or of its sandbox."""

    session_id: str  # a UUID the harness chose (`session_id` for a new session, `resume` after)
    started_at: float  # epoch seconds
    resumable: bool = False  # a turn has ended in it (before that there is nothing to resume)
    resume_failures: int = 0  # in a row; at RESUME_ATTEMPTS the harness starts a fresh session
    reset_request: str | None = None  # the last reset_session request (RESET_FILE) carried out
    # Why this session replaced another: said before each prompt until a turn in it ran through, so
    # a harness that restarts before then still says it.
    fresh_note: str | None = None
    # Its total_cost_usd as Claude Code last reported it (a resume reports the earlier turns' too):
    # the next turn cost the difference.
    cost_usd: float = 0.0
