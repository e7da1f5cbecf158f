"""Contract test of the nixos-container backend against stand-ins for what NixOS provides.

systemd is a fake `org.freedesktop.systemd1` on a private dbus-daemon (fakes/systemd1.py), so
every start, stop and crash goes over a real bus; nixos-container and journalctl are stand-in
scripts on PATH (fakes/bin) that record their command lines. The exact command lines and D-Bus
calls asserted here are the backend's contract with NixOS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shlex
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus
from fakes.nixos_host import Tools
from fakes.systemd1 import DBusDaemon, FakeSystemd

from hyperhive.servers.common.config import HiveConfig, LifecycleSettings, NixosSettings
from hyperhive.servers.lifecycle.backends import nixos_units
from hyperhive.servers.lifecycle.backends.base import BackendError, Change, Mount, Restarted, Running, SandboxSpec
from hyperhive.servers.lifecycle.backends.nixos import NixosContainerBackend
from hyperhive.servers.lifecycle.backends.nixos_conf import container_conf
from hyperhive.servers.lifecycle.backends.nixos_flake import AgentFlake, nix_string, render_flake
from hyperhive.servers.lifecycle.backends.nixos_units import bus_escape, bus_unescape, is_new_stop
from hyperhive.servers.lifecycle.cgroups import Limits

pytestmark = pytest.mark.slow

FLAKE_REF = "github:example/hyperhive"
UNIT = "container@alice.service"
AGENT_UID = 200_001


# -------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def config(tmp_path: Path, tools: Tools) -> HiveConfig:
    nixos_settings = NixosSettings(flake=FLAKE_REF, conf_dir=tools.conf_dir)
    return HiveConfig(home=tmp_path / "hive", lifecycle=LifecycleSettings(nixos=nixos_settings))


@pytest.fixture
async def backend(config: HiveConfig, bus: DBusDaemon, systemd: FakeSystemd) -> AsyncIterator[NixosContainerBackend]:
    backend = NixosContainerBackend(config, bus_address=bus.address)
    await backend.connect()
    yield backend
    await backend.close()


def make_spec(
    config: HiveConfig,
    name: str = "alice",
    *,
    shared_rw: tuple[Path, ...] = (),
    limits: Limits | None = None,
    tmp_max: int | None = None,
    network: str = "host",
) -> SandboxSpec:
    home = config.home
    spec = SandboxSpec(
        name=name,
        role="agent",
        command=["hive-harness", "--agent", name],
        env={"PATH": "/run/current-system/sw/bin", "HIVE_AGENT": name},
        uid=AGENT_UID,
        state_dir=home / "agents" / name / "state",
        harness_dir=home / "agents" / name / "harness",
        credentials_dir=home / "credentials" / name,
        applied_dir=home / "applied" / name,
        log_path=home / "logs" / f"{name}.log",
        shared_rw=shared_rw,
        limits=limits or Limits(),
        tmp_max=tmp_max,
        network=network,
    )
    for directory in (spec.state_dir, spec.harness_dir, spec.credentials_dir, spec.applied_dir):
        directory.mkdir(parents=True, exist_ok=True)
    (spec.applied_dir / "agent.toml").write_text('role = "agent"\n')
    return spec


async def next_change(stream: AsyncIterator[Change | Restarted]) -> Change | Restarted:
    return await asyncio.wait_for(anext(stream), 10)


def expected_flags(spec: SandboxSpec) -> str:
    s, h, c = spec.state_dir, spec.harness_dir, spec.credentials_dir
    return f'EXTRA_NSPAWN_FLAGS="--bind={s}:{s} --bind={h}:{h} --bind-ro={c}:{h}/credentials"'


# ---------------------------------------------------------------------------- nixos-container


async def test_create_renders_the_flake_runs_nixos_container_and_binds_the_agent_dirs(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools
) -> None:
    spec = make_spec(config)
    await backend.create(spec)

    flake_dir = config.run_dir / "lifecycle" / "flakes" / "alice"
    assert tools.nixos_commands() == [
        ["list"],
        ["create", "alice", "--flake", f"path:{flake_dir}#container"],
    ]
    assert sorted(p.name for p in flake_dir.iterdir()) == ["flake.nix"]
    flake = (flake_dir / "flake.nix").read_text()  # render_flake's exact text is tested below
    assert f'inputs.hyperhive.url = "{FLAKE_REF}";' in flake
    assert 'name = "alice";' in flake
    assert f"uid = {AGENT_UID};" in flake
    assert "agent.nix" not in flake
    # nixos-container's own lines stay, but on the host's network; the bind mounts are added.
    assert (tools.conf_dir / "alice.conf").read_text().splitlines() == [
        "PRIVATE_NETWORK=0",
        "HOST_ADDRESS=",
        "LOCAL_ADDRESS=",
        "HOST_BRIDGE=",
        "HOST_PORT=",
        "AUTO_START=0",
        f"FLAKE=path:{flake_dir}",
        expected_flags(spec),
    ]


async def test_create_of_an_existing_container_updates_it_and_replaces_the_binds(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools
) -> None:
    await backend.create(make_spec(config))
    flake_dir = config.run_dir / "lifecycle" / "flakes" / "alice"
    (flake_dir / "flake.lock").write_text("{}")  # as nix leaves it
    shared = config.agents_dir
    spec = make_spec(config, shared_rw=(shared,))
    (spec.applied_dir / "agent.nix").write_text("{ pkgs, ... }: { environment.systemPackages = [ pkgs.jq ]; }\n")

    await backend.create(spec)
    await backend.update(spec)

    ref = f"path:{flake_dir}#container"
    assert tools.nixos_commands()[2:] == [["list"], ["update", "alice", "--flake", ref]] * 2
    assert sorted(p.name for p in flake_dir.iterdir()) == ["agent.nix", "flake.nix"]  # the lock is gone
    assert "        ./agent.nix\n" in (flake_dir / "flake.nix").read_text()
    conf = (tools.conf_dir / "alice.conf").read_text().splitlines()
    assert [line for line in conf if line.startswith("EXTRA_NSPAWN_FLAGS=")] == [
        expected_flags(spec)[:-1] + f' --bind={shared}:{shared}"'
    ]
    assert conf[0] == "PRIVATE_NETWORK=0"

    (spec.applied_dir / "agent.nix").unlink()
    await backend.update(spec)
    assert sorted(p.name for p in flake_dir.iterdir()) == ["flake.nix"]


async def test_an_agent_without_its_own_uid_is_refused_before_anything_runs(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools
) -> None:
    spec = dataclasses.replace(make_spec(config), uid=None)
    with pytest.raises(BackendError, match="only a lifecycle server running as root hands out"):
        await backend.create(spec)
    assert tools.nixos_commands() == []


async def test_a_failing_nixos_container_is_a_backend_error_with_its_stderr(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NIXOS_FAIL", "create")
    flake_dir = config.run_dir / "lifecycle" / "flakes" / "alice"
    with pytest.raises(BackendError) as error:
        await backend.create(make_spec(config))
    message = str(error.value)
    argv = ["nixos-container", "create", "alice", "--flake", f"path:{flake_dir}#container"]
    assert f"`{shlex.join(argv)}` failed with exit code 1:" in message
    assert "builder for '/nix/store/0000-nixos-system-x.drv' failed" in message
    assert "nixos-container: failed to build container from flake" in message
    assert not (tools.conf_dir / "alice.conf").exists()


async def test_update_of_a_container_destroyed_behind_our_back_creates_it_again(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools
) -> None:
    spec = make_spec(config)
    await backend.create(spec)
    (tools.conf_dir / "alice.conf").unlink()  # `nixos-container destroy alice` by hand

    await backend.update(spec)

    flake_dir = config.run_dir / "lifecycle" / "flakes" / "alice"
    assert tools.nixos_commands()[2:] == [["list"], ["create", "alice", "--flake", f"path:{flake_dir}#container"]]
    assert (tools.conf_dir / "alice.conf").read_text().endswith(f"\n{expected_flags(spec)}\n")


async def test_the_shared_workspace_and_binds_are_the_containers_bind_mounts(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools
) -> None:
    shared, data = config.home / "shared", Path("/srv/data")
    spec = dataclasses.replace(
        make_spec(config),
        mounts=(Mount(shared, Path("/hive/shared"), read_only=False), Mount(data, Path("/data"), read_only=True)),
        groups=(209_999,),
    )
    await backend.create(spec)
    flake = (config.run_dir / "lifecycle" / "flakes" / "alice" / "flake.nix").read_text()
    assert "sharedGid = 209999;" in flake  # the harness's supplementary group (nix/agent-base.nix)
    flags = expected_flags(spec)[:-1] + f' --bind={shared}:/hive/shared --bind-ro={data}:/data"'
    assert flags in (tools.conf_dir / "alice.conf").read_text().splitlines()

    # shared = "ro" and a bind dropped: the next update says so.
    await backend.update(dataclasses.replace(spec, mounts=(Mount(shared, Path("/hive/shared"), read_only=True),)))
    flags = expected_flags(spec)[:-1] + f' --bind-ro={shared}:/hive/shared"'
    assert flags in (tools.conf_dir / "alice.conf").read_text().splitlines()


async def test_a_bind_path_the_start_script_would_split_is_refused_before_anything_runs(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools
) -> None:
    spec = make_spec(config, shared_rw=(config.home / "shared dir",))
    with pytest.raises(BackendError, match="shared dir"):
        await backend.create(spec)
    assert tools.nixos_commands() == []


async def test_destroy_stops_the_container_then_destroys_it_and_its_flake(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools, systemd: FakeSystemd
) -> None:
    spec = make_spec(config)
    await backend.create(spec)
    await backend.start(spec)
    (spec.state_dir / "notes.md").write_text("what alice keeps\n")

    await backend.destroy("alice")

    assert systemd.actions() == [("StartUnit", UNIT, "replace"), ("StopUnit", UNIT, "replace")]
    assert tools.nixos_commands()[-1] == ["destroy", "alice"]
    assert not (tools.conf_dir / "alice.conf").exists()
    assert not (config.run_dir / "lifecycle" / "flakes" / "alice").exists()
    # The agent's own files live on the host, bound in: destroying the container keeps them.
    assert (spec.state_dir / "notes.md").read_text() == "what alice keeps\n"
    assert spec.harness_dir.is_dir() and spec.applied_dir.is_dir()
    await backend.destroy("alice")  # nothing left: still fine
    assert systemd.actions()[-1] == ("StopUnit", UNIT, "replace")  # not stopped again


# ------------------------------------------------------------------------------- systemd units


async def test_start_list_and_stop_go_through_systemd(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    spec = make_spec(config)
    before = time.time()
    running = await backend.start(spec)

    unit = systemd.unit("alice")
    assert unit.active == "active"
    assert running == Running("alice", started_at=unit.active_enter / 1e6, pid=unit.service["MainPID"])
    assert before <= running.started_at <= time.time()
    assert systemd.actions() == [("StartUnit", UNIT, "replace")]
    assert ("Subscribe",) in systemd.calls
    # What the container's harness unit runs: this start's command and environment, the agent's own file.
    handed = spec.credentials_dir / "sandbox.json"
    assert json.loads(handed.read_text()) == {"command": spec.command, "env": spec.env, "cwd": str(spec.state_dir)}
    assert (handed.stat().st_mode & 0o777, handed.stat().st_uid) == (
        0o600,
        AGENT_UID if os.geteuid() == 0 else os.geteuid(),
    )
    assert await backend.list() == {"alice": running}
    assert await backend.start(spec) == running  # already up: nothing changes

    await backend.stop("alice", timeout=5)

    assert unit.active == "inactive"
    assert systemd.actions() == [("StartUnit", UNIT, "replace")] * 2 + [("StopUnit", UNIT, "replace")]
    assert await backend.list() == {}
    await backend.stop("alice", timeout=5)  # stopped already: no call
    assert len(systemd.actions()) == 3


async def test_list_shows_only_running_agent_containers(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    for name in ("alice", "bob"):
        await backend.start(make_spec(config, name))
    await backend.stop("bob", timeout=5)
    for other in ("container@Web.service", "container@root.service"):  # not agent names
        systemd.load(other).set_state("active", "running")

    assert set(await backend.list()) == {"alice"}


async def test_stop_sends_sigkill_to_every_process_after_the_timeout(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    spec = make_spec(config)
    await backend.start(spec)
    systemd.unit("alice").ignore_sigterm = True

    began = time.monotonic()
    await backend.stop("alice", timeout=0.3)

    assert time.monotonic() - began >= 0.3
    assert systemd.actions()[1:] == [("StopUnit", UNIT, "replace"), ("KillUnit", UNIT, "all", 9)]
    assert systemd.unit("alice").active == "failed"


async def test_kill_queues_a_stop_first_so_systemd_does_not_restart_the_container(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    await backend.start(make_spec(config))
    unit = systemd.unit("alice")
    unit.ignore_sigterm = True  # only the SIGKILL ends it

    await backend.kill("alice")

    assert systemd.actions()[1:] == [("StopUnit", UNIT, "replace"), ("KillUnit", UNIT, "all", 9)]
    await asyncio.sleep(unit.restart_delay * 3)
    assert (unit.active, unit.service["ExecMainCode"], unit.service["ExecMainStatus"]) == ("failed", 2, 9)


async def test_restart_is_one_systemd_job_and_returns_the_new_process(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    spec = make_spec(config)
    first = await backend.start(spec)

    second = await backend.restart(spec, timeout=5)

    assert systemd.actions()[1:] == [("RestartUnit", UNIT, "replace")]
    assert second.pid != first.pid
    assert second.started_at > first.started_at
    assert systemd.unit("alice").active == "active"


async def test_restart_sends_sigkill_when_the_stop_takes_too_long(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    spec = make_spec(config)
    first = await backend.start(spec)
    systemd.unit("alice").ignore_sigterm = True

    second = await backend.restart(spec, timeout=0.3)

    assert systemd.actions()[1:] == [("RestartUnit", UNIT, "replace"), ("KillUnit", UNIT, "all", 9)]
    assert second.pid != first.pid


@pytest.mark.parametrize("restart_on_failure", [False, True], ids=["to-failed", "to-auto-restart"])
async def test_a_container_that_fails_to_start_is_a_backend_error_naming_the_result(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd, restart_on_failure: bool
) -> None:
    unit = systemd.unit("alice")
    unit.restart_on_failure = restart_on_failure
    unit.fail_start = 3

    with pytest.raises(BackendError, match=r"container@alice.service did not start: .*Result=exit-code, exit status 3"):
        await backend.start(make_spec(config))


async def test_start_after_a_failure_waits_for_the_new_start(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    unit = systemd.unit("alice")
    unit.restart_on_failure = False
    unit.fail_start = 1
    spec = make_spec(config)
    with pytest.raises(BackendError):
        await backend.start(spec)
    assert unit.active == "failed"

    running = await backend.start(spec)  # the old failure is not this start's

    assert running.pid == unit.service["MainPID"]


# ------------------------------------------------------------------------------- sandbox limits

LIMITS = [("MemoryMax", 512 * 2**20), ("TasksMax", 64), ("CPUWeight", 50)]


async def test_every_start_sets_the_limits_on_the_unit_and_they_hold_through_systemds_restarts(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    spec = make_spec(config, limits=Limits(memory_max=512 * 2**20, pids_max=64, cpu_weight=50))
    stream = backend.changes()
    await backend.start(spec)

    # Runtime properties (a drop-in under /run), set before the unit starts, and again at every start.
    limits_call = ("SetUnitProperties", UNIT, True, LIMITS)
    assert systemd.calls.index(limits_call) < systemd.calls.index(("StartUnit", UNIT, "replace"))
    applied = await backend.units.properties("alice", "org.freedesktop.systemd1.Service")  # read back over the bus
    assert [(key, applied[key]) for key, _ in LIMITS] == LIMITS
    unit = systemd.unit("alice")
    unit.crash(signal=9)  # the OOM killer; systemd restarts it by itself, with the same limits
    assert (await next_change(stream)).auto_restarting  # type: ignore[union-attr]
    assert isinstance(await next_change(stream), Restarted)
    assert list(unit.resources.items()) == LIMITS

    await backend.stop("alice", timeout=5)
    await backend.start(make_spec(config))  # a limit dropped from the config is lifted at the next start
    assert set(unit.resources.values()) == {2**64 - 1}


async def test_tmp_is_a_tmpfs_of_tmp_max_bytes_from_the_next_start_on(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools
) -> None:
    spec = make_spec(config)
    await backend.create(spec)
    assert "--tmpfs" not in (tools.conf_dir / "alice.conf").read_text()

    sized = make_spec(config, tmp_max=64 * 2**20)
    await backend.start(sized)  # the unit's start script reads NAME.conf at every start: written then too

    conf = (tools.conf_dir / "alice.conf").read_text().splitlines()
    assert f'{expected_flags(sized)[:-1]} --tmpfs=/tmp:mode=1777,size={64 * 2**20}"' in conf
    assert "PRIVATE_NETWORK=0" in conf


@pytest.mark.parametrize("network", ["outbound", "hive-only"])
async def test_a_network_a_container_cannot_honour_is_refused_before_anything_runs(
    backend: NixosContainerBackend, config: HiveConfig, tools: Tools, systemd: FakeSystemd, network: str
) -> None:
    spec = make_spec(config, network=network)
    for action in (backend.create, backend.start):
        with pytest.raises(BackendError, match=rf'network = "{network}", which the nixos-container backend cannot'):
            await action(spec)
    assert tools.nixos_commands() == [] and systemd.actions() == []
    assert backend.default_network == "host"  # what an agent.toml without a network gets here


# ------------------------------------------------------------------------------------ changes()


async def test_a_crash_to_failed_is_reported_once_with_its_exit_code_or_signal(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    spec = make_spec(config)
    unit = systemd.unit("alice")
    unit.restart_on_failure = False
    stream = backend.changes()
    await backend.start(spec)

    before = time.time()
    unit.crash(exit_code=3)
    change = await next_change(stream)
    assert change == Change("alice", at=change.at, exit_code=3, restarts=0)
    assert before <= change.at <= time.time()

    unit.touch()  # failed again: not a new stop
    await backend.start(spec)
    unit.crash(signal=11)
    change = await next_change(stream)  # the next change is this crash: the touch() was not one
    assert change == Change("alice", at=change.at, signal=11, restarts=0)


async def test_crashes_systemd_restarts_itself_are_reported_as_auto_restarting(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    unit = systemd.unit("alice")  # Restart=on-failure, as on NixOS
    stream = backend.changes()
    await backend.start(make_spec(config))

    unit.crash(signal=9)
    change = await next_change(stream)
    assert change == Change("alice", at=change.at, signal=9, auto_restarting=True, restarts=0)

    await unit.wait_for("active")  # systemd brought it back
    assert unit.service["NRestarts"] == 1
    back = await next_change(stream)  # and says so: the lifecycle server marks it running again
    assert back == Restarted("alice", Running("alice", unit.active_enter / 1e6, unit.service["MainPID"]))
    unit.crash(exit_code=1)
    change = await next_change(stream)
    assert change == Change("alice", at=change.at, exit_code=1, auto_restarting=True, restarts=1)

    await unit.wait_for("active")
    assert isinstance(await next_change(stream), Restarted)
    unit.crash(exit_code=2, restart=False)  # systemd gives up (its start limit)
    change = await next_change(stream)
    assert change == Change("alice", at=change.at, exit_code=2, auto_restarting=False, restarts=2)


async def test_stops_asked_for_and_clean_exits_are_reported_too(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd
) -> None:
    spec = make_spec(config)
    stream = backend.changes()
    await backend.start(spec)
    await backend.stop("alice", timeout=5)
    change = await next_change(stream)
    assert change == Change("alice", at=change.at, exit_code=0, restarts=0)

    await backend.start(spec)
    systemd.unit("alice").exit(0)
    change = await next_change(stream)
    assert change == Change("alice", at=change.at, exit_code=0, restarts=0)


async def test_changes_of_other_units_and_from_other_senders_are_ignored(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd, bus: DBusDaemon
) -> None:
    stream = backend.changes()
    await backend.start(make_spec(config))
    web = systemd.load("container@Web.service")
    web.restart_on_failure = False
    web.set_state("active", "running")
    web.crash(exit_code=9)  # a container, but not an agent's
    spoofer = await MessageBus(bus_address=bus.address).connect()
    changed = {"ActiveState": Variant("s", "failed"), "SubState": Variant("s", "failed")}
    body = ["org.freedesktop.systemd1.Unit", changed, []]
    path = systemd.unit("alice").path
    await spoofer.send(
        Message.new_signal(path, "org.freedesktop.DBus.Properties", "PropertiesChanged", "sa{sv}as", body)
    )
    spoofer.disconnect()
    await asyncio.sleep(0.2)  # had it counted, its Change would be read now, before the real crash

    systemd.unit("alice").crash(exit_code=4, restart=False)

    assert (await next_change(stream)).exit_code == 4  # the first change is the real one


async def test_stops_while_the_bus_was_down_are_reported_after_reconnecting(
    backend: NixosContainerBackend, config: HiveConfig, systemd: FakeSystemd, bus: DBusDaemon
) -> None:
    stream = backend.changes()
    await backend.start(make_spec(config))
    await backend.start(make_spec(config, "bob"))

    bus.stop()  # every client loses the bus; the containers keep running
    systemd.disconnect()
    systemd.unit("alice").crash(exit_code=7, restart=False)
    bus.start()
    await systemd.connect(bus.address)

    change = await next_change(stream)  # the backend reconnects by itself
    assert change == Change("alice", at=change.at, exit_code=7, restarts=0)
    assert systemd.calls.count(("Subscribe",)) == 2
    assert set(await backend.list()) == {"bob"}

    systemd.unit("bob").crash(signal=6, restart=False)  # and the watch goes on
    assert (await next_change(stream)).signal == 6


async def test_changes_ends_when_the_backend_closes(backend: NixosContainerBackend) -> None:
    stream = backend.changes()
    reader = asyncio.create_task(anext(stream, None))
    await asyncio.sleep(0.05)
    await backend.close()
    assert await asyncio.wait_for(reader, 5) is None


# ------------------------------------------------------------------------------------------ logs


async def test_logs_read_the_units_journal_through_journalctl(backend: NixosContainerBackend, tools: Tools) -> None:
    backend._journal = None  # the journalctl path, even where systemd-python is installed
    second = 1_700_000_000

    def entry(unit: str, at: float, message: Any) -> str:
        return json.dumps({"_SYSTEMD_UNIT": unit, "__REALTIME_TIMESTAMP": str(int(at * 1e6)), "MESSAGE": message})

    tools.journal.write_text(
        "\n".join(
            [
                entry(UNIT, second, "booting"),
                entry("container@bob.service", second + 0.5, "bob's"),
                entry(UNIT, second + 1.5, list("héllo \x1b[1mworld\x1b[0m\n".encode())),  # binary: byte values
                entry(UNIT, second + 2, None),  # over 4096 bytes, had it run without --all
                entry(UNIT, second + 3, "ready"),
            ]
        )
        + "\n"
    )

    assert await backend.logs("alice", 10, None) == ["booting", "héllo \x1b[1mworld\x1b[0m", "ready"]
    assert await backend.logs("alice", 2, None) == ["ready"]
    assert await backend.logs("alice", 10, second + 1.7) == ["ready"]
    assert tools.journal_commands() == [
        ["-u", UNIT, "-o", "json", "-n", "10", "--all", "--no-pager"],
        ["-u", UNIT, "-o", "json", "-n", "2", "--all", "--no-pager"],
        ["-u", UNIT, "-o", "json", "-n", "10", "--since", f"@{second + 1}", "--all", "--no-pager"],
    ]


async def test_logs_read_the_journal_through_systemd_python_when_installed(backend: NixosContainerBackend) -> None:
    class Reader:
        """systemd.journal.Reader's calls the backend makes, over entries as it converts them."""

        entries: ClassVar = [
            {"_SYSTEMD_UNIT": UNIT, "__REALTIME_TIMESTAMP": datetime.fromtimestamp(10, UTC), "MESSAGE": "one"},
            {"_SYSTEMD_UNIT": "other", "__REALTIME_TIMESTAMP": datetime.fromtimestamp(11, UTC), "MESSAGE": "x"},
            {"_SYSTEMD_UNIT": UNIT, "__REALTIME_TIMESTAMP": datetime.fromtimestamp(12, UTC), "MESSAGE": b"tw\xffo"},
            {"_SYSTEMD_UNIT": UNIT, "__REALTIME_TIMESTAMP": datetime.fromtimestamp(13, UTC), "MESSAGE": "three"},
        ]

        def add_match(self, **match: str) -> None:
            self.matching = [e for e in self.entries if all(e.get(k) == v for k, v in match.items())]

        def seek_tail(self) -> None:
            self.at = len(self.matching)

        def get_previous(self) -> dict[str, Any]:
            if self.at == 0:
                return {}
            self.at -= 1
            return self.matching[self.at]

        def close(self) -> None:
            pass

    backend._journal = SimpleNamespace(Reader=Reader)  # as `systemd.journal`
    assert await backend.logs("alice", 10, None) == ["one", "tw\ufffdo", "three"]
    assert await backend.logs("alice", 2, None) == ["tw\ufffdo", "three"]
    assert await backend.logs("alice", 10, 11.5) == ["tw\ufffdo", "three"]


# ------------------------------------------------------------------------------- pure functions


def test_unit_object_paths_are_escaped_as_systemd_does() -> None:
    assert bus_escape("container@alice.service") == "container_40alice_2eservice"
    assert bus_escape("container@a-b2.service") == "container_40a_2db2_2eservice"
    assert bus_escape("2x") == "_32x"
    assert bus_unescape("container_40a_2db2_2eservice") == "container@a-b2.service"
    assert bus_unescape("_32x") == "2x"
    assert bus_unescape("bad_4") is None
    assert bus_unescape("caf_c3_a9") == "café"
    assert nixos_units.agent_of_path("/org/freedesktop/systemd1/unit/container_40alice_2eservice") == "alice"
    assert nixos_units.agent_of_path("/org/freedesktop/systemd1/unit/container_40root_2eservice") is None  # reserved
    assert nixos_units.agent_of_path("/org/freedesktop/systemd1/unit/sshd_2eservice") is None


def test_each_stop_is_new_once() -> None:
    assert is_new_stop("up", "failed")
    assert is_new_stop("up", "inactive")
    assert is_new_stop("up", "auto-restart")
    assert is_new_stop("auto-restart", "failed")  # systemd gave up restarting it
    assert is_new_stop(None, "failed")  # failed before we saw it run
    assert not is_new_stop("failed", "failed")
    assert not is_new_stop("failed", "inactive")  # reset-failed
    assert not is_new_stop("auto-restart", "auto-restart")  # auto-restart → auto-restart-queued
    assert not is_new_stop(None, "inactive")  # loaded, never ran
    assert not is_new_stop("failed", "up")


def test_the_conf_gets_the_host_network_and_the_binds_and_keeps_the_rest() -> None:
    conf = (
        'PRIVATE_NETWORK=1\nHOST_ADDRESS=10.233.1.1\nEXTRA_NSPAWN_FLAGS="--old"\nAUTO_START=0\nEXTRA_NSPAWN_FLAGS="x"'
    )
    assert container_conf(conf, ["--bind=/a:/a", "--bind-ro=/b:/c"]) == (
        'PRIVATE_NETWORK=0\nHOST_ADDRESS=\nEXTRA_NSPAWN_FLAGS="--bind=/a:/a --bind-ro=/b:/c"\nAUTO_START=0\n'
    )
    assert container_conf("A=1\n", ["--x"]) == 'A=1\nPRIVATE_NETWORK=0\nEXTRA_NSPAWN_FLAGS="--x"\n'


def test_nix_strings_cannot_interpolate_or_end_early() -> None:
    assert nix_string('a"b\\c${d}$e\nf') == '"a\\"b\\\\c\\${d}\\$e\\nf"'
    bad = AgentFlake("Bad Name", "agent", 1000, Path("/s"), Path("/h"), "x86_64-linux")
    with pytest.raises(ValueError, match="invalid agent name"):
        render_flake(bad, Path("/nonexistent"), "hyperhive")
