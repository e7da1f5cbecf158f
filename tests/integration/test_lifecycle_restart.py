"""The lifecycle server stops and starts; the agents carry on, and nothing is lost track of."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hivetest import SLEEPER, Endpoint, Hive, Hivemind, ServerProcess, in_process, sandbox_process, toml_list

from hyperhive.servers.common.harnessdir import TOKEN_FILE
from hyperhive.servers.common.instances import current_instance
from hyperhive.servers.lifecycle.backends.base import Change
from hyperhive.servers.lifecycle.crash_handling import CrashHandling
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.sandbox_setup import SandboxSetup

pytestmark = pytest.mark.slow


def _configure(hive: Hive) -> None:
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\nrestart_backoff_seconds = 0.2")


async def _wait_for(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_sandboxes_outlive_the_server_and_are_watched_again(hive: Hive) -> None:
    _configure(hive)
    async with in_process(hive, "broker") as broker:
        async with in_process(hive, "lifecycle") as lifecycle:  # agents keep running when it stops
            first = Hivemind(hive, broker, lifecycle)
            await first.create("alice")
            before = await first.status("alice")
            program = sandbox_process(hive, "alice")
        assert Path(f"/proc/{program}").exists(), "the sandbox died with the server"

        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            second = Hivemind(hive, broker, lifecycle)
            after = await second.status("alice")
            assert after["state"] == "running" and after["started_at"] == before["started_at"]  # re-attached
            os.kill(program, signal.SIGKILL)  # the new server must notice, though it did not start it
            crash = await second.event("container_crash")
            assert (crash["agent"], crash["signal"], crash["will_restart"]) == ("alice", "SIGKILL", True)
            restarted = await second.until_state("alice", "running")
            assert restarted["started_at"] != before["started_at"] and restarted["restart_count"] == 1


async def test_the_manager_starts_first(hive: Hive) -> None:
    _configure(hive)
    async with in_process(hive, "broker") as broker:
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            hivemind = Hivemind(hive, broker, lifecycle)
            for name in ("alice", "bob"):
                await hivemind.create(name)
        # Stopping the hive stopped every agent but remembered they should run.
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            listing = await lifecycle.client("operator").call("list_agents", {})
            started = {agent["name"]: agent["started_at"] for agent in listing["agents"]}
            assert all(agent["state"] == "running" for agent in listing["agents"])
            assert started["manager"] < started["alice"] and started["manager"] < started["bob"]


@pytest.fixture
def lifecycle_process(hive: Hive) -> Iterator[ServerProcess]:
    process = ServerProcess(hive, "lifecycle")
    yield process
    process.kill_if_running()
    # Whatever the test left running: take the agents down through a server that stops them.
    cleanup = ServerProcess(hive, "lifecycle", "--stop-agents-on-exit").start()
    cleanup.stop()


async def test_a_killed_lifecycle_server_loses_no_agent(hive: Hive, lifecycle_process: ServerProcess) -> None:
    _configure(hive)
    async with in_process(hive, "broker") as broker:
        lifecycle_process.start()
        hivemind = Hivemind(hive, broker, Endpoint(hive, lifecycle_process.url, server="lifecycle"))
        await hivemind.create("alice")
        await hivemind.create("bob")
        bob_before = await hivemind.status("bob")
        await hivemind.operator.close()
        await hivemind.approvals.close()

        lifecycle_process.stop(signal.SIGKILL)  # no clean-up of any kind
        os.kill(sandbox_process(hive, "alice"), signal.SIGKILL)  # alice dies while nobody watches
        await asyncio.sleep(0.3)

        lifecycle_process.start()
        hivemind = Hivemind(hive, broker, Endpoint(hive, lifecycle_process.url, server="lifecycle"))
        crash = await hivemind.event("container_crash")  # reported once the server is back
        assert (crash["agent"], crash["exit_code"]) == ("alice", 137)
        alice = await hivemind.until_state("alice", "running")  # it should run, so it runs again
        assert alice["last_signal"] == "SIGKILL"
        bob = await hivemind.status("bob")
        assert bob["state"] == "running" and bob["started_at"] == bob_before["started_at"]  # untouched
        await hivemind.operator.close()


async def test_a_run_found_ended_at_boot_never_ends_the_run_started_in_its_place(
    hive: Hive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fresh-clone CI race: alice died while no server watched; the new server marks her stopped
    (reconcile) and starts her again, while its crash handling handles her old run's end. That must
    not end the new run's instance (its token dir removed under the start: the server exited 3)."""
    _configure(hive)
    prepared, handled = threading.Event(), threading.Event()
    prepare_start, on_change = SandboxSetup.prepare_start, CrashHandling._on_change

    def slow_prepare_start(setup: SandboxSetup, name: str, *args: Any) -> Any:
        spec = prepare_start(setup, name, *args)
        if name == "alice":  # the new run's token is written: now the old run's end is handled
            prepared.set()
            handled.wait(15)
        return spec

    async def late_on_change(crashes: CrashHandling, change: Change) -> None:
        if change.name == "alice":
            assert await asyncio.to_thread(prepared.wait, 15), "alice was not started again"
        try:
            await on_change(crashes, change)
        finally:
            if change.name == "alice":
                handled.set()

    async with in_process(hive, "broker") as broker:
        async with in_process(hive, "lifecycle") as lifecycle:  # agents keep running when it stops
            await Hivemind(hive, broker, lifecycle).create("alice")
        os.kill(sandbox_process(hive, "alice"), signal.SIGKILL)  # alice dies while nobody watches
        await asyncio.sleep(0.3)

        monkeypatch.setattr(SandboxSetup, "prepare_start", slow_prepare_start)
        monkeypatch.setattr(CrashHandling, "_on_change", late_on_change)
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            hivemind = Hivemind(hive, broker, lifecycle)
            crash = await hivemind.event("container_crash")
            assert (crash["agent"], crash["exit_code"]) == ("alice", 137)
            assert handled.is_set()  # the interleaving was the one forced
            alice = await hivemind.until_state("alice", "running", "failed")
            assert alice["state"] == "running" and alice["last_signal"] == "SIGKILL"
            # The token alice runs with names the live instance, in the dir bound into her sandbox.
            instance = current_instance(hive.config.instances_dir, "alice")
            runs = list((hive.home / "instance-credentials" / "alice").iterdir())
            assert [run.name for run in runs] == [instance]
            assert (runs[0] / TOKEN_FILE).is_file()


async def test_an_agent_that_cannot_start_at_boot_fails_alone(hive: Hive) -> None:
    """Its own files are hostile: alice's hive.json made a directory (her uid owns the dir it is in)
    broke her start at boot with an OSError, and that took the whole lifecycle server down (exit 3)."""
    _configure(hive)
    async with in_process(hive, "broker") as broker:
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            hivemind = Hivemind(hive, broker, lifecycle)
            for name in ("alice", "bob"):
                await hivemind.create(name)
        hive_json = AgentPaths.of(hive.config, "alice").hive_json
        hive_json.unlink()
        (hive_json / "planted").mkdir(parents=True)

        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:  # it comes up
            hivemind = Hivemind(hive, broker, lifecycle)
            alice, bob = await hivemind.status("alice"), await hivemind.status("bob")
            assert (alice["state"], bob["state"]) == ("failed", "running")
            entry = (await hivemind.call("audit", agent="alice", limit=1))["entries"][0]
            assert (entry["action"], entry["actor"], entry["outcome"]) == ("start", "lifecycle", "refused")
            assert "hive.json" in entry["detail"] and "Is a directory" in entry["detail"]


async def test_an_unprivileged_server_uses_a_user_namespace_and_says_so(hive: Hive) -> None:
    _configure(hive)
    # A user namespace where this process is uid 1000: the lifecycle server is not root there.
    unprivileged = ("unshare", "--user", "--map-user=1000", "--map-group=1000", "--")
    lifecycle = ServerProcess(hive, "lifecycle", "--stop-agents-on-exit", prefix=unprivileged)
    async with in_process(hive, "broker") as broker:
        lifecycle.start()
        try:
            hivemind = Hivemind(hive, broker, Endpoint(hive, lifecycle.url, server="lifecycle"))
            listing = await hivemind.call("list_agents")
            assert "user namespace" in listing["isolation"] and "uid 1000" in listing["isolation"]
            await hivemind.create("alice")
            status = await hivemind.status("alice")
            assert status["state"] == "running" and status["uid"] is None
            await hivemind.call("stop", name="alice")
            await hivemind.operator.close()
            await hivemind.approvals.close()
        finally:
            assert lifecycle.stop() == 0


async def test_a_sandbox_holds_none_of_the_servers_descriptors(hive: Hive, lifecycle_process: ServerProcess) -> None:
    """No listening socket, database or log of the server may leak into an agent's sandbox."""
    _configure(hive)
    async with in_process(hive, "broker") as broker:
        lifecycle_process.start()  # a real `hive serve lifecycle`: its event loop spawns the sandboxes
        hivemind = Hivemind(hive, broker, Endpoint(hive, lifecycle_process.url, server="lifecycle"))
        # ls inherits whatever its shell inherited; it opens only fd 3 itself, to read the directory.
        await hivemind.create("alice", ["/bin/sh", "-c", "ls -l /proc/self/fd; sleep 3600"])
        await asyncio.sleep(0.5)
        listing = (await hivemind.call("logs", name="alice", lines=30))["lines"]
        fds = {line.split()[8]: line.split("->")[-1].strip() for line in listing if "->" in line}
        assert set(fds) <= {"0", "1", "2", "3"}, fds
        assert fds["0"] == "/dev/null" and fds["1"].endswith("logs/alice.log")
        await hivemind.operator.close()
        await hivemind.approvals.close()


async def test_start_up_rebuilds_agents_built_by_another_version(hive: Hive) -> None:
    _configure(hive)
    async with in_process(hive, "broker") as broker:
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            await Hivemind(hive, broker, lifecycle).create("alice")
        with sqlite3.connect(hive.config.db_path("lifecycle")) as db:  # as if built by an older hyperhive
            db.execute("UPDATE agents SET built_version = '0.0.1' WHERE name = 'alice'")
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            hivemind = Hivemind(hive, broker, lifecycle)
            assert (await hivemind.event("rebuilt"))["agent"] == "alice"
            alice = await hivemind.status("alice")
            assert alice["state"] == "running" and not alice["needs_update"]
