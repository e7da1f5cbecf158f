"""One cgroup per sandbox: its limits (memory, processes, CPU), killing everything in it, and
telling whether the kernel killed something in it for memory.

Two layouts, found by probing /proc/self/cgroup and the mounts, never assumed: cgroup v2 (one
unified hierarchy: NixOS, current distributions) and v1 (one hierarchy per controller, e.g.
/sys/fs/cgroup/{memory,pids,cpu,freezer}). A hive's cgroups live under the cgroup the lifecycle
server itself is in, per controller, as `hyperhive-<hash of the hive home>/<agent>`; a record of
the directories lets a restarted server (perhaps in another cgroup) find them again.

A process enters its cgroup by writing its own pid to `procs_files` before it execs anything
(bwrap.py does it from a tiny shell that then execs bwrap): every process of the sandbox, bwrap
included, starts inside, so none escapes the kill.

Past ~400 lines because it is one interface written for both layouts, and the file helpers they
share (freeze, move, read) belong with them; split, each half would be unreadable alone.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("hyperhive.lifecycle.cgroups")

KILL_TIMEOUT: Final = 5.0
V1_CONTROLLERS: Final = ("memory", "pids", "cpu", "freezer")
V2_CONTROLLERS: Final = ("memory", "pids", "cpu")


class CgroupError(Exception):
    """A cgroup that could not be made, limited or emptied; the message says which file and why."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = code


@dataclass(frozen=True, slots=True)
class Limits:
    """What one sandbox may use; None leaves that resource unlimited."""

    memory_max: int | None = None  # bytes of RAM (and, on v1 where the kernel accounts it, not swap)
    pids_max: int | None = None  # processes and threads at once
    cpu_weight: int | None = None  # 1..10000, 100 is even (v2's cpu.weight; v1: cpu.shares scaled)


class Cgroup(abc.ABC):
    """One sandbox's cgroup: a directory in each hierarchy that has one of our controllers."""

    @property
    @abc.abstractmethod
    def procs_files(self) -> list[Path]:
        """The cgroup.procs files a process writes its own pid to, to enter (every hierarchy)."""

    @abc.abstractmethod
    def pids(self) -> set[int]:
        """The processes in it now."""

    @abc.abstractmethod
    def _kill_round(self) -> None:
        """SIGKILL what is in it now, so that nothing can fork its way out of the round."""

    @abc.abstractmethod
    def oom_kills(self) -> int:
        """How many processes the kernel killed in it for its memory limit."""

    @abc.abstractmethod
    def record(self) -> dict[str, Any]:
        """What `open_cgroup` needs to find it again (JSON)."""

    @property
    @abc.abstractmethod
    def dirs(self) -> list[Path]:
        """Its directories, one per hierarchy."""

    def kill(self, timeout: float = KILL_TIMEOUT) -> bool:
        """Kill everything in it and wait until it is empty, up to `timeout`. True once empty."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.pids():
                return True
            if time.monotonic() >= deadline:
                left = sorted(self.pids())
                log.error("cgroup %s still holds %s after %.0f s of SIGKILL", self.dirs[0], left, timeout)
                return False
            self._kill_round()
            time.sleep(0.005)

    def remove(self) -> None:
        """Remove its directories (once empty) and the hive's, if that was the last one."""
        for directory in self.dirs:
            for path in (directory, directory.parent):
                try:
                    path.rmdir()
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if path == directory:
                        log.warning("could not remove cgroup %s: %s", path, e.strerror)
                    break  # the hive's directory still holds other agents'


class Hierarchy(abc.ABC):
    """Where this host keeps cgroups, and how to make one with limits."""

    version: int
    missing: tuple[str, ...] = ()  # controllers this host does not give us: those limits are not applied

    @abc.abstractmethod
    def create(self, name: str, limits: Limits) -> Cgroup:
        """A fresh, empty cgroup `name` with these limits (one left from an earlier run is emptied and remade)."""

    def describe(self) -> str:
        missing = f" (no {', '.join(self.missing)} controller: not limited)" if self.missing else ""
        return f"cgroup v{self.version}{missing}"


# ---------------------------------------------------------------------------------------- v1


class _V1Cgroup(Cgroup):
    def __init__(self, dirs: dict[str, Path]) -> None:
        self._dirs = dirs

    @property
    def dirs(self) -> list[Path]:
        return list(self._dirs.values())

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self._dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self._dirs.values():  # the same set in each, but a hierarchy may be gone
            found |= _read_pids(directory / "cgroup.procs")
        return found

    def _kill_round(self) -> None:
        freezer = self._dirs.get("freezer")
        if freezer is not None:
            _freeze(freezer, True)  # no fork escapes the round; on a loaded host it may outlast its wait
        try:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if freezer is not None:
                # Always, reached or not: a freeze that outlasted its wait still completes, and a
                # frozen process cannot die of its SIGKILL — the cgroup would stay frozen for good.
                _freeze(freezer, False)

    def oom_kills(self) -> int:
        memory = self._dirs.get("memory")
        if memory is None:
            return 0
        fields = _key_values(memory / "memory.oom_control")
        return fields.get("oom_kill", 0)

    def record(self) -> dict[str, Any]:
        return {"version": 1, "dirs": {c: str(d) for c, d in self._dirs.items()}}


class V1Hierarchy(Hierarchy):
    version = 1

    def __init__(self, parents: dict[str, Path], group: str) -> None:
        self.parents = parents  # controller -> the lifecycle server's own cgroup directory in it
        self.group = group
        self.missing = tuple(c for c in ("memory", "pids", "cpu") if c not in parents)

    def create(self, name: str, limits: Limits) -> Cgroup:
        dirs = {c: parent / self.group / name for c, parent in self.parents.items()}
        cgroup = _V1Cgroup(dirs)
        _fresh(cgroup)
        for directory in dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        memory, pids, cpu = dirs.get("memory"), dirs.get("pids"), dirs.get("cpu")
        if memory is not None and limits.memory_max is not None:
            _write(memory / "memory.limit_in_bytes", str(limits.memory_max))
            # Where swap is accounted, the limit covers it too: past it, the OOM killer, not swapping.
            with contextlib.suppress(CgroupError):
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_max))
        if pids is not None and limits.pids_max is not None:
            _write(pids / "pids.max", str(limits.pids_max))
        if cpu is not None and limits.cpu_weight is not None:
            _write(cpu / "cpu.shares", str(max(2, limits.cpu_weight * 1024 // 100)))
        return cgroup


# ---------------------------------------------------------------------------------------- v2


class _V2Cgroup(Cgroup):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def dirs(self) -> list[Path]:
        return [self.directory]

    @property
    def procs_files(self) -> list[Path]:
        return [self.directory / "cgroup.procs"]

    def pids(self) -> set[int]:
        return _read_pids(self.directory / "cgroup.procs")

    def _kill_round(self) -> None:
        kill = self.directory / "cgroup.kill"
        if kill.exists():  # Linux 5.14: the kernel kills the whole cgroup, forks in flight included
            _write(kill, "1")
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def oom_kills(self) -> int:
        return _key_values(self.directory / "memory.events").get("oom_kill", 0)

    def record(self) -> dict[str, Any]:
        return {"version": 2, "dirs": {"unified": str(self.directory)}}


class V2Hierarchy(Hierarchy):
    version = 2

    def __init__(self, parent: Path, group: str) -> None:
        self.parent = parent  # the lifecycle server's own cgroup
        self.group = group
        available = set(_read_words(parent / "cgroup.controllers"))
        self.controllers = tuple(c for c in V2_CONTROLLERS if c in available)
        self.missing = tuple(c for c in V2_CONTROLLERS if c not in available)

    def create(self, name: str, limits: Limits) -> Cgroup:
        hive = self.parent / self.group
        cgroup = _V2Cgroup(hive / name)
        _fresh(cgroup)
        hive.mkdir(exist_ok=True)
        if self.controllers:
            enable = " ".join(f"+{c}" for c in self.controllers)
            # The server's own cgroup holds processes (the server, and whatever else its unit or
            # `hive up` runs there): the kernel then refuses to give controllers to its children
            # unless it is the root ("no internal processes"). Under systemd's Delegate=yes, the
            # answer is to move them all into a leaf of their own first.
            try:
                _write(self.parent / "cgroup.subtree_control", enable)
            except CgroupError as e:
                if e.errno != errno.EBUSY:
                    raise
                leaf = self.parent / "hyperhive-server"
                leaf.mkdir(exist_ok=True)
                _move_all(self.parent, leaf)
                _write(self.parent / "cgroup.subtree_control", enable)
            _write(hive / "cgroup.subtree_control", enable)
        cgroup.directory.mkdir()
        if limits.memory_max is not None and "memory" in self.controllers:
            _write(cgroup.directory / "memory.max", str(limits.memory_max))
            _write(cgroup.directory / "memory.swap.max", "0", optional=True)
        if limits.pids_max is not None and "pids" in self.controllers:
            _write(cgroup.directory / "pids.max", str(limits.pids_max))
        if limits.cpu_weight is not None and "cpu" in self.controllers:
            _write(cgroup.directory / "cpu.weight", str(limits.cpu_weight))
        return cgroup


# ------------------------------------------------------------------------------------- probing


def group_name(home: Path) -> str:
    """The hive's directory in each hierarchy: one per hive home, so hives on a host never meet."""
    return "hyperhive-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def probe(home: Path) -> tuple[Hierarchy | None, str]:
    """This host's cgroups, as far as this process may make them: (hierarchy, how) or (None, why not)."""
    group = group_name(home)
    own = _own_cgroups()
    mounts = _cgroup_mounts()
    v1: dict[str, Path] = {}
    for controller in V1_CONTROLLERS:
        mount = mounts.get(controller)
        if mount is not None and controller in own:
            v1[controller] = mount / own[controller].lstrip("/")
    hierarchy: Hierarchy
    if "memory" in v1 or "pids" in v1:
        hierarchy = V1Hierarchy(v1, group)
        parents = list(v1.values())
    elif "" in own and "" in mounts:
        parent = mounts[""] / own[""].lstrip("/")
        hierarchy = V2Hierarchy(parent, group)
        parents = [parent]
    else:
        return None, "this host has no cgroup hierarchy with a memory or pids controller"
    for parent in parents:
        if not os.access(parent, os.W_OK):
            why = "the lifecycle server is not root, or the cgroup is not delegated to it"
            return None, f"no write access to {parent} ({why})"
    return hierarchy, hierarchy.describe()


def open_cgroup(record: dict[str, Any]) -> Cgroup | None:
    """A cgroup from its record (an earlier server's); None for a record that is not one."""
    try:
        dirs = {str(k): Path(v) for k, v in record["dirs"].items()}
        if record["version"] == 2:
            return _V2Cgroup(dirs["unified"])
        if record["version"] == 1:
            return _V1Cgroup(dirs)
    except (KeyError, TypeError, AttributeError):
        pass
    return None


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path in its hierarchy; "" is the unified (v2) one."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    return own


def _cgroup_mounts() -> dict[str, Path]:
    """controller -> the mount point of its v1 hierarchy; "" -> the cgroup2 mount."""
    mounts: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            point = Path(parts[1].replace("\\040", " "))
            if parts[2] == "cgroup2":
                mounts.setdefault("", point)
            elif parts[2] == "cgroup":
                for option in parts[3].split(","):
                    if option in V1_CONTROLLERS:
                        mounts.setdefault(option, point)
    return mounts


# ------------------------------------------------------------------------------------- helpers


def _fresh(cgroup: Cgroup) -> None:
    """Empty and remove what an earlier run left under this name: its counters start at zero."""
    if any(d.exists() for d in cgroup.dirs):
        cgroup.kill()
        for directory in cgroup.dirs:
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()


def _write(path: Path, value: str, *, optional: bool = False) -> None:
    try:
        with path.open("w") as f:
            f.write(value)
    except OSError as e:
        if optional and e.errno == errno.ENOENT:
            return
        raise CgroupError(e.errno, f"cannot write {value!r} to {path}: {e.strerror}") from None


def _move_all(source: Path, target: Path) -> None:
    """Move every process of cgroup `source` into `target`, those that fork in meanwhile too (bounded)."""
    for _ in range(20):
        pids = _read_pids(source / "cgroup.procs")
        if not pids:
            return
        for pid in pids:
            try:
                _write(target / "cgroup.procs", str(pid))
            except CgroupError as e:
                if e.errno != errno.ESRCH:  # gone meanwhile: nothing to move
                    raise


def _read_pids(path: Path) -> set[int]:
    try:
        return {int(line) for line in path.read_text().split()}
    except FileNotFoundError:
        return set()


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _key_values(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                values[key] = int(value)
    return values


def _freeze(freezer: Path, frozen: bool) -> bool:
    """Freeze (or thaw) a v1 freezer cgroup; True once in that state (bounded wait)."""
    want = "FROZEN" if frozen else "THAWED"
    try:
        _write(freezer / "freezer.state", want)
    except CgroupError:
        return False
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if (freezer / "freezer.state").read_text().strip() == want:
                return True
        time.sleep(0.002)
    return False
