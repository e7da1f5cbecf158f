"""The NixOS backend: one nixos-container (systemd-nspawn) per agent, run by systemd.

`nixos-container` builds and removes containers; systemd, over D-Bus, starts and stops them
(unit `container@NAME.service`) and tells us when one stops. Each agent's container is built
from a generated flake (nixos_flake.py) in `render_dir/NAME`; its own directories are bound in
at the same paths through EXTRA_NSPAWN_FLAGS in nixos-container's `CONF_DIR/NAME.conf`, because
nixos-container has no flag for bind mounts.

The unit has Restart=on-failure, so systemd restarts a crashed container on its own: a crash
often shows only as SubState `auto-restart`, and changes() reports that as a crash too (with
auto_restarting), then reports Restarted once the unit is active again.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import importlib
import json
import logging
import os
import re
import shlex
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from hyperhive.servers.common.backoff import Backoff
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
)
from hyperhive.servers.lifecycle.backends.nixos_flake import FLAKE_OUTPUT, AgentFlake, host_system, render_flake
from hyperhive.servers.lifecycle.backends.nixos_spec import SPEC_FILE, sandbox_json

log = logging.getLogger("hyperhive.lifecycle.nixos")

NIXOS_CONTAINER: Final = "nixos-container"
JOURNALCTL: Final = "journalctl"
START_TIMEOUT: Final = 120.0  # the unit is active once the container's own systemd has booted
KILL_TIMEOUT: Final = 30.0  # after SIGKILL to every process of the unit
POLL_SECONDS: Final = 1.0  # waits re-read the unit this often, in case a signal went missing
RECONNECT_MAX_SECONDS: Final = 30.0
STDERR_LINES: Final = 10  # of a failed command, in the BackendError

DBUS: Final = "org.freedesktop.DBus"
SYSTEMD: Final = "org.freedesktop.systemd1"
MANAGER_PATH: Final = "/org/freedesktop/systemd1"
SYSTEMD_MANAGER: Final = "org.freedesktop.systemd1.Manager"
UNIT: Final = "org.freedesktop.systemd1.Unit"
SERVICE: Final = "org.freedesktop.systemd1.Service"
PROPERTIES: Final = "org.freedesktop.DBus.Properties"
UNIT_PATH_PREFIX: Final = "/org/freedesktop/systemd1/unit/"
NO_SUCH_UNIT: Final = "org.freedesktop.systemd1.NoSuchUnit"
NO_SUCH_PROCESS: Final = "org.freedesktop.systemd1.NoSuchProcess"
ALREADY_SUBSCRIBED: Final = "org.freedesktop.systemd1.AlreadySubscribed"

CLD_EXITED: Final = 1  # ExecMainCode: the siginfo code of how the main process ended
CLD_KILLED: Final = 2
CLD_DUMPED: Final = 3
SIGKILL: Final = 9
UNLIMITED: Final = 2**64 - 1  # MemoryMax/TasksMax "infinity", CPUWeight "not set": systemd's UINT64_MAX

# systemd 254 added auto-restart-queued (the restart job is queued); both mean "crashed, coming back".
AUTO_RESTART_STATES: Final = frozenset({"auto-restart", "auto-restart-queued"})

_UNIT_RE: Final = re.compile(r"container@(?P<name>[^/]+)\.service")
# Bind paths go through systemd's EnvironmentFile parser and then unquoted shell word splitting
# and globbing in the container's start script, and nspawn splits --bind on ':'.
_BIND_PATH_RE: Final = re.compile(r"/[A-Za-z0-9._+@%=,~/-]*")

_PROPERTIES_CHANGED_RULE: Final = (
    f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES}',member='PropertiesChanged',"
    f"path_namespace='{UNIT_PATH_PREFIX.rstrip('/')}',arg0='{UNIT}'"
)
_OWNER_CHANGED_RULE: Final = (
    f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',arg0='{SYSTEMD}'"
)


# ------------------------------------------------------------------------------------- unit names


def bus_escape(text: str) -> str:
    """A string as one D-Bus object path element, escaped the way systemd does it.

    ASCII letters and digits stay (a leading digit does not), every other byte becomes `_xx`:
    `container@alice.service` → `container_40alice_2eservice`.
    """
    if not text:
        return "_"
    escaped = []
    for index, char in enumerate(text):
        if char.isascii() and (char.isalpha() or (char.isdigit() and index > 0)):
            escaped.append(char)
        else:
            escaped.extend(f"_{byte:02x}" for byte in char.encode())
    return "".join(escaped)


def bus_unescape(label: str) -> str | None:
    """The string `bus_escape` made `label` from, or None if it made no such label."""
    if label == "_":
        return ""
    data = bytearray()
    index = 0
    while index < len(label):
        char = label[index]
        if char == "_":
            digits = label[index + 1 : index + 3]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", digits):
                return None
            data.append(int(digits, 16))
            index += 3
        elif char.isascii() and char.isalnum():
            data.append(ord(char))
            index += 1
        else:
            return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def container_unit(name: str) -> str:
    return f"container@{name}.service"


def unit_path(unit: str) -> str:
    return UNIT_PATH_PREFIX + bus_escape(unit)


def agent_of_unit(unit: str) -> str | None:
    """The agent whose container `unit` runs, or None for any other unit or container."""
    match = _UNIT_RE.fullmatch(unit)
    if match is None or not is_agent_name(match["name"]):
        return None
    return match["name"]


def agent_of_path(path: str) -> str | None:
    if not path.startswith(UNIT_PATH_PREFIX):
        return None
    unit = bus_unescape(path.removeprefix(UNIT_PATH_PREFIX))
    return None if unit is None else agent_of_unit(unit)


# ------------------------------------------------------------------------------------ conf & flake


def nspawn_bind_flags(spec: SandboxSpec) -> builtins.list[str]:
    """The agent's directories as systemd-nspawn flags, at the same paths inside as outside."""
    binds = [
        ("--bind", spec.state_dir, spec.state_dir),
        ("--bind", spec.harness_dir, spec.harness_dir),
        ("--bind-ro", spec.credentials_dir, spec.harness_dir / "credentials"),
        *(("--bind", path, path) for path in spec.shared_rw),
    ]
    for _, source, target in binds:
        for path in (source, target):
            if not path.is_absolute() or not _BIND_PATH_RE.fullmatch(str(path)):
                raise BackendError(
                    f"cannot bind {path} into the container of {spec.name}: the path must be absolute and use only "
                    "letters, digits and ._+@%=,~/- (it is word-split by the container's start script)"
                )
    return [f"{flag}={source}:{target}" for flag, source, target in binds]


def nspawn_flags(spec: SandboxSpec) -> builtins.list[str]:
    """Everything hyperhive adds to systemd-nspawn's command line: the agent's binds and its /tmp.

    /tmp is a tmpfs of [sandbox] tmp_max bytes (nspawn's own /tmp has no size). Raises BackendError
    for a network a container cannot honour, before anything is built or started.
    """
    container_network(spec)
    flags = nspawn_bind_flags(spec)
    if spec.tmp_max is not None:
        flags.append(f"--tmpfs=/tmp:mode=1777,size={int(spec.tmp_max)}")
    return flags


def container_network(spec: SandboxSpec) -> str:
    """PRIVATE_NETWORK for `spec`: "0", the host's network, which is all a nixos-container offers here.

    The hive's servers listen on host loopback. A container with a network of its own
    (PRIVATE_NETWORK=1: loopback only, or a veth with host NAT) would not reach them, and nothing
    here forwards their ports into it as the bubblewrap backend's keeper does; so "outbound" and
    "hive-only", which promise the host's other loopback services out of reach, are refused
    rather than quietly given the host's network.
    """
    if spec.network != "host":
        raise BackendError(
            f'{spec.name} asks for [sandbox] network = "{spec.network}", which the nixos-container backend cannot '
            "honour: its containers share the host's network (the hive's servers are on host loopback), so every "
            'loopback service of the host is in reach. Set network = "host" in its agent.toml (or leave it unset), '
            'or run the hive with [lifecycle] backend = "bwrap" for a network of its own'
        )
    return "0"


def unit_limits(spec: SandboxSpec) -> builtins.list[tuple[str, Variant]]:
    """[sandbox] memory_max, pids_max and cpu_weight as container@NAME's MemoryMax, TasksMax and CPUWeight;
    an unset one is set to systemd's "infinity" / "not set", so a limit dropped from the config goes too."""
    limits = spec.limits
    values = {"MemoryMax": limits.memory_max, "TasksMax": limits.pids_max, "CPUWeight": limits.cpu_weight}
    return [(key, Variant("t", UNLIMITED if value is None else int(value))) for key, value in values.items()]


def container_conf(conf: str, flags: Iterable[str]) -> str:
    """nixos-container's NAME.conf as hyperhive runs it: the agent's binds in EXTRA_NSPAWN_FLAGS, and
    the host's network (the servers listen on host loopback, as for bwrap sandboxes). The rest is kept.

    `nixos-container create` gives a container a private network with 10.233.x addresses; from there
    the harness could not reach 127.0.0.1 on the host.
    """
    values = {"PRIVATE_NETWORK": "0", "EXTRA_NSPAWN_FLAGS": f'"{" ".join(flags)}"'}
    cleared = ("HOST_ADDRESS", "LOCAL_ADDRESS", "HOST_ADDRESS6", "LOCAL_ADDRESS6")  # of the private network
    lines, seen = [], set()
    for line in conf.splitlines():
        key = line.split("=", 1)[0]
        if key in values:
            if key not in seen:  # a repeated key goes
                seen.add(key)
                lines.append(f"{key}={values[key]}")
            continue
        lines.append(f"{key}=" if key in cleared else line)
    lines += [f"{key}={value}" for key, value in values.items() if key not in seen]
    return "\n".join(lines) + "\n"


def write_flake(directory: Path, files: dict[str, str]) -> None:
    """Make `directory` hold exactly `files`.

    Anything else goes, flake.lock included: the lock would pin the hyperhive input, and a
    rebuild must follow hive.toml's flake reference to the hyperhive installed now.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.name in files:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for file_name, text in files.items():
        write_atomic(directory / file_name, text)


# ------------------------------------------------------------------------------------ unit states


@dataclass(frozen=True, slots=True)
class UnitState:
    """The Unit properties a wait looks at."""

    active: str  # ActiveState
    sub: str  # SubState
    active_since: float | None = None  # ActiveEnterTimestamp, epoch seconds
    job: int = 0  # the id of the unit's pending job (a start, stop or restart not finished yet), 0 if none

    @property
    def up(self) -> bool:
        return self.active in ("active", "reloading")

    @property
    def gone(self) -> bool:
        return self.active in ("inactive", "failed")

    @property
    def at_rest(self) -> bool:
        """Down, with no job queued that would start it."""
        return self.gone and not self.job

    @property
    def restarting(self) -> bool:
        return self.sub in AUTO_RESTART_STATES

    @classmethod
    def of(cls, properties: dict[str, Any]) -> UnitState:
        entered = int(properties.get("ActiveEnterTimestamp", 0))
        return cls(
            active=str(properties.get("ActiveState", "")),
            sub=str(properties.get("SubState", "")),
            active_since=entered / 1e6 if entered else None,
            job=int(properties.get("Job", (0, "/"))[0]),
        )


NOT_LOADED: Final = UnitState("inactive", "dead")  # systemd has not loaded the unit: nothing runs


def stop_kind(active: str, sub: str) -> str:
    """`up`, or how the unit is down: `auto-restart` (crashed, systemd restarts it), `failed`, `inactive`."""
    if sub in AUTO_RESTART_STATES:
        return "auto-restart"
    if active in ("failed", "inactive"):
        return active
    return "up"


def is_new_stop(previous: str | None, kind: str) -> bool:
    """Whether a unit going from `previous` (None: not seen before) to `kind` is a stop to report.

    Each stop is reported once: a failed unit that stays failed, or is reset to inactive, is
    not a new one; a unit loaded while inactive never ran.
    """
    if kind in ("up", previous):
        return False
    if kind == "inactive":
        return previous in ("up", "auto-restart")
    return True  # failed or auto-restart: a crash, or systemd giving up on restarting it


@dataclass(frozen=True, slots=True)
class _Stopped:
    name: str
    kind: str  # a stop_kind, or RESTARTED: systemd's own restart after a crash is up
    at: float
    known: bool = True  # False: the unit vanished while we were away; there is nothing to read


RESTARTED: Final = "restarted"


class SystemdError(BackendError):
    """systemd (or the bus) answered a call with an error."""

    def __init__(self, what: str, error_name: str | None, text: str) -> None:
        self.error_name = error_name
        super().__init__(f"systemd: {what}: {error_name}: {text}")


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
        self.bus_address = bus_address  # None: the system bus (DBUS_SYSTEM_BUS_ADDRESS or the default socket)
        self.render_dir = render_dir or config.run_dir / "lifecycle" / "flakes"
        self.conf_dir = config.lifecycle.nixos.conf_dir
        self._bus: MessageBus | None = None
        self._connecting = asyncio.Lock()
        self._ever_connected = False
        self._closed = False
        self._systemd_owner: str | None = None  # systemd's unique bus name: only its signals count
        self._kinds: dict[str, str] = {}  # agent → stop_kind of its unit, as last seen
        self._coming_back: set[str] = set()  # crashed units systemd is restarting, not yet active again
        self._signalled: dict[str, int] = {}  # agent → sequence number of its last signal
        self._sequence = 0
        self._waiters: dict[str, set[asyncio.Event]] = {}  # object path → waits to wake on a change
        self._stopped: asyncio.Queue[_Stopped] = asyncio.Queue()
        self._changes: asyncio.Queue[Change | Restarted | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
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
        agent = AgentFlake(name, spec.role, _uid(spec), spec.state_dir, spec.harness_dir, _system())
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
        if not (await self._state(name)).at_rest:
            await self.stop(name, self.config.lifecycle.stop_timeout_seconds)
        await _run(NIXOS_CONTAINER, "destroy", name)
        await asyncio.to_thread(shutil.rmtree, self.render_dir / name, ignore_errors=True)

    # ---------------------------------------------------------------------------- start, stop, kill
    async def start(self, spec: SandboxSpec) -> Running:
        """Hand the harness unit its command (sandbox.json, read-only inside), then start the container."""
        name = _checked(spec.name)
        await self._prepare_start(spec)
        job = await self._manager("StartUnit", "ss", container_unit(name), "replace")
        return await self._started(name, _job_id(job[0]), fresh=False)

    async def _prepare_start(self, spec: SandboxSpec) -> None:
        """What every start reads: sandbox.json, NAME.conf (binds, /tmp, network: the unit's start script
        reads it each time) and the unit's resource limits.

        The limits are set over D-Bus as runtime properties (SetUnitProperties, runtime=true: a drop-in
        under /run/systemd/system.control): they hold for every run of the unit, systemd's own
        restarts after a crash included, until the host reboots; each start sets them again.
        """
        flags = nspawn_flags(spec)
        await asyncio.to_thread(_write_spec, spec)
        if (self.conf_dir / f"{spec.name}.conf").exists():  # else not built yet: create() writes it
            await asyncio.to_thread(self._write_conf, spec.name, flags)
        await self._manager("SetUnitProperties", "sba(sv)", container_unit(spec.name), True, unit_limits(spec))

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

        state = await self._wait(name, settled, START_TIMEOUT)
        if state is None or not state.up:
            raise BackendError(await self._why_not_up(name, state))
        return await self._running(name, state)

    async def _why_not_up(self, name: str, state: UnitState | None) -> str:
        unit = container_unit(name)
        if state is None:
            return f"{unit} did not become active within {START_TIMEOUT:.0f} s"
        service = await self._properties(name, SERVICE)
        how = _how_it_ended(service)
        return (
            f"{unit} did not start: it is {state.active}/{state.sub}, Result={service.get('Result', '?')}"
            f"{f', {how}' if how else ''} (journalctl -u {unit} says why)"
        )

    async def stop(self, name: str, timeout: float) -> None:
        name = _checked(name)
        if (await self._state(name)).at_rest:
            return
        await self._manager("StopUnit", "ss", container_unit(name), "replace")
        if await self._wait(name, _is_gone, timeout) is None:
            await self._kill_all(name)
            await self._wait_gone_after_kill(name)

    async def kill(self, name: str) -> None:
        """SIGKILL everything in the container now.

        A stop job goes first: a unit killed without one counts as crashed and Restart=on-failure
        brings it back. With the job queued, systemd does not restart it.
        """
        name = _checked(name)
        if (await self._state(name)).at_rest:
            return
        await self._manager("StopUnit", "ss", container_unit(name), "replace")
        await self._kill_all(name)
        await self._wait_gone_after_kill(name)

    async def restart(self, spec: SandboxSpec, timeout: float) -> Running:
        """systemd's RestartUnit: one job, stop then start. SIGKILL if the stop takes over `timeout`."""
        name = _checked(spec.name)
        await self._prepare_start(spec)
        job = _job_id((await self._manager("RestartUnit", "ss", container_unit(name), "replace"))[0])

        def stopped(state: UnitState) -> bool:
            return state.job != job or state.active not in ("active", "reloading", "deactivating")

        if await self._wait(name, stopped, timeout) is None:
            await self._kill_all(name)  # the job goes on to start it once everything is dead
        return await self._started(name, job, fresh=True)

    async def _kill_all(self, name: str) -> None:
        try:
            await self._manager("KillUnit", "ssi", container_unit(name), "all", SIGKILL)
        except SystemdError as e:
            if e.error_name not in (NO_SUCH_UNIT, NO_SUCH_PROCESS):  # it ended meanwhile
                raise

    async def _wait_gone_after_kill(self, name: str) -> None:
        if await self._wait(name, _is_gone, KILL_TIMEOUT) is None:
            state = await self._state(name)
            raise BackendError(
                f"{container_unit(name)} is still {state.active}/{state.sub} {KILL_TIMEOUT:.0f} s after SIGKILL"
            )

    # ---------------------------------------------------------------------------------- list & logs
    async def list(self) -> dict[str, Running]:
        body = await self._manager("ListUnitsByPatterns", "asas", ["active", "reloading"], [container_unit("*")])
        names = [name for name in (agent_of_unit(row[0]) for row in body[0]) if name is not None]
        found = await asyncio.gather(*(self._running(name) for name in names), return_exceptions=True)
        for entry in found:
            if isinstance(entry, BaseException) and not isinstance(entry, BackendError):
                raise entry
        return {entry.name: entry for entry in found if isinstance(entry, Running)}  # errors: gone meanwhile

    async def _running(self, name: str, state: UnitState | None = None) -> Running:
        if state is None:
            state = UnitState.of(await self._properties(name, UNIT))
        pid = int((await self._properties(name, SERVICE)).get("MainPID", 0))
        return Running(name, started_at=state.active_since or time.time(), pid=pid or None)

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
        return self._stream_changes()

    async def _stream_changes(self) -> AsyncIterator[Change | Restarted]:
        if self._closed:
            return
        await self.connect()
        while (change := await self._changes.get()) is not None:
            yield change

    def _on_message(self, message: Message) -> None:
        """Every message the bus delivers: keep systemd's unit changes and its owner changes."""
        if message.message_type is not MessageType.SIGNAL:
            return
        if message.member == "NameOwnerChanged" and message.interface == DBUS and message.sender == DBUS:
            if message.body[0] == SYSTEMD:
                self._systemd_changed_owner(message.body[2] or None)
            return
        if message.member != "PropertiesChanged" or message.interface != PROPERTIES:
            return
        if message.sender != self._systemd_owner or message.body[0] != UNIT or message.path is None:
            return
        for event in self._waiters.get(message.path, ()):
            event.set()
        name = agent_of_path(message.path)
        if name is None:
            return
        changed: dict[str, Variant] = message.body[1]
        if "ActiveState" not in changed and "SubState" not in changed:
            return
        self._sequence += 1
        self._signalled[name] = self._sequence
        active = str(changed["ActiveState"].value) if "ActiveState" in changed else ""
        sub = str(changed["SubState"].value) if "SubState" in changed else ""
        self._observe(name, stop_kind(active, sub), time.time(), active=active)

    def _observe(self, name: str, kind: str, at: float, *, known: bool = True, active: str = "") -> None:
        """Queue a stop the unit's new state means, or, after an auto-restart, its being active again."""
        previous = self._kinds.get(name)
        self._kinds[name] = kind
        if is_new_stop(previous, kind):
            self._stopped.put_nowait(_Stopped(name, kind, at, known))
        if kind == "auto-restart":
            self._coming_back.add(name)
        elif kind != "up":
            self._coming_back.discard(name)  # stopped or failed for good: not coming back
        elif active == "active" and name in self._coming_back:  # activating is not up yet
            self._coming_back.discard(name)
            self._stopped.put_nowait(_Stopped(name, RESTARTED, at))

    def _systemd_changed_owner(self, owner: str | None) -> None:
        """systemd re-executed (or left the bus): follow its new name, subscribe again, catch up."""
        self._systemd_owner = owner
        if owner is not None and self._bus is not None and self._bus.connected:
            self._spawn(self._resubscribe())

    async def _resubscribe(self) -> None:
        try:
            bus = await self._connected()
            await self._subscribe(bus)
            await self._resync(bus, report=True)
        except BackendError as e:
            log.warning("could not follow systemd after it re-executed: %s", e)

    async def _report_stops(self) -> None:
        """Turn each stop the watch saw into a Change, reading how the main process ended (and each
        come-back after systemd's own restart into a Restarted), in the order they happened."""
        while True:
            stopped = await self._stopped.get()
            if stopped.kind == RESTARTED:
                try:
                    self._changes.put_nowait(Restarted(stopped.name, await self._running(stopped.name)))
                except BackendError as e:  # gone again meanwhile: its stop follows in the queue
                    log.warning("%s came back but could not be read: %s", stopped.name, e)
                continue
            service: dict[str, Any] = {}
            try:
                if stopped.known:
                    service = await self._properties(stopped.name, SERVICE)
            except Exception:  # never lose the stop itself: report it without the details
                log.warning("%s stopped; could not read how", stopped.name, exc_info=True)
            self._changes.put_nowait(_change(stopped, service))

    # ----------------------------------------------------------------------------------- connection
    async def connect(self) -> None:
        """Connect to systemd and start watching its containers (done lazily by every call too)."""
        await self._connected()

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._tasks, *([self._supervisor] if self._supervisor else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._bus is not None:
            self._bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._bus.wait_for_disconnect(), 5)  # type: ignore[no-untyped-call]
            self._bus = None
        self._changes.put_nowait(None)

    async def _connected(self) -> MessageBus:
        if self._closed:
            raise BackendError("the nixos-container backend is closed")
        if self._bus is not None and self._bus.connected:
            return self._bus
        async with self._connecting:
            if self._bus is None or not self._bus.connected:
                self._bus = await self._open()
            return self._bus

    async def _open(self) -> MessageBus:
        """A new connection: watch first, then read every container unit, so no change falls between."""
        try:
            bus = await MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect()
        except Exception as e:
            raise BackendError(f"cannot connect to the system D-Bus: {e}") from e
        bus.add_message_handler(self._on_message)
        self._systemd_owner = None  # a unique name from the last connection means nothing on this one
        try:
            for rule in (_OWNER_CHANGED_RULE, _PROPERTIES_CHANGED_RULE):
                await _call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "AddMatch", "s", rule)
            owner = await _call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "GetNameOwner", "s", SYSTEMD)
            self._systemd_owner = str(owner[0])
            await self._subscribe(bus)
            await self._resync(bus, report=self._ever_connected)
        except BaseException:
            bus.disconnect()
            raise
        if not self._ever_connected:
            self._ever_connected = True
            self._spawn(self._report_stops())
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.create_task(self._stay_connected())
        return bus

    async def _subscribe(self, bus: MessageBus) -> None:
        try:
            await _call(bus, SYSTEMD, MANAGER_PATH, SYSTEMD_MANAGER, "Subscribe", "")
        except SystemdError as e:
            if e.error_name != ALREADY_SUBSCRIBED:
                raise

    async def _resync(self, bus: MessageBus, *, report: bool) -> None:
        """Read every container unit; on a reconnect, report the stops that happened while away."""
        sequence = self._sequence
        body = await _call(
            bus, SYSTEMD, MANAGER_PATH, SYSTEMD_MANAGER, "ListUnitsByPatterns", "asas", [], [container_unit("*")]
        )
        seen: set[str] = set()
        now = time.time()
        for row in body[0]:
            name = agent_of_unit(row[0])
            if name is None:
                continue
            seen.add(name)
            if self._signalled.get(name, 0) > sequence:
                continue  # a signal newer than this list came in meanwhile
            if report:
                self._observe(name, stop_kind(row[3], row[4]), now, active=row[3])
            else:
                self._kinds[name] = stop_kind(row[3], row[4])
        if not report:
            return
        for name in set(self._kinds) - seen:  # unloaded while we were away: it stopped, nothing left to read
            if self._signalled.get(name, 0) <= sequence:
                self._observe(name, "inactive", now, known=False)

    async def _stay_connected(self) -> None:
        """Reconnect when the bus drops (dbus-broker restarts on a NixOS switch), with backoff."""
        while True:
            bus = self._bus
            if bus is not None and bus.connected:
                with contextlib.suppress(Exception):
                    # Shielded: cancelling this task must not cancel the bus's own disconnect future.
                    await asyncio.shield(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
            if self._closed:
                return
            log.warning("lost the connection to systemd over D-Bus; reconnecting")
            backoff = Backoff(0.5, RECONNECT_MAX_SECONDS)
            while not self._closed:
                try:
                    await self._connected()
                    log.info("reconnected to systemd")
                    break
                except BackendError as e:
                    log.warning("%s; retrying in %.1f s", e, backoff.next_delay)
                    await backoff.wait()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------ D-Bus calls
    async def _manager(self, member: str, signature: str, *body: Any) -> builtins.list[Any]:
        return await _call(await self._connected(), SYSTEMD, MANAGER_PATH, SYSTEMD_MANAGER, member, signature, *body)

    async def _properties(self, name: str, interface: str) -> dict[str, Any]:
        """All properties of `interface` on the agent's unit (which systemd loads if it has not)."""
        path = unit_path(container_unit(name))
        body = await _call(await self._connected(), SYSTEMD, path, PROPERTIES, "GetAll", "s", interface)
        return {key: variant.value for key, variant in body[0].items()}

    async def _state(self, name: str) -> UnitState:
        """The unit's state; NOT_LOADED (inactive) when systemd has not loaded it, without loading it."""
        try:
            await self._manager("GetUnit", "s", container_unit(name))
        except SystemdError as e:
            if e.error_name == NO_SUCH_UNIT:
                return NOT_LOADED
            raise
        return UnitState.of(await self._properties(name, UNIT))

    async def _wait(self, name: str, done: Callable[[UnitState], bool], timeout: float) -> UnitState | None:
        """Re-read the unit at each of its PropertiesChanged signals until `done(state)`; None after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiters = self._waiters.setdefault(unit_path(container_unit(name)), set())
        while True:
            woken = asyncio.Event()
            waiters.add(woken)  # before reading: a change during the read still wakes us
            try:
                state = await self._state(name)
                if done(state):
                    return state
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(remaining, POLL_SECONDS))
            finally:
                waiters.discard(woken)


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


def _write_spec(spec: SandboxSpec) -> None:
    path = spec.credentials_dir / SPEC_FILE
    write_atomic(path, sandbox_json(spec), mode=0o600)  # its env may hold an API key
    if spec.uid is not None and os.geteuid() == 0:
        os.chown(path, spec.uid, spec.uid)


def _job_id(path: str) -> int:
    """The id in a job's object path (/org/freedesktop/systemd1/job/ID); -1, matching no job, if none."""
    last = path.rsplit("/", 1)[-1]
    return int(last) if last.isdigit() else -1


def _is_gone(state: UnitState) -> bool:
    return state.gone


def _change(stopped: _Stopped, service: dict[str, Any]) -> Change:
    code = service.get("ExecMainCode")
    status = service.get("ExecMainStatus")
    restarts = service.get("NRestarts")
    log.info(
        "%s stopped (%s): Result=%s, %s", stopped.name, stopped.kind, service.get("Result", "?"),
        _how_it_ended(service) or "no exit status",
    )  # fmt: skip
    return Change(
        stopped.name,
        at=stopped.at,
        exit_code=int(status) if code == CLD_EXITED and status is not None else None,
        signal=int(status) if code in (CLD_KILLED, CLD_DUMPED) and status is not None else None,
        auto_restarting=stopped.kind == "auto-restart",
        restarts=int(restarts) if restarts is not None else None,
    )


def _how_it_ended(service: dict[str, Any]) -> str:
    code, status = service.get("ExecMainCode"), service.get("ExecMainStatus")
    if code == CLD_EXITED:
        return f"exit status {status}"
    if code in (CLD_KILLED, CLD_DUMPED):
        return f"signal {status}"
    return ""


async def _call(
    bus: MessageBus, destination: str, path: str, interface: str, member: str, signature: str, *body: Any
) -> list[Any]:
    """One D-Bus method call: the reply's body, or SystemdError with the error's name."""
    message = Message(
        destination=destination, path=path, interface=interface, member=member, signature=signature, body=list(body)
    )
    what = f"{member}({', '.join(repr(arg) for arg in body)})"
    try:
        reply = await bus.call(message)
    except Exception as e:
        raise BackendError(f"systemd: {what}: the D-Bus connection failed: {e}") from e
    if reply.message_type is MessageType.ERROR:
        raise SystemdError(what, reply.error_name, str(reply.body[0]) if reply.body else "")
    return list(reply.body)


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
