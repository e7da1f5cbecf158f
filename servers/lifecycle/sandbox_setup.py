"""What an agent's sandbox is given: its spec (command, environment, binds, limits), a token for
each new run, hive.json for its harness; and tokens renewed while it runs.

A token names the sandbox instance it is for (servers/common/instances.py): when a run ends, its
instance ends and every token of that run stops working, whatever still holds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final

import anyio

from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.harnessdir import TOKEN_FILE, SandboxStart
from hyperhive.servers.common.instances import current_instance, new_instance
from hyperhive.servers.common.issuer import Issuer
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.lifecycle import host_binds
from hyperhive.servers.lifecycle.backends.base import BackendError, SandboxBackend, SandboxSpec
from hyperhive.servers.lifecycle.cgroups import Limits
from hyperhive.servers.lifecycle.harness_files import harness_info
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.provisioning import Provisioning
from hyperhive.servers.lifecycle.store import LifecycleStore

RENEW_MARGIN: Final = 3600.0  # a token is renewed this long before it expires (at most a fifth of its life)
log = logging.getLogger("hyperhive.lifecycle")
KEY_CHECK_SECONDS: Final = 1.0  # how soon agents get tokens signed by a rotated key


class SandboxSetup:
    def __init__(
        self,
        config: HiveConfig,
        issuer: Issuer,
        agents: AgentRegistry,
        backend: SandboxBackend,
        provisioning: Provisioning,
        store: LifecycleStore,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.issuer = issuer
        self.agents = agents
        self.backend = backend
        self.provisioning = provisioning
        self.store = store
        self.clock = clock

    def prepare_start(self, name: str, config: AgentConfig, uid: int | None, start: SandboxStart) -> SandboxSpec:
        """A fresh token and hive.json for the harness (with why it starts), and the spec to start it
        with. Blocking."""
        paths = AgentPaths.of(self.config, name)
        self._write_token(paths, config, uid)
        info = harness_info(self.config, name, config, start)
        write_atomic(paths.hive_json, info.model_dump_json(indent=2), mode=0o644)
        paths.cancel_request.unlink(missing_ok=True)  # meant for a turn of the run before
        if config.shared != "none":
            host_binds.make_shared_dir(self.config.home, self.provisioning.shared_gid)
        return self.spec(name, config, uid)

    def spec(self, name: str, config: AgentConfig, uid: int | None) -> SandboxSpec:
        """What `name` runs with; BackendError for a bind that cannot be made now. Blocking."""
        paths = AgentPaths.of(self.config, name)
        command = config.sandbox.command or self.config.lifecycle.default_command or self.backend.harness_command(name)
        bounds = config.sandbox.bounds(self.config.sandbox)
        gid = self.provisioning.shared_gid
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
            network=config.sandbox.network or self.backend.default_network,
            instance_credentials=self._instance_credentials(paths),
            mounts=host_binds.mounts(self.config.home, config),
            groups=() if config.shared == "none" or gid is None else (gid,),
        )

    def _instance_credentials(self, paths: AgentPaths) -> Path | None:
        if not self.backend.per_instance_credentials:
            return None
        instance = current_instance(self.config.instances_dir, paths.name)
        return None if instance is None else paths.instance_credentials(instance)

    def _write_token(self, paths: AgentPaths, config: AgentConfig, uid: int | None, *, new: bool = True) -> None:
        """A token for a new instance of the agent (`new`), or a renewed one for its live instance."""
        instance = current_instance(self.config.instances_dir, paths.name)
        if new or instance is None:
            instance = new_instance(self.config.instances_dir, paths.name)
        token = self.issuer.agent_token(Principal(paths.name, Role(config.role)), config, instance)
        directory = token_dir(paths)
        if self.backend.per_instance_credentials:
            directory = paths.instance_credentials(instance)
            directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
            _forget_runs(paths, keep=instance)
        write_atomic(directory / TOKEN_FILE, token, mode=0o600)
        if uid is not None:
            for owned in (paths.token_dir, directory, directory / TOKEN_FILE):
                os.chown(owned, uid, uid, follow_symlinks=False)

    async def end_instance(self, name: str, *, reissue: bool = False) -> None:
        """Its sandbox ended: every token of that run stops working now, whatever still holds one.
        `reissue`: the backend restarts it by itself, so its token file gets the new instance's."""
        config = self.agents.get(name)
        if reissue and config is not None:
            uid = await self.provisioning.uid(name)
            await anyio.to_thread.run_sync(self._write_token, AgentPaths.of(self.config, name), config, uid)
        else:
            await anyio.to_thread.run_sync(new_instance, self.config.instances_dir, name)
            await anyio.to_thread.run_sync(partial(_forget_runs, AgentPaths.of(self.config, name), keep=None))
        await self.agents.instances_changed()

    async def refresh_tokens(self) -> None:
        """Agents run for weeks; their tokens last `[tokens] ttl_seconds`: renew them near their expiry,
        and at once when the hive's key is rotated (`hive rotate-key`: what the old key signed is refused).
        A renewal costs the agent nothing: Claude Code reads the token file again when it connects or is
        refused (its headers helper), the harness before each call."""
        every = renew_every(self.config.tokens.ttl_seconds)
        kid = self.issuer.signing().kid
        due = self.clock()  # at once: the sandboxes this server re-attached to hold tokens of unknown age
        while True:
            await asyncio.sleep(KEY_CHECK_SECONDS)
            current = self.issuer.signing().kid
            if current == kid and self.clock() < due:
                continue
            kid, due = current, self.clock() + every
            for row in await self.store.agents():
                config = self.agents.get(row.name)
                if row.state in ("running", "starting") and config is not None:
                    uid = await self.provisioning.uid(row.name)
                    paths = AgentPaths.of(self.config, row.name)
                    try:
                        await anyio.to_thread.run_sync(partial(self._write_token, paths, config, uid, new=False))
                    except (BackendError, OSError) as e:  # one agent's: the others are renewed all the same
                        log.warning("could not renew %s's token: %s", row.name, e)


def renew_every(ttl: float) -> float:
    """How often tokens that live `ttl` seconds are renewed: shortly before they expire."""
    return ttl - min(ttl / 5, RENEW_MARGIN)


def _forget_runs(paths: AgentPaths, keep: str | None) -> None:
    """Remove the token dirs of every run but `keep`: what a survivor of an ended run still has
    bound is then an empty, deleted directory."""
    try:
        runs = list(paths.instance_credentials_root.iterdir())
    except FileNotFoundError:
        return
    for run in runs:
        if run.name != keep:
            shutil.rmtree(run, ignore_errors=True)


def token_dir(paths: AgentPaths) -> Path:
    """The credentials dir's INSTANCE_DIR, made if missing: a real directory, never a link. The
    credentials dir is the agent's uid's (so its sandbox can read it), and a process of that uid
    outside the sandbox (`hive claude`) could plant a link there to have root write a token
    elsewhere."""
    with contextlib.suppress(FileExistsError):
        paths.token_dir.mkdir(mode=0o700)
    if not stat.S_ISDIR(os.lstat(paths.token_dir).st_mode):
        raise BackendError(f"{paths.token_dir} is not a directory (a link?); remove it and start {paths.name} again")
    return paths.token_dir
