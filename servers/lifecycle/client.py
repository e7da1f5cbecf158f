"""The lifecycle server's tools as the hive's own processes call them (the CLI, the dashboard, the
approvals server, the harness's turn stats), with typed results."""

from __future__ import annotations

from typing import ClassVar

from hyperhive.servers.common.server_client import ServerClient
from hyperhive.servers.lifecycle.models import (
    AgentConfigText,
    AgentInfo,
    AgentList,
    AgentStats,
    AgentStatus,
    Applied,
    AuditLog,
    BudgetCheck,
    BudgetSet,
    CommitDiff,
    Created,
    DestroyResult,
    Draft,
    HostList,
    LogLines,
    ModelResult,
    PeerAdded,
    PeerRemoved,
    RebuildResult,
    Recorded,
    Resumed,
    SessionReset,
    SharedDir,
    SharedFile,
    StateDir,
    StateFile,
    SwarmStats,
    TerminalClosed,
    TerminalOutput,
    TerminalSession,
    TurnCancelled,
    TurnRecord,
)


class LifecycleClient(ServerClient):
    server: ClassVar[str] = "lifecycle"

    # ------------------------------------------------------------------------------------ reads
    async def list_agents(self) -> AgentList:
        return await self._call("list_agents", AgentList)

    async def agent_status(self, name: str) -> AgentStatus:
        return await self._call("agent_status", AgentStatus, name=name)

    async def logs(self, name: str, lines: int = 100, since: str | None = None) -> LogLines:
        return await self._call("logs", LogLines, name=name, lines=lines, since=since)

    async def agent_config(self, name: str) -> AgentConfigText:
        return await self._call("agent_config", AgentConfigText, name=name)

    async def diff_commit(self, name: str, sha: str) -> CommitDiff:
        return await self._call("diff_commit", CommitDiff, name=name, sha=sha)

    async def agent_stats(self, name: str, since: str | None = None) -> AgentStats:
        return await self._call("agent_stats", AgentStats, name=name, since=since)

    async def swarm_stats(self) -> SwarmStats:
        return await self._call("swarm_stats", SwarmStats)

    async def list_hosts(self) -> HostList:
        return await self._call("list_hosts", HostList)

    async def read_state_file(self, name: str, path: str) -> StateFile:
        return await self._call("read_state_file", StateFile, name=name, path=path)

    async def list_state_dir(self, name: str, path: str = "") -> StateDir:
        return await self._call("list_state_dir", StateDir, name=name, path=path)

    async def shared_files(self, path: str = "") -> SharedDir:
        return await self._call("shared_files", SharedDir, path=path)

    async def read_shared_file(self, path: str) -> SharedFile:
        return await self._call("read_shared_file", SharedFile, path=path)

    async def audit(self, limit: int = 100, agent: str | None = None) -> AuditLog:
        return await self._call("audit", AuditLog, limit=limit, agent=agent)

    async def record_turn(self, turn: TurnRecord) -> Recorded:
        return await self._call("record_turn", Recorded, turn=turn.model_dump())

    async def budget_check(self) -> BudgetCheck:
        return await self._call("budget_check", BudgetCheck)

    async def set_budget(self, name: str, usd_per_day: float | None) -> BudgetSet:
        return await self._call("set_budget", BudgetSet, name=name, usd_per_day=usd_per_day)

    # ---------------------------------------------------------------------------------- actions
    async def resume_agent(self, name: str) -> Resumed:
        return await self._call("resume_agent", Resumed, name=name)

    async def create_agent(
        self, name: str, sha: str | None = None, expected_base: str | None = None, host: str | None = None
    ) -> Created:
        return await self._call("create_agent", Created, name=name, sha=sha, expected_base=expected_base, host=host)

    async def move_agent(self, name: str, host: str) -> AgentInfo:
        return await self._call("move_agent", AgentInfo, name=name, host=host)

    async def create_draft(self, name: str) -> Draft:
        return await self._call("create_draft", Draft, name=name)

    async def start(self, name: str) -> AgentInfo:
        return await self._call("start", AgentInfo, name=name)

    async def stop(self, name: str) -> AgentInfo:
        return await self._call("stop", AgentInfo, name=name)

    async def restart(self, name: str) -> AgentInfo:
        return await self._call("restart", AgentInfo, name=name)

    async def kill(self, name: str) -> AgentInfo:
        return await self._call("kill", AgentInfo, name=name)

    async def rebuild(self, name: str) -> AgentInfo:
        return await self._call("rebuild", AgentInfo, name=name)

    async def rebuild_stale(self) -> RebuildResult:
        return await self._call("rebuild_stale", RebuildResult)

    async def destroy(self, name: str, *, purge: bool = False, force: bool = False) -> DestroyResult:
        return await self._call("destroy", DestroyResult, name=name, purge=purge, force=force)

    async def set_model(self, name: str, model: str | None) -> ModelResult:
        return await self._call("set_model", ModelResult, name=name, model=model)

    async def cancel_turn(self, name: str) -> TurnCancelled:
        return await self._call("cancel_turn", TurnCancelled, name=name)

    async def reset_session(self, name: str) -> SessionReset:
        return await self._call("reset_session", SessionReset, name=name)

    async def apply_commit(self, name: str, sha: str, expected_base: str | None = None) -> Applied:
        return await self._call("apply_commit", Applied, name=name, sha=sha, expected_base=expected_base)

    async def add_peer(
        self, name: str, tools: dict[str, list[str]] | None = None, allowed_recipients: list[str] | None = None
    ) -> PeerAdded:
        return await self._call("add_peer", PeerAdded, name=name, tools=tools, allowed_recipients=allowed_recipients)

    async def remove_peer(self, name: str) -> PeerRemoved:
        return await self._call("remove_peer", PeerRemoved, name=name)

    # --------------------------------------------------------------------------------- terminal
    async def terminal_open(self, name: str, cols: int = 80, rows: int = 24) -> TerminalSession:
        return await self._call("terminal_open", TerminalSession, name=name, cols=cols, rows=rows)

    async def terminal_io(self, session: str, input: str = "", wait_ms: int = 0) -> TerminalOutput:
        return await self._call("terminal_io", TerminalOutput, session=session, input=input, wait_ms=wait_ms)

    async def terminal_resize(self, session: str, cols: int, rows: int) -> TerminalSession:
        return await self._call("terminal_resize", TerminalSession, session=session, cols=cols, rows=rows)

    async def terminal_close(self, session: str) -> TerminalClosed:
        return await self._call("terminal_close", TerminalClosed, session=session)
