"""The supervisor over both sandbox backends: bubblewrap for real, and nixos-container against the
stand-in systemd (a fake org.freedesktop.systemd1 on a real D-Bus, with Restart=on-failure as on
NixOS) and the stand-in `nixos-container`. Crashes, restarts (ours, or systemd's own), stops and
rebuilds must leave the agent's recorded state telling the truth about its sandbox."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import version as package_version

import pytest
from fakes.nixos_host import Tools
from fakes.systemd1 import DBusDaemon, FakeSystemd
from hivetest import SLEEPER, Hive, Hivemind, in_process, sandbox_process, toml_list

from hyperhive.servers.lifecycle.backends.base import SandboxBackend
from hyperhive.servers.lifecycle.backends.bwrap import BwrapBackend
from hyperhive.servers.lifecycle.backends.nixos import NixosContainerBackend
from hyperhive.servers.lifecycle.version import installed_version

pytestmark = pytest.mark.slow


@dataclass
class Platform:
    """One backend under a running lifecycle server, and what a test does to its sandboxes from outside."""

    hivemind: Hivemind
    backend: SandboxBackend
    systemd: FakeSystemd | None = None  # nixos-container only
    tools: Tools | None = None

    @property
    def nixos(self) -> bool:
        return self.systemd is not None

    def crash(self, name: str) -> None:
        """The sandbox dies of SIGKILL, as the OOM killer would do it."""
        if self.systemd is not None:
            self.systemd.unit(name).crash(signal=signal.SIGKILL)
        else:
            os.kill(sandbox_process(self.hivemind.hive, name), signal.SIGKILL)

    def slow_comeback(self, seconds: float) -> None:
        """Whoever restarts a crashed sandbox (we, or systemd) waits this long first."""
        if self.systemd is not None:
            self.systemd.unit("alice").restart_delay = seconds

    async def running(self) -> set[str]:
        return set(await self.backend.list())

    def builds(self, name: str) -> list[str]:
        """The nixos-container verbs run to build `name`'s container (create, update), in order."""
        assert self.tools is not None
        return [argv[0] for argv in self.tools.nixos_commands() if argv[0] in ("create", "update") and argv[1] == name]


@pytest.fixture(params=["bwrap", "nixos-container"])
async def platform(
    request: pytest.FixtureRequest, hive: Hive, tools: Tools, bus: DBusDaemon, systemd: FakeSystemd
) -> AsyncIterator[Platform]:
    """A broker and a lifecycle server on `request.param`'s backend (the stand-ins idle under bwrap)."""
    settings = f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\nrestart_backoff_seconds = 0.2\n"
    backend: SandboxBackend
    if request.param == "bwrap":
        hive.configure(settings)
        backend = BwrapBackend(hive.config)
    else:
        nixos = f'[lifecycle.nixos]\nflake = "github:example/hyperhive"\nconf_dir = "{tools.conf_dir}"'
        hive.configure(f"{settings}\n{nixos}")
        backend = NixosContainerBackend(hive.config, bus_address=bus.address)
    async with (
        in_process(hive, "broker") as broker,
        in_process(hive, "lifecycle", backend=backend, stop_agents_on_exit=True) as lifecycle,
    ):
        hivemind = Hivemind(hive, broker, lifecycle)
        if request.param == "bwrap":
            yield Platform(hivemind, backend)
        else:
            yield Platform(hivemind, backend, systemd, tools)


async def _create_alice(platform: Platform) -> dict[str, object]:
    await platform.hivemind.create("alice")
    return await platform.hivemind.status("alice")


async def test_a_crashed_sandbox_comes_back_and_the_agent_is_running_again(platform: Platform) -> None:
    hivemind = platform.hivemind
    before = await _create_alice(platform)

    platform.crash("alice")

    crash = await hivemind.event("container_crash")
    assert (crash["agent"], crash["signal"], crash["will_restart"]) == ("alice", "SIGKILL", True)
    # bwrap: our restart after the backoff; nixos-container: systemd's own (Restart=on-failure).
    after = await hivemind.until_state("alice", "running")
    assert after["started_at"] != before["started_at"] and after["restart_count"] == 1
    assert after["last_signal"] == "SIGKILL"
    assert "alice" in await platform.running()

    platform.crash("alice")  # and again: each come-back is seen
    assert (await hivemind.event("container_crash"))["will_restart"] is True
    again = await hivemind.until_state("alice", "running")
    assert again["restart_count"] == 2 and again["started_at"] != after["started_at"]


async def test_stop_while_it_comes_back_from_a_crash_stops_it_for_good(platform: Platform) -> None:
    hivemind = platform.hivemind
    await _create_alice(platform)
    platform.slow_comeback(1.0)

    platform.crash("alice")
    await hivemind.event("container_crash")
    stopped = await hivemind.call("stop", name="alice")

    assert (stopped["state"], stopped["desired"]) == ("stopped", "stopped")
    await asyncio.sleep(1.5)  # past the moment it would have come back
    assert (await hivemind.status("alice"))["state"] == "stopped"
    assert "alice" not in await platform.running()
    with pytest.raises(AssertionError):  # the stop was asked for: no second crash report
        await hivemind.event("container_crash", timeout=0.5)


async def test_stop_then_start_of_a_running_agent(platform: Platform) -> None:
    hivemind = platform.hivemind
    await _create_alice(platform)

    stopped = await hivemind.call("stop", name="alice")

    assert stopped["state"] == "stopped"
    assert "alice" not in await platform.running()
    await asyncio.sleep(0.5)
    assert (await hivemind.status("alice"))["state"] == "stopped"
    with pytest.raises(AssertionError):  # a stop is not a crash
        await hivemind.event("container_crash", timeout=0.5)
    assert (await hivemind.call("start", name="alice"))["state"] == "running"
    assert "alice" in await platform.running()


async def test_rebuild_of_a_running_agent_rebuilds_and_restarts_its_sandbox(platform: Platform) -> None:
    hivemind = platform.hivemind
    before = await _create_alice(platform)
    builds = platform.builds("alice") if platform.nixos else []

    rebuilt = await hivemind.call("rebuild", name="alice")

    assert rebuilt["state"] == "running" and rebuilt["started_at"] != before["started_at"]
    assert (await hivemind.event("rebuilt"))["agent"] == "alice"
    if platform.nixos:
        assert platform.builds("alice") == [*builds, "update"]  # the container is rebuilt, not only restarted


async def test_update_all_rebuilds_agents_built_by_another_hyperhive(platform: Platform) -> None:
    hivemind = platform.hivemind
    before = await _create_alice(platform)
    builds = platform.builds("alice") if platform.nixos else []
    with sqlite3.connect(hivemind.hive.config.db_path("lifecycle")) as db:  # as if built by an older hyperhive
        db.execute("UPDATE agents SET built_version = '0.0.1' WHERE name = 'alice'")
    assert (await hivemind.status("alice"))["needs_update"]

    # What agents are built with is the installed hyperhive's files, not only its release number.
    assert (await hivemind.call("list_agents"))["version"] == installed_version() != package_version("hyperhive")
    assert await hivemind.call("rebuild_stale") == {"rebuilt": ["alice"]}

    after = await hivemind.status("alice")
    assert after["state"] == "running" and not after["needs_update"]
    assert after["started_at"] != before["started_at"]
    if platform.nixos:
        assert platform.builds("alice") == [*builds, "update"]


async def test_when_systemd_gives_up_restarting_it_we_restart_it(platform: Platform) -> None:
    if platform.systemd is None:
        pytest.skip("bwrap has no init of its own that restarts sandboxes")
    hivemind = platform.hivemind
    await _create_alice(platform)
    unit = platform.systemd.unit("alice")
    unit.restart_delay = 0.3

    platform.crash("alice")
    assert (await hivemind.event("container_crash"))["will_restart"] is True
    unit.restart_on_failure, unit.fail_start = False, 1  # systemd's restart fails, and it stops trying

    crash = await hivemind.event("container_crash")
    assert (crash["exit_code"], crash["will_restart"]) == (1, True)  # [sandbox] max_restarts: ours now
    after = await hivemind.until_state("alice", "running")
    assert after["restart_count"] == 1 and unit.active == "active"
