"""A stand-in systemd (`org.freedesktop.systemd1`) on a private dbus-daemon.

The nixos-container backend's contract test talks to it over a real bus. It has the Manager
methods the backend may call, and per `container@NAME.service` a Unit and a Service object whose
properties move the way systemd moves them:

- a job returns at once and takes effect a moment later (StartUnit returns before the unit is
  active; until then the unit shows its old state and a pending Job);
- Restart=on-failure (on by default, as on NixOS): a crash goes to activating/auto-restart, and
  the restart, when it is queued after `restart_delay`, counts in NRestarts, then runs like a
  start (activating/start, then active/running);
- a unit SIGKILLed with no stop job queued counts as crashed (and restarts); with one, it stops;
- PropertiesChanged (Service first, then Unit, as systemd sends them) only once a client has
  called Subscribe.

What the real unit is (nixpkgs nixos/modules/virtualisation/nixos-containers.nix, `container@`'s
serviceDirectives): Type=notify (active once the container's own systemd is up), Restart=on-failure
with the default RestartSec=100ms, RestartForceExitStatus=133 and SuccessExitStatus=133 (nspawn's
exit on a reboot inside: restarted, not a failure), Slice=machine.slice, Delegate=yes,
KillMode=mixed with KillSignal=TERM (nspawn turns SIGTERM into the container's shutdown), and
EnvironmentFile=-/etc/nixos-containers/%i.conf read at every start.

Every Manager call lands in `FakeSystemd.calls` as (member, args). Test hooks on FakeUnit
simulate what happens inside: crash(), exit(), and knobs fail_start, ignore_sigterm,
restart_on_failure.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
from dbus_fast import DBusError, PropertyAccess
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusInt32, DBusObjectPath, DBusSignature, DBusStr, DBusUInt32, DBusUInt64
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
STEP_SECONDS = 0.01  # each step of a job (activating → active, deactivating → inactive)
CLD_EXITED, CLD_KILLED = 1, 2

UnitRows = Annotated[list[list[Any]], DBusSignature("a(ssssssouso)")]
Strings = Annotated[list[str], DBusSignature("as")]
JobRef = Annotated[list[Any], DBusSignature("(uo)")]
Assignments = Annotated[list[list[Any]], DBusSignature("a(sv)")]
UNLIMITED = 2**64 - 1  # what systemd shows for MemoryMax/TasksMax infinity and an unset CPUWeight
SETTABLE = ("MemoryMax", "TasksMax", "CPUWeight")  # the resource properties the fake lets one set

_pids = itertools.count(4242)
_jobs = itertools.count(1)


def escape(unit: str) -> str:
    """systemd's bus label escaping, written out independently of the backend's."""
    out = ""
    for i, byte in enumerate(unit.encode()):
        letter = chr(byte)
        keep = (letter.isascii() and letter.isalpha()) or (letter.isdigit() and i > 0)
        out += letter if keep else f"_{byte:02x}"
    return out


class DBusDaemon:
    """A private `dbus-daemon --session` listening on DIR/bus; stop() and start() again to drop every client."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "bus"
        self.address = f"unix:path={self.socket}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        executable = shutil.which("dbus-daemon")
        if executable is None:
            pytest.fail("dbus-daemon is not installed; run scripts/setup.sh test")
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [executable, "--session", "--nofork", "--print-address=1", f"--address={self.address}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # it warns that it cannot raise its fd limit
            text=True,
        )
        assert self.process.stdout is not None
        if not self.process.stdout.readline():  # printed once it listens
            pytest.fail(f"dbus-daemon did not start (exit code {self.process.wait()})")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


# ------------------------------------------------------------------------------ D-Bus interfaces


class UnitInterface(ServiceInterface):
    def __init__(self, unit: FakeUnit) -> None:
        super().__init__("org.freedesktop.systemd1.Unit")
        self.fake = unit

    @dbus_property(PropertyAccess.READ, name="Id")
    def id(self) -> DBusStr:
        return self.fake.id

    @dbus_property(PropertyAccess.READ, name="LoadState")
    def load_state(self) -> DBusStr:
        return "loaded"

    @dbus_property(PropertyAccess.READ, name="ActiveState")
    def active_state(self) -> DBusStr:
        return self.fake.active

    @dbus_property(PropertyAccess.READ, name="SubState")
    def sub_state(self) -> DBusStr:
        return self.fake.sub

    @dbus_property(PropertyAccess.READ, name="StateChangeTimestamp")
    def state_change_timestamp(self) -> DBusUInt64:
        return self.fake.changed_realtime

    @dbus_property(PropertyAccess.READ, name="StateChangeTimestampMonotonic")
    def state_change_timestamp_monotonic(self) -> DBusUInt64:
        return self.fake.changed_monotonic

    @dbus_property(PropertyAccess.READ, name="ActiveEnterTimestamp")
    def active_enter_timestamp(self) -> DBusUInt64:
        return self.fake.active_enter

    @dbus_property(PropertyAccess.READ, name="Job")
    def job(self) -> JobRef:
        return [self.fake.job, f"/org/freedesktop/systemd1/job/{self.fake.job}" if self.fake.job else "/"]


class ServiceObject(ServiceInterface):
    def __init__(self, unit: FakeUnit) -> None:
        super().__init__("org.freedesktop.systemd1.Service")
        self.fake = unit

    @dbus_property(PropertyAccess.READ, name="Result")
    def result(self) -> DBusStr:
        return str(self.fake.service["Result"])

    @dbus_property(PropertyAccess.READ, name="ExecMainCode")
    def exec_main_code(self) -> DBusInt32:
        return int(self.fake.service["ExecMainCode"])

    @dbus_property(PropertyAccess.READ, name="ExecMainStatus")
    def exec_main_status(self) -> DBusInt32:
        return int(self.fake.service["ExecMainStatus"])

    @dbus_property(PropertyAccess.READ, name="NRestarts")
    def n_restarts(self) -> DBusUInt32:
        return int(self.fake.service["NRestarts"])

    @dbus_property(PropertyAccess.READ, name="MainPID")
    def main_pid(self) -> DBusUInt32:
        return int(self.fake.service["MainPID"])

    @dbus_property(PropertyAccess.READ, name="MemoryMax")
    def memory_max(self) -> DBusUInt64:
        return self.fake.resources["MemoryMax"]

    @dbus_property(PropertyAccess.READ, name="TasksMax")
    def tasks_max(self) -> DBusUInt64:
        return self.fake.resources["TasksMax"]

    @dbus_property(PropertyAccess.READ, name="CPUWeight")
    def cpu_weight(self) -> DBusUInt64:
        return self.fake.resources["CPUWeight"]


class Manager(ServiceInterface):
    def __init__(self, systemd: FakeSystemd) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.systemd = systemd

    @dbus_method(name="Subscribe")
    def subscribe(self):  # no return annotation: dbus-fast reads `-> None` as a signature and fails
        self.systemd.record("Subscribe")
        self.systemd.subscribed = True

    @dbus_method(name="GetUnit")
    def get_unit(self, name: DBusStr) -> DBusObjectPath:
        self.systemd.record("GetUnit", name)
        unit = self.systemd.units.get(name)
        if unit is None:
            raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not loaded.")
        return unit.path

    @dbus_method(name="LoadUnit")
    def load_unit(self, name: DBusStr) -> DBusObjectPath:
        self.systemd.record("LoadUnit", name)
        return self.systemd.load(name).path

    @dbus_method(name="StartUnit")
    def start_unit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.systemd.record("StartUnit", name, mode)
        return self.systemd.load(name).start()

    @dbus_method(name="StopUnit")
    def stop_unit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.systemd.record("StopUnit", name, mode)
        return self.systemd.load(name).stop()

    @dbus_method(name="RestartUnit")
    def restart_unit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.systemd.record("RestartUnit", name, mode)
        return self.systemd.load(name).restart()

    @dbus_method(name="SetUnitProperties")
    def set_unit_properties(self, name: DBusStr, runtime: DBusBool, properties: Assignments):  # no return annotation
        """As systemd: loads the unit; each assignment holds for every later run of it (a drop-in)."""
        self.systemd.record("SetUnitProperties", name, runtime, [(key, variant.value) for key, variant in properties])
        unit = self.systemd.load(name)
        for key, variant in properties:
            if key not in SETTABLE or variant.signature != "t":
                raise DBusError(
                    "org.freedesktop.DBus.Error.InvalidArgs", f"Cannot set property {key}, or not in this way."
                )
        for key, variant in properties:
            unit.resources[key] = variant.value

    @dbus_method(name="KillUnit")
    def kill_unit(self, name: DBusStr, whom: DBusStr, signal: DBusInt32):  # no return annotation, as above
        self.systemd.record("KillUnit", name, whom, signal)
        unit = self.systemd.units.get(name)
        if unit is None:
            raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not loaded.")
        unit.kill(whom, signal)

    @dbus_method(name="ListUnits")
    def list_units(self) -> UnitRows:
        self.systemd.record("ListUnits")
        return [unit.row() for unit in self.systemd.units.values()]

    @dbus_method(name="ListUnitsByPatterns")
    def list_units_by_patterns(self, states: Strings, patterns: Strings) -> UnitRows:
        self.systemd.record("ListUnitsByPatterns", states, patterns)
        return [
            unit.row()
            for unit in self.systemd.units.values()
            if (not states or unit.active in states or unit.sub in states)
            and (not patterns or any(fnmatch.fnmatchcase(unit.id, p) for p in patterns))
        ]


# ----------------------------------------------------------------------------------------- units


class FakeUnit:
    """One container@NAME.service: its state, the jobs on it, and the test's hooks."""

    def __init__(self, systemd: FakeSystemd, unit_id: str) -> None:
        self.systemd = systemd
        self.id = unit_id
        self.path = "/org/freedesktop/systemd1/unit/" + escape(unit_id)
        self.active, self.sub = "inactive", "dead"
        self.changed_realtime = self.changed_monotonic = self.active_enter = 0
        self.job = 0
        self.service: dict[str, Any] = {
            "Result": "success", "ExecMainCode": 0, "ExecMainStatus": 0, "NRestarts": 0, "MainPID": 0,
        }  # fmt: skip
        self.resources = dict.fromkeys(SETTABLE, UNLIMITED)  # SetUnitProperties' drop-ins: they outlive each run
        # Knobs for a test.
        self.restart_on_failure = True  # NixOS's container@.service has Restart=on-failure
        self.restart_delay = 0.1  # systemd's default RestartSec
        self.fail_start: int | None = None  # the next start exits with this status
        self.ignore_sigterm = False  # a stop hangs in deactivating until SIGKILL
        self._timers: list[asyncio.TimerHandle] = []
        self._after_stop: Callable[[], None] | None = None  # a restart job's start, once stopped
        self._stopping = False  # a stop (or restart) job is queued or running
        self.unit_interface: UnitInterface | None = None
        self.service_interface: ServiceObject | None = None

    def export(self, bus: MessageBus) -> None:
        self.unit_interface, self.service_interface = UnitInterface(self), ServiceObject(self)
        bus.export(self.path, self.unit_interface)
        bus.export(self.path, self.service_interface)

    def row(self) -> list[Any]:
        job_path = f"/org/freedesktop/systemd1/job/{self.job}" if self.job else "/"
        return [self.id, "Container", "loaded", self.active, self.sub, "", self.path, self.job, "", job_path]

    # ----------------------------------------------------------------------------- state changes
    def set_service(self, **changes: Any) -> None:
        self.service.update(changes)
        if self.systemd.subscribed and self.service_interface is not None:
            self.service_interface.emit_properties_changed(changes)

    def set_state(self, active: str, sub: str, *, job: int | None = None) -> None:
        self.active, self.sub = active, sub
        if job is not None:
            self.job = job
        self.changed_realtime = time.time_ns() // 1000
        self.changed_monotonic = time.monotonic_ns() // 1000
        if active == "active":
            self.active_enter = self.changed_realtime
        self.touch()

    def touch(self) -> None:
        """Send the Unit's PropertiesChanged again, for a state that did not change."""
        if self.systemd.subscribed and self.unit_interface is not None:
            self.unit_interface.emit_properties_changed(
                {
                    "ActiveState": self.active, "SubState": self.sub, "Job": self.unit_interface.job,
                    "StateChangeTimestamp": self.changed_realtime,
                    "StateChangeTimestampMonotonic": self.changed_monotonic,
                    "ActiveEnterTimestamp": self.active_enter,
                }
            )  # fmt: skip

    def later(self, delay: float, step: Callable[[], None]) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(delay, step))

    def cancel_steps(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    @property
    def has_processes(self) -> bool:
        return self.active in ("active", "reloading", "deactivating") or self.sub == "start"

    # -------------------------------------------------------------------------------------- jobs
    def start(self) -> str:
        job = next(_jobs)
        if self.active == "active":
            return f"/org/freedesktop/systemd1/job/{job}"
        self.cancel_steps()
        self.job = job
        self.later(STEP_SECONDS, self._activating)
        return f"/org/freedesktop/systemd1/job/{job}"

    def _activating(self) -> None:
        self.set_service(Result="success", ExecMainCode=0, ExecMainStatus=0, MainPID=next(_pids))
        self.set_state("activating", "start")
        self.later(STEP_SECONDS, self._started)

    def _started(self) -> None:
        if self.fail_start is not None:
            status, self.fail_start = self.fail_start, None
            self.job = 0
            self._died(CLD_EXITED, status)
            return
        self.set_state("active", "running", job=0)

    def stop(self, then: Callable[[], None] | None = None) -> str:
        job = next(_jobs)
        self.cancel_steps()
        if self.sub in ("auto-restart", "auto-restart-queued"):  # the restart is called off
            self.set_state("failed" if self.service["Result"] != "success" else "inactive", "dead", job=0)
        elif self.has_processes:
            self.job, self._after_stop, self._stopping = job, then, True
            self.later(STEP_SECONDS, self._deactivating)  # the job runs a moment after the call returned
        return f"/org/freedesktop/systemd1/job/{job}"

    def _deactivating(self) -> None:
        self.set_state("deactivating", "stop-sigterm")
        if not self.ignore_sigterm:
            self.later(STEP_SECONDS, lambda: self._stopped(CLD_EXITED, 0))

    def _stopped(self, code: int, status: int) -> None:
        clean = code == CLD_EXITED and status == 0
        self.set_service(Result="success" if clean else "signal", ExecMainCode=code, ExecMainStatus=status, MainPID=0)
        then, self._after_stop, self._stopping = self._after_stop, None, False
        # A restart job stays pending between its stop and its start.
        self.set_state("inactive" if clean else "failed", "dead" if clean else "failed", job=self.job if then else 0)
        if then is not None:
            self.later(STEP_SECONDS, then)

    def restart(self) -> str:
        if not self.has_processes:
            return self.start()
        return self.stop(then=self._activating)

    def kill(self, whom: str, signal: int) -> None:
        if not self.has_processes:
            raise DBusError("org.freedesktop.systemd1.NoSuchProcess", "No matching processes to kill")
        if whom != "all" or signal != 9:
            raise DBusError("org.freedesktop.DBus.Error.NotSupported", "the fake only SIGKILLs all")
        self.cancel_steps()
        if self._stopping:  # a stop job is queued: it completes, no restart
            self._stopped(CLD_KILLED, 9)
        else:
            self._died(CLD_KILLED, 9)

    # -------------------------------------------------------------------------------- test hooks
    def crash(self, *, exit_code: int | None = None, signal: int | None = None, restart: bool | None = None) -> None:
        """The container's main process dies on its own, with an exit code or a signal."""
        assert self.active == "active", f"{self.id} is {self.active}, not running"
        self.cancel_steps()
        if signal is not None:
            self._died(CLD_KILLED, signal, restart)
        else:
            self._died(CLD_EXITED, 1 if exit_code is None else exit_code, restart)

    def exit(self, status: int = 0) -> None:
        """The main process exits on its own: cleanly (inactive) or not (a crash)."""
        if status:
            self.crash(exit_code=status)
            return
        self.cancel_steps()
        self.set_service(Result="success", ExecMainCode=CLD_EXITED, ExecMainStatus=0, MainPID=0)
        self.set_state("inactive", "dead")

    def _died(self, code: int, status: int, restart: bool | None = None) -> None:
        result = "exit-code" if code == CLD_EXITED else "signal"
        self.set_service(Result=result, ExecMainCode=code, ExecMainStatus=status, MainPID=0)
        if self.restart_on_failure if restart is None else restart:
            self.set_state("activating", "auto-restart")
            self.later(self.restart_delay, self._auto_restart)
        else:
            self.set_state("failed", "failed")

    def _auto_restart(self) -> None:
        self.set_service(NRestarts=self.service["NRestarts"] + 1)  # counted when queued, as systemd does
        self._activating()

    async def wait_for(self, active: str, sub: str | None = None, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while (self.active, self.sub if sub else None) != (active, sub):
            assert time.monotonic() < deadline, f"{self.id} stayed {self.active}/{self.sub}, not {active}/{sub}"
            await asyncio.sleep(0.005)


# --------------------------------------------------------------------------------------- systemd


class FakeSystemd:
    """The service on the bus: the Manager object, one FakeUnit per loaded unit, the calls made."""

    def __init__(self) -> None:
        self.units: dict[str, FakeUnit] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.subscribed = False
        self.bus: MessageBus | None = None

    async def connect(self, address: str) -> None:
        """Join the bus at `address` as org.freedesktop.systemd1 (again, after the daemon restarted)."""
        self.bus = await MessageBus(bus_address=address).connect()
        self.subscribed = False  # subscriptions die with the clients' connections
        self.bus.export(MANAGER_PATH, Manager(self))
        for unit in self.units.values():
            unit.export(self.bus)
        await self.bus.request_name(SYSTEMD)

    def disconnect(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None
        for unit in self.units.values():
            unit.unit_interface = unit.service_interface = None

    def record(self, member: str, *args: Any) -> None:
        self.calls.append((member, *args))

    def actions(self) -> list[tuple[Any, ...]]:
        """The calls that change a unit, in order."""
        return [call for call in self.calls if call[0] in ("StartUnit", "StopUnit", "RestartUnit", "KillUnit")]

    def load(self, unit_id: str) -> FakeUnit:
        """The unit, loaded from the container@.service template the first time."""
        unit = self.units.get(unit_id)
        if unit is None:
            if not fnmatch.fnmatchcase(unit_id, "container@?*.service"):
                raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {unit_id} not found.")
            unit = self.units[unit_id] = FakeUnit(self, unit_id)
            if self.bus is not None:
                unit.export(self.bus)
        return unit

    def unit(self, name: str) -> FakeUnit:
        return self.load(f"container@{name}.service")
