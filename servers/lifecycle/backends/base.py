"""What a sandbox backend does, and what it is told.

The lifecycle server decides *what* should run (the agent's spec, when to start, stop, restart);
a backend knows *how* on its platform: bubblewrap on any Linux, nixos-container on NixOS.
A backend reports every sandbox that stops through `changes()`, whoever stopped it; the server
tells an operator's stop from a crash by what it asked for. Where the platform restarts a crashed
sandbox itself (systemd), changes() also says when it is up again, so the server knows it runs.
"""

from __future__ import annotations

import abc
import builtins
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from hyperhive.servers.lifecycle.cgroups import Limits


class BackendError(Exception):
    """A backend operation that failed; the message says what and, where it can, why."""


@dataclass(frozen=True, slots=True)
class Mount:
    """A host path bound into the sandbox at `path` (the shared workspace, agent.toml [[binds]])."""

    host: Path  # resolved, checked at this start
    path: Path
    read_only: bool


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """Everything a backend needs to run one agent. Paths are host paths, and the same inside."""

    name: str
    role: str  # "agent" | "manager"
    command: list[str]  # what runs inside: the harness unless agent.toml [sandbox] says otherwise
    env: dict[str, str]  # the whole environment of the command (nothing is inherited)
    uid: int | None  # the host uid it runs as; None: the lifecycle server's own (not root)
    state_dir: Path  # the agent's own files and cwd, read-write
    harness_dir: Path  # harness-owned, read-write
    credentials_dir: Path  # its token; read-only at harness_dir / "credentials"
    applied_dir: Path  # the applied config repo: agent.toml and, on NixOS, agent.nix
    log_path: Path  # where the command's output goes (backends with their own journal may ignore it)
    shared_rw: tuple[Path, ...] = field(default=())  # more read-write binds (the manager: the agents tree)
    limits: Limits = field(default=Limits())  # its cgroup's (hive.toml [sandbox], agent.toml [sandbox])
    tmp_max: int | None = None  # bytes of its /tmp
    network: str = "outbound"  # agent.toml [sandbox] network: "outbound", "hive-only" or "host"
    instance_credentials: Path | None = None  # this run's own token dir (per_instance_credentials)
    mounts: tuple[Mount, ...] = ()  # /hive/shared and agent.toml's [[binds]]
    groups: tuple[int, ...] = ()  # supplementary groups of its uid: the hive's shared group


@dataclass(frozen=True, slots=True)
class Running:
    name: str
    started_at: float  # epoch seconds
    pid: int | None = None  # the sandbox's outermost process on the host, where there is one


@dataclass(frozen=True, slots=True)
class Change:
    """A sandbox stopped (or, under an init that restarts it on its own, failed and is coming back)."""

    name: str
    at: float  # epoch seconds
    exit_code: int | None = None  # how its main process ended: an exit code ...
    signal: int | None = None  # ... or the signal that killed it
    auto_restarting: bool = False  # the platform restarts it itself (systemd Restart=on-failure)
    restarts: int | None = None  # the platform's own restart count, where it keeps one
    started_at: float | None = None  # when the run that ended had started, where the backend knows
    reason: str | None = None  # what the platform knows of why: "out of memory"


@dataclass(frozen=True, slots=True)
class Restarted:
    """A sandbox the platform restarted on its own (after a Change with auto_restarting) is up again."""

    name: str
    running: Running  # the new run


@dataclass(frozen=True, slots=True)
class ShellSpec:
    """The operator's shell in a running sandbox (servers/lifecycle/terminal.py): as whom, where, with what."""

    name: str
    uid: int | None  # the agent's host uid (None: the server's own, unprivileged)
    groups: tuple[int, ...]  # its supplementary groups
    cwd: Path  # its state dir
    env: dict[str, str]  # the shell's whole environment


class SandboxBackend(abc.ABC):
    """How sandboxes are run on one platform (bwrap.py, nixos.py); the supervisor decides what runs."""

    name: str  # "bwrap" | "nixos-container"
    path: str = "/usr/local/bin:/usr/bin:/bin"  # PATH inside its sandboxes
    default_network: str = "outbound"  # for an agent.toml that sets no [sandbox] network
    # Whether each run gets a token dir of its own (SandboxSpec.instance_credentials), bound over the
    # credentials dir's INSTANCE_DIR in that run only; else the token is kept in that dir itself.
    per_instance_credentials: bool = False

    def harness_command(self, name: str) -> builtins.list[str]:
        """What a sandbox runs when neither agent.toml nor hive.toml says: the harness, as this Python runs it."""
        return [sys.executable, "-m", "hyperhive.harness", "--agent", name]

    @property
    @abc.abstractmethod
    def isolation(self) -> str:
        """One line for list_agents: how agents are kept apart on this backend, as it runs now."""

    @abc.abstractmethod
    async def create(self, spec: SandboxSpec) -> None:
        """Prepare what the agent needs before its first start. Idempotent."""

    @abc.abstractmethod
    async def update(self, spec: SandboxSpec) -> None:
        """Bring prepared resources in line with a changed spec or applied config. Idempotent."""

    @abc.abstractmethod
    async def start(self, spec: SandboxSpec) -> Running:
        """Start the sandbox and return once it is up. BackendError if it cannot start."""

    @abc.abstractmethod
    async def stop(self, name: str, timeout: float) -> None:
        """SIGTERM its processes, SIGKILL after `timeout`; return once it is gone."""

    @abc.abstractmethod
    async def kill(self, name: str) -> None:
        """SIGKILL everything in the sandbox now; return once it is gone."""

    async def restart(self, spec: SandboxSpec, timeout: float) -> Running:
        await self.stop(spec.name, timeout)
        return await self.start(spec)

    @abc.abstractmethod
    async def destroy(self, name: str) -> None:
        """Stop it if running and remove what create() prepared. The agent's own dirs are not touched."""

    @abc.abstractmethod
    async def list(self) -> dict[str, Running]:
        """The sandboxes running now, including ones started before this process (re-attached)."""

    @abc.abstractmethod
    async def logs(self, name: str, lines: int, since: float | None) -> builtins.list[str]:
        """The last `lines` lines of its output, only those at or after `since` when given."""

    @abc.abstractmethod
    def changes(self) -> AsyncIterator[Change | Restarted]:
        """Every sandbox that stops, as it happens, until the backend is closed; under an init that
        restarts crashed sandboxes itself, also each one it brought back (Restarted)."""

    async def shell_command(self, shell: ShellSpec) -> builtins.list[str]:
        """The argv that, run by this (root) server with a PTY as its stdin, stdout and stderr, gives
        a shell inside the running sandbox of `shell.name` as its agent. BackendError where it cannot."""
        raise BackendError(f"the {self.name} backend cannot open a terminal into a sandbox")

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release watches and connections. Sandboxes keep running."""
