"""The lifecycle server's per-agent state machine: each agent started, stopped, restarted, killed,
rebuilt, created and destroyed in order, and the manager told.

Every method that changes an agent holds that agent exclusively (agentlocks.py); a second caller
gets "busy: <name> is <doing what>" instead of waiting. What happens when a sandbox ends is crash
handling's (crash_handling.py, around the pure restart_policy.py); the order agents come up and go
down in, startup.py's; dirs, uids and config repos, provisioning's (provisioning.py); what a sandbox
is given, sandbox_setup.py's; what server.py reads, readings.py's delegations. Helper events go
through the outbox (servers/common/outbox.py), so a broker that is down or restarting delays them
but loses none.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio

from hyperhive.servers.common.audit import Outcome
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.events import Destroyed, HelperEvent, Killed, Rebuilt, Spawned
from hyperhive.servers.common.harnessdir import SandboxStart, StartReason, TurnState
from hyperhive.servers.common.instances import end_instances
from hyperhive.servers.common.issuer import Issuer
from hyperhive.servers.common.keys import SigningKey
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import MANAGER
from hyperhive.servers.lifecycle import harness_files, repos, startup
from hyperhive.servers.lifecycle.agentlocks import AgentLocks
from hyperhive.servers.lifecycle.backends.base import BackendError, SandboxBackend, ShellSpec
from hyperhive.servers.lifecycle.crash_handling import CrashHandling
from hyperhive.servers.lifecycle.hosts import HostPlane
from hyperhive.servers.lifecycle.models import AgentInfo
from hyperhive.servers.lifecycle.moving import MOVE_PATH, PARTS, MoveOut, Part, fetch_part, part_dir, remove_parts
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.peers import Peers, peer_refusal
from hyperhive.servers.lifecycle.provisioning import Provisioning, check_base, checked, placement_host, validate
from hyperhive.servers.lifecycle.readings import AgentReadings
from hyperhive.servers.lifecycle.sandbox_setup import SandboxSetup
from hyperhive.servers.lifecycle.spending import Spending
from hyperhive.servers.lifecycle.statebudget import StateBudgets
from hyperhive.servers.lifecycle.store import AgentRow, LifecycleStore
from hyperhive.servers.lifecycle.terminal import TERM, Terminals
from hyperhive.servers.lifecycle.turnstats import TurnStats
from hyperhive.servers.lifecycle.uidrange import claim as claim_uids
from hyperhive.servers.lifecycle.version import installed_version

log = logging.getLogger("hyperhive.lifecycle")
BOOT_ACTOR = "lifecycle"  # who the audit trail says started the agents at boot
UPDATED = "hyperhive was updated"  # why a stale agent is rebuilt (rebuild_stale, rebuild_stale_on_start)


class AgentSupervisor(AgentReadings):
    def __init__(
        self,
        kit: ServiceKit,
        signing: Callable[[], SigningKey],
        backend: SandboxBackend,
        *,
        stop_agents_on_exit: bool = False,
        moves: MoveOut | None = None,
    ) -> None:
        """`moves`: the tickets and HTTP parts of agents moving to other hosts (none: this server moves none)."""
        config, agents = kit.config, kit.agents
        self.moves = moves
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
        self.db = kit.sqlite
        self.store = LifecycleStore(self.db)
        self.turn_stats = TurnStats(self.store, config.harness.stats_retention_days, kit.clock)
        self.provisioning = Provisioning(config, self.store, agents, self.uids)
        self.peers = Peers(config, agents)
        self.setup = SandboxSetup(config, self.issuer, agents, backend, self.provisioning, self.store, self.clock)
        self.budgets = StateBudgets(config, self.store, agents, self._announce, self.clock)
        self.spending = Spending(config, self.store, agents, kit.outbox, self.clock)
        self.locks = AgentLocks()
        self.hosts = HostPlane(kit)
        self.crashes = CrashHandling(
            config,
            self.store,
            agents,
            backend,
            self.setup,
            self.locks,
            launch=self._launch,
            announce=self._announce,
            clock=self.clock,
        )
        self.terminals = Terminals(backend, self._shell_of, self._record_session, self.clock)
        self._closing = False

    # -------------------------------------------------------------------------------- running
    @asynccontextmanager
    async def running(self) -> AsyncIterator[AgentSupervisor]:
        try:
            async with self.kit.running(
                self.crashes.follow,
                self.setup.refresh_tokens,
                self.budgets.watch,
                self.turn_stats.prune_forever,
                self.terminals.reap_forever,
                self.hosts.run,
                first=partial(startup.reconcile, self.store, self.backend, self.setup, self.clock),
            ):
                try:
                    if not await self.hosts.manager_lives_elsewhere():
                        async with self.hosts.claim(MANAGER):
                            await startup.ensure_manager(self.store, self.provisioning, self.clock)
                    await self._start_up()
                    yield self
                finally:
                    self._closing = True  # no sandbox starts from now on
                    await self.terminals.close_all("the lifecycle server stopped")
                    await self.crashes.close()
                    if self.stop_agents_on_exit:  # keeping what each should be doing
                        await startup.stop_running(await self.store.agents(), self._stop_sandbox)
        finally:
            await self.backend.close()

    async def _start_up(self) -> None:
        """Rebuild stale agents if hive.toml says so, then start what should run: the manager first."""
        if self.config.lifecycle.rebuild_stale_on_start:
            for row in await self._stale():
                with contextlib.suppress(Refused):
                    await self.rebuild(row.name, why=UPDATED)
        await startup.start_wanted(await self.store.agents(), partial(self.start, reason="boot"), self._failed_at_boot)

    async def _failed_at_boot(self, name: str, outcome: Outcome, why: str) -> None:
        """`name` did not start as this server came up: failed, and the audit trail says why."""
        try:
            row = await self.row(name)
            if row.state == "starting":  # given up midway by an error _launch did not expect
                await self.store.mark_failed(name, self.clock())
            await self.record_action(name, "start", BOOT_ACTOR, outcome, why)
        except Exception:  # the database itself: the log says it, the server still comes up
            log.exception("could not record that %s failed to start", name)

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
        async with self.locks.exclusive(checked(name), "being created"):
            self._refuse_peer(name)
            if await self.store.agent(name) is not None:
                if (ref is not None or expected_base is not None) and await self._created_already(
                    name, ref, expected_base
                ):
                    return await self.row(name), True
                raise Refused(f"{name} already exists")
            await self.provisioning.check_new(name, ref, expected_base)
            async with self.hosts.claim(name):  # a name lives on one host of the hive
                proposed, applied = await self.provisioning.provision(name, "agent", ref)
                await self.store.add(name, self.clock(), applied, proposed)
            await self._launch(name, SandboxStart(reason="created"))
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
        async with self.locks.exclusive(checked(name), "being drafted"):
            self._refuse_peer(name)
            if await self.store.agent(name) is not None:
                raise Refused(f"{name} already exists; a draft is for an agent that does not exist yet")
            return await self.provisioning.make_draft(name)

    # ---------------------------------------------------------------------------- start & stop
    async def start(self, name: str, *, by: str = "", reason: StartReason = "started") -> AgentRow:
        """Start it (`by` whom, for its harness to say; reason "boot": this server coming up starts it)."""
        row = await self.row(name)
        async with self.locks.exclusive(name, "starting"):
            if row.state == "running":
                raise Refused(f"{name} is already running")
            await self.store.want_running(name)
            await self._launch(name, SandboxStart(reason=reason, detail=_by(by)))
        return await self.row(name)

    async def stop(self, name: str) -> AgentRow:
        row = await self.row(name)
        async with self.locks.exclusive(name, "stopping"):
            await self.store.want_stopped(name)
            if row.state in ("running", "starting") or self.crashes.coming_back(name):  # systemd would bring it back
                await self._stop_sandbox(name)
            elif row.state in ("restarting", "failed"):
                await self.store.mark_stopped(name)
        return await self.row(name)

    async def restart(self, name: str, *, by: str = "") -> AgentRow:
        row = await self.row(name)
        async with self.locks.exclusive(name, "restarting"):
            if row.state in ("running", "starting"):
                await self._stop_sandbox(name)
            await self.store.want_running(name)
            await self._launch(name, SandboxStart(reason="restarted", detail=_by(by)))
        return await self.row(name)

    async def kill(self, name: str, by: str) -> AgentRow:
        row = await self.row(name)
        async with self.locks.exclusive(name, "being killed"):
            if row.state not in ("running", "starting"):
                raise Refused(f"{name} is not running (it is {row.state})")
            await self.store.want_stopped(name)
            await self._stop_sandbox(name, kill=True)
            await self._announce(Killed(agent=name, by=by))
        return await self.row(name)

    async def _launch(self, name: str, start: SandboxStart, *, rebuild: bool = False) -> None:
        """Start the sandbox from the applied config (rebuilt first with `rebuild`); hive.json says why
        (`start`). The caller holds the agent."""
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
        self.crashes.not_coming_back(name)  # what the platform was restarting is started now
        try:
            spec = await anyio.to_thread.run_sync(self.setup.prepare_start, name, config, uid, start)
            await self.agents.instances_changed()  # its new token is good on every host before it runs
            if row.built_version is None:  # its first start: prepare what the backend needs
                await self.backend.create(spec)
            elif rebuild or self.needs_update(row):  # a config applied, or another hyperhive, since it was built
                await self.backend.update(spec)
            running = await self.backend.start(spec)
        except (BackendError, ConfigError) as e:  # ConfigError: [harness] env_file
            await self.store.mark_failed(name, self.clock())
            raise Refused(str(e)) from None
        except OSError as e:  # its files (some of them its own, so hostile): hive.json made a directory, ...
            await self.store.mark_failed(name, self.clock())
            raise Refused(
                f"{name} could not be prepared to start: {e}; fix or remove that path and start it again"
            ) from None
        await self.store.mark_started(name, running.started_at, row.applied_sha, self.version)

    async def _stop_sandbox(self, name: str, *, kill: bool = False) -> None:
        """Stop it and mark it stopped; its ending will not count as a crash. `desired` is the caller's."""
        await self.store.mark_changing(name, "stopping")
        await self.terminals.end_agent(name, f"the sandbox of {name} was stopped")
        self.crashes.expect_exit(name)
        try:
            if kill:
                await self.backend.kill(name)
            else:
                await self.backend.stop(name, self.config.lifecycle.stop_timeout_seconds)
        except BackendError as e:
            log.warning("stopping %s: %s", name, e)
        await self.setup.end_instance(name)
        self.crashes.not_coming_back(name)
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
        async with self.locks.exclusive(name, "applying a commit"):
            proposed, files = await self.provisioning.files_at(name, ref)
            done = await self.provisioning.applied_already(name, proposed, expected_base)
            if done is not None:
                row = await self.row(name)
                if row.applied_sha != done or row.built_sha != done:
                    await self._finish_apply(name, proposed, done)  # the server died before it was done
                return proposed, done, True
            try:
                validate(name, proposed, files, self.config.home, placement_host(self.config))
            except Refused as e:
                raise Refused(f"{e}\nNothing was applied.") from None
            if expected_base is not None:
                await check_base(name, paths, expected_base)
            applied = await self.provisioning.apply(name, proposed, files)
            await self._finish_apply(name, proposed, applied)
        return proposed, applied, False

    async def _finish_apply(self, name: str, proposed: str, applied: str) -> None:
        await self.store.set_applied(name, applied, proposed)
        await self._rebuild_held(name, f"config {proposed[:12]} was applied")
        await self._announce(Rebuilt(agent=name, sha=proposed))

    async def rebuild(self, name: str, *, by: str = "", why: str = "") -> AgentRow:
        """Rebuild it from its applied config (`why`, or `by` whom, for its harness to say)."""
        await self.row(name)
        async with self.locks.exclusive(name, "being rebuilt"):
            await self._rebuild_held(name, why or _by(by))
            await self._announce(Rebuilt(agent=name, sha=(await self.row(name)).applied_sha))
        return await self.row(name)

    async def rebuild_stale(self) -> list[str]:
        stale = [
            row.name for row in startup.manager_first([r for r in await self.store.agents() if self.needs_update(r)])
        ]
        for name in stale:
            await self.rebuild(name, why=UPDATED)
        return stale

    async def _stale(self) -> list[AgentRow]:
        """The agents that need_update, the manager first."""
        return startup.manager_first([r for r in await self.store.agents() if self.needs_update(r)])

    async def _rebuild_held(self, name: str, why: str) -> None:
        row = await self.row(name)
        if row.state in ("running", "starting"):
            await self._stop_sandbox(name)
        config = self.agents.get(name)
        if config is None:
            raise Refused(f"{name} has no applied config")
        if row.desired == "running":
            await self._launch(name, SandboxStart(reason="rebuilt", detail=why), rebuild=True)
        else:
            uid = await self.provisioning.uid(name)
            try:
                spec = await anyio.to_thread.run_sync(self.setup.spec, name, config, uid)
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

    async def cancel_turn(self, name: str, wait: float = harness_files.CANCEL_WAIT) -> tuple[int, TurnState]:
        """Ask the harness to stop its running turn: (the turn's id, its state once stopped or after `wait`)."""
        row = await self.row(name)
        paths = AgentPaths.of(self.config, name)
        turn = await harness_files.read_turn_state(paths) if row.state == "running" else None
        if turn is None or turn.state != "running" or turn.turn is None:
            doing = f"its harness is {turn.state}" if turn else f"it is {row.state}"
            raise Refused(f"{name} is not running a turn ({doing}); nothing to cancel")
        return await harness_files.cancel_turn(paths, turn, wait)

    async def reset_session(self, name: str) -> str:
        """Ask its harness to start a fresh Claude Code session at its next turn: the request's id."""
        await self.row(name)
        return await harness_files.request_session_reset(AgentPaths.of(self.config, name), self.clock())

    # ------------------------------------------------------------------------------- destroying
    async def destroy(self, name: str, *, purge: bool, force: bool) -> None:
        self._refuse_peer(checked(name))  # its applied config would pass for a destroyed agent's leftovers
        if purge and await self.store.agent(checked(name)) is None and self.provisioning.leftovers(name):
            # Destroyed before, its files kept: purge them now.
            async with self.locks.exclusive(name, "being purged"):
                await self.store.remove(name, forget_uid=True)
                await anyio.to_thread.run_sync(end_instances, self.config.instances_dir, name)
                await anyio.to_thread.run_sync(self.provisioning.purge, name)
                await self.agents.refresh()
            return
        row = await self.row(name)
        if name == MANAGER and not force:
            raise Refused("the manager is infrastructure; destroying it needs force=true")
        async with self.locks.exclusive(name, "being destroyed"):
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

    # ---------------------------------------------------------------------------------- moving
    async def move(self, name: str, host: str, by: str) -> AgentInfo:
        """Move `name` to `host` (moving.py has the whole story); the agent as `host` has it now."""
        self._refuse_peer(checked(name))
        if name == MANAGER:
            raise Refused("the manager stays on its host: its sandbox binds that host's proposed config repos")
        if not self.hosts.spans_hosts or self.moves is None:
            raise Refused("this hive has one host: there is nowhere to move an agent to")
        if host == self.hosts.name:
            raise Refused(f"{name} lives on host {host} already")
        row = await self.row(name)
        config = self.agents.get(name)
        target = await self.hosts.host(await self.hosts.choose(host, config.placement.labels if config else ()))
        owners: dict[Part, int | None] = {
            "applied": None, "config": await self.provisioning.uid(MANAGER),
            "state": await self.provisioning.uid(name), "harness": await self.provisioning.uid(name),
        }  # fmt: skip
        async with self.locks.exclusive(name, f"being moved to host {host}"):
            ran = row.state in ("running", "starting", "restarting")
            if ran:
                await self._stop_sandbox(name)
            ticket = self.moves.open(name, owners)
            model = await anyio.to_thread.run_sync(harness_files.model_override, AgentPaths.of(self.config, name))
            try:
                adopted = await self.hosts.call_on(
                    target.name,
                    "adopt_agent",
                    {
                        "name": name, "source": self.hosts.name, "ticket": ticket.ticket,
                        "desired": row.desired, "applied_from": row.applied_from, "model": model,
                        "by": by,
                    },
                )  # fmt: skip
            except BaseException:
                if ran and row.desired == "running" and not self._closing:
                    with contextlib.suppress(Refused):
                        await self._launch(name, SandboxStart(reason="started", detail=f"its move to {host} failed"))
                raise
            finally:
                self.moves.close(name)
            # It is the target's now: forget it here (not "destroyed": it lives on).
            await self.backend.destroy(name)
            await self.store.remove(name, forget_uid=True)
            await self.store.forget_turns(name)
            await anyio.to_thread.run_sync(end_instances, self.config.instances_dir, name)
            await anyio.to_thread.run_sync(self.provisioning.purge, name)
            await self.agents.refresh()
        return AgentInfo.model_validate(adopted)

    async def adopt(
        self, name: str, source: str, ticket: str, desired: str, applied_from: str | None, model: str | None, by: str
    ) -> AgentRow:
        """Take over agent `name` from host `source` (its move_agent): fetch its parts, make it ours,
        start it if it was meant to run."""
        if self.moves is None or not self.hosts.spans_hosts:
            raise Refused("this host is not part of a hive of several hosts")
        origin = await self.hosts.host(source)
        paths = AgentPaths.of(self.config, checked(name))
        async with self.locks.exclusive(name, f"moving here from host {source}"):
            if await self.store.agent(name) is not None or await anyio.to_thread.run_sync(paths.root.exists):
                raise Refused(f"host {self.hosts.name} has an agent or the files of one named {name} already")
            uid = await self.provisioning.uid(name)
            manager_uid = await self.provisioning.uid(MANAGER)
            owners: dict[Part, int | None] = {"applied": None, "config": manager_uid, "state": uid, "harness": uid}
            try:
                await anyio.to_thread.run_sync(self.provisioning.make_move_dirs, paths, owners)
                async with self.hosts.fetcher(origin) as client:
                    base = origin.lifecycle_url.removesuffix("/mcp").rstrip("/")
                    for part in PARTS:
                        url = f"{base}{MOVE_PATH}/{name}/{part}"
                        await fetch_part(
                            client, url, self.kit.service_token(), ticket, part_dir(paths, part), owners[part],
                            self.config.lifecycle.move_timeout_seconds,
                        )  # fmt: skip
                applied_sha = await repos.head(paths.applied)
                if not await self.hosts.directory.move(name, source, self.hosts.name):
                    raise Refused(f"{name} no longer lives on host {source}")
            except BaseException:
                await anyio.to_thread.run_sync(remove_parts, paths)
                raise
            await self.store.add(name, self.clock(), applied_sha, applied_from or applied_sha)
            if desired == "stopped":
                await self.store.want_stopped(name)
            if model is not None:
                await harness_files.set_model_override(paths, model, uid)
            await self.agents.refresh()
            if desired == "running":
                try:
                    await self._launch(
                        name, SandboxStart(reason="started", detail=f"moved from host {source} {_by(by)}".strip())
                    )
                except Refused as e:  # it is here all the same; its state says why it does not run
                    log.warning("%s moved here but did not start: %s", name, e)
        return await self.row(name)

    # ---------------------------------------------------------------------------------- peers
    async def add_peer(self, name: str, tools: dict[str, list[str]] | None, recipients: list[str] | None) -> str:
        """Register peer `name` (an agent outside the hive): its applied config and a live instance;
        returns the applied sha. Nothing is started: a peer runs where the operator runs it."""
        async with self.locks.exclusive(checked(name), "being added as a peer"):
            if self.peers.get(name) is not None:
                raise Refused(f"{name} is a peer already; `hive peer remove {name}` first to change it")
            if await self.store.agent(name) is not None:
                raise Refused(f"{name} is an agent of the hive; a peer needs a name of its own")
            if await anyio.to_thread.run_sync(self.provisioning.leftovers, name):
                raise Refused(
                    f"{name} has files of an agent or a draft (kept when it was destroyed): "
                    f"`hive destroy {name} --purge` removes them, or choose another name"
                )
            return await self.peers.add(name, tools, recipients)

    async def remove_peer(self, name: str) -> None:
        """Revoke peer `name`: its tokens stop working at once and its applied config goes."""
        async with self.locks.exclusive(checked(name), "being removed"):
            if self.peers.get(name) is None:
                what = "an agent of the hive: `hive destroy` it" if await self.store.agent(name) else "no peer"
                raise Refused(f"{name} is {what}; `hive peer list` shows the peers")
            await self.peers.remove(name)

    def _refuse_peer(self, name: str) -> None:
        if self.peers.get(name) is not None:
            raise Refused(peer_refusal(name))

    # ------------------------------------------------------------------------------- terminal
    async def _shell_of(self, name: str) -> ShellSpec:
        """The operator's shell in `name`'s running sandbox: its uid and groups, its state dir, and a
        clean environment (its sandbox's PATH, HOME and names; none of agent.toml's env)."""
        row = await self.row(name)
        config = self.agents.get(name)
        if row.state != "running" or config is None:
            raise Refused(f"{name} is {row.state}: a terminal opens into a running sandbox; start it first")
        uid = await self.provisioning.uid(name)
        try:
            spec = await anyio.to_thread.run_sync(self.setup.spec, name, config, uid)
        except BackendError as e:
            raise Refused(str(e)) from None
        keep = ("PATH", "HOME", "LANG", "HIVE_AGENT", "HIVE_ROLE", "HIVE_STATE_DIR", "HIVE_HARNESS_DIR")
        env = {key: spec.env[key] for key in keep if key in spec.env}
        env |= {"TERM": TERM, "PS1": f"{name}:\\w\\$ "}
        return ShellSpec(name=name, uid=spec.uid, groups=spec.groups, cwd=spec.state_dir, env=env)

    async def _record_session(self, name: str, action: str, actor: str, detail: str | None) -> None:
        await self.record_action(name, action, actor, "ok", detail)

    # ------------------------------------------------------------------------------------ helpers
    async def _announce(self, event: HelperEvent) -> None:
        """Tell the manager, through the broker, as soon as it can be delivered."""
        await self.kit.outbox.post(MANAGER, event)


def _by(who: str) -> str:
    return f"by {who}" if who else ""
