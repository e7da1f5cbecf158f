"""The lifecycle server's MCP tools: thin wrappers over AgentSupervisor.

Reads are for the manager and the operator (and services); actions for the operator and the
approvals server; apply_commit only for the approvals server; read_state_file and list_state_dir only
for the operator. The catalog in servers/common/catalog.py says so and the allow-list enforces it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Literal

import anyio
from fastmcp import FastMCP
from pydantic import Field

from hyperhive.servers.common import audit as audit_trail
from hyperhive.servers.common.clock import Clock, iso, parse_iso
from hyperhive.servers.common.config import HiveConfig, Usd
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.issuer import audience_of
from hyperhive.servers.common.keys import SigningKey, host_signing_key
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import service_principal
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.storage import Schemas
from hyperhive.servers.common.tokens import HiveTokenVerifier, IssuedToken, ServerCredentials, caller
from hyperhive.servers.common.toolserver import HiveServer, create_mcp
from hyperhive.servers.lifecycle.backends import choose_backend
from hyperhive.servers.lifecycle.backends.base import SandboxBackend
from hyperhive.servers.lifecycle.crash_handling import signal_name
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
    HostInfo,
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
from hyperhive.servers.lifecycle.moving import MOVE_PATH, MoveOut
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.peers import PEER_STATE
from hyperhive.servers.lifecycle.relay import HostRelay
from hyperhive.servers.lifecycle.shared_view import shared_dir, shared_file
from hyperhive.servers.lifecycle.spending import SpendSheet
from hyperhive.servers.lifecycle.state_view import state_dir, state_file
from hyperhive.servers.lifecycle.store import MIGRATIONS, AgentRow
from hyperhive.servers.lifecycle.supervisor import AgentSupervisor
from hyperhive.servers.lifecycle.terminal import INPUT_MAX, WAIT_MAX_MS
from hyperhive.servers.lifecycle.turnstats import summarise

INSTRUCTIONS = (
    "The hyperhive lifecycle server: the agents' sandboxes, their config repos, crashes and logs. "
    "list_agents for an overview, agent_status and logs for one agent."
)

log = logging.getLogger("hyperhive.lifecycle")

Name = Annotated[str, Field(description="agent name")]
StatePath = Annotated[str, Field(max_length=4096, description="relative to its state dir, e.g. notes.md")]
Since = Annotated[str | None, Field(description="ISO 8601 time, e.g. 2026-11-21T15:30:00Z")]
Sha = Annotated[str, Field(description="a commit of its proposed repo")]
Session = Annotated[str, Field(min_length=1, max_length=64, description="terminal_open's session")]
Cols = Annotated[int, Field(ge=20, le=500, description="the terminal's columns")]
Rows = Annotated[int, Field(ge=5, le=200, description="the terminal's rows")]
ExpectedBase = Annotated[
    str | None,
    Field(
        description="the applied config's sha the caller's diff was made against ('none': it had none); "
        "refused if the applied config is no longer that"
    ),
]


def unrun_info(
    name: str,
    role: str,
    state: Literal["peer", "unreachable"],
    model: str,
    host: str | None,
    *,
    kind: Literal["agent", "peer"] = "agent",
) -> AgentInfo:
    """An agent this server runs nothing of (a peer; one of a host that does not answer), as listed."""
    return AgentInfo(
        name=name, role=role, kind=kind, state=state, desired=None, model=model, started_at=None,
        last_exit_code=None, last_signal=None, restart_count=0, applied_sha=None, needs_update=False, host=host,
    )  # fmt: skip


def _signing(config: HiveConfig, credentials: ServerCredentials) -> tuple[Callable[[], SigningKey], Callable[[], str]]:
    """What this server signs agents' tokens and its own with: the hive's key on one host; in a hive
    of several hosts, this host's own (keys.py), which signs for what lives here alone."""
    if config.storage.url is not None:
        host_key = host_signing_key(config.home, config.host.name)
        principal = Principal(service_principal("lifecycle"), Role.SERVICE)
        return (lambda: host_key), IssuedToken(lambda: host_key, principal, audience_of(principal))
    if credentials.signing is None:
        raise RuntimeError("the lifecycle server issues agents' tokens: it needs the signing key")
    return credentials.signing.current, credentials.service_token()


def create(
    config: HiveConfig,
    credentials: ServerCredentials,
    *,
    backend: SandboxBackend | None = None,
    stop_agents_on_exit: bool = False,
    clock: Clock | None = None,
) -> HiveServer:
    signing, token = _signing(config, credentials)
    kit = ServiceKit("lifecycle", config, Schemas(MIGRATIONS), token=token, clock=clock)
    moves = MoveOut(config.home, HiveTokenVerifier("lifecycle", credentials.keys, kit.agents))
    supervisor = AgentSupervisor(
        kit,
        signing,
        backend or choose_backend(config),
        stop_agents_on_exit=stop_agents_on_exit,
        moves=moves,
    )

    async def unreachable(name: str, host: str) -> AgentInfo:
        """Agent `name` of host `host`, which does not answer: what the directory knows of it."""
        config = kit.agents.get(name)
        return unrun_info(name, config.role if config else "agent", "unreachable", config.model if config else "", host)

    mcp = create_mcp(
        "lifecycle",
        instructions=INSTRUCTIONS,
        credentials=credentials,
        agents=kit.agents,
        running=supervisor.running,
        middleware=[HostRelay(supervisor.hosts, unreachable)],
    )
    here = supervisor.hosts.name if supervisor.hosts.spans_hosts else None  # each agent's host, when there are several

    @asynccontextmanager
    async def audited(action: str, name: str, detail: str | None = None) -> AsyncIterator[None]:
        """Record who did `action` to `name`, when, and how it ended (refusals and failures with why)."""
        actor, why = caller().name, None
        outcome: audit_trail.Outcome = "ok"
        try:
            yield
        except Refused as e:
            outcome, why = "refused", str(e)
            raise
        except Exception as e:
            outcome, why = "failed", f"{type(e).__name__}: {e}"
            raise
        except BaseException:
            outcome, why = "interrupted", "the call was cancelled (the caller went away or the server stopped)"
            raise
        finally:
            text = "; ".join(part for part in (detail, why) if part) or None
            with anyio.CancelScope(shield=True):
                try:
                    await supervisor.record_action(name, action, actor, outcome, text)
                except Exception:
                    log.exception("could not write the audit record of %s %s by %s", action, name, actor)

    async def info(row: AgentRow, sheet: SpendSheet | None = None) -> AgentInfo:
        sheet = sheet or await supervisor.spend_sheet()
        return AgentInfo(
            name=row.name,
            role=supervisor.role_of(row.name),
            state=row.state,
            desired=row.desired,
            model=supervisor.model_of(row.name),
            started_at=iso(row.started_at) if row.started_at else None,
            last_exit_code=row.last_exit_code,
            last_signal=signal_name(row.last_signal),
            restart_count=row.restart_count,
            applied_sha=row.applied_sha,
            needs_update=supervisor.needs_update(row),
            turn=await supervisor.turn_state(row.name) if row.state == "running" else None,
            problem=row.problem,
            spend=supervisor.spend_of(row.name, sheet),
            host=here,
        )

    def peer_info(name: str) -> AgentInfo:
        return unrun_info(name, supervisor.role_of(name), PEER_STATE, "", here, kind="peer")

    async def acted(action: str, name: str, do: Callable[[str], Awaitable[AgentRow]]) -> AgentInfo:
        """`do` it to `name` under the audit trail; the agent as it is then."""
        async with audited(action, name):
            return await info(await do(name))

    # ------------------------------------------------------------------------------------ reads
    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_agents() -> AgentList:
        """Every agent: state, role, model, last exit, restarts, applied sha, needs_update."""
        rows = await supervisor.rows()
        sheet = await supervisor.spend_sheet()
        return AgentList(
            backend=supervisor.backend_name,
            isolation=supervisor.isolation,
            version=supervisor.version,
            agents=sorted(
                [*[await info(row, sheet) for row in rows], *map(peer_info, supervisor.peers.names())],
                key=lambda agent: agent.name,
            ),
            drafts=await supervisor.drafts(rows),
            hive_spend=supervisor.hive_spend(sheet),
        )

    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_hosts() -> HostList:
        """The hive's hosts: where each lifecycle server is, its labels, capacity and load, up or down."""
        plane = supervisor.hosts
        if not plane.spans_hosts:
            count = len(await supervisor.rows())
            url = config.host.lifecycle_url or ""
            return HostList(
                hosts=[
                    HostInfo(
                        name=plane.name,
                        lifecycle_url=url,
                        labels=config.host.labels,
                        capacity=config.host.capacity,
                        agents=count,
                        up=True,
                        last_seen=None,
                        answering=True,
                    )
                ]
            )
        return HostList(
            hosts=[
                HostInfo(
                    name=row.name,
                    lifecycle_url=row.lifecycle_url,
                    labels=list(row.labels),
                    capacity=row.capacity,
                    agents=row.agents,
                    up=row.up,
                    last_seen=iso(row.seen_at),
                    down_since=iso(row.down_since) if row.down_since else None,
                    answering=row.name == plane.name,
                )
                for row in await plane.hosts()
            ]
        )

    @mcp.tool(annotations={"readOnlyHint": True})
    async def agent_status(name: Name) -> AgentStatus:
        """One agent in detail."""
        row = await supervisor.row(name)
        paths = AgentPaths.of(config, name)
        return AgentStatus(
            **(await info(row)).model_dump(),
            backend=supervisor.backend_name,
            isolation=supervisor.isolation,
            uid=await supervisor.recorded_uid(name),
            crashes_in_a_row=row.crashes,
            stopped_at=iso(row.stopped_at) if row.stopped_at else None,
            busy=supervisor.busy(name),
            state_dir=str(paths.state),
            harness_dir=str(paths.harness),
        )

    @mcp.tool(annotations={"readOnlyHint": True})
    async def logs(name: Name, lines: Annotated[int, Field(ge=1, le=5000)] = 100, since: Since = None) -> LogLines:
        """The end of an agent's log, oldest line first."""
        return LogLines(name=name, lines=await supervisor.logs(name, lines, _time(since)))

    @mcp.tool(annotations={"readOnlyHint": True})
    async def agent_config(name: Name) -> AgentConfigText:
        """The applied agent.toml (and agent.nix) of an agent or a peer."""
        applied = AgentPaths.of(config, name).applied
        if supervisor.peers.get(name) is not None:
            return AgentConfigText(
                name=name,
                sha=await supervisor.applied_head(name),
                proposed_sha=None,
                agent_toml=await anyio.to_thread.run_sync((applied / "agent.toml").read_text),
                agent_nix=None,
            )
        row = await supervisor.row(name)

        def read() -> tuple[str, str | None]:
            nix = applied / "agent.nix"
            return (applied / "agent.toml").read_text(), nix.read_text() if nix.exists() else None

        toml, nix = await anyio.to_thread.run_sync(read)
        return AgentConfigText(
            name=name, sha=row.applied_sha, proposed_sha=row.applied_from, agent_toml=toml, agent_nix=nix
        )

    @mcp.tool(annotations={"readOnlyHint": True})
    async def diff_commit(name: Name, sha: Sha) -> CommitDiff:
        """What applying a proposed commit would change, and whether it can be applied."""
        proposed, applied, diff, problems, widenings, message = await supervisor.diff_commit(name, sha)
        return CommitDiff(
            name=name,
            proposed_sha=proposed,
            applied_sha=applied,
            diff=diff,
            valid=problems is None,
            problems=problems,
            widenings=widenings,
            message=message,
        )

    @mcp.tool(annotations={"readOnlyHint": True})
    async def agent_stats(name: Name, since: Since = None) -> AgentStats:
        """The harness's turn statistics for an agent: a summary and the turns themselves."""
        turns = await supervisor.turns(name, _time(since))
        return AgentStats(name=name, summary=summarise(turns), turns=turns, spend=await supervisor.spend(name))

    @mcp.tool(annotations={"readOnlyHint": True})
    async def swarm_stats() -> SwarmStats:
        """Every agent's turns today (since 00:00 UTC): how many, errors, mean duration, cost, top
        tools; one call for the whole swarm (agents without a turn today are left out)."""
        since, totals = await supervisor.turns_today()
        return SwarmStats(since=iso(since), agents=totals)

    @mcp.tool
    async def record_turn(turn: TurnRecord) -> Recorded:
        """Keep one turn of the calling agent for agent_stats (its harness calls this after each turn)."""
        me = caller()
        if not me.is_agent:
            raise Refused(f"record_turn keeps an agent's own turns; {me} has none")
        return Recorded(recorded=await supervisor.record_turn(me.name, turn))

    @mcp.tool
    async def budget_check() -> BudgetCheck:
        """Whether the calling agent may take a turn now (its harness asks before it takes messages):
        paused says why not (its or the hive's daily budget is reached)."""
        me = caller()
        if not me.is_agent:
            raise Refused(f"budget_check is an agent's own; {me} has no budget")
        return await supervisor.budget_check(me.name)

    # ---------------------------------------------------------------------------------- actions
    @mcp.tool
    async def set_budget(
        name: Name,
        usd_per_day: Annotated[
            Usd | None, Field(description="US dollars a day (UTC); null: back to agent.toml's [budget]")
        ],
    ) -> BudgetSet:
        """Set an agent's daily budget, over its agent.toml's; raising it past today's cost resumes a
        paused agent at once (its waiting messages are then handled)."""
        async with audited("set_budget", name, f"usd_per_day={usd_per_day}"):
            return BudgetSet(name=name, spend=await supervisor.set_budget(name, usd_per_day))

    @mcp.tool
    async def resume_agent(name: Name) -> Resumed:
        """Resume an agent paused for its own daily budget: its day starts afresh now (its cost so far
        stops counting against that budget until the day ends, UTC). Refused if it is not paused, or if
        the hive's budget pauses it (raise hive.toml [budget] then)."""
        async with audited("resume_agent", name):
            return Resumed(name=name, spend=await supervisor.resume(name))

    @mcp.tool
    async def create_agent(
        name: Name,
        sha: Annotated[
            str | None, Field(description="a commit of its draft's proposed repo; default: the template")
        ] = None,
        expected_base: ExpectedBase = None,
        host: Annotated[
            str | None,
            Field(
                max_length=31,
                description="the host it lives on, in a hive of several; default: the least loaded host with "
                "room (with a sha: the host its draft was made on)",
            ),
        ] = None,
    ) -> Created:
        """Create an agent and start it. With expected_base and no sha: from the template only, never a draft.
        Sent again for an agent it created (same sha and expected_base): already_applied, nothing done."""
        if host not in (None, supervisor.hosts.name):  # the relay sends a new agent on to its host
            raise Refused(
                f"{name} lives on host {supervisor.hosts.name}"
                if await supervisor.hosts.host_of(name) == supervisor.hosts.name
                else f"this hive has no host {host!r} that can take {name}; list_hosts says which there are"
            )
        async with audited("create_agent", name, f"sha={sha}" if sha else None):
            row, already = await supervisor.create(name, sha, expected_base)
            return Created(**(await info(row)).model_dump(), already_applied=already)

    @mcp.tool
    async def create_draft(name: Name) -> Draft:
        """Make an agent's proposed config repo and state dir, without creating the agent."""
        async with audited("create_draft", name):
            paths, sha = await supervisor.create_draft(name)
        return Draft(name=name, config_dir=str(paths.config), state_dir=str(paths.state), sha=sha)

    @mcp.tool
    async def start(name: Name) -> AgentInfo:
        """Start a stopped or failed agent."""
        return await acted("start", name, partial(supervisor.start, by=caller().name))

    @mcp.tool
    async def stop(name: Name) -> AgentInfo:
        """Stop an agent: SIGTERM, then SIGKILL after the stop timeout."""
        return await acted("stop", name, supervisor.stop)

    @mcp.tool
    async def restart(name: Name) -> AgentInfo:
        """Stop an agent if it runs, then start it."""
        return await acted("restart", name, partial(supervisor.restart, by=caller().name))

    @mcp.tool
    async def kill(name: Name) -> AgentInfo:
        """SIGKILL an agent's sandbox now."""
        return await acted("kill", name, partial(supervisor.kill, by=caller().name))

    @mcp.tool
    async def rebuild(name: Name) -> AgentInfo:
        """Rebuild an agent's sandbox from its applied config (restarting it if it runs)."""
        return await acted("rebuild", name, partial(supervisor.rebuild, by=caller().name))

    @mcp.tool
    async def rebuild_stale() -> RebuildResult:
        """Rebuild every agent that needs_update, the manager first."""
        async with audited("rebuild_stale", "*"):
            return RebuildResult(rebuilt=await supervisor.rebuild_stale())

    @mcp.tool
    async def move_agent(
        name: Name,
        host: Annotated[str, Field(min_length=1, max_length=31, description="the host it moves to (list_hosts)")],
    ) -> AgentInfo:
        """Move an agent to another host of the hive: stopped, its state, session, config repos and model
        copied, started there if it ran. Its turn stats and audit trail stay on the host it leaves."""
        async with audited("move_agent", name, f"to={host}"):
            return await supervisor.move(name, host, caller().name)

    @mcp.tool
    async def adopt_agent(
        name: Name,
        source: Annotated[str, Field(max_length=31, description="the host it leaves")],
        ticket: Annotated[str, Field(max_length=100)],
        desired: Literal["running", "stopped"],
        applied_from: Annotated[str | None, Field(max_length=64)] = None,
        model: Annotated[str | None, Field(max_length=200)] = None,
        by: Annotated[str, Field(max_length=100)] = "",
    ) -> AgentInfo:
        """Take over an agent another host's lifecycle server is moving here (its move_agent)."""
        async with audited("adopt_agent", name, f"from={source}"):
            return await info(await supervisor.adopt(name, source, ticket, desired, applied_from, model, by))

    @mcp.tool(annotations={"destructiveHint": True})
    async def destroy(
        name: Name,
        purge: Annotated[bool, Field(description="also delete its repos, state, token and logs")] = False,
        force: Annotated[bool, Field(description="needed to destroy the manager")] = False,
    ) -> DestroyResult:
        """Destroy an agent's sandbox. Its repos and state stay unless purge."""
        async with audited("destroy", name, f"purge={str(purge).lower()} force={str(force).lower()}"):
            await supervisor.destroy(name, purge=purge, force=force)
        return DestroyResult(name=name, purged=purge)

    @mcp.tool
    async def add_peer(
        name: Name,
        tools: Annotated[
            dict[str, list[str]] | None,
            Field(description="per server, the exact tools it may call; a server left out: an agent's defaults"),
        ] = None,
        allowed_recipients: Annotated[
            list[str] | None, Field(description="agent names, 'operator' or '*' (the default: everyone)")
        ] = None,
    ) -> PeerAdded:
        """Register a peer: an agent outside the hive (a Claude Code session the operator runs) that
        messages the swarm under these allow-lists. No sandbox is made; its tokens come from the hive's
        key (`hive peer token`)."""
        detail = f"tools={tools} allowed_recipients={allowed_recipients}"
        async with audited("add_peer", name, detail):
            return PeerAdded(name=name, applied_sha=await supervisor.add_peer(name, tools, allowed_recipients))

    @mcp.tool(annotations={"destructiveHint": True})
    async def remove_peer(name: Name) -> PeerRemoved:
        """Revoke a peer: every token of it stops working at once, and its applied config goes."""
        async with audited("remove_peer", name):
            await supervisor.remove_peer(name)
        return PeerRemoved(name=name)

    @mcp.tool
    async def set_model(
        name: Name, model: Annotated[str | None, Field(description="null: back to agent.toml's model")]
    ) -> ModelResult:
        """Change the model an agent's next turns use, without a rebuild."""
        async with audited("set_model", name, f"model={model}"):
            return ModelResult(name=name, model=await supervisor.set_model(name, model))

    @mcp.tool
    async def cancel_turn(name: Name) -> TurnCancelled:
        """Stop the Claude Code turn an agent is running; the messages it was handling are not redelivered."""
        async with audited("cancel_turn", name):
            cancelled, state = await supervisor.cancel_turn(name)
        return TurnCancelled(name=name, cancelled=cancelled, turn=state)

    @mcp.tool
    async def reset_session(name: Name) -> SessionReset:
        """Give an agent a fresh Claude Code session at its next turn (its conversation is dropped; its
        notes.md stays, and the first prompt points to it). A running turn is not interrupted."""
        async with audited("reset_session", name):
            return SessionReset(name=name, request=await supervisor.reset_session(name))

    @mcp.tool
    async def apply_commit(name: Name, sha: Sha, expected_base: ExpectedBase = None) -> Applied:
        """Validate and apply a commit of an agent's proposed config repo, then rebuild the agent.
        Sent again once it is applied (same sha and expected_base): already_applied, nothing done."""
        async with audited("apply_commit", name, f"sha={sha}"):
            proposed, applied, already = await supervisor.apply_commit(name, sha, expected_base)
        return Applied(name=name, proposed_sha=proposed, applied_sha=applied, already_applied=already)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def read_state_file(name: Name, path: StatePath) -> StateFile:
        """Read a file of an agent's state dir (regular files up to 1 MiB; no links; binary said so)."""
        async with audited("read_state_file", name, f"path={path[:300]}"):
            await supervisor.row(name)
            return await state_file(AgentPaths.of(config, name), path)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_state_dir(
        name: Name,
        path: Annotated[
            str, Field(max_length=4096, description="a directory relative to its state dir; '' its top")
        ] = "",
    ) -> StateDir:
        """One directory of an agent's state dir: names, kinds, sizes, times (links shown, never
        followed; up to 1,000 entries, truncated says there were more)."""
        await supervisor.row(name)
        return await state_dir(AgentPaths.of(config, name), path)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def audit(
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
        agent: Annotated[str | None, Field(description="only actions on this agent")] = None,
    ) -> AuditLog:
        """Who did what to which agent, when, and how it ended (refused and failed actions too), newest first."""
        return AuditLog(entries=await supervisor.actions(limit, agent))

    # --------------------------------------------------------------------------------- terminal
    @mcp.tool
    async def terminal_open(name: Name, cols: Cols = 80, rows: Rows = 24) -> TerminalSession:
        """Open a shell in a running agent's sandbox, as its uid, in its namespaces and cgroup (bash,
        no rc files, a clean environment, in its state dir); the operator only. Audited; closed when
        nobody calls terminal_io for idle_seconds, when the agent stops, or by terminal_close."""
        async with audited("terminal_open", name, f"{cols}x{rows}"):
            return await supervisor.terminals.open(name, cols, rows, caller().name)

    @mcp.tool
    async def terminal_io(
        session: Session,
        input: Annotated[str, Field(max_length=INPUT_MAX, description="keystrokes to write first")] = "",
        wait_ms: Annotated[
            int, Field(ge=0, le=WAIT_MAX_MS, description="wait this long for output if there is none yet")
        ] = 0,
    ) -> TerminalOutput:
        """Write keystrokes to a terminal, then take its output (waiting up to wait_ms for some). Write
        the outputs in `seq` order; `ended` says the shell is gone and `reason` why."""
        return await supervisor.terminals.io(session, input, wait_ms, caller().name)

    @mcp.tool
    async def terminal_resize(session: Session, cols: Cols, rows: Rows) -> TerminalSession:
        """Tell a terminal's shell its new size."""
        return supervisor.terminals.resize(session, cols, rows, caller().name)

    @mcp.tool
    async def terminal_close(session: Session) -> TerminalClosed:
        """Close a terminal: its shell gets SIGHUP, then it and the entry process are killed."""
        return await supervisor.terminals.close(session, caller().name)

    shared_tools(mcp, config, supervisor)
    mcp.custom_route(MOVE_PATH + "/{name}/{part}", methods=["GET"], include_in_schema=False)(moves.handle)
    return HiveServer(mcp=mcp)


def shared_tools(mcp: FastMCP, config: HiveConfig, supervisor: AgentSupervisor) -> None:
    """The shared workspace, read-only, for the operator (the dashboard): everything there is agent-written."""

    @mcp.tool(annotations={"readOnlyHint": True})
    async def shared_files(
        path: Annotated[str, Field(description="a directory in the shared workspace; '' its top")] = "",
    ) -> SharedDir:
        """One directory of the shared workspace (/hive/shared): names, kinds, sizes, times, who wrote each."""
        owners = await supervisor.store.names_by_uid()
        return await shared_dir(config.home, path, owners)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def read_shared_file(
        path: Annotated[str, Field(description="relative to the shared workspace")],
    ) -> SharedFile:
        """A file of the shared workspace (regular files up to 1 MiB; no links; binary said so)."""
        return await shared_file(config.home, path)


def _time(since: str | None) -> float | None:
    if since is None:
        return None
    try:
        return parse_iso(since)
    except ValueError as e:
        raise Refused(str(e)) from None
