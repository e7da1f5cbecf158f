"""The lifecycle server's state machine: each agent started, stopped, restarted, killed, rebuilt,
created and destroyed in order, following what the backend reports, and telling the manager.

Every method that changes an agent holds that agent exclusively; a second caller gets
"busy: <name> is <doing what>" instead of waiting. What to do when a sandbox ends is the pure
restart policy's (restart_policy.py); dirs, uids and config repos are provisioning's
(provisioning.py); what a sandbox is given, sandbox_setup.py's. Helper events go through the outbox
(servers/common/outbox.py), so a broker that is down or restarting delays them but loses none.

Past ~400 lines because server.py reaches everything through it (the read-only pass-throughs at
"reading"), and the hive's start-up order (reconcile, the manager first, stop all) lives here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio

from hyperhive.servers.common import audit
from hyperhive.servers.common.config import ConfigError
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.events import ContainerCrash, Destroyed, HelperEvent, Killed, Rebuilt, Spawned
from hyperhive.servers.common.harnessdir import TurnState
from hyperhive.servers.common.instances import end_instances
from hyperhive.servers.common.issuer import Issuer
from hyperhive.servers.common.keys import SigningKey
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import MANAGER
from hyperhive.servers.lifecycle import harness_files
from hyperhive.servers.lifecycle.backends.base import BackendError, Change, Restarted, SandboxBackend
from hyperhive.servers.lifecycle.models import Turn, TurnRecord
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.provisioning import Provisioning, check_base, checked, validate
from hyperhive.servers.lifecycle.restart_policy import RestartSettings, decide
from hyperhive.servers.lifecycle.sandbox_setup import SandboxSetup
from hyperhive.servers.lifecycle.statebudget import StateBudgets
from hyperhive.servers.lifecycle.store import AgentRow, LifecycleStore
from hyperhive.servers.lifecycle.turnstats import TurnStats
from hyperhive.servers.lifecycle.uidrange import claim as claim_uids
from hyperhive.servers.lifecycle.version import installed_version

log = logging.getLogger("hyperhive.lifecycle")

CRASH_LOG_LINES: Final = 20


class AgentSupervisor:
    def __init__(
        self,
        kit: ServiceKit,
        signing: Callable[[], SigningKey],
        backend: SandboxBackend,
        *,
        stop_agents_on_exit: bool = False,
    ) -> None:
        config, agents = kit.config, kit.agents
        self.kit = kit
        self.config = config
        self.issuer = Issuer(config, signing)
        self.agents = agents
        self.backend = backend
        self.stop_agents_on_exit = stop_agents_on_exit
        self.clock = kit.clock.now  # the time now, as the call sites read it: self.clock()
        self.version = installed_version()
        self.privileged = os.geteuid() == 0
        # This home's block of host uids, which no other hive on this host may use (UidRangeError if taken).
        self.uids = claim_uids(config.home, config.lifecycle.uid_base) if self.privileged else None
        self.store = LifecycleStore(kit.db)
        self.turn_stats = TurnStats(self.store, config.harness.stats_retention_days, kit.clock)
        self.provisioning = Provisioning(config, self.store, agents, self.uids)
        self.setup = SandboxSetup(config, self.issuer, agents, backend, self.provisioning, self.store, self.clock)
        self.budgets = StateBudgets(config, self.store, agents, self._announce, self.clock)
        self._busy: dict[str, str] = {}  # agent -> what is being done to it
        self._expected_exits: dict[str, int] = {}  # stops we asked for, not yet seen ending
        self._coming_back: set[str] = set()  # crashed, and the platform restarts them itself (systemd)
        self._tasks: set[asyncio.Task[Any]] = set()  # restarts after crashes, waiting out their backoff
        self._closing = False

    # -------------------------------------------------------------------------------- running
    @asynccontextmanager
    async def running(self) -> AsyncIterator[AgentSupervisor]:
        try:
            async with self.kit.running(
                self._follow_changes,
                self.setup.refresh_tokens,
                self.budgets.watch,
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
                await self.setup.end_instance(row.name)
                await self.store.mark_stopped(row.name, self.clock())

    async def _ensure_manager(self) -> None:
        """The manager is infrastructure: created on first start without asking anyone."""
        if await self.store.agent(MANAGER) is None:
            proposed, applied = await self.provisioning.provision(MANAGER, "manager")
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
    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def isolation(self) -> str:
        return self.backend.isolation

    async def rows(self) -> list[AgentRow]:
        return await self.store.agents()

    async def row(self, name: str) -> AgentRow:
        row = await self.store.agent(checked(name))
        if row is None:
            raise Refused(f"no agent named {name!r}; list_agents shows the agents there are")
        return row

    async def drafts(self, rows: list[AgentRow]) -> list[str]:
        """Names with a proposed config repo and no agent: drafts, and what destroyed agents left."""
        return await self.provisioning.drafts({row.name for row in rows})

    async def recorded_uid(self, name: str) -> int | None:
        """The host uid recorded for it, if any (none is allocated by asking)."""
        return await self.store.uid(name)

    def role_of(self, name: str) -> str:
        config = self.agents.get(name)
        return config.role if config else "agent"

    def busy(self, name: str) -> str | None:
        """What is being done to `name` right now, if anything."""
        return self._busy.get(name)

    def needs_update(self, row: AgentRow) -> bool:
        if row.built_version is None:  # never built: its first start builds it
            return False
        return row.built_version != self.version or row.built_sha != row.applied_sha

    def model_of(self, name: str) -> str:
        return harness_files.model_of(AgentPaths.of(self.config, name), self.agents.get(name))

    async def logs(self, name: str, lines: int, since: float | None) -> list[str]:
        await self.row(name)
        return await self.backend.logs(name, lines, since)

    async def diff_commit(self, name: str, ref: str) -> tuple[str, str | None, str, str | None, list[str]]:
        """(proposed sha, applied sha, diff of the applied config to it, why it is invalid or None, widenings)."""
        return await self.provisioning.diff_commit(name, ref)

    async def turns(self, name: str, since: float | None) -> list[Turn]:
        await self.row(name)
        return await self.turn_stats.turns(name, since)

    async def record_turn(self, name: str, turn: TurnRecord) -> bool:
        return await self.turn_stats.record(name, turn)

    async def record_action(
        self, name: str, action: str, actor: str, outcome: audit.Outcome, detail: str | None
    ) -> None:
        await audit.record_action(self.kit.db, name, action, actor, self.clock(), outcome, detail)

    async def actions(self, limit: int, agent: str | None) -> list[audit.ActionEntry]:
        return await audit.actions(self.kit.db, limit, None if agent is None else checked(agent))

    # -------------------------------------------------------------------------------- creating
    async def create(
        self, name: str, ref: str | None = None, expected_base: str | None = None
    ) -> tuple[AgentRow, bool]:
        """Create and start an agent: from the template, or from commit `ref` of its (draft's) proposed
        repo; returns it and whether it was created already (by this same call, sent again).

        With `expected_base` (an approved request: the applied sha its diff was against, or "none"),
        the applied config must still be that, and without `ref` there must be no draft: what is
        created is then exactly what the operator was shown.
        """
        async with self._exclusive(checked(name), "being created"):
            if await self.store.agent(name) is not None:
                if (ref is not None or expected_base is not None) and await self._created_already(
                    name, ref, expected_base
                ):
                    return await self.row(name), True
                raise Refused(f"{name} already exists")
            await self.provisioning.check_new(name, ref, expected_base)
            proposed, applied = await self.provisioning.provision(name, "agent", ref)
            await self.store.add(name, self.clock(), applied, proposed)
            await self._launch(name)
            await self._announce(Spawned(agent=name, sha=proposed))
        return await self.row(name), False

    async def _created_already(self, name: str, ref: str | None, expected_base: str | None) -> bool:
        """Whether `name` is what create(name, ref, expected_base) made: its applied config is `ref`'s
        (or the template) on `expected_base`, and it was not changed since."""
        proposed = None
        if ref is not None:
            with contextlib.suppress(Refused):  # no such commit: not what was created
                proposed, _ = await self.provisioning.read_commit(name, ref)
            if proposed is None:
                return False
        return await self.provisioning.applied_already(name, proposed, expected_base) is not None

    async def create_draft(self, name: str) -> tuple[AgentPaths, str]:
        """A proposed repo and a state dir, no sandbox: the manager edits the config and seeds notes first."""
        async with self._exclusive(checked(name), "being drafted"):
            if await self.store.agent(name) is not None:
                raise Refused(f"{name} already exists; a draft is for an agent that does not exist yet")
            return await self.provisioning.make_draft(name)

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
            if row.state in ("running", "starting") or name in self._coming_back:  # systemd would bring it back
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

    async def _launch(self, name: str, *, rebuild: bool = False) -> None:
        """Start the sandbox from the applied config (rebuilt first with `rebuild`). The caller holds the agent."""
        if self._closing:
            raise Refused("the lifecycle server is stopping; nothing is started now")
        config = self.agents.get(name)
        if config is None:
            raise Refused(f"{name} has no applied config; nothing to start")
        row = await self.row(name)
        uid = await self.provisioning.uid(name)
        problem = await self.budgets.check(name, config, starting=True)
        if problem is not None:
            await self.store.mark_failed(name, self.clock())
            raise Refused(problem)
        await self.store.mark_changing(name, "starting")
        self._coming_back.discard(name)  # what the platform was restarting is started now
        try:
            spec = await anyio.to_thread.run_sync(self.setup.prepare_start, name, config, uid)
            if row.built_version is None:  # its first start: prepare what the backend needs
                await self.backend.create(spec)
            elif rebuild or self.needs_update(row):  # a config applied, or another hyperhive, since it was built
                await self.backend.update(spec)
            running = await self.backend.start(spec)
        except (BackendError, ConfigError) as e:  # ConfigError: [harness] env_file
            await self.store.mark_failed(name, self.clock())
            raise Refused(str(e)) from None
        await self.store.mark_started(name, running.started_at, row.applied_sha, self.version)

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
        await self.setup.end_instance(name)
        self._coming_back.discard(name)
        await self.store.mark_stopped(name, self.clock())

    # --------------------------------------------------------------------------- config changes
    async def apply_commit(self, name: str, ref: str, expected_base: str | None = None) -> tuple[str, str, bool]:
        """Apply commit `ref` of the agent's proposed repo and rebuild it. Returns (proposed sha, applied
        sha, whether it was applied already: this same call, sent again, is answered and not repeated).

        `expected_base`: the applied sha the approved diff was made against; checked under the
        agent's lock, so a diff that went stale (another apply since) is refused, not applied.
        """
        await self.row(name)
        paths = AgentPaths.of(self.config, name)
        async with self._exclusive(name, "applying a commit"):
            proposed, files = await self.provisioning.files_at(name, ref)
            done = await self.provisioning.applied_already(name, proposed, expected_base)
            if done is not None:
                row = await self.row(name)
                if row.applied_sha != done or row.built_sha != done:
                    await self._finish_apply(name, proposed, done)  # the server died before it was done
                return proposed, done, True
            try:
                validate(name, proposed, files)
            except Refused as e:
                raise Refused(f"{e}\nNothing was applied.") from None
            if expected_base is not None:
                await check_base(name, paths, expected_base)
            applied = await self.provisioning.apply(name, proposed, files)
            await self._finish_apply(name, proposed, applied)
        return proposed, applied, False

    async def _finish_apply(self, name: str, proposed: str, applied: str) -> None:
        await self.store.set_applied(name, applied, proposed)
        await self._rebuild_held(name)
        await self._announce(Rebuilt(agent=name, sha=proposed))

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
            await self._launch(name, rebuild=True)
        else:
            spec = self.setup.spec(name, config, await self.provisioning.uid(name))
            try:
                await self.backend.update(spec)
            except BackendError as e:
                raise Refused(str(e)) from None
            await self.store.set_built(name, row.applied_sha, self.version)

    # ----------------------------------------------------------------------------- its harness
    async def set_model(self, name: str, model: str | None) -> str:
        await self.row(name)
        uid = await self.provisioning.uid(name) if model is not None else None
        await harness_files.set_model_override(AgentPaths.of(self.config, name), model, uid)
        return self.model_of(name)

    async def turn_state(self, name: str) -> TurnState | None:
        """What its harness says it is doing (turn.json, read without trusting it)."""
        return await harness_files.read_turn_state(AgentPaths.of(self.config, name))

    async def cancel_turn(self, name: str, wait: float = harness_files.CANCEL_WAIT) -> tuple[int, TurnState]:
        """Ask the harness to stop its running turn: (the turn's id, its state once stopped or after `wait`)."""
        row = await self.row(name)
        paths = AgentPaths.of(self.config, name)
        turn = await harness_files.read_turn_state(paths) if row.state == "running" else None
        if turn is None or turn.state != "running" or turn.turn is None:
            doing = f"its harness is {turn.state}" if turn else f"it is {row.state}"
            raise Refused(f"{name} is not running a turn ({doing}); nothing to cancel")
        return await harness_files.cancel_turn(paths, turn, wait)

    # ------------------------------------------------------------------------------- destroying
    async def destroy(self, name: str, *, purge: bool, force: bool) -> None:
        if purge and await self.store.agent(checked(name)) is None and self.provisioning.leftovers(name):
            # Destroyed before, its files kept: purge them now.
            async with self._exclusive(name, "being purged"):
                await self.store.remove(name, forget_uid=True)
                await anyio.to_thread.run_sync(end_instances, self.config.instances_dir, name)
                await anyio.to_thread.run_sync(self.provisioning.purge, name)
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
                await anyio.to_thread.run_sync(self.provisioning.purge, name)
                await self.store.forget_turns(name)
            await self.agents.refresh()
            if name != MANAGER:
                await self._announce(Destroyed(agent=name, purged=purge))

    # ---------------------------------------------------------------------------------- crashes
    async def _follow_changes(self) -> None:
        async for change in self.backend.changes():
            try:
                if isinstance(change, Restarted):
                    await self._on_restarted(change)
                else:
                    await self._on_change(change)
            except Exception:
                log.exception("handling the end of %s's sandbox failed", change.name)

    async def _on_change(self, change: Change) -> None:
        """Carry out what the restart policy decides about a sandbox that ended."""
        row = await self.store.agent(change.name)
        if row is None:
            return
        expected = bool(self._expected_exits.get(change.name))
        if expected:
            self._expected_exits[change.name] -= 1
        config = self.agents.get(change.name)
        settings = RestartSettings(
            max_restarts=config.sandbox.max_restarts if config else 0,
            backoff_seconds=self.config.lifecycle.restart_backoff_seconds,
        )
        decision = decide(row, change, settings, expected=expected)
        lines = await self.backend.logs(change.name, CRASH_LOG_LINES, None) if decision.report else []
        if decision.end_instance:
            await self.setup.end_instance(change.name, reissue=decision.reissue_token)
        if decision.kind == "crash":  # does the platform bring it back itself (systemd)?
            if change.auto_restarting:
                self._coming_back.add(change.name)
            else:
                self._coming_back.discard(change.name)
        if decision.record_exit:
            await self.store.record_exit(change.name, change.exit_code, change.signal)
        if decision.state is not None:
            await self.store.mark_crashed(change.name, decision.state, change.at, decision.crashes)
        if decision.report:
            await self._announce(self._crash_event(change, row.restart_count, decision.will_restart, lines))
        if decision.restart_after is not None:
            self._spawn(self._restart_after_crash(change.name, decision.restart_after))

    async def _on_restarted(self, restarted: Restarted) -> None:
        """The platform restarted a crashed sandbox itself (systemd's Restart=on-failure): it runs again."""
        name = restarted.name
        self._coming_back.discard(name)
        row = await self.store.agent(name)
        if row is None or row.state != "restarting" or row.desired != "running" or name in self._busy:
            return  # not waiting for it: started again by us meanwhile, or being changed right now
        await self.store.mark_restarted(name, restarted.running.started_at)

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

    # ------------------------------------------------------------------------------------ helpers
    async def _announce(self, event: HelperEvent) -> None:
        """Tell the manager, through the broker, as soon as it can be delivered."""
        await self.kit.outbox.post(MANAGER, event)

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
