"""The NixOS backend's D-Bus client of systemd: one connection kept up (reconnected with backoff
when the bus drops, following systemd when it re-executes), the calls, reads and waits on container
units, and the crash watch that turns each unit's change of state into a Change or a Restarted.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.lifecycle.backends.base import BackendError, Change, Restarted, Running
from hyperhive.servers.lifecycle.backends.nixos_units import (
    ALREADY_SUBSCRIBED,
    DBUS,
    MANAGER_PATH,
    NO_SUCH_UNIT,
    NOT_LOADED,
    OWNER_CHANGED_RULE,
    PROPERTIES,
    PROPERTIES_CHANGED_RULE,
    RESTARTED,
    SERVICE,
    SYSTEMD,
    SYSTEMD_MANAGER,
    UNIT,
    Stopped,
    SystemdError,
    UnitState,
    agent_of_path,
    agent_of_unit,
    call,
    change_of,
    container_unit,
    is_new_stop,
    stop_kind,
    unit_path,
)

log = logging.getLogger("hyperhive.lifecycle.nixos")

POLL_SECONDS: Final = 1.0  # waits re-read the unit this often, in case a signal went missing
RECONNECT_MAX_SECONDS: Final = 30.0


class SystemdUnits:
    """The NixOS backend's D-Bus client of systemd, connected lazily: calls on container units, reads
    and waits, and the crash watch. changes() serves one consumer: every stop is queued until it is read."""

    def __init__(self, bus_address: str | None = None) -> None:
        self.bus_address = bus_address  # None: the system bus (DBUS_SYSTEM_BUS_ADDRESS or the default socket)
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
        self._stopped: asyncio.Queue[Stopped] = asyncio.Queue()
        self._changes: asyncio.Queue[Change | Restarted | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None

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
            self._stopped.put_nowait(Stopped(name, kind, at, known))
        if kind == "auto-restart":
            self._coming_back.add(name)
        elif kind != "up":
            self._coming_back.discard(name)  # stopped or failed for good: not coming back
        elif active == "active" and name in self._coming_back:  # activating is not up yet
            self._coming_back.discard(name)
            self._stopped.put_nowait(Stopped(name, RESTARTED, at))

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
                    self._changes.put_nowait(Restarted(stopped.name, await self.running(stopped.name)))
                except BackendError as e:  # gone again meanwhile: its stop follows in the queue
                    log.warning("%s came back but could not be read: %s", stopped.name, e)
                continue
            service: dict[str, Any] = {}
            try:
                if stopped.known:
                    service = await self.properties(stopped.name, SERVICE)
            except Exception:  # never lose the stop itself: report it without the details
                log.warning("%s stopped; could not read how", stopped.name, exc_info=True)
            self._changes.put_nowait(change_of(stopped, service))

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
            for rule in (OWNER_CHANGED_RULE, PROPERTIES_CHANGED_RULE):
                await call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "AddMatch", "s", rule)
            owner = await call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "GetNameOwner", "s", SYSTEMD)
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
            await call(bus, SYSTEMD, MANAGER_PATH, SYSTEMD_MANAGER, "Subscribe", "")
        except SystemdError as e:
            if e.error_name != ALREADY_SUBSCRIBED:
                raise

    async def _resync(self, bus: MessageBus, *, report: bool) -> None:
        """Read every container unit; on a reconnect, report the stops that happened while away."""
        sequence = self._sequence
        body = await call(
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
    async def manager(self, member: str, signature: str, *body: Any) -> builtins.list[Any]:
        return await call(await self._connected(), SYSTEMD, MANAGER_PATH, SYSTEMD_MANAGER, member, signature, *body)

    async def properties(self, name: str, interface: str) -> dict[str, Any]:
        """All properties of `interface` on the agent's unit (which systemd loads if it has not)."""
        path = unit_path(container_unit(name))
        body = await call(await self._connected(), SYSTEMD, path, PROPERTIES, "GetAll", "s", interface)
        return {key: variant.value for key, variant in body[0].items()}

    async def state(self, name: str) -> UnitState:
        """The unit's state; NOT_LOADED (inactive) when systemd has not loaded it, without loading it."""
        try:
            await self.manager("GetUnit", "s", container_unit(name))
        except SystemdError as e:
            if e.error_name == NO_SUCH_UNIT:
                return NOT_LOADED
            raise
        return UnitState.of(await self.properties(name, UNIT))

    async def wait(self, name: str, done: Callable[[UnitState], bool], timeout: float) -> UnitState | None:
        """Re-read the unit at each of its PropertiesChanged signals until `done(state)`; None after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiters = self._waiters.setdefault(unit_path(container_unit(name)), set())
        while True:
            woken = asyncio.Event()
            waiters.add(woken)  # before reading: a change during the read still wakes us
            try:
                state = await self.state(name)
                if done(state):
                    return state
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(remaining, POLL_SECONDS))
            finally:
                waiters.discard(woken)

    async def running(self, name: str, state: UnitState | None = None) -> Running:
        if state is None:
            state = UnitState.of(await self.properties(name, UNIT))
        pid = int((await self.properties(name, SERVICE)).get("MainPID", 0))
        return Running(name, started_at=state.active_since or time.time(), pid=pid or None)
