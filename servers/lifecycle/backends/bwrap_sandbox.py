"""A running bubblewrap sandbox, as the backend (bwrap.py) tracks it and records it for the next
server, and its end: what is left in it killed (sweep), how its command ended (bwrap's status file),
all read from /proc and the status file without trusting the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hyperhive.servers.lifecycle import cgroups

log = logging.getLogger("hyperhive.lifecycle.bwrap")

SWEEP_TIMEOUT: Final = 5.0  # killing what is left of an ended sandbox waits this long at most


@dataclass
class Sandbox:
    """A running sandbox as the backend tracks it; its record (runtime dir, NAME.json) lets a new
    server re-attach to it."""

    name: str
    pid: int  # the outer bwrap (the monitor) in the host pid namespace
    start_ticks: int | None  # its start time, to tell it from a later process with the same pid
    init_pid: int  # the sandbox's pid 1, as seen from the host
    pidns: int  # the sandbox's pid namespace inode
    started_at: float
    status: Path
    cgroup: cgroups.Cgroup | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # An open fd on its pid namespace while we track it: the kernel reuses a freed namespace's inode
    # number (within a second), so only a held namespace makes `pidns` name this sandbox alone.
    pidns_fd: int | None = None

    def hold_namespace(self) -> None:
        """Hold its pid namespace open (see pidns_fd), if its init still lives in it."""
        if self.pidns_fd is None:
            self.pidns_fd = hold_namespace(self.init_pid, self.pidns)

    def release_namespace(self) -> None:
        fd, self.pidns_fd = self.pidns_fd, None
        if fd is not None:
            os.close(fd)

    def record(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "start_ticks": self.start_ticks, "init_pid": self.init_pid,
            "pidns": self.pidns, "started_at": self.started_at, "status": str(self.status),
            "cgroup": self.cgroup.record() if self.cgroup else None,
        }  # fmt: skip

    @classmethod
    def of_record(cls, name: str, record: dict[str, Any]) -> Sandbox:
        """KeyError or ValueError for a record that is not one."""
        return cls(
            name, record["pid"], record["start_ticks"], record["init_pid"], record["pidns"],
            record["started_at"], Path(record["status"]),
            cgroups.open_cgroup(record["cgroup"]) if record.get("cgroup") else None,
        )  # fmt: skip


def sweep(sandbox: Sandbox) -> bool:
    """Kill what is left of an ended sandbox and wait until it is gone (bounded). True if the
    kernel killed something in it for its memory limit."""
    out_of_memory = False
    if sandbox.cgroup is not None:
        sandbox.cgroup.kill(SWEEP_TIMEOUT)
        out_of_memory = sandbox.cgroup.oom_kills() > 0
        sandbox.cgroup.remove()
    # Without a cgroup (unprivileged), the pid namespace bounds it: its init's death ends it all.
    kill_init(sandbox.pidns, sandbox.init_pid)
    deadline = time.monotonic() + SWEEP_TIMEOUT
    while (left := namespace_pids(sandbox.pidns, None)) and time.monotonic() < deadline:
        time.sleep(0.01)
    if left:
        log.error("the ended sandbox of %s still has processes %s", sandbox.name, left)
    sandbox.release_namespace()  # empty now: its inode number may name a later namespace
    return out_of_memory


def hold_namespace(init_pid: int, pidns: int) -> int | None:
    """An fd holding the pid namespace `pidns` of `init_pid`, or None if that init is gone."""
    try:
        fd = os.open(f"/proc/{init_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if os.fstat(fd).st_ino != pidns:  # a later process with the same pid: not the sandbox's init
        os.close(fd)
        return None
    return fd


def kill_init(pidns: int, init_pid: int) -> None:
    """SIGKILL the init of pid namespace `pidns` (the kernel then kills all of it), if still that init."""
    try:
        if str(Path(f"/proc/{init_pid}/ns/pid").readlink()) == f"pid:[{pidns}]":
            os.kill(init_pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def namespace_pids(pidns: int, init_pid: int | None) -> list[int]:
    """Host pids of every live process in the pid namespace `pidns`, except its init."""
    wanted = f"pid:[{pidns}]"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == init_pid:
            continue
        try:
            if str(Path(f"/proc/{entry.name}/ns/pid").readlink()) != wanted:
                continue
            if Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))  # a zombie is dead already, waiting for its parent
        except OSError:  # gone meanwhile
            continue
    return found


def status_entries(text: str) -> list[dict[str, Any]]:
    """bwrap's status lines so far; a last line it is still writing is not one yet."""
    entries = []
    for line in text.split("\n")[:-1]:
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


def exit_code(status: Path) -> int | None:
    try:
        text = status.read_text()
    except OSError:
        return None
    for entry in reversed(status_entries(text)):
        if "exit-code" in entry:
            return int(entry["exit-code"])
    return None
