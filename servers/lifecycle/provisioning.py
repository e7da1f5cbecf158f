"""An agent's places on the host: its dirs, its host uid, its proposed and applied config repos,
drafts, and purging what a destroyed agent left.

No sandbox is touched here and nothing is locked: the supervisor holds the agent while it calls
these. What the applied repo records (each commit is "Apply <proposed sha>", on top of the config
it replaced) is what makes applying idempotent: `applied_already` tells whether a call was carried
out before, from the repo itself, so it holds even when the server died before recording it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import anyio

from hyperhive.servers.common.agent_config import AGENT_TOML, agent_toml_template, parse_agent_config
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.config import HiveConfig, HostSettings
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.diffs import render_diff, widenings
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.names import MANAGER, InvalidName, check_agent_name
from hyperhive.servers.lifecycle import logfiles, repos
from hyperhive.servers.lifecycle.host_binds import home_problems
from hyperhive.servers.lifecycle.moving import Part
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.store import LifecycleStore, UidsExhausted
from hyperhive.servers.lifecycle.uidrange import UidRange

Role = Literal["agent", "manager"]
NO_BASE: Literal["none"] = "none"  # an expected base meaning: there was no applied config


class Provisioning:
    def __init__(self, config: HiveConfig, store: LifecycleStore, agents: AgentRegistry, uids: UidRange | None) -> None:
        self.config = config
        self.store = store
        self.agents = agents
        self.uids = uids  # None: not root, agents share the server's uid

    @property
    def shared_gid(self) -> int | None:
        """The hive's group for /hive/shared: the last id of this hive's block, which no agent gets
        as its uid (nor, so, as its own group); None when not running as root."""
        return None if self.uids is None else self.uids.end - 1

    def paths(self, name: str) -> AgentPaths:
        return AgentPaths.of(self.config, name)

    async def uid(self, name: str) -> int | None:
        """Its host uid (allocated on first use, kept for the name); None when not running as root."""
        if self.uids is None:
            return None
        taken = await anyio.to_thread.run_sync(_system_uids)
        try:
            return await self.store.uid_of(name, self.uids.start, taken, end=self.uids.end - 1)
        except UidsExhausted:
            raise Refused(
                f"no free host uid left in this hive's block {self.uids}; destroy agents with purge to free some"
            ) from None

    # ------------------------------------------------------------------------------- creating
    async def provision(self, name: str, role: Role, ref: str | None = None) -> tuple[str, str]:
        """Repos, dirs and uid; returns (proposed sha, applied sha).

        Keeps what is there: a draft's repo and seeded state, or what an earlier agent of this
        name left when destroyed without purge. Without `ref`, the applied config stays as it
        was, or starts as the proposed repo's HEAD.
        """
        paths = self.paths(name)
        uid = await self.uid(name)
        manager_uid = uid if name == MANAGER else await self.uid(MANAGER)
        await anyio.to_thread.run_sync(self._make_dirs, paths, uid)
        head = await self._proposed_repo(paths, role, manager_uid)
        proposed, files = await self.read_commit(name, ref or head)
        message = f"Apply {proposed}\n\nInitial config of {name}."
        if ref and (paths.applied / ".git").exists():
            applied = await repos.commit_files(paths.applied, files, message)
        else:
            applied = await repos.init_repo(paths.applied, files, message)
        await self.agents.refresh()
        return proposed, applied

    async def check_new(self, name: str, ref: str | None, expected_base: str | None) -> None:
        """Refuse to create what the caller was not shown. With `expected_base` (an approved request:
        the applied sha its diff was against, or "none"), the applied config must still be that, and
        without `ref` there must be no draft."""
        if expected_base is None:
            return
        paths = self.paths(name)
        await check_base(name, paths, expected_base)
        if ref is None and await anyio.to_thread.run_sync((paths.config / ".git").exists):
            raise Refused(
                f"a draft of {name} exists (its config repo, made after the template was shown); "
                f"nothing was created: ask the manager to request_spawn_commit({name!r}, sha) for it"
            )

    async def make_draft(self, name: str) -> tuple[AgentPaths, str]:
        """A proposed repo and a state dir, owned by the manager, who edits the one and seeds the other."""
        paths = self.paths(name)
        manager_uid = await self.uid(MANAGER)
        await anyio.to_thread.run_sync(self._make_draft_dirs, paths, manager_uid)
        return paths, await self._proposed_repo(paths, "agent", manager_uid)

    async def _proposed_repo(self, paths: AgentPaths, role: Role, owner: int | None) -> str:
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

    def make_move_dirs(self, paths: AgentPaths, owners: Mapping[Part, int | None]) -> None:
        """Empty dirs for an agent moving here (moving.py), each owned by whoever unpacks it."""
        self._make_dirs(paths, owners["state"])
        paths.applied.mkdir(mode=0o700)
        if (manager_uid := owners["config"]) is not None:
            os.chown(paths.config, manager_uid, manager_uid)

    def _make_draft_dirs(self, paths: AgentPaths, manager_uid: int | None) -> None:
        _make_agents_dir(self.config)
        paths.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        paths.config.mkdir(mode=0o700, exist_ok=True)
        paths.state.mkdir(mode=0o700, exist_ok=True)
        if manager_uid is not None:  # the manager seeds its notes; the agent takes them over when created
            os.chown(paths.state, manager_uid, manager_uid)

    # ---------------------------------------------------------------------------- config repos
    async def read_commit(self, name: str, ref: str) -> tuple[str, dict[str, str]]:
        """(full sha, config files) of commit `ref` of its proposed repo, refused unless it could be applied."""
        proposed, files = await self.files_at(name, ref)
        validate(name, proposed, files, self.config.home, placement_host(self.config))
        return proposed, files

    async def files_at(self, name: str, ref: str) -> tuple[str, dict[str, str]]:
        config = self.paths(name).config
        try:
            proposed = await repos.resolve_commit(config, ref)
            return proposed, await repos.files_at(config, proposed)
        except repos.RepoError as e:
            raise Refused(str(e)) from None

    async def apply(self, name: str, proposed: str, files: dict[str, str]) -> str:
        """Commit `files` (read at `proposed`) into its applied repo; returns the applied sha."""
        applied = await repos.commit_files(
            self.paths(name).applied, files, f"Apply {proposed}\n\nProposed commit {proposed} of agents/{name}/config."
        )
        await self.agents.refresh()
        return applied

    async def applied_already(self, name: str, proposed: str | None, expected_base: str | None) -> str | None:
        """The applied sha if the applied config is exactly what applying `proposed` (None: the
        template) on `expected_base` made — a call carried out before, sent again; None otherwise.

        Read from the applied repo: its HEAD says which proposed commit it came from and its parent
        which applied config it replaced ("none": it has none, the agent was created from it)."""
        applied = self.paths(name).applied
        if not await anyio.to_thread.run_sync((applied / ".git").exists):
            return None
        try:
            head = await repos.git(applied, "log", "-1", "--format=%H%x00%s%x00%P")
            sha, subject, parents = head.strip().split("\0")
        except (repos.RepoError, ValueError):
            return None
        parent = parents.split()[0] if parents else NO_BASE
        if expected_base is not None and parent != expected_base:
            return None
        if proposed is not None:
            return sha if subject == f"Apply {proposed}" else None
        # The template, as a spawn request showed it: nothing else in the applied config.
        files = await repos.files_at(applied, sha)
        return sha if files == {AGENT_TOML: agent_toml_template("agent")} else None

    async def diff_commit(self, name: str, ref: str) -> tuple[str, str | None, str, str | None, list[str], str]:
        """(proposed sha, applied sha, diff of the applied config to it, why it is invalid or None,
        widenings, the commit's message)."""
        paths = self.paths(checked(name))
        if not await anyio.to_thread.run_sync((paths.config / ".git").exists):
            raise Refused(f"{name} has no proposed config repo; create it, or request_spawn_draft({name!r})")
        proposed, files = await self.files_at(name, ref)
        applied_sha, applied_files = None, {}
        if await anyio.to_thread.run_sync((paths.applied / ".git").exists):
            applied_sha = await repos.head(paths.applied)
            applied_files = await repos.files_at(paths.applied, applied_sha)
        problems = None
        try:
            validate(name, proposed, files, self.config.home, placement_host(self.config))
        except Refused as e:
            problems = str(e)
        diff = render_diff(applied_files, files, "applied", f"proposed@{proposed[:12]}")
        try:
            message = await repos.commit_message(paths.config, proposed)
        except repos.RepoError as e:
            raise Refused(str(e)) from None
        return proposed, applied_sha, diff, problems, widenings(applied_files, files), message

    # ------------------------------------------------------------------------- drafts and purging
    async def drafts(self, agents: set[str]) -> list[str]:
        """Names with a proposed config repo and no agent: drafts, and what destroyed agents left."""

        def find() -> list[str]:
            with contextlib.suppress(OSError):
                return sorted(
                    entry.name
                    for entry in os.scandir(self.config.agents_dir)
                    if entry.name not in agents
                    and is_name(entry.name)
                    and self.paths(entry.name).config.joinpath(".git").exists()
                )
            return []

        return await anyio.to_thread.run_sync(find)

    def leftovers(self, name: str) -> bool:
        """Whether a destroyed agent left files (kept without purge)."""
        paths = self.paths(name)
        return any(
            path.exists() for path in (paths.root, paths.applied, paths.credentials, paths.instance_credentials_root)
        )

    def purge(self, name: str) -> None:
        paths = self.paths(name)
        for directory in (paths.root, paths.applied, paths.credentials, paths.instance_credentials_root):
            shutil.rmtree(directory, ignore_errors=True)
        logfiles.remove_all(paths.log)


def placement_host(config: HiveConfig) -> HostSettings | None:
    """This host, whose labels an agent's [placement] must find, in a hive of several hosts."""
    return config.host if config.storage.url is not None else None


def validate(name: str, sha: str, files: dict[str, str], home: Path, host: HostSettings | None = None) -> None:
    """Refuse a config that could not be applied: no agent.toml, an invalid one, a manager demoted or
    made, binds into or over the hive's `home`, [placement] labels this `host` lacks (a hive of
    several hosts; None: one host, labels mean nothing)."""
    if AGENT_TOML not in files:
        raise Refused(f"commit {sha[:12]} of {name}'s config has no {AGENT_TOML}")
    try:
        config = parse_agent_config(files[AGENT_TOML], f"{name}@{sha[:12]}:{AGENT_TOML}")
    except ConfigError as e:
        raise Refused(str(e)) from None
    if config.is_peer:
        # A sandboxed agent turned peer would keep its sandbox running with nobody watching it.
        raise Refused(
            f'kind = "peer" is for agents outside the hive, added with `hive peer add`; '
            f'{name} runs in a sandbox and must keep kind = "agent"'
        )
    if name == MANAGER and config.role != "manager":
        raise Refused('the manager\'s config must keep role = "manager"')
    if name != MANAGER and config.role == "manager":
        # A manager's token and a read-write bind of every agent's config repo: one manager only.
        raise Refused(f'role = "manager" is for the agent named {MANAGER} only; {name} must keep role = "agent"')
    if problems := home_problems(home, config):
        raise Refused(f"{name}@{sha[:12]}:{AGENT_TOML}: " + "; ".join(problems))
    if host is not None and (missing := sorted(set(config.placement.labels) - set(host.labels))):
        raise Refused(
            f"{name}@{sha[:12]}:{AGENT_TOML} asks for a host labelled {', '.join(config.placement.labels)}; "
            f"{name} lives on host {host.name}, which lacks {', '.join(missing)} (list_hosts shows each host's "
            "labels): drop the label, or make the agent on a host that has it"
        )


async def check_base(name: str, paths: AgentPaths, expected: str) -> None:
    """Refuse unless the applied config is still `expected` (its sha, or "none")."""
    has_applied = await anyio.to_thread.run_sync((paths.applied / ".git").exists)
    current = await repos.head(paths.applied) if has_applied else NO_BASE
    if current != expected:
        raise Refused(
            f"{name}'s applied config changed since the diff was made (it was {expected[:12]}, it is "
            f"{current[:12]}); nothing was applied: ask the manager to request it again"
        )


def is_name(name: str) -> bool:
    try:
        check_agent_name(name)
    except InvalidName:
        return False
    return True


def checked(name: str) -> str:
    """`name` if it is a valid agent name; a refusal saying why otherwise."""
    try:
        return check_agent_name(name)
    except InvalidName as e:
        raise Refused(str(e)) from None


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
