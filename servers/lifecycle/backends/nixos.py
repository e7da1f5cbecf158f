"""The NixOS backend: one nixos-container (systemd-nspawn) per agent, run by systemd.

`nixos-container` builds and removes containers; systemd, over D-Bus, starts and stops them
(unit `container@NAME.service`) and tells us when one stops. Each agent's container is built
from a generated flake (nixos_flake.py) in `render_dir/NAME`; its own directories are bound in
at the same paths through EXTRA_NSPAWN_FLAGS in nixos-container's `CONF_DIR/NAME.conf`, because
nixos-container has no flag for bind mounts.

The unit has Restart=on-failure, so systemd restarts a crashed container on its own: a crash
often shows only as SubState `auto-restart`, and changes() reports that as a crash too (with
auto_restarting), then reports Restarted once the unit is active again.

This module drives the nixos-container command and a container's unit through its life; systemd's
vocabulary is nixos_units.py, the D-Bus connection and crash watch nixos_watch.py, the container's
conf file and limits nixos_conf.py, its flake nixos_flake.py.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import importlib
import json
import shlex
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.names import is_agent_name
from hyperhive.servers.lifecycle.backends.base import (
    BackendError,
    Change,
    Restarted,
    Running,
    SandboxBackend,
    SandboxSpec,
    ShellSpec,
)
from hyperhive.servers.lifecycle.backends.nixos_conf import (
    container_conf,
    nspawn_flags,
    unit_limits,
    write_flake,
    write_spec,
)
from hyperhive.servers.lifecycle.backends.nixos_flake import FLAKE_OUTPUT, AgentFlake, host_system, render_flake
from hyperhive.servers.lifecycle.backends.nixos_units import (
    NO_SUCH_PROCESS,
    NO_SUCH_UNIT,
    SERVICE,
    SIGKILL,
    SystemdError,
    UnitState,
    agent_of_unit,
    container_unit,
    how_it_ended,
    is_gone,
    job_id,
)
from hyperhive.servers.lifecycle.backends.nixos_watch import SystemdUnits

NIXOS_CONTAINER: Final = "nixos-container"
JOURNALCTL: Final = "journalctl"
START_TIMEOUT: Final = 120.0  # the unit is active once the container's own systemd has booted
KILL_TIMEOUT: Final = 30.0  # after SIGKILL to every process of the unit
STDERR_LINES: Final = 10  # of a failed command, in the BackendError


# ---------------------------------------------------------------------------------------- backend


class NixosContainerBackend(SandboxBackend):
    """Agents as nixos-containers. Connects to systemd lazily; call connect() to start the crash watch early.

    changes() serves one consumer (the lifecycle server): every stop is queued until it is read.
    """

    name = "nixos-container"
    path = "/run/wrappers/bin:/run/current-system/sw/bin"  # the container's NixOS system profile

    def harness_command(self, name: str) -> builtins.list[str]:
        """The harness of the hyperhive package in the container's system (nix/agent-base.nix)."""
        return ["hive-harness", "--agent", name]

    def __init__(self, config: HiveConfig, *, bus_address: str | None = None, render_dir: Path | None = None) -> None:
        self.config = config
        self.render_dir = render_dir or config.run_dir / "lifecycle" / "flakes"
        self.conf_dir = config.lifecycle.nixos.conf_dir
        self.units = SystemdUnits(bus_address)
        self._journal = _journal_module()

    default_network = "host"  # the only network it offers (container_network says why)

    @property
    def isolation(self) -> str:
        return (
            "nixos-container (systemd-nspawn): per agent its own NixOS root, pid, ipc and uts namespaces, its own "
            "host uid, its unit's MemoryMax/TasksMax/CPUWeight and a sized /tmp; the host's network (the servers "
            "are on host loopback); no user namespace"
        )

    # ------------------------------------------------------------------------------- build & remove
    async def create(self, spec: SandboxSpec) -> None:
        """Render the flake, then `nixos-container create`, or `update` if the container exists."""
        await self._build(spec)

    async def update(self, spec: SandboxSpec) -> None:
        """Re-render and rebuild. nixos-container reloads a running container (switch-to-configuration
        inside); changed bind mounts take effect at its next start."""
        await self._build(spec)

    async def _build(self, spec: SandboxSpec) -> None:
        name = _checked(spec.name)
        flags = nspawn_flags(spec)  # before building anything: a bad path or network is an error either way
        directory = self.render_dir / name
        shared_gid = spec.groups[0] if spec.groups else None  # the hive's group: /hive/shared
        agent = AgentFlake(name, spec.role, _uid(spec), spec.state_dir, spec.harness_dir, _system(), shared_gid)
        nixos = self.config.lifecycle.nixos
        files = await asyncio.to_thread(render_flake, agent, spec.applied_dir, nixos.flake, nixos.nixpkgs)
        await asyncio.to_thread(write_flake, directory, files)
        # path: — a plain path inside a git work tree would be read as git+file, tracked files only.
        flake = f"path:{directory}#{FLAKE_OUTPUT}"
        verb = "update" if name in await self._containers() else "create"
        await _run(NIXOS_CONTAINER, verb, name, "--flake", flake)
        await asyncio.to_thread(self._write_conf, name, flags)

    async def _containers(self) -> set[str]:
        out = await _run(NIXOS_CONTAINER, "list")
        return {line.strip() for line in out.splitlines() if line.strip()}

    def _write_conf(self, name: str, flags: builtins.list[str]) -> None:
        conf = self.conf_dir / f"{name}.conf"
        try:
            text = conf.read_text(encoding="utf-8")
            mode = stat.S_IMODE(conf.stat().st_mode)
        except FileNotFoundError:
            raise BackendError(f"nixos-container built {name} but left no {conf}") from None
        write_atomic(conf, container_conf(text, flags), mode=mode)

    async def destroy(self, name: str) -> None:
        name = _checked(name)
        if not (await self.units.state(name)).at_rest:
            await self.stop(name, self.config.lifecycle.stop_timeout_seconds)
        await _run(NIXOS_CONTAINER, "destroy", name)
        await asyncio.to_thread(shutil.rmtree, self.render_dir / name, ignore_errors=True)

    # ---------------------------------------------------------------------------- start, stop, kill
    async def start(self, spec: SandboxSpec) -> Running:
        """Hand the harness unit its command (sandbox.json, read-only inside), then start the container."""
        name = _checked(spec.name)
        await self._prepare_start(spec)
        job = await self.units.manager("StartUnit", "ss", container_unit(name), "replace")
        return await self._started(name, job_id(job[0]), fresh=False)

    async def _prepare_start(self, spec: SandboxSpec) -> None:
        """What every start reads: sandbox.json, NAME.conf (binds, /tmp, network: the unit's start script
        reads it each time) and the unit's resource limits.

        The limits are set over D-Bus as runtime properties (SetUnitProperties, runtime=true: a drop-in
        under /run/systemd/system.control): they hold for every run of the unit, systemd's own
        restarts after a crash included, until the host reboots; each start sets them again.
        """
        flags = nspawn_flags(spec)
        await asyncio.to_thread(write_spec, spec)
        if (self.conf_dir / f"{spec.name}.conf").exists():  # else not built yet: create() writes it
            await asyncio.to_thread(self._write_conf, spec.name, flags)
        await self.units.manager("SetUnitProperties", "sba(sv)", container_unit(spec.name), True, unit_limits(spec))

    async def _started(self, name: str, job: int, *, fresh: bool) -> Running:
        """Wait for the unit to be up, or down with `job` (its start or restart job) done.

        While the job is pending, down means nothing yet: the unit may still show an older failure,
        and a restart job passes through inactive between its stop and its start. `fresh`: up from
        an earlier run counts only once the job is done.
        """

        def settled(state: UnitState) -> bool:
            if state.up:
                return not fresh or state.job != job
            return state.job != job and (state.gone or state.restarting)

        state = await self.units.wait(name, settled, START_TIMEOUT)
        if state is None or not state.up:
            raise BackendError(await self._why_not_up(name, state))
        return await self.units.running(name, state)

    async def _why_not_up(self, name: str, state: UnitState | None) -> str:
        unit = container_unit(name)
        if state is None:
            return f"{unit} did not become active within {START_TIMEOUT:.0f} s"
        service = await self.units.properties(name, SERVICE)
        how = how_it_ended(service)
        return (
            f"{unit} did not start: it is {state.active}/{state.sub}, Result={service.get('Result', '?')}"
            f"{f', {how}' if how else ''} (journalctl -u {unit} says why)"
        )

    async def stop(self, name: str, timeout: float) -> None:
        name = _checked(name)
        if (await self.units.state(name)).at_rest:
            return
        await self.units.manager("StopUnit", "ss", container_unit(name), "replace")
        if await self.units.wait(name, is_gone, timeout) is None:
            await self._kill_all(name)
            await self._wait_gone_after_kill(name)

    async def kill(self, name: str) -> None:
        """SIGKILL everything in the container now.

        A stop job goes first: a unit killed without one counts as crashed and Restart=on-failure
        brings it back. With the job queued, systemd does not restart it.
        """
        name = _checked(name)
        if (await self.units.state(name)).at_rest:
            return
        await self.units.manager("StopUnit", "ss", container_unit(name), "replace")
        await self._kill_all(name)
        await self._wait_gone_after_kill(name)

    async def restart(self, spec: SandboxSpec, timeout: float) -> Running:
        """systemd's RestartUnit: one job, stop then start. SIGKILL if the stop takes over `timeout`."""
        name = _checked(spec.name)
        await self._prepare_start(spec)
        job = job_id((await self.units.manager("RestartUnit", "ss", container_unit(name), "replace"))[0])

        def stopped(state: UnitState) -> bool:
            return state.job != job or state.active not in ("active", "reloading", "deactivating")

        if await self.units.wait(name, stopped, timeout) is None:
            await self._kill_all(name)  # the job goes on to start it once everything is dead
        return await self._started(name, job, fresh=True)

    async def _kill_all(self, name: str) -> None:
        try:
            await self.units.manager("KillUnit", "ssi", container_unit(name), "all", SIGKILL)
        except SystemdError as e:
            if e.error_name not in (NO_SUCH_UNIT, NO_SUCH_PROCESS):  # it ended meanwhile
                raise

    async def _wait_gone_after_kill(self, name: str) -> None:
        if await self.units.wait(name, is_gone, KILL_TIMEOUT) is None:
            state = await self.units.state(name)
            raise BackendError(
                f"{container_unit(name)} is still {state.active}/{state.sub} {KILL_TIMEOUT:.0f} s after SIGKILL"
            )

    # ---------------------------------------------------------------------------------- list & logs
    async def list(self) -> dict[str, Running]:
        body = await self.units.manager("ListUnitsByPatterns", "asas", ["active", "reloading"], [container_unit("*")])
        names = [name for name in (agent_of_unit(row[0]) for row in body[0]) if name is not None]
        found = await asyncio.gather(*(self.units.running(name) for name in names), return_exceptions=True)
        for entry in found:
            if isinstance(entry, BaseException) and not isinstance(entry, BackendError):
                raise entry
        return {entry.name: entry for entry in found if isinstance(entry, Running)}  # errors: gone meanwhile

    async def logs(self, name: str, lines: int, since: float | None) -> builtins.list[str]:
        """The unit's journal (the container's console), oldest first."""
        unit = container_unit(_checked(name))
        if lines <= 0:
            return []
        if self._journal is not None:
            return await asyncio.to_thread(_read_journal, self._journal, unit, lines, since)
        argv = [JOURNALCTL, "-u", unit, "-o", "json", "-n", str(lines)]
        if since is not None:
            argv += ["--since", f"@{int(since)}"]  # whole seconds; the fraction is filtered below
        # --all: without it, journalctl prints fields over 4096 bytes as null.
        out = await _run(*argv, "--all", "--no-pager")
        return _journal_messages(out, since)

    # -------------------------------------------------------------------------------------- changes
    def changes(self) -> AsyncIterator[Change | Restarted]:
        return self.units.changes()

    async def connect(self) -> None:
        """Connect to systemd and start watching its containers (done lazily by every call too)."""
        await self.units.connect()

    async def shell_command(self, shell: ShellSpec) -> builtins.list[str]:
        """Not yet: a container's shell would be `machinectl shell` or nsenter into its leader, as its
        agent's uid; until that is built and tested, say so rather than give a root shell."""
        raise BackendError(
            f"the terminal is not available on the {self.name} backend yet; "
            f"`nixos-container root-login {shell.name}` on the host is the way in meanwhile"
        )

    async def close(self) -> None:
        await self.units.close()


# ---------------------------------------------------------------------------------------- helpers


def _checked(name: str) -> str:
    if not is_agent_name(name):
        raise BackendError(f"{name!r} is not an agent name")
    return name


def _uid(spec: SandboxSpec) -> int:
    if spec.uid is None:
        raise BackendError(
            f"cannot build the container of {spec.name}: its harness runs as the agent's own host uid, which "
            "only a lifecycle server running as root hands out (the NixOS module runs it as root)"
        )
    return spec.uid


def _system() -> str:
    try:
        return host_system()
    except ValueError as e:
        raise BackendError(str(e)) from None


async def _run(*argv: str) -> str:
    """Run a command to completion; its stdout, or BackendError with its exit code and last stderr lines."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as e:
        raise BackendError(f"cannot run {argv[0]}: {e.strerror or e}") from e
    try:
        out, err = await process.communicate()
    except BaseException:  # cancelled: do not leave it running unwatched
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-STDERR_LINES:]
        raise BackendError(
            f"`{shlex.join(argv)}` failed with exit code {process.returncode}"
            + (":\n" + "\n".join(tail) if tail else " and printed nothing on stderr")
        )
    return out.decode(errors="replace")


def _journal_messages(out: str, since: float | None) -> builtins.list[str]:
    """MESSAGE of each `journalctl -o json` entry, at or after `since`."""
    messages = []
    for line in out.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if since is not None and int(entry.get("__REALTIME_TIMESTAMP", 0)) < since * 1e6:
            continue
        text = _message_text(entry.get("MESSAGE"))
        if text is not None:
            messages.append(text)
    return messages


def _message_text(message: object) -> str | None:
    """A journal MESSAGE as text: JSON output gives non-UTF-8 or binary fields as a list of byte values."""
    if isinstance(message, str):
        return message.rstrip("\n")
    if isinstance(message, bytes):
        return message.decode(errors="replace").rstrip("\n")
    if isinstance(message, builtins.list) and all(isinstance(b, int) and 0 <= b < 256 for b in message):
        return bytes(message).decode(errors="replace").rstrip("\n")
    return None  # null: a field journalctl did not print


def _journal_module() -> Any | None:
    """systemd-python's journal module (the optional `systemd` extra), or None to use journalctl."""
    try:
        return importlib.import_module("systemd.journal")
    except ImportError:
        return None


def _read_journal(journal: Any, unit: str, lines: int, since: float | None) -> builtins.list[str]:
    """The last `lines` messages of `unit`, read backwards from the end of the journal."""
    reader = journal.Reader()
    try:
        reader.add_match(_SYSTEMD_UNIT=unit)
        reader.seek_tail()
        found: builtins.list[str] = []
        while len(found) < lines:
            entry = reader.get_previous()
            if not entry:
                break
            when = entry.get("__REALTIME_TIMESTAMP")
            if since is not None and when is not None and when.timestamp() < since:
                break
            text = _message_text(entry.get("MESSAGE"))
            if text is not None:
                found.append(text)
        found.reverse()
        return found
    finally:
        reader.close()
