"""What the lifecycle server's tools return."""

from __future__ import annotations

from pydantic import BaseModel

from hyperhive.servers.common.audit import ActionEntry
from hyperhive.servers.common.harnessdir import Turn, TurnState, TurnSummary


class AgentInfo(BaseModel):
    name: str
    role: str
    state: str  # stopped | starting | running | stopping | restarting | failed
    desired: str  # running | stopped: what it was last asked to be
    model: str  # the model its next turn uses (set_model's override, else agent.toml's)
    started_at: str | None
    last_exit_code: int | None
    last_signal: str | None
    restart_count: int  # restarts after crashes
    applied_sha: str | None
    needs_update: bool  # built by another hyperhive version, or from an older applied config
    turn: TurnState | None = None  # its harness: idle, running a turn (since when), or an error and why
    problem: str | None = None  # why it cannot run as it is (its state dir past its state_max)


class AgentList(BaseModel):
    backend: str
    isolation: str  # how agents are kept apart here, in one line
    version: str  # the hyperhive version agents are built with
    agents: list[AgentInfo]
    # Names with a proposed config repo but no agent: drafts, and what destroyed agents left.
    drafts: list[str] = []


class AgentStatus(AgentInfo):
    backend: str
    isolation: str
    uid: int | None  # the host uid it runs as, when the server runs as root
    crashes_in_a_row: int
    stopped_at: str | None
    busy: str | None  # what is being done to it right now, if anything
    state_dir: str
    harness_dir: str


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


class Draft(BaseModel):
    name: str
    config_dir: str  # the proposed repo: edit agent.toml (and agent.nix) and commit there
    state_dir: str  # the agent's future files: seed notes.md here
    sha: str  # the proposed repo's HEAD


class AgentStats(BaseModel):
    name: str
    summary: TurnSummary
    turns: list[Turn]


class Applied(BaseModel):
    name: str
    proposed_sha: str
    applied_sha: str


class Rebuilt(BaseModel):
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
    text: str


class TurnCancelled(BaseModel):
    name: str
    cancelled: int  # the turn's id
    turn: TurnState  # the harness's state now (still "running" if it has not stopped within 5 s)


class AuditLog(BaseModel):
    entries: list[ActionEntry]  # newest first
