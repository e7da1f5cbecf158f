"""The default backend: one bubblewrap sandbox per agent.

Run as root, bwrap builds the sandbox (so it can bind a Python installed anywhere) and the
command inside drops, through setpriv, to the agent's own host uid with no capabilities and
no_new_privs: root inside is nobody outside. Run unprivileged, bwrap uses a user namespace and
every agent shares the server's uid, which list_agents says.

Sandboxes outlive the lifecycle server: each is its own session, recorded in the runtime dir
(pid and start time of the outer bwrap, the namespace's init, its status file, its cgroup). A
new server re-attaches to the ones still running and learns how the others ended from bwrap's
--json-status-fd file, which bwrap completes with {"exit-code": N} when the sandbox ends.

A dead sandbox is dead: bwrap's outer process exits as soon as the command it ran does, but the
namespace's init keeps whatever that command forked. So when the outer process ends, everything
left in the sandbox's cgroup (and its pid namespace) is killed before the end is reported, and
the next run never meets the last one's processes. Each sandbox enters its own cgroup (memory,
pids, CPU limits; cgroups.py) before bwrap even starts: a tiny shell writes its own pid to the
cgroup and execs bwrap, so nothing of the sandbox ever runs outside it.

This module starts, stops and watches sandboxes; bwrap's command line is bwrap_command.py's, a
running sandbox's record and the sweep after it ends bwrap_sandbox.py's.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import anyio

from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.lifecycle import cgroups, logfiles, pipes, sandbox_network
from hyperhive.servers.lifecycle.backends import bwrap_shell
from hyperhive.servers.lifecycle.backends.base import (
    BackendError,
    Change,
    Running,
    SandboxBackend,
    SandboxSpec,
    ShellSpec,
)
from hyperhive.servers.lifecycle.backends.bwrap_command import ENTER_CGROUP, command_line, spawn, supports_tmpfs_size
from hyperhive.servers.lifecycle.backends.bwrap_sandbox import (
    Sandbox,
    exit_code,
    kill_init,
    namespace_pids,
    start_ticks,
    sweep,
)
from hyperhive.servers.lifecycle.paths import AgentPaths

log = logging.getLogger("hyperhive.lifecycle.bwrap")

READY_TIMEOUT: Final = 10.0
ROTATE_EVERY: Final = 5.0
OUT_OF_MEMORY: Final = "out of memory"


class BwrapBackend(SandboxBackend):
    name = "bwrap"
    per_instance_credentials = True  # a sandbox's mounts are its own: each run binds its own token dir

    def __init__(self, config: HiveConfig, *, bwrap: str = "bwrap") -> None:
        self.config = config
        self.bwrap = shutil.which(bwrap) or bwrap
        self.runtime = config.run_dir / "lifecycle" / "bwrap"
        self.privileged = os.geteuid() == 0
        self.cgroups, self.cgroups_how = cgroups.probe(config.home)
        if self.cgroups is None:
            log.warning("sandboxes run without resource limits (memory, processes, CPU): %s", self.cgroups_how)
        elif self.cgroups.missing:
            log.warning("sandboxes run without %s limits: %s", ", ".join(self.cgroups.missing), self.cgroups_how)
        self.tmpfs_size = supports_tmpfs_size(self.bwrap)
        if not self.tmpfs_size:
            log.warning("this bwrap has no --size: sandboxes' /tmp is not size-limited (bubblewrap 0.5 has it)")
        self._sandboxes: dict[str, Sandbox] = {}
        self._changes: asyncio.Queue[Change] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._attached = False
        self._rotating: asyncio.Task[None] | None = None

    @property
    def isolation(self) -> str:
        limits = (
            f"; its own {self.cgroups_how} (memory, processes, CPU)"
            if self.cgroups
            else f"; no resource limits ({self.cgroups_how})"
        )
        if self.privileged:
            return (
                "bubblewrap: own mount, pid, ipc and uts namespaces; each agent its own host uid, no capabilities"
                + limits
            )
        return (
            f"bubblewrap in a user namespace: own mount, pid, ipc and uts namespaces, but every agent runs as "
            f"uid {os.geteuid()} because the lifecycle server is not root" + limits
        )

    # ---------------------------------------------------------------------------------------- create
    async def create(self, spec: SandboxSpec) -> None:
        """Nothing to prepare: a bwrap sandbox is made at each start."""

    async def update(self, spec: SandboxSpec) -> None:
        """Nothing to update: the next start reads the new spec."""

    async def destroy(self, name: str) -> None:
        if name in self._sandboxes:
            await self.kill(name)

    # ----------------------------------------------------------------------------------------- start
    async def start(self, spec: SandboxSpec) -> Running:
        await self._attach()
        if spec.name in self._sandboxes:
            raise BackendError(f"{spec.name} is already running")
        forwards = await self._forwards(spec)
        cgroup = await anyio.to_thread.run_sync(self._prepare, spec)
        status = self.runtime / f"{spec.name}.status"
        status_fd = os.open(status, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        # bwrap writes --info-fd once, when the sandbox is up, and closes it: a pipe wakes us at once.
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()  # its command waits on this (--block-fd) until its network is up
        started_at = time.time()
        try:
            logfiles.mark(spec.log_path, started_at, f"starting sandbox: {logfiles.one_line(shlex.join(spec.command))}")
            argv = self._argv(spec, status_fd, info_write, block_read, forwards)
            if cgroup is not None:
                argv = ["/bin/sh", "-c", ENTER_CGROUP, "enter-cgroup", *map(str, cgroup.procs_files), "--", *argv]
            process = await anyio.to_thread.run_sync(spawn, argv, log_fd, (status_fd, info_write, block_read))
        except BaseException:
            os.close(info_read)
            os.close(block_write)
            if cgroup is not None:
                await anyio.to_thread.run_sync(cgroup.remove)
            raise
        finally:
            os.close(status_fd)
            os.close(log_fd)
            os.close(info_write)
            os.close(block_read)
        try:
            ready = await self._ready(spec, process, info_read)
            await self._network(spec, ready["child-pid"], block_write, cgroup, forwards)
        except BaseException:
            # Whatever went wrong (or cancelled us), no sandbox may run that nobody tracks.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                if cgroup is not None:  # the sandbox may be up in its own session: the cgroup has it all
                    await anyio.to_thread.run_sync(cgroup.kill)
                    await anyio.to_thread.run_sync(cgroup.remove)
                await anyio.to_thread.run_sync(process.wait)
            raise
        finally:
            os.close(block_write)
        sandbox = Sandbox(
            spec.name, process.pid, start_ticks(process.pid), ready["child-pid"], ready["pid-namespace"],
            started_at, status, cgroup,
        )  # fmt: skip
        sandbox.hold_namespace()
        write_atomic(self.runtime / f"{spec.name}.json", json.dumps(sandbox.record()), mode=0o600)
        self._sandboxes[spec.name] = sandbox
        self._spawn(self._watch(sandbox, process))
        self._ensure_rotation()
        return Running(spec.name, started_at, sandbox.pid)

    async def _forwards(self, spec: SandboxSpec) -> list[sandbox_network.Forward]:
        """The hive's ports its keeper forwards (none for "host"), host names resolved now, on this host:
        its /etc/hosts and its keeper then agree on where each server is for as long as it runs."""
        if spec.network == "host":
            return []
        ports = sandbox_network.hive_ports(self.config)
        try:
            return await anyio.to_thread.run_sync(sandbox_network.resolve_forwards, ports)
        except sandbox_network.NetworkError as e:
            raise BackendError(f"the sandbox of {spec.name} did not start: {e}") from None

    async def _network(
        self,
        spec: SandboxSpec,
        init_pid: int,
        block_fd: int,
        cgroup: cgroups.Cgroup | None,
        forwards: Sequence[sandbox_network.Forward],
    ) -> None:
        """Give the sandbox its network ([sandbox] network), then let its command run."""
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND)
        try:
            uid = spec.uid if spec.uid is not None else os.geteuid()
            procs = cgroup.procs_files if cgroup is not None else ()
            await sandbox_network.attach(spec.network, init_pid, uid, forwards, log_fd, procs)
        except sandbox_network.NetworkError as e:
            raise BackendError(f"the sandbox of {spec.name} did not start: {e}") from None
        finally:
            os.close(log_fd)
        os.write(block_fd, b"1")

    def _prepare(self, spec: SandboxSpec) -> cgroups.Cgroup | None:
        """Dirs, and the sandbox's fresh cgroup with its limits (None where this host gives us none)."""
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        spec.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The mount point of the read-only credentials bind, inside the agent's harness dir.
        # The agent owns the harness dir: a link planted there must not make root chown its target.
        mount = spec.harness_dir / "credentials"
        with contextlib.suppress(FileExistsError):
            mount.mkdir()
        if not stat.S_ISDIR(os.lstat(mount).st_mode):
            raise BackendError(f"{mount} is not a directory (a link?); remove it and start {spec.name} again")
        if spec.uid is not None and self.privileged:
            os.chown(mount, spec.uid, spec.uid, follow_symlinks=False)
        if self.cgroups is None:
            return None
        try:
            return self.cgroups.create(spec.name, spec.limits)
        except cgroups.CgroupError as e:
            raise BackendError(f"cannot make the cgroup of {spec.name}: {e}") from None

    def _argv(
        self,
        spec: SandboxSpec,
        status_fd: int,
        info_fd: int,
        block_fd: int | None = None,
        forwards: Sequence[sandbox_network.Forward] = (),
    ) -> list[str]:
        return command_line(
            spec,
            bwrap=self.bwrap,
            privileged=self.privileged,
            tmpfs_size=self.tmpfs_size,
            runtime=self.runtime,
            status_fd=status_fd,
            info_fd=info_fd,
            block_fd=block_fd,
            forwards=forwards,
        )

    async def _ready(self, spec: SandboxSpec, process: subprocess.Popen[bytes], info_fd: int) -> dict[str, int]:
        """Wait for bwrap's info: the sandbox is up. A set-up failure closes the pipe with nothing in it."""
        try:
            with anyio.fail_after(READY_TIMEOUT):
                data = await pipes.read_to_end(info_fd)
        except TimeoutError:
            raise BackendError(f"the sandbox of {spec.name} did not come up within {READY_TIMEOUT:.0f} s") from None
        finally:
            os.close(info_fd)
        try:
            info = json.loads(data)
            return {"child-pid": int(info["child-pid"]), "pid-namespace": int(info["pid-namespace"])}
        except (ValueError, KeyError):
            pass
        await anyio.to_thread.run_sync(process.wait)
        why = "\n".join(logfiles.tail(spec.log_path, 5)) or f"bwrap exited with code {process.returncode}"
        raise BackendError(f"the sandbox of {spec.name} did not start: {why}")

    # ----------------------------------------------------------------------------------- stop & kill
    async def stop(self, name: str, timeout: float) -> None:
        sandbox = self._running(name)
        pids = await anyio.to_thread.run_sync(namespace_pids, sandbox.pidns, sandbox.init_pid)
        for pid in pids:  # bwrap's init ignores SIGTERM: signal what runs under it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with anyio.move_on_after(timeout if pids else 0):
            await sandbox.ended.wait()
        if not sandbox.ended.is_set():
            await self.kill(name)

    async def kill(self, name: str) -> None:
        sandbox = self._running(name)
        # The init first, so bwrap reports how it ended (the kernel kills the rest of the namespace);
        # then, if bwrap does not end, everything in the cgroup, bwrap included.
        await anyio.to_thread.run_sync(kill_init, sandbox.pidns, sandbox.init_pid)
        with anyio.move_on_after(2):
            await sandbox.ended.wait()
        if not sandbox.ended.is_set() and sandbox.cgroup is not None:
            await anyio.to_thread.run_sync(sandbox.cgroup.kill)
        with anyio.fail_after(10):
            await sandbox.ended.wait()

    def _running(self, name: str) -> Sandbox:
        sandbox = self._sandboxes.get(name)
        if sandbox is None:
            raise BackendError(f"{name} is not running")
        return sandbox

    # -------------------------------------------------------------------------------- watch & attach
    async def list(self) -> dict[str, Running]:
        await self._attach()
        return {name: Running(name, s.started_at, s.pid) for name, s in self._sandboxes.items()}

    def changes(self) -> AsyncIterator[Change]:
        return self._drain_changes()

    async def _drain_changes(self) -> AsyncIterator[Change]:
        while True:
            yield await self._changes.get()

    async def _watch(self, sandbox: Sandbox, process: subprocess.Popen[bytes] | None) -> None:
        """Wait for the sandbox to end through a pidfd: ours (`process`) or adopted from an earlier server."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(sandbox.pid)
        except ProcessLookupError:
            await self._ended(sandbox, process.wait() if process else None)
            return
        gone: asyncio.Future[None] = loop.create_future()

        def readable() -> None:  # a pidfd becomes readable when its process ends
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await gone
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        # Our own child must be reaped (its code then comes for free); an adopted one is not ours to reap.
        await self._ended(sandbox, process.wait() if process else None)

    async def _ended(self, sandbox: Sandbox, returncode: int | None) -> None:
        # Its command has ended; whatever it forked has not, and dies now, before anyone restarts it.
        with anyio.CancelScope(shield=True):
            out_of_memory = await anyio.to_thread.run_sync(sweep, sandbox)
        code = exit_code(sandbox.status)
        if code is None:
            code = 128 - returncode if returncode is not None and returncode < 0 else returncode
        change = Change(
            sandbox.name,
            at=time.time(),
            exit_code=code,
            signal=code - 128 if code is not None and 128 < code < 128 + 65 else None,
            started_at=sandbox.started_at,
            reason=OUT_OF_MEMORY if out_of_memory else None,
        )
        log_path = AgentPaths.of(self.config, sandbox.name).log
        how = f"signal {change.signal}" if change.signal else f"exit code {change.exit_code}"
        how += f", {change.reason}" if change.reason else ""
        await anyio.to_thread.run_sync(logfiles.mark, log_path, change.at, f"sandbox ended ({how})")
        if self._sandboxes.get(sandbox.name) is sandbox:
            del self._sandboxes[sandbox.name]
        for path in (self.runtime / f"{sandbox.name}.json", self.runtime / f"{sandbox.name}.hosts", sandbox.status):
            path.unlink(missing_ok=True)
        sandbox.ended.set()
        self._changes.put_nowait(change)

    async def _attach(self) -> None:
        """Take over the sandboxes an earlier server started; report the ones that ended meanwhile."""
        if self._attached:
            return
        self._attached = True
        for record_path in sorted(self.runtime.glob("*.json")) if self.runtime.exists() else []:
            name = record_path.stem
            try:
                record = json.loads(record_path.read_text())
                sandbox = Sandbox.of_record(name, record)
            except (OSError, ValueError, KeyError) as e:
                log.warning("ignoring unreadable sandbox record %s: %s", record_path, e)
                record_path.unlink(missing_ok=True)
                continue
            if start_ticks(sandbox.pid) == sandbox.start_ticks:
                sandbox.hold_namespace()
                self._sandboxes[name] = sandbox
                self._spawn(self._watch(sandbox, None))
                log.info("re-attached to the running sandbox of %s (pid %d)", name, sandbox.pid)
            else:
                await self._ended(sandbox, None)
        if self._sandboxes:
            self._ensure_rotation()

    # ----------------------------------------------------------------------------------------- shell
    async def shell_command(self, shell: ShellSpec) -> builtins.list[str]:
        """bwrap_shell.py run as a program: it joins the sandbox's cgroup and namespaces through a
        pidfd of its init, drops to the agent, and only then runs the sandbox's own shell."""
        await self._attach()
        sandbox = self._sandboxes.get(shell.name)
        if sandbox is None or sandbox.ended.is_set():
            raise BackendError(f"{shell.name} is not running: a terminal opens into a running sandbox")
        if not self.privileged or shell.uid is None:
            raise BackendError(
                "a terminal needs the lifecycle server to run as root (its sandboxes then run as the "
                "agents' own uids); this one runs unprivileged"
            )
        argv = [sys.executable, "-m", bwrap_shell.__name__, f"--pid={sandbox.init_pid}", f"--pidns={sandbox.pidns}"]
        argv += [f"--uid={shell.uid}", f"--gid={shell.uid}", f"--cwd={shell.cwd}"]
        argv += [f"--group={group}" for group in shell.groups]
        argv += [f"--cgroup-procs={path}" for path in (sandbox.cgroup.procs_files if sandbox.cgroup else ())]
        return argv + [f"--env={key}={value}" for key, value in shell.env.items()]

    # ------------------------------------------------------------------------------------------ logs
    async def logs(self, name: str, lines: int, since: float | None) -> builtins.list[str]:
        path = AgentPaths.of(self.config, name).log
        return await anyio.to_thread.run_sync(logfiles.tail, path, lines, since)

    def _ensure_rotation(self) -> None:
        if self._rotating is None or self._rotating.done():
            self._rotating = asyncio.create_task(self._rotate_forever())

    async def _rotate_forever(self) -> None:
        settings = self.config.lifecycle
        while self._sandboxes:
            for name in list(self._sandboxes):
                path = AgentPaths.of(self.config, name).log
                await anyio.to_thread.run_sync(
                    logfiles.rotate_if_large, path, settings.log_max_bytes, settings.log_keep
                )
            await asyncio.sleep(ROTATE_EVERY)

    # ---------------------------------------------------------------------------------------- close
    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in [*self._tasks, *([self._rotating] if self._rotating else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sandbox in self._sandboxes.values():  # left running for the next server to re-attach
            sandbox.release_namespace()
