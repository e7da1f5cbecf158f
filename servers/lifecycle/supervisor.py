"""The lifecycle server's rules: provisioning agents, starting and stopping them in order,
applying config commits, telling crashes from stops, restarting with backoff, and telling the
manager what happened.

Every method that changes an agent holds that agent exclusively; a second caller gets
"busy: <name> is <doing what>" instead of waiting. Helper events go through the outbox
(servers/common/outbox.py), so a broker that is down or restarting delays them but loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import version as package_version
from typing import Any, Final, Literal

import anyio

from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.common.config import (
    AGENT_TOML,
    AgentConfig,
    ConfigError,
    HiveConfig,
    agent_toml_template,
    parse_agent_config,
)
from hyperhive.servers.common.diffs import render_diff, widenings
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.events import (
    ContainerCrash,
    Destroyed,
    HelperEvent,
    Killed,
    Rebuilt,
    Spawned,
    StateOverBudget,
)
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.harnessdir import TurnState
from hyperhive.servers.common.instances import current_instance, end_instances, new_instance
from hyperhive.servers.common.issuer import Issuer
from hyperhive.servers.common.keys import SigningKey
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import MANAGER, InvalidName, check_agent_name
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.lifecycle import logfiles, repos, statebudget
from hyperhive.servers.lifecycle.backends.base import Backend, BackendError, Change, SandboxSpec
from hyperhive.servers.lifecycle.cgroups import Limits
from hyperhive.servers.lifecycle.harness import harness_info, read_turn_state
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.store import AgentRow, LifecycleStore, UidsExhausted
from hyperhive.servers.lifecycle.turnstats import TurnStats
from hyperhive.servers.lifecycle.uidrange import claim as claim_uids

log = logging.getLogger("hyperhive.lifecycle")

STEADY_SECONDS: Final = 600.0  # running this long without a crash clears the crash count
MAX_BACKOFF: Final = 300.0
TOKEN_REFRESH_EVERY: Final = 6 * 3600.0
KEY_CHECK_SECONDS: Final = 1.0  # how soon agents get tokens signed by a rotated key
CANCEL_WAIT: Final = 5.0  # cancel_turn waits this long for the harness to end the turn
CRASH_LOG_LINES: Final = 20


def hyperhive_version() -> str:
    return package_version("hyperhive")


class Supervisor:
    def __init__(
        self,
        kit: ServiceKit,
        signing: Callable[[], SigningKey],
        backend: Backend,
        *,
        stop_agents_on_exit: bool = False,
    ) -> None:
        config = kit.config
        self.kit = kit
        self.config = config
        self.issuer = Issuer(config, signing)
        self.agents = kit.agents
        self.backend = backend
        self.stop_agents_on_exit = stop_agents_on_exit
        self.clock = kit.clock.now  # the time now, as this module's call sites read it: self.clock()
        self.version = hyperhive_version()
        self.privileged = os.geteuid() == 0
        # This home's block of host uids, which no other hive on this host may use (UidRangeError if taken).
        self.uids = claim_uids(config.home, config.lifecycle.uid_base) if self.privileged else None
        self.store = LifecycleStore(kit.db)
        self.outbox = kit.outbox
        self.turn_stats = TurnStats(self.store, config.harness.stats_retention_days, kit.clock)
        self._busy: dict[str, str] = {}  # agent -> what is being done to it
        self._expected_exits: dict[str, int] = {}  # stops we asked for, not yet seen ending
        self._tasks: set[asyncio.Task[Any]] = set()  # restarts after crashes, waiting out their backoff
        self._over_budget: dict[str, str] = {}  # agents whose state dir is past state_max -> why
        self._closing = False

    # -------------------------------------------------------------------------------- running
    @asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        try:
            async with self.kit.running(
                self._follow_changes,
                self._refresh_tokens,
                self._watch_state_budgets,
                self.turn_stats.prune_forever,
                first=self._reconcile,
            ):
                try:
                    await self._ensure_manager()
                    await self._start_up()
                    yield self
                finally:
                    self._closing = True  # no sandbox starts from now on
                    for task in self._tasks:
                        task.cancel()
                    await asyncio.gather(*self._tasks, return_exceptions=True)
                    if self.stop_agents_on_exit:
                        await self._stop_all()
        finally:
            await self.backend.close()

    async def _reconcile(self) -> None:
        """Match the recorded states with what is running now (sandboxes outlive this server)."""
        running = await self.backend.list()
        for row in await self.store.agents():
            if row.name in running:
                if row.state != "running":
                    await self.store.mark_running(row.name, running[row.name].started_at)
            elif row.state in ("starting", "running", "stopping", "restarting"):
                # It ended while no server watched; the backend reports how, and _start_up starts it again.
                await self._end_instance(row.name)
                await self.store.mark_stopped(row.name, self.clock())

    async def _ensure_manager(self) -> None:
        """The manager is infrastructure: created on first start without asking anyone."""
        if await self.store.agent(MANAGER) is None:
            proposed, applied = await self._provision(MANAGER, "manager")
            await self.store.add(MANAGER, self.clock(), applied, proposed)
            log.info("created the manager agent")

    async def _start_up(self) -> None:
        """Rebuild stale agents if hive.toml says so, then start what should run: the manager first."""
        rows = await self.store.agents()
        if self.config.lifecycle.rebuild_stale_on_start:
            for row in _manager_first([r for r in rows if self.needs_update(r)]):
                with contextlib.suppress(Refused):
                    await self.rebuild(row.name)
            rows = await self.store.agents()
        to_start = [r for r in rows if r.desired == "running" and r.state not in ("running", "restarting")]
        for batch in _manager_first_batches(to_start):
            await asyncio.gather(*(self._start_logged(row.name) for row in batch))

    async def _start_logged(self, name: str) -> None:
        try:
            await self.start(name)
        except Refused as e:
            log.error("could not start %s: %s", name, e)

    async def _stop_all(self) -> None:
        """Stop every sandbox (others first, the manager last), keeping what each should be doing."""
        rows = [r for r in await self.store.agents() if r.state in ("running", "starting")]
        for batch in reversed(_manager_first_batches(rows)):
            await asyncio.gather(*(self._stop_sandbox(row.name) for row in batch), return_exceptions=True)

    # --------------------------------------------------------------------------------- reading
    def role_of(self, name: str) -> str:
        config = self.agents.get(name)
        return config.role if config else "agent"

    async def row(self, name: str) -> AgentRow:
        row = await self.store.agent(_checked(name))
        if row is None:
            raise Refused(f"no agent named {name!r}; list_agents shows the agents there are")
        return row

    async def drafts(self, rows: list[AgentRow]) -> list[str]:
        """Names with a proposed config repo and no agent: drafts, and what destroyed agents left."""
        agents = {row.name for row in rows}

        def find() -> list[str]:
            with contextlib.suppress(OSError):
                return sorted(
                    entry.name
                    for entry in os.scandir(self.config.agents_dir)
                    if entry.name not in agents
                    and _is_name(entry.name)
                    and AgentPaths.of(self.config, entry.name).config.joinpath(".git").exists()
                )
            return []

        return await anyio.to_thread.run_sync(find)

    def busy(self, name: str) -> str | None:
        """What is being done to `name` right now, if anything."""
        return self._busy.get(name)

    def needs_update(self, row: AgentRow) -> bool:
        if row.built_version is None:  # never built: its first start builds it
            return False
        return row.built_version != self.version or row.built_sha != row.applied_sha

    def model_of(self, name: str) -> str:
        override = AgentPaths.of(self.config, name).model_override
        with contextlib.suppress(OSError):
            text = override.read_text().strip()
            if text:
                return text
        config = self.agents.get(name)
        return config.model if config else "?"

    # -------------------------------------------------------------------------------- creating
    async def create(self, name: str, ref: str | None = None, expected_base: str | None = None) -> AgentRow:
        """Create and start an agent: from the template, or from commit `ref` of its (draft's) proposed repo.

        With `expected_base` (an approved request: the applied sha its diff was against, or "none"),
        the applied config must still be that, and without `ref` there must be no draft: what is
        created is then exactly what the operator was shown.
        """
        async with self._exclusive(_checked(name), "being created"):
            if await self.store.agent(name) is not None:
                raise Refused(f"{name} already exists")
            paths = AgentPaths.of(self.config, name)
            if expected_base is not None:
                await _check_base(name, paths, expected_base)
                if ref is None and await anyio.to_thread.run_sync((paths.config / ".git").exists):
                    raise Refused(
                        f"a draft of {name} exists (its config repo, made after the template was shown); "
                        f"nothing was created: ask the manager to request_spawn_commit({name!r}, sha) for it"
                    )
            proposed, applied = await self._provision(name, "agent", ref)
            await self.store.add(name, self.clock(), applied, proposed)
            await self._launch(name)
            await self._announce(Spawned(agent=name, sha=proposed))
        return await self.row(name)

    async def create_draft(self, name: str) -> tuple[AgentPaths, str]:
        """A proposed repo and a state dir, no sandbox: the manager edits the config and seeds notes first."""
        async with self._exclusive(_checked(name), "being drafted"):
            if await self.store.agent(name) is not None:
                raise Refused(f"{name} already exists; a draft is for an agent that does not exist yet")
            paths = AgentPaths.of(self.config, name)
            manager_uid = await self._uid(MANAGER)
            await anyio.to_thread.run_sync(self._make_draft_dirs, paths, manager_uid)
            sha = await self._proposed_repo(paths, "agent", manager_uid)
        return paths, sha

    async def _provision(self, name: str, role: Literal["agent", "manager"], ref: str | None = None) -> tuple[str, str]:
        """Repos, dirs and uid; returns (proposed sha, applied sha).

        Keeps what is there: a draft's repo and seeded state, or what an earlier agent of this
        name left when destroyed without purge. Without `ref`, the applied config stays as it
        was, or starts as the proposed repo's HEAD.
        """
        paths = AgentPaths.of(self.config, name)
        uid = await self._uid(name)
        manager_uid = uid if name == MANAGER else await self._uid(MANAGER)
        await anyio.to_thread.run_sync(self._make_dirs, paths, uid)
        head = await self._proposed_repo(paths, role, manager_uid)
        try:
            proposed = await repos.resolve_commit(paths.config, ref) if ref else head
            files = await repos.files_at(paths.config, proposed)
        except repos.RepoError as e:
            raise Refused(str(e)) from None
        _validate(name, proposed, files)
        message = f"Apply {proposed}\n\nInitial config of {name}."
        if ref and (paths.applied / ".git").exists():
            applied = await repos.commit_files(paths.applied, files, message)
        else:
            applied = await repos.init_repo(paths.applied, files, message)
        await self.agents.refresh()
        return proposed, applied

    async def _proposed_repo(self, paths: AgentPaths, role: Literal["agent", "manager"], owner: int | None) -> str:
        """The proposed repo (made from the template if new), owned by the manager, who edits it."""
        sha = await repos.init_repo(
            paths.config,
            {AGENT_TOML: agent_toml_template(role)},
            f"Initial config for {paths.name} (hyperhive template)",
        )
        if owner is not None:
            await anyio.to_thread.run_sync(_chown_tree, paths.config, owner)
        return sha

    def _make_dirs(self, paths: AgentPaths, uid: int | None) -> None:
        _make_agents_dir(self.config)
        paths.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        paths.applied.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.credentials.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for private in (paths.state, paths.harness, paths.credentials):
            private.mkdir(mode=0o700, exist_ok=True)
        paths.config.mkdir(mode=0o700, exist_ok=True)
        if uid is not None:
            # The whole state dir: a draft's notes were seeded by the manager, under its uid.
            _chown_tree(paths.state, uid)
            for private in (paths.harness, paths.credentials):
                os.chown(private, uid, uid)

    def _make_draft_dirs(self, paths: AgentPaths, manager_uid: int | None) -> None:
        _make_agents_dir(self.config)
        paths.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        paths.config.mkdir(mode=0o700, exist_ok=True)
        paths.state.mkdir(mode=0o700, exist_ok=True)
        if manager_uid is not None:  # the manager seeds its notes; the agent takes them over when created
            os.chown(paths.state, manager_uid, manager_uid)

    async def diff_commit(self, name: str, ref: str) -> tuple[str, str | None, str, str | None, list[str]]:
        """(proposed sha, applied sha, diff of the applied config to it, why it is invalid or None, widenings)."""
        paths = AgentPaths.of(self.config, _checked(name))
        if not await anyio.to_thread.run_sync((paths.config / ".git").exists):
            raise Refused(f"{name} has no proposed config repo; create it, or request_spawn_draft({name!r})")
        try:
            proposed = await repos.resolve_commit(paths.config, ref)
            files = await repos.files_at(paths.config, proposed)
        except repos.RepoError as e:
            raise Refused(str(e)) from None
        applied_sha, applied_files = None, {}
        if await anyio.to_thread.run_sync((paths.applied / ".git").exists):
            applied_sha = await repos.head(paths.applied)
            applied_files = await repos.files_at(paths.applied, applied_sha)
        problems = None
        try:
            _validate(name, proposed, files)
        except Refused as e:
            problems = str(e)
        diff = render_diff(applied_files, files, "applied", f"proposed@{proposed[:12]}")
        return proposed, applied_sha, diff, problems, widenings(applied_files, files)

    async def _uid(self, name: str) -> int | None:
        if not self.privileged:
            return None
        assert self.uids is not None
        taken = await anyio.to_thread.run_sync(_system_uids)
        try:
            return await self.store.uid_of(name, self.uids.start, taken, end=self.uids.end)
        except UidsExhausted:
            raise Refused(
                f"no free host uid left in this hive's block {self.uids}; destroy agents with purge to free some"
            ) from None

    # ---------------------------------------------------------------------------- start & stop
    async def start(self, name: str) -> AgentRow:
        row = await self.row(name)
        async with self._exclusive(name, "starting"):
            if row.state == "running":
                raise Refused(f"{name} is already running")
            await self.store.want_running(name)
            await self._launch(name)
        return await self.row(name)

    async def stop(self, name: str) -> AgentRow:
        row = await self.row(name)
        async with self._exclusive(name, "stopping"):
            await self.store.want_stopped(name)
            if row.state in ("running", "starting"):
                await self._stop_sandbox(name)
            elif row.state in ("restarting", "failed"):
                await self.store.mark_stopped(name)
        return await self.row(name)

    async def restart(self, name: str) -> AgentRow:
        row = await self.row(name)
        async with self._exclusive(name, "restarting"):
            if row.state in ("running", "starting"):
                await self._stop_sandbox(name)
            await self.store.want_running(name)
            await self._launch(name)
        return await self.row(name)

    async def kill(self, name: str, by: str) -> AgentRow:
        row = await self.row(name)
        async with self._exclusive(name, "being killed"):
            if row.state not in ("running", "starting"):
                raise Refused(f"{name} is not running (it is {row.state})")
            await self.store.want_stopped(name)
            await self._stop_sandbox(name, kill=True)
            await self._announce(Killed(agent=name, by=by))
        return await self.row(name)

    async def _launch(self, name: str) -> None:
        """Start the sandbox from the applied config. The caller holds the agent."""
        if self._closing:
            raise Refused("the lifecycle server is stopping; nothing is started now")
        config = self.agents.get(name)
        if config is None:
            raise Refused(f"{name} has no applied config; nothing to start")
        row = await self.row(name)
        uid = await self._uid(name)
        if not await self._check_state_budget(name, config, starting=True):
            await self.store.mark_failed(name, self.clock())
            raise Refused(self._over_budget[name])
        await self.store.mark_changing(name, "starting")
        try:
            spec = await anyio.to_thread.run_sync(self._prepare_start, name, config, uid)
            if row.built_version is None:  # its first start: prepare what the backend needs
                await self.backend.create(spec)
            elif row.built_sha != row.applied_sha:  # a config was applied since it was built
                await self.backend.update(spec)
            running = await self.backend.start(spec)
        except (BackendError, ConfigError) as e:  # ConfigError: [harness] env_file
            await self.store.mark_failed(name, self.clock())
            raise Refused(str(e)) from None
        await self.store.mark_started(name, running.started_at, row.applied_sha, self.version)

    def _prepare_start(self, name: str, config: AgentConfig, uid: int | None) -> SandboxSpec:
        """A fresh token and hive.json for the harness, and the spec to start it with."""
        paths = AgentPaths.of(self.config, name)
        self._write_token(paths, config, uid)
        info = harness_info(self.config, name, config)
        write_atomic(paths.hive_json, info.model_dump_json(indent=2), mode=0o644)
        paths.cancel_request.unlink(missing_ok=True)  # meant for a turn of the run before
        return self.spec(name, config, uid)

    def spec(self, name: str, config: AgentConfig, uid: int | None) -> SandboxSpec:
        paths = AgentPaths.of(self.config, name)
        command = config.sandbox.command or self.config.lifecycle.default_command or self.backend.harness_command(name)
        bounds = config.sandbox.bounds(self.config.sandbox)
        env = {
            "PATH": self.backend.path,
            "HOME": str(paths.harness),
            "LANG": "C.UTF-8",
            "HIVE_AGENT": name,
            "HIVE_ROLE": config.role,
            "HIVE_HARNESS_DIR": str(paths.harness),
            "HIVE_STATE_DIR": str(paths.state),
            **config.env,
        }
        return SandboxSpec(
            name=name,
            role=config.role,
            command=list(command),
            env=env,
            uid=uid,
            state_dir=paths.state,
            harness_dir=paths.harness,
            credentials_dir=paths.credentials,
            applied_dir=paths.applied,
            log_path=paths.log,
            # The manager edits every agent's proposed config; uid permissions keep the rest closed.
            shared_rw=(self.config.agents_dir,) if config.role == "manager" else (),
            limits=Limits(bounds.memory_max, bounds.pids_max, bounds.cpu_weight),
            tmp_max=bounds.tmp_max,
            network=config.sandbox.network,
        )

    def _write_token(self, paths: AgentPaths, config: AgentConfig, uid: int | None, *, new: bool = True) -> None:
        """A token for a new instance of the agent (`new`), or a renewed one for its live instance."""
        instance = current_instance(self.config.instances_dir, paths.name)
        if new or instance is None:
            instance = new_instance(self.config.instances_dir, paths.name)
        token = self.issuer.agent_token(Principal(paths.name, Role(config.role)), config, instance)
        write_atomic(paths.token, token, mode=0o600)
        if uid is not None:
            os.chown(paths.token, uid, uid)

    async def _end_instance(self, name: str, *, reissue: bool = False) -> None:
        """Its sandbox ended: every token of that run stops working now, whatever still holds one.
        `reissue`: the backend restarts it by itself, so its token file gets the new instance's."""
        config = self.agents.get(name)
        if reissue and config is not None:
            uid = await self._uid(name)
            await anyio.to_thread.run_sync(self._write_token, AgentPaths.of(self.config, name), config, uid)
        else:
            await anyio.to_thread.run_sync(new_instance, self.config.instances_dir, name)

    async def _stop_sandbox(self, name: str, *, kill: bool = False) -> None:
        """Stop it and mark it stopped; its ending will not count as a crash. `desired` is the caller's."""
        await self.store.mark_changing(name, "stopping")
        self._expected_exits[name] = self._expected_exits.get(name, 0) + 1
        try:
            if kill:
                await self.backend.kill(name)
            else:
                await self.backend.stop(name, self.config.lifecycle.stop_timeout_seconds)
        except BackendError as e:
            log.warning("stopping %s: %s", name, e)
        await self._end_instance(name)
        await self.store.mark_stopped(name, self.clock())

    # --------------------------------------------------------------------------- config changes
    async def apply_commit(self, name: str, ref: str, expected_base: str | None = None) -> tuple[str, str]:
        """Apply commit `ref` of the agent's proposed repo and rebuild it. Returns (proposed, applied) shas.

        `expected_base`: the applied sha the approved diff was made against; checked under the
        agent's lock, so a diff that went stale (another apply since) is refused, not applied.
        """
        await self.row(name)
        paths = AgentPaths.of(self.config, name)
        async with self._exclusive(name, "applying a commit"):
            try:
                proposed = await repos.resolve_commit(paths.config, ref)
                files = await repos.files_at(paths.config, proposed)
            except repos.RepoError as e:
                raise Refused(str(e)) from None
            try:
                _validate(name, proposed, files)
            except Refused as e:
                raise Refused(f"{e}\nNothing was applied.") from None
            if expected_base is not None:
                await _check_base(name, paths, expected_base)
            applied = await repos.commit_files(
                paths.applied, files, f"Apply {proposed}\n\nProposed commit {proposed} of agents/{name}/config."
            )
            await self.agents.refresh()
            await self.store.set_applied(name, applied, proposed)
            await self._rebuild_held(name)
            await self._announce(Rebuilt(agent=name, sha=proposed))
        return proposed, applied

    async def rebuild(self, name: str) -> AgentRow:
        await self.row(name)
        async with self._exclusive(name, "being rebuilt"):
            await self._rebuild_held(name)
            await self._announce(Rebuilt(agent=name, sha=(await self.row(name)).applied_sha))
        return await self.row(name)

    async def rebuild_stale(self) -> list[str]:
        stale = [row.name for row in _manager_first([r for r in await self.store.agents() if self.needs_update(r)])]
        for name in stale:
            await self.rebuild(name)
        return stale

    async def _rebuild_held(self, name: str) -> None:
        row = await self.row(name)
        if row.state in ("running", "starting"):
            await self._stop_sandbox(name)
        config = self.agents.get(name)
        if config is None:
            raise Refused(f"{name} has no applied config")
        if row.desired == "running":
            await self._launch(name)
        else:
            spec = self.spec(name, config, await self._uid(name))
            try:
                await self.backend.update(spec)
            except BackendError as e:
                raise Refused(str(e)) from None
            await self.store.set_built(name, row.applied_sha, self.version)

    async def set_model(self, name: str, model: str | None) -> str:
        await self.row(name)
        path = AgentPaths.of(self.config, name).model_override
        if model is None:
            await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
        else:
            try:
                AgentConfig(model=model)
            except ValueError:
                raise Refused(f"{model!r} is not a model name (e.g. 'sonnet' or 'claude-sonnet-4-5')") from None
            uid = await self._uid(name)

            def write() -> None:
                write_atomic(path, model + "\n", mode=0o644)
                if uid is not None:
                    os.chown(path, uid, uid)

            await anyio.to_thread.run_sync(write)
        return self.model_of(name)

    async def turn_state(self, name: str) -> TurnState | None:
        """What its harness says it is doing (turn.json, read without trusting it)."""
        return await read_turn_state(AgentPaths.of(self.config, name))

    async def cancel_turn(self, name: str, wait: float = CANCEL_WAIT) -> tuple[int, TurnState]:
        """Ask the harness to stop its running turn: (the turn's id, its state once stopped or after `wait`)."""
        row = await self.row(name)
        paths = AgentPaths.of(self.config, name)
        turn = await read_turn_state(paths) if row.state == "running" else None
        if turn is None or turn.state != "running" or turn.turn is None:
            doing = f"its harness is {turn.state}" if turn else f"it is {row.state}"
            raise Refused(f"{name} is not running a turn ({doing}); nothing to cancel")
        await anyio.to_thread.run_sync(write_atomic, paths.cancel_request, f"{turn.turn}\n", 0o644)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            now = await read_turn_state(paths)
            if now is not None and now.turn != turn.turn:
                return turn.turn, now
        return turn.turn, turn

    # ------------------------------------------------------------------------------- destroying
    async def destroy(self, name: str, *, purge: bool, force: bool) -> None:
        if purge and await self.store.agent(_checked(name)) is None and self._leftovers(name):
            # Destroyed before, its files kept: purge them now.
            async with self._exclusive(name, "being purged"):
                await self.store.remove(name, forget_uid=True)
                await anyio.to_thread.run_sync(end_instances, self.config.instances_dir, name)
                await anyio.to_thread.run_sync(self._purge, name)
                await self.agents.refresh()
            return
        row = await self.row(name)
        if name == MANAGER and not force:
            raise Refused("the manager is infrastructure; destroying it needs force=true")
        async with self._exclusive(name, "being destroyed"):
            if row.state in ("running", "starting"):
                await self._stop_sandbox(name, kill=True)
            try:
                await self.backend.destroy(name)
            except BackendError as e:
                raise Refused(str(e)) from None
            await self.store.remove(name, forget_uid=purge)
            await anyio.to_thread.run_sync(end_instances, self.config.instances_dir, name)
            if purge:
                await anyio.to_thread.run_sync(self._purge, name)
                await self.store.forget_turns(name)
            await self.agents.refresh()
            if name != MANAGER:
                await self._announce(Destroyed(agent=name, purged=purge))

    def _leftovers(self, name: str) -> bool:
        paths = AgentPaths.of(self.config, name)
        return any(path.exists() for path in (paths.root, paths.applied, paths.credentials))

    def _purge(self, name: str) -> None:
        paths = AgentPaths.of(self.config, name)
        for directory in (paths.root, paths.applied, paths.credentials):
            shutil.rmtree(directory, ignore_errors=True)
        logfiles.remove_all(paths.log)

    # ---------------------------------------------------------------------------------- crashes
    async def _follow_changes(self) -> None:
        async for change in self.backend.changes():
            try:
                await self._on_change(change)
            except Exception:
                log.exception("handling the end of %s's sandbox failed", change.name)

    async def _on_change(self, change: Change) -> None:
        row = await self.store.agent(change.name)
        if row is None:
            return
        if self._expected_exits.get(change.name):
            self._expected_exits[change.name] -= 1
            await self.store.record_exit(change.name, change.exit_code, change.signal)
            return
        lines = await self.backend.logs(change.name, CRASH_LOG_LINES, None)
        if change.started_at is not None and row.started_at is not None and change.started_at < row.started_at:
            # A run that ended while no server watched; a newer one is already going. Report only.
            await self._announce(self._crash_event(change, row.restart_count, False, lines))
            return
        await self._end_instance(change.name, reissue=change.auto_restarting)
        await self.store.record_exit(change.name, change.exit_code, change.signal)
        crashes = row.crashes + 1
        if row.started_at is not None and change.at - row.started_at > STEADY_SECONDS:
            crashes = 1  # it had been running steadily: a new run of bad luck
        config = self.agents.get(change.name)
        limit = config.sandbox.max_restarts if config else 0
        restart_ourselves = not change.auto_restarting and row.desired == "running" and crashes <= limit
        if row.state == "running" or change.auto_restarting:
            state: Literal["restarting", "failed"] = (
                "restarting" if (restart_ourselves or change.auto_restarting) else "failed"
            )
            await self.store.mark_crashed(change.name, state, change.at, crashes)
        will_restart = restart_ourselves or change.auto_restarting
        await self._announce(self._crash_event(change, row.restart_count, will_restart, lines))
        if restart_ourselves and row.state == "running":
            delay = Backoff(self.config.lifecycle.restart_backoff_seconds, MAX_BACKOFF).delay(crashes)
            self._spawn(self._restart_after_crash(change.name, delay))

    def _crash_event(self, change: Change, restarts: int, will_restart: bool, lines: list[str]) -> ContainerCrash:
        return ContainerCrash(
            agent=change.name,
            exit_code=change.exit_code,
            signal=signal_name(change.signal),
            restarts=change.restarts if change.restarts is not None else restarts,
            will_restart=will_restart,
            last_lines=lines,
            reason=change.reason,
        )

    async def _restart_after_crash(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        row = await self.store.agent(name)
        if row is None or row.state != "restarting" or row.desired != "running" or name in self._busy:
            return  # someone decided otherwise meanwhile
        async with self._exclusive(name, "restarting after a crash"):
            await self.store.count_restart(name)
            try:
                await self._launch(name)
            except Refused as e:
                log.error("restarting %s after its crash failed: %s", name, e)
                await self._on_change(Change(name, at=self.clock()))

    # ------------------------------------------------------------------------------- state budget
    def problem(self, name: str) -> str | None:
        """Why it cannot run as it is, if something other than its state says so."""
        return self._over_budget.get(name)

    async def _check_state_budget(self, name: str, config: AgentConfig, *, starting: bool = False) -> bool:
        """True if its state dir is within [sandbox] state_max; tells the manager once when it passes."""
        budget = config.sandbox.bounds(self.config.sandbox).state_max
        used = await anyio.to_thread.run_sync(statebudget.usage, AgentPaths.of(self.config, name).state)
        if used.bytes <= budget:
            self._over_budget.pop(name, None)
            return True
        message = statebudget.over_budget_message(name, used, budget)
        log_path = AgentPaths.of(self.config, name).log
        await anyio.to_thread.run_sync(logfiles.mark, log_path, self.clock(), message)
        if name not in self._over_budget or starting:
            used_text = ("at least " if not used.complete else "") + statebudget.human(used.bytes)
            event = StateOverBudget(
                agent=name, used=used_text, budget=statebudget.human(budget), refused_start=starting
            )
            await self._announce(event)
        self._over_budget[name] = message
        return False

    async def _watch_state_budgets(self) -> None:
        """Measure running agents' state dirs now and then; passing the budget is told to the manager."""
        while True:
            await asyncio.sleep(self.config.sandbox.state_check_seconds)
            for row in await self.store.agents():
                config = self.agents.get(row.name)
                if row.state == "running" and config is not None:
                    await self._check_state_budget(row.name, config)

    # ----------------------------------------------------------------------------------- events
    async def _announce(self, event: HelperEvent) -> None:
        """Tell the manager, through the broker, as soon as it can be delivered."""
        await self.outbox.post(MANAGER, event)

    async def _refresh_tokens(self) -> None:
        """Agents run for weeks; their tokens last `[tokens] ttl_seconds`: renew them well before, and
        at once when the hive's key is rotated (`hive rotate-key`: what the old key signed is refused)."""
        every = min(TOKEN_REFRESH_EVERY, self.config.tokens.ttl_seconds / 4)
        kid = self.issuer.signing().kid
        due = self.clock() + every
        while True:
            await asyncio.sleep(KEY_CHECK_SECONDS)
            current = self.issuer.signing().kid
            if current == kid and self.clock() < due:
                continue
            kid, due = current, self.clock() + every
            for row in await self.store.agents():
                config = self.agents.get(row.name)
                if row.state in ("running", "starting") and config is not None:
                    uid = await self._uid(row.name)
                    paths = AgentPaths.of(self.config, row.name)
                    await anyio.to_thread.run_sync(partial(self._write_token, paths, config, uid, new=False))

    # ------------------------------------------------------------------------------------ helpers
    @asynccontextmanager
    async def _exclusive(self, name: str, doing: str) -> AsyncIterator[None]:
        current = self._busy.get(name)
        if current is not None:
            raise Refused(f"busy: {name} is {current}; try again when that is done")
        self._busy[name] = doing
        try:
            yield
        finally:
            del self._busy[name]

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _validate(name: str, sha: str, files: dict[str, str]) -> None:
    """Refuse a config that could not be applied: no agent.toml, an invalid one, a manager demoted or made."""
    if AGENT_TOML not in files:
        raise Refused(f"commit {sha[:12]} of {name}'s config has no {AGENT_TOML}")
    try:
        config = parse_agent_config(files[AGENT_TOML], f"{name}@{sha[:12]}:{AGENT_TOML}")
    except ConfigError as e:
        raise Refused(str(e)) from None
    if name == MANAGER and config.role != "manager":
        raise Refused('the manager\'s config must keep role = "manager"')
    if name != MANAGER and config.role == "manager":
        # A manager's token and a read-write bind of every agent's config repo: one manager only.
        raise Refused(f'role = "manager" is for the agent named {MANAGER} only; {name} must keep role = "agent"')


async def _check_base(name: str, paths: AgentPaths, expected: str) -> None:
    """Refuse unless the applied config is still `expected` (its sha, or "none")."""
    has_applied = await anyio.to_thread.run_sync((paths.applied / ".git").exists)
    current = await repos.head(paths.applied) if has_applied else "none"
    if current != expected:
        raise Refused(
            f"{name}'s applied config changed since the diff was made (it was {expected[:12]}, it is "
            f"{current[:12]}); nothing was applied: ask the manager to request it again"
        )


def _is_name(name: str) -> bool:
    try:
        check_agent_name(name)
    except InvalidName:
        return False
    return True


def _checked(name: str) -> str:
    """`name` if it is a valid agent name; a refusal saying why otherwise."""
    try:
        return check_agent_name(name)
    except InvalidName as e:
        raise Refused(str(e)) from None


def _manager_first(rows: list[AgentRow]) -> list[AgentRow]:
    return sorted(rows, key=lambda row: (row.name != MANAGER, row.name))


def _manager_first_batches(rows: list[AgentRow]) -> list[list[AgentRow]]:
    """The manager alone, then everyone else together."""
    first = [r for r in rows if r.name == MANAGER]
    rest = [r for r in rows if r.name != MANAGER]
    return [batch for batch in (first, rest) if batch]


def signal_name(number: int | None) -> str | None:
    """SIGKILL for 9; the number itself for one Python does not know."""
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _make_agents_dir(config: HiveConfig) -> None:
    """agents/ lets every agent's uid pass through to its own dirs, and the manager to every config repo."""
    config.agents_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    config.agents_dir.chmod(0o711)


def _system_uids() -> set[int]:
    """Uids of the host's accounts, which agents must not share."""
    import pwd

    return {entry.pw_uid for entry in pwd.getpwall()}


def _chown_tree(root: os.PathLike[str], uid: int) -> None:
    # The tree may be written by another uid (the manager seeding a draft) while we walk it: fwalk
    # holds each directory open and chowns relative to it, so a directory swapped for a symlink
    # mid-walk cannot redirect a chown outside the tree.
    os.chown(root, uid, uid, follow_symlinks=False)
    for _, dirs, files, directory_fd in os.fwalk(root):
        for name in [*dirs, *files]:
            os.chown(name, uid, uid, dir_fd=directory_fd, follow_symlinks=False)
