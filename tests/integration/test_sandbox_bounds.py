"""A sandbox is bounded: when it ends everything in it ends, and its cgroup limits memory,
processes and CPU. Real bubblewrap sandboxes in real cgroups (as root; skipped otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastmcp.exceptions import ToolError
from hivetest import PY, SLEEPER, Hive, Hivemind, children_of, cmdline, in_process, toml_list

from hyperhive.servers.common.instances import current_instance
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = pytest.mark.slow

# The sandbox's main process forks a long-lived child, then sleeps: as Claude Code under the harness.
# The odd duration marks this test's processes apart from other hives' on the same host.
MARK = f"3600.{os.getpid()}"
FORKER = ["/bin/sh", "-c", f"sleep {MARK} & sleep {MARK}"]


def _record(hive: Hive, name: str) -> dict[str, int]:
    record: dict[str, int] = json.loads((hive.config.run_dir / "lifecycle" / "bwrap" / f"{name}.json").read_text())
    return record


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _in_namespace(pidns: int) -> list[int]:
    """Live processes (not zombies, which are dead already) in the pid namespace `pidns`."""
    wanted = f"pid:[{pidns}]"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str((entry / "ns" / "pid").readlink()) == wanted and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@contextlib.contextmanager
def _holding_namespace(init_pid: int) -> Iterator[None]:
    """Hold the pid namespace of `init_pid` open: the kernel reuses an ended namespace's inode number
    within a second (another sandbox's, a parallel test's), and only a held one keeps it unique."""
    fd = os.open(f"/proc/{init_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield
    finally:
        os.close(fd)


def _owned_by(uid: int) -> list[int]:
    """Live processes (not zombies) of this test whose real uid is `uid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) != uid or fields["State"].strip().startswith("Z"):
            continue
        if MARK in cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


async def _until(check: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return bool(check())  # type: ignore[operator]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: agents run as their own uids")
async def test_killing_the_main_process_ends_everything_in_the_sandbox(hivemind: Hivemind) -> None:
    await hivemind.create("alice", FORKER)
    uid = (await hivemind.status("alice"))["uid"]
    first = _record(hivemind.hive, "alice")
    await _until(lambda: len(_in_namespace(first["pidns"])) >= 3, 5)  # init, sh, its sleep
    [main] = children_of(first["init_pid"])
    await _until(lambda: len(_owned_by(uid)) == 3, 5)  # the second sleep may start a moment later
    assert len(_owned_by(uid)) == 3, "the main process and its two sleeps"

    with _holding_namespace(first["init_pid"]):
        os.kill(main, signal.SIGKILL)  # as the OOM killer or a crash would end the harness
        ended = await _until(lambda: not _in_namespace(first["pidns"]), 1.0)
        assert ended, f"left alive in the dead sandbox: {_in_namespace(first['pidns'])}"

        crash = await hivemind.event("container_crash")
        assert crash["agent"] == "alice" and crash["will_restart"]
        await hivemind.until_state("alice", "running")
        second = _record(hivemind.hive, "alice")
        assert second["pidns"] != first["pidns"]
    await _until(lambda: len(_in_namespace(second["pidns"])) >= 3, 5)
    await _until(lambda: len(_owned_by(uid)) == 3, 5)  # as above: its second sleep may lag
    # The restarted instance is the only one: every process of alice's uid is in the new sandbox.
    assert set(_owned_by(uid)) <= set(_in_namespace(second["pidns"]))
    assert len(_owned_by(uid)) == 3


async def test_a_sandbox_the_restarted_server_reattached_to_is_killed_whole(hive: Hive) -> None:
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\nrestart_backoff_seconds = 0.2")
    async with in_process(hive, "broker") as broker:
        async with in_process(hive, "lifecycle") as lifecycle:  # agents outlive it
            await Hivemind(hive, broker, lifecycle).create("alice", FORKER)
        first = _record(hive, "alice")
        assert first["cgroup"], "the sandbox has a cgroup, recorded for the next server"
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            hivemind = Hivemind(hive, broker, lifecycle)
            await _until(lambda: len(_in_namespace(first["pidns"])) >= 3, 5)
            [main] = children_of(first["init_pid"])
            with _holding_namespace(first["init_pid"]):
                os.kill(main, signal.SIGKILL)
                ended = await _until(lambda: not _in_namespace(first["pidns"]), 1.0)
                assert ended, f"left alive in the dead sandbox: {_in_namespace(first['pidns'])}"
            assert (await hivemind.event("container_crash"))["agent"] == "alice"
            await hivemind.until_state("alice", "running")
        # Stopped with the server: its cgroup is gone too.
        assert not any(Path(d).exists() for d in first["cgroup"]["dirs"].values())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: cgroup limits")
async def test_the_cgroup_has_the_configured_limits(hivemind: Hivemind) -> None:
    await hivemind.call("create_agent", name="alice")
    sha = await hivemind.propose(
        "alice",
        f'[sandbox]\ncommand = {toml_list(SLEEPER)}\nmemory_max = "96M"\npids_max = 40\ncpu_weight = 50\n',
    )
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha})
    await hivemind.until_state("alice", "running")
    record = _record(hivemind.hive, "alice")
    dirs = {k: Path(v) for k, v in record["cgroup"]["dirs"].items()}
    if record["cgroup"]["version"] == 1:
        assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(96 << 20)
        assert (dirs["pids"] / "pids.max").read_text().strip() == "40"
        assert (dirs["cpu"] / "cpu.shares").read_text().strip() == str(50 * 1024 // 100)
        procs_file = dirs["pids"] / "cgroup.procs"
    else:
        assert (dirs["unified"] / "memory.max").read_text().strip() == str(96 << 20)
        assert (dirs["unified"] / "pids.max").read_text().strip() == "40"
        procs_file = dirs["unified"] / "cgroup.procs"
    # Everything of the sandbox is in it: bwrap outside and in, and the program (once bwrap's set-up is
    # done), and its network's keeper (a root half that ends pasta, a forwarding half) and pasta.
    assert await _until(lambda: len(procs_file.read_text().split()) == 6, 5), procs_file.read_text()
    assert {record["pid"], record["init_pid"]} <= {int(p) for p in procs_file.read_text().split()}
    await hivemind.call("stop", name="alice")
    assert not any(d.exists() for d in dirs.values())


OOM = [PY, "-c", "import time; hog = b'x' * (400 << 20); time.sleep(60)"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: cgroup limits")
async def test_an_agent_past_its_memory_limit_is_a_crash_out_of_memory(hivemind: Hivemind) -> None:
    await hivemind.call("create_agent", name="alice")
    sha = await hivemind.propose("alice", f'[sandbox]\ncommand = {toml_list(OOM)}\nmemory_max = "128M"\n')
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha})
    crash = await hivemind.event("container_crash", timeout=20)
    assert crash["agent"] == "alice" and crash["reason"] == "out of memory" and crash["signal"] == "SIGKILL"


FORK_LOOP = r"""
import os, sys, time, json
tries, started, refused = int(sys.argv[1]), 0, 0
for _ in range(tries):
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        started += 1
    except BlockingIOError:
        refused += 1
with open("forks.json", "w") as f:
    json.dump({"started": started, "refused": refused}, f)
time.sleep(600)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: cgroup limits")
async def test_a_fork_loop_stops_at_pids_max_and_the_sandbox_is_killed_clean(hivemind: Hivemind) -> None:
    pids_max = 40
    await hivemind.call("create_agent", name="alice")
    state = AgentPaths.of(hivemind.hive.config, "alice").state
    (state / "forks.py").write_text(FORK_LOOP)
    command = [PY, str(state / "forks.py"), str(pids_max + 50)]
    sha = await hivemind.propose("alice", f"[sandbox]\ncommand = {toml_list(command)}\npids_max = {pids_max}\n")
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha})
    await hivemind.until_state("alice", "running")
    result = state / "forks.json"
    assert await _until(result.exists, 20), "the fork loop did not finish"
    forks = json.loads(result.read_text())
    # bwrap (outside and in) and the program count too: fewer than pids_max children.
    assert 0 < forks["started"] < pids_max and forks["refused"] >= 50, forks
    record = _record(hivemind.hive, "alice")
    assert len(_in_namespace(record["pidns"])) == forks["started"] + 2  # init, the program, its children

    begun = time.monotonic()
    await hivemind.call("agent_status", name="alice")  # the host (and the server) still answer at once
    assert time.monotonic() - begun < 2
    with _holding_namespace(record["init_pid"]):
        await hivemind.call("kill", name="alice")
        assert not _in_namespace(record["pidns"])


FILL_TMP = """
import time
try:
    open("/tmp/big", "wb").write(b"x" * (8 << 20))
    result = "wrote"
except OSError as e:
    result = e.strerror
open("tmp.txt", "w").write(result)
time.sleep(600)
"""


async def test_tmp_is_size_limited(hivemind: Hivemind) -> None:
    await hivemind.call("create_agent", name="alice")
    state = AgentPaths.of(hivemind.hive.config, "alice").state
    (state / "tmp.py").write_text(FILL_TMP)
    sha = await hivemind.propose(
        "alice", f'[sandbox]\ncommand = {toml_list([PY, str(state / "tmp.py")])}\ntmp_max = "4M"\n'
    )
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha})
    assert await _until((state / "tmp.txt").exists, 10)
    assert (state / "tmp.txt").read_text() == "No space left on device"


async def test_a_state_dir_past_its_budget_warns_and_refuses_the_start(hive: Hive) -> None:
    hive.configure(
        f'[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n[sandbox]\nstate_max = "2M"\nstate_check_seconds = 1\n'
    )
    async with in_process(hive, "broker") as broker, in_process(hive, "lifecycle", stop_agents_on_exit=True) as lc:
        hivemind = Hivemind(hive, broker, lc)
        await hivemind.create("alice")
        state = AgentPaths.of(hive.config, "alice").state
        (state / "big").write_bytes(os.urandom(3 << 20))  # as the agent would, past its budget
        warning = await hivemind.event("state_over_budget", timeout=10)  # seen while it runs
        assert (warning["agent"], warning["budget"], warning["refused_start"]) == ("alice", "2M", False)
        assert warning["used"].endswith("M")

        await hivemind.call("stop", name="alice")
        with pytest.raises(ToolError, match=r"alice's state dir holds 3(\.\d)?M, past its budget of 2M"):
            await hivemind.call("start", name="alice")
        status = await hivemind.status("alice")
        assert status["state"] == "failed" and "state_max" in status["problem"]
        assert (await hivemind.event("state_over_budget"))["refused_start"] is True

        (state / "big").unlink()
        assert (await hivemind.call("start", name="alice"))["state"] == "running"
        assert (await hivemind.status("alice"))["problem"] is None


def _network_helpers() -> set[int]:
    """Live pasta and network keeper processes on this host."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            command = cmdline(int(entry.name))
            if "passt" in command or "pasta" in command or "sandbox_network" in command:
                found.add(int(entry.name))
    return found


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("pasta") is None, reason="needs root and pasta")
async def test_a_sandboxs_pasta_and_network_keeper_end_with_it(hivemind: Hivemind) -> None:
    """They held ~30 MB each: left behind at every stop, a few hundred filled the host's memory."""
    before = _network_helpers()
    await hivemind.create("alice", SLEEPER)  # network = "outbound", the default
    ours = _network_helpers() - before
    assert len(ours) >= 2, "a keeper and its pasta"
    await hivemind.call("stop", name="alice")
    assert await _until(lambda: not (ours & _network_helpers()), 2.0), f"left alive: {ours & _network_helpers()}"

    await hivemind.call("start", name="alice")
    ours = _network_helpers() - before
    first = _record(hivemind.hive, "alice")
    os.kill(first["pid"], signal.SIGKILL)  # a crash of the sandbox itself
    assert await _until(lambda: not (ours & _network_helpers()), 2.0), f"left alive: {ours & _network_helpers()}"


async def test_a_state_dir_problem_is_still_shown_after_the_lifecycle_server_restarts(hive: Hive) -> None:
    """Issue 12: the problem was kept in the server's memory only; a restart hid it until the next check."""
    budget = f'[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n[sandbox]\nstate_max = "2M"\n'
    hive.configure(budget + "state_check_seconds = 1\n")
    async with in_process(hive, "broker") as broker:
        async with in_process(hive, "lifecycle") as lc:  # its sandboxes outlive it
            hivemind = Hivemind(hive, broker, lc)
            await hivemind.create("alice")
            (AgentPaths.of(hive.config, "alice").state / "big").write_bytes(os.urandom(3 << 20))
            await hivemind.event("state_over_budget", timeout=10)
            assert "state_max" in (await hivemind.status("alice"))["problem"]
        hive.configure(budget + "state_check_seconds = 3600\n")  # no new measurement after the restart
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lc:
            hivemind = Hivemind(hive, broker, lc)
            [alice] = [a for a in (await hivemind.call("list_agents"))["agents"] if a["name"] == "alice"]
            assert alice["state"] == "running"
            assert alice["problem"] is not None and "past its budget of 2M" in alice["problem"], alice


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: enters a sandbox's mount namespace")
async def test_a_process_that_outlived_its_sandbox_cannot_read_the_next_instances_token(hivemind: Hivemind) -> None:
    await hivemind.create("alice", FORKER)
    paths = AgentPaths.of(hivemind.hive.config, "alice")
    token_file = json.loads(paths.hive_json.read_text())["token_file"]
    first = _record(hivemind.hive, "alice")
    await _until(lambda: len(_in_namespace(first["pidns"])) >= 3, 5)
    [main] = children_of(first["init_pid"])
    # What a survivor of this sandbox would see: its mount namespace, held open past its end.
    held = os.open(f"/proc/{main}/ns/mnt", os.O_RDONLY)

    def seen_by_survivor() -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--mount=/proc/self/fd/{held}", "cat", token_file]
        return subprocess.run(argv, pass_fds=[held], capture_output=True, text=True, timeout=10)

    try:
        before = seen_by_survivor()
        assert before.returncode == 0 and before.stdout.count(".") == 2, before  # its own token, a JWT
        await hivemind.call("restart", name="alice")
        await hivemind.until_state("alice", "running")
        live = current_instance(hivemind.hive.config.instances_dir, "alice")
        assert live is not None
        current = (paths.instance_credentials(live) / "token").read_text()  # what the new sandbox reads
        assert current != before.stdout
        after = seen_by_survivor()
        assert current not in after.stdout, "a survivor of the old sandbox read the new instance's token"
    finally:
        os.close(held)


def _held_namespaces() -> set[str]:
    """The namespaces this process (the in-process lifecycle server's) holds open through an fd."""
    held = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            held.add(str(fd.readlink()))
    return held


async def test_the_lifecycle_holds_a_sandboxs_pid_namespace_until_it_is_swept(hivemind: Hivemind) -> None:
    # A freed namespace's inode number names the next one made; the lifecycle signals "everything in
    # pid namespace N" (stop, sweep, a terminal's entry), so N must stay this sandbox's while it tracks it.
    await hivemind.create("alice", FORKER)
    record = _record(hivemind.hive, "alice")
    assert f"pid:[{record['pidns']}]" in _held_namespaces()
    await hivemind.call("stop", name="alice")
    assert f"pid:[{record['pidns']}]" not in _held_namespaces()
