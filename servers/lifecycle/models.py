"""What the lifecycle server's tools take and return."""

from __future__ import annotations

import time
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hyperhive.servers.common.audit import ActionEntry
from hyperhive.servers.common.harnessdir import TurnState

FUTURE_SLACK: Final = 86_400.0  # a turn may start this far ahead of the server's clock (skew), no further
LONGEST_TURN: Final = 7 * 86_400.0
_Text = Annotated[str, Field(max_length=200)]
_ToolName = Annotated[str, Field(min_length=1, max_length=128)]
_Count = Annotated[int, Field(ge=0, le=1_000_000)]
_Tokens = Annotated[int, Field(ge=0, le=10**10)]
_Time = Annotated[float, Field(ge=0, allow_inf_nan=False)]
AgentState = Literal["stopped", "starting", "running", "stopping", "restarting", "failed"]


class Turn(BaseModel):
    """One Claude Code turn of an agent, as its harness reported it."""

    kind: Literal["wake", "compaction"] = "wake"  # compaction: the notes.md rewrite
    started_at: _Time  # epoch seconds
    ended_at: _Time
    ok: bool
    terminal_reason: _Text | None
    model: _Text | None
    model_turns: Annotated[int, Field(ge=0, le=100_000)]
    tool_calls: Annotated[dict[_ToolName, _Count], Field(max_length=64)]  # tool name -> calls
    tokens_in: _Tokens
    tokens_out: _Tokens
    cost_usd: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)]
    messages: Annotated[int, Field(ge=0, le=1000)]  # messages the turn consumed
    inbox_depth: Annotated[int, Field(ge=0, le=10**9)]  # messages waiting when it started
    error: Annotated[str, Field(max_length=2000)] | None


class TurnRecord(Turn):
    """record_turn's argument: a turn plus the harness's key for it (a retry with the same key is
    stored once). Every field is bounded: the harness runs in the agent's sandbox."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]

    @field_validator("started_at")
    @classmethod
    def _not_ahead(cls, started_at: float) -> float:
        if started_at > time.time() + FUTURE_SLACK:
            raise ValueError("is more than a day in the future")
        return started_at

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> Self:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if self.ended_at - self.started_at > LONGEST_TURN:
            raise ValueError("a turn lasting more than 7 days is not a turn")
        return self


class TurnSummary(BaseModel):
    turns: int
    errors: int
    duration_p50: float | None
    duration_p95: float | None
    tool_calls: dict[str, int]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    messages: int


class TurnTotals(BaseModel):
    """One agent's turns since a time, added up (swarm_stats)."""

    name: str
    turns: int
    errors: int
    avg_seconds: float | None  # the turns' mean duration
    cost_usd: float
    top_tools: dict[str, int]  # its most called tools, most first (TOP_TOOLS at most)


class SwarmStats(BaseModel):
    since: str  # ISO 8601: 00:00 UTC today, the day budgets count
    agents: list[TurnTotals]  # only agents with turns since then


class Recorded(BaseModel):
    recorded: bool  # false: a row with this key was recorded before (a retry)


class Spend(BaseModel):
    """What an agent (or the hive) spent, from the cost its turns reported, and its daily budget."""

    today_usd: float  # since 00:00 UTC
    week_usd: float  # since Monday 00:00 UTC
    usd_per_day: float | None  # its daily budget (set_budget's, else agent.toml's / hive.toml's); None: no limit
    paused: str | None = None  # "paused: budget $X/day reached": it takes no turns until raised or tomorrow
    paused_by: Literal["agent", "hive"] | None = None  # whose budget: its own (resume_agent lifts it) or the hive's
    # The operator resumed it today (resume_agent): only its cost since then counts against its budget.
    resumed_at: str | None = None
    counted_usd: float | None = None  # that cost, when resumed today


class BudgetCheck(BaseModel):
    """budget_check's answer, for the calling agent's harness before it takes messages."""

    paused: str | None  # why it may not take a turn now; None: go ahead


class BudgetSet(BaseModel):
    name: str
    spend: Spend


class Resumed(BaseModel):
    name: str
    spend: Spend  # resumed_at: now; paused: None


class AgentInfo(BaseModel):
    name: str
    role: str
    # "peer": a Claude Code session outside the hive (`hive peer add`); lifecycle runs nothing of it,
    # so its state is "peer", desired None and its model its own ("").
    kind: Literal["agent", "peer"] = "agent"
    # "unreachable": it lives on another host of the hive that does not answer (see `host`).
    state: AgentState | Literal["peer", "unreachable"]
    desired: Literal["running", "stopped"] | None  # what it was last asked to be
    model: str  # the model its next turn uses (set_model's override, else agent.toml's)
    started_at: str | None
    last_exit_code: int | None
    last_signal: str | None
    restart_count: int  # restarts after crashes
    applied_sha: str | None
    needs_update: bool  # built by another hyperhive version, or from an older applied config
    turn: TurnState | None = None  # its harness: idle, running a turn (since when), or an error and why
    problem: str | None = None  # why it cannot run as it is (its state dir past its state_max)
    spend: Spend | None = None  # cost today and this week, its daily budget, whether it is paused for it
    host: str | None = None  # the host it lives on, in a hive of several hosts ([storage] url)


class AgentList(BaseModel):
    backend: str
    isolation: str  # how agents are kept apart here, in one line
    version: str  # the hyperhive version agents are built with
    agents: list[AgentInfo]
    # Names with a proposed config repo but no agent: drafts, and what destroyed agents left.
    drafts: list[str] = []
    hive_spend: Spend | None = None  # every agent's cost together, and hive.toml's [budget]


class AgentStatus(AgentInfo):
    backend: str
    isolation: str
    uid: int | None  # the host uid it runs as, when the server runs as root
    crashes_in_a_row: int
    stopped_at: str | None
    busy: str | None  # what is being done to it right now, if anything
    state_dir: str
    harness_dir: str


class PeerAdded(BaseModel):
    name: str
    applied_sha: str  # its applied config's commit (kind = "peer")


class PeerRemoved(BaseModel):
    name: str


class LogLines(BaseModel):
    name: str
    lines: list[str]


class AgentConfigText(BaseModel):
    name: str
    sha: str | None  # the applied repo's commit
    proposed_sha: str | None  # the proposed commit it was applied from
    agent_toml: str
    agent_nix: str | None


class CommitDiff(BaseModel):
    name: str
    proposed_sha: str
    applied_sha: str | None  # None: nothing applied yet (a draft)
    diff: str  # unified diff of the applied config to the proposed commit; '' if they are the same
    valid: bool
    problems: str | None  # why it cannot be applied, when it cannot
    widenings: list[str] = []  # what it may do that the applied config could not, e.g. 'bash: + "rm:*"'
    message: str = ""  # the proposed commit's message (the manager's: what and why)


class Draft(BaseModel):
    name: str
    config_dir: str  # the proposed repo: edit agent.toml (and agent.nix) and commit there
    state_dir: str  # the agent's future files: seed notes.md here
    sha: str  # the proposed repo's HEAD


class AgentStats(BaseModel):
    name: str
    summary: TurnSummary
    spend: Spend | None = None
    turns: list[Turn]


class Applied(BaseModel):
    name: str
    proposed_sha: str
    applied_sha: str
    # True: this commit was applied on this base before (the same call, sent again); nothing was done now.
    already_applied: bool = False


class Created(AgentInfo):
    # True: the agent was created from this sha (or the template) on this base before (the same call,
    # sent again); nothing was done now.
    already_applied: bool = False


class RebuildResult(BaseModel):
    rebuilt: list[str]


class DestroyResult(BaseModel):
    name: str
    purged: bool


class ModelResult(BaseModel):
    name: str
    model: str


class StateFile(BaseModel):
    name: str
    path: str
    size: int
    text: str  # '' when binary
    binary: bool = False  # NUL bytes or not UTF-8: not shown as text


class FileEntry(BaseModel):
    """One entry of a directory an agent writes, as lstat sees it."""

    name: str
    kind: Literal["file", "dir", "link", "other"]  # a link is shown, never followed
    size: int
    modified: str  # ISO 8601 UTC


class StateDir(BaseModel):
    name: str  # the agent
    path: str  # relative to its state dir; "" its top
    entries: list[FileEntry]  # directories first, then by name
    truncated: bool = False  # more entries than a listing returns


class TurnCancelled(BaseModel):
    name: str
    cancelled: int  # the turn's id
    turn: TurnState  # the harness's state now (still "running" if it has not stopped within 5 s)


class SessionReset(BaseModel):
    name: str
    request: str  # the request's id: the harness carries each one out once, before its next turn


class AuditLog(BaseModel):
    entries: list[ActionEntry]  # newest first


# ------------------------------------------------------------------------------ the shared workspace, read-only
class SharedEntry(FileEntry):
    owner: str  # the agent whose uid wrote it, else the uid as a number


class SharedDir(BaseModel):
    path: str  # relative to the shared workspace; "" its top
    entries: list[SharedEntry]  # directories first, then by name
    truncated: bool = False  # more entries than a listing returns


class SharedFile(BaseModel):
    path: str
    size: int
    binary: bool = False  # it holds NUL bytes: no text
    text: str | None = None


# ---------------------------------------------------------------------------------- terminal
class TerminalSession(BaseModel):
    """A shell the operator opened in an agent's sandbox (terminal_open)."""

    session: str  # what terminal_io, terminal_resize and terminal_close take
    name: str
    cols: int
    rows: int
    opened_at: str  # ISO 8601 UTC
    idle_seconds: float  # closed by the server after this long without a terminal_io call


class TerminalOutput(BaseModel):
    """What the shell wrote since the last terminal_io took it."""

    session: str
    output: str  # the terminal's bytes as UTF-8 (a character split between two calls is kept whole)
    seq: int  # this output's place among the session's outputs (1, 2, ...; 0: none): write them in order
    dropped: int  # bytes of output lost before this one because nobody read them (oldest dropped first)
    more: bool  # more output is waiting: call again at once
    ended: bool  # the shell is gone; `reason` says why
    reason: str | None = None


class TerminalClosed(BaseModel):
    session: str
    name: str
    seconds: float  # how long it was open
    reason: str


class HostInfo(BaseModel):
    """A host of the hive: it runs a lifecycle server of its own (hive.toml [host])."""

    name: str
    lifecycle_url: str
    labels: list[str]
    capacity: int  # agents placed on it at most
    agents: int  # placed on it now
    up: bool  # false: its heartbeat stopped; its agents are unreachable
    last_seen: str | None  # ISO 8601, its last heartbeat
    down_since: str | None = None
    answering: bool = False  # this is the host that answered the call


class HostList(BaseModel):
    hosts: list[HostInfo]
