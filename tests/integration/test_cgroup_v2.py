"""cgroup v2 for real on a host whose memory, pids and cpu controllers are v1's (as this one's are).

The unified hierarchy is there (hybrid: /sys/fs/cgroup/unified) but offers only the controllers v1
left free (hugetlb), so what runs here is the v2 code without those limits: a server whose own cgroup
holds processes moves itself into a leaf to hand a controller down (the kernel's "no internal
processes" rule, EBUSY), a sandbox's processes enter its cgroup, `cgroup.kill` ends all of them,
forks in flight included, the cgroup is found again from its record and removed. memory.max,
pids.max and cpu.weight themselves are written by the same lines the v1 tests prove the values of.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperhive.servers.lifecycle import cgroups

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes cgroups")


def _unified() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if parts[2] == "cgroup2":
            return Path(parts[1])
    return None


# The lifecycle server's part, in a process of its own: it sits in `parent` (its own cgroup, with
# another process beside it), makes the sandbox's cgroup, starts a sandbox stand-in there that forks
# without pause, and kills it all.
SERVER = r"""
import json, os, subprocess, sys, time
from pathlib import Path
from hyperhive.servers.lifecycle import cgroups
cgroups.V2_CONTROLLERS = ("hugetlb",)  # the one this host's unified hierarchy has
parent, neighbour = Path(sys.argv[1]), sys.argv[2]
(parent / "cgroup.procs").write_text(str(os.getpid()))
hierarchy = cgroups.V2Hierarchy(parent, "hyperhive-test")
cgroup = hierarchy.create("alice", cgroups.Limits(memory_max=1 << 30, pids_max=100, cpu_weight=50))
enter = " ".join(f"echo $$ > {f};" for f in cgroup.procs_files)
forker = "import os, time\nwhile True:\n    os.fork() == 0 and time.sleep(60)\n    time.sleep(0.01)\n"
sandbox = subprocess.Popen(["sh", "-c", f"{enter} exec {sys.executable} -c '{forker}'"])
time.sleep(0.5)
before = len(cgroup.pids())
again = cgroups.open_cgroup(json.loads(json.dumps(cgroup.record())))
started = time.monotonic()
emptied = again.kill(timeout=5)
took = time.monotonic() - started
sandbox.wait(5)
after = len(cgroup.pids())
again.remove()
print(json.dumps({
    "controllers": hierarchy.controllers, "missing": hierarchy.missing, "describe": hierarchy.describe(),
    "own": Path("/proc/self/cgroup").read_text(), "subtree": (parent / "cgroup.subtree_control").read_text(),
    "hive_subtree": "gone" if not (parent / "hyperhive-test").exists() else "left",
    "neighbour": [l for l in Path(f"/proc/{neighbour}/cgroup").read_text().splitlines() if l.startswith("0::")][0],
    "before": before, "emptied": emptied, "took": took, "after": after, "dir_left": cgroup.directory.exists(),
}))
"""


@pytest.fixture
def server_cgroup() -> Iterator[tuple[Path, int]]:
    unified = _unified()
    if unified is None or "hugetlb" not in (unified / "cgroup.controllers").read_text().split():
        pytest.skip("needs a cgroup2 mount with a free controller (hugetlb) to hand down")
    root_subtree = unified / "cgroup.subtree_control"
    enabled_here = "hugetlb" not in root_subtree.read_text().split()
    if enabled_here:
        root_subtree.write_text("+hugetlb")  # as systemd would for a delegated subtree
    parent = unified / f"hhtest-{os.getpid()}"
    parent.mkdir()
    neighbour = subprocess.Popen(["sleep", "60"])
    (parent / "cgroup.procs").write_text(str(neighbour.pid))  # the server's cgroup is not empty
    try:
        yield parent, neighbour.pid
    finally:
        neighbour.kill()
        neighbour.wait()
        for directory in [*sorted(parent.rglob("*"), key=lambda p: len(p.parts), reverse=True), parent]:
            if directory.is_dir():
                for pid in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (unified / "cgroup.procs").write_text(pid)
                with contextlib.suppress(OSError):
                    directory.rmdir()
        if enabled_here:
            with contextlib.suppress(OSError):  # busy if another run still has a cgroup here
                root_subtree.write_text("-hugetlb")


def test_a_v2_cgroup_holds_a_sandbox_and_its_kill_ends_every_process_in_it(server_cgroup: tuple[Path, int]) -> None:
    parent, neighbour = server_cgroup
    argv = [sys.executable, "-c", SERVER, str(parent), str(neighbour)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["controllers"] == ["hugetlb"] and result["missing"] == []
    # The server's cgroup held another process too: both moved into a leaf to hand hugetlb down.
    assert f"0::/{parent.name}/hyperhive-server" in result["own"], result["own"]
    assert result["neighbour"] == f"0::/{parent.name}/hyperhive-server", result
    assert result["subtree"].split() == ["hugetlb"]
    assert result["before"] >= 3, result  # the stand-in and its children, all inside
    assert result["emptied"] is True and result["after"] == 0, result
    assert result["took"] < 1.0, result
    assert result["dir_left"] is False and result["hive_subtree"] == "gone", result
    time.sleep(0.1)
    assert not any(p.name == "hyperhive-test" for p in parent.iterdir())


def test_v2_names_the_controllers_it_lacks() -> None:
    unified = _unified()
    if unified is None:
        pytest.skip("no cgroup2 mount")
    hierarchy = cgroups.V2Hierarchy(unified, "hyperhive-test")
    available = set((unified / "cgroup.controllers").read_text().split())
    assert set(hierarchy.missing) == {c for c in cgroups.V2_CONTROLLERS if c not in available}
    if hierarchy.missing:
        assert "not limited" in hierarchy.describe()
