"""systemd's container units as the NixOS backend sees them: the D-Bus names it calls, a unit's
name and its escaped object path, the states a wait looks at, what a change of state means (a stop
to report once, a crash systemd restarts itself), how a main process ended, and one method call.
Pure but for `call`; the connection that uses them is nixos_watch.py's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Final

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from hyperhive.servers.common.names import is_agent_name
from hyperhive.servers.lifecycle.backends.base import BackendError, Change

log = logging.getLogger("hyperhive.lifecycle.nixos")

DBUS: Final = "org.freedesktop.DBus"
SYSTEMD: Final = "org.freedesktop.systemd1"
MANAGER_PATH: Final = "/org/freedesktop/systemd1"
SYSTEMD_MANAGER: Final = "org.freedesktop.systemd1.Manager"
UNIT: Final = "org.freedesktop.systemd1.Unit"
SERVICE: Final = "org.freedesktop.systemd1.Service"
PROPERTIES: Final = "org.freedesktop.DBus.Properties"
UNIT_PATH_PREFIX: Final = "/org/freedesktop/systemd1/unit/"
NO_SUCH_UNIT: Final = "org.freedesktop.systemd1.NoSuchUnit"
NO_SUCH_PROCESS: Final = "org.freedesktop.systemd1.NoSuchProcess"
ALREADY_SUBSCRIBED: Final = "org.freedesktop.systemd1.AlreadySubscribed"

CLD_EXITED: Final = 1  # ExecMainCode: the siginfo code of how the main process ended
CLD_KILLED: Final = 2
CLD_DUMPED: Final = 3
SIGKILL: Final = 9

# systemd 254 added auto-restart-queued (the restart job is queued); both mean "crashed, coming back".
AUTO_RESTART_STATES: Final = frozenset({"auto-restart", "auto-restart-queued"})

_UNIT_RE: Final = re.compile(r"container@(?P<name>[^/]+)\.service")
PROPERTIES_CHANGED_RULE: Final = (
    f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES}',member='PropertiesChanged',"
    f"path_namespace='{UNIT_PATH_PREFIX.rstrip('/')}',arg0='{UNIT}'"
)
OWNER_CHANGED_RULE: Final = (
    f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',arg0='{SYSTEMD}'"
)


# ------------------------------------------------------------------------------------- unit names


def bus_escape(text: str) -> str:
    """A string as one D-Bus object path element, escaped the way systemd does it.

    ASCII letters and digits stay (a leading digit does not), every other byte becomes `_xx`:
    `container@alice.service` → `container_40alice_2eservice`.
    """
    if not text:
        return "_"
    escaped = []
    for index, char in enumerate(text):
        if char.isascii() and (char.isalpha() or (char.isdigit() and index > 0)):
            escaped.append(char)
        else:
            escaped.extend(f"_{byte:02x}" for byte in char.encode())
    return "".join(escaped)


def bus_unescape(label: str) -> str | None:
    """The string `bus_escape` made `label` from, or None if it made no such label."""
    if label == "_":
        return ""
    data = bytearray()
    index = 0
    while index < len(label):
        char = label[index]
        if char == "_":
            digits = label[index + 1 : index + 3]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", digits):
                return None
            data.append(int(digits, 16))
            index += 3
        elif char.isascii() and char.isalnum():
            data.append(ord(char))
            index += 1
        else:
            return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def container_unit(name: str) -> str:
    return f"container@{name}.service"


def unit_path(unit: str) -> str:
    return UNIT_PATH_PREFIX + bus_escape(unit)


def agent_of_unit(unit: str) -> str | None:
    """The agent whose container `unit` runs, or None for any other unit or container."""
    match = _UNIT_RE.fullmatch(unit)
    if match is None or not is_agent_name(match["name"]):
        return None
    return match["name"]


def agent_of_path(path: str) -> str | None:
    if not path.startswith(UNIT_PATH_PREFIX):
        return None
    unit = bus_unescape(path.removeprefix(UNIT_PATH_PREFIX))
    return None if unit is None else agent_of_unit(unit)


# ------------------------------------------------------------------------------------ unit states


@dataclass(frozen=True, slots=True)
class UnitState:
    """The Unit properties a wait looks at."""

    active: str  # ActiveState
    sub: str  # SubState
    active_since: float | None = None  # ActiveEnterTimestamp, epoch seconds
    job: int = 0  # the id of the unit's pending job (a start, stop or restart not finished yet), 0 if none

    @property
    def up(self) -> bool:
        return self.active in ("active", "reloading")

    @property
    def gone(self) -> bool:
        return self.active in ("inactive", "failed")

    @property
    def at_rest(self) -> bool:
        """Down, with no job queued that would start it."""
        return self.gone and not self.job

    @property
    def restarting(self) -> bool:
        return self.sub in AUTO_RESTART_STATES

    @classmethod
    def of(cls, properties: dict[str, Any]) -> UnitState:
        entered = int(properties.get("ActiveEnterTimestamp", 0))
        return cls(
            active=str(properties.get("ActiveState", "")),
            sub=str(properties.get("SubState", "")),
            active_since=entered / 1e6 if entered else None,
            job=int(properties.get("Job", (0, "/"))[0]),
        )


NOT_LOADED: Final = UnitState("inactive", "dead")  # systemd has not loaded the unit: nothing runs


def stop_kind(active: str, sub: str) -> str:
    """`up`, or how the unit is down: `auto-restart` (crashed, systemd restarts it), `failed`, `inactive`."""
    if sub in AUTO_RESTART_STATES:
        return "auto-restart"
    if active in ("failed", "inactive"):
        return active
    return "up"


def is_new_stop(previous: str | None, kind: str) -> bool:
    """Whether a unit going from `previous` (None: not seen before) to `kind` is a stop to report.

    Each stop is reported once: a failed unit that stays failed, or is reset to inactive, is
    not a new one; a unit loaded while inactive never ran.
    """
    if kind in ("up", previous):
        return False
    if kind == "inactive":
        return previous in ("up", "auto-restart")
    return True  # failed or auto-restart: a crash, or systemd giving up on restarting it


@dataclass(frozen=True, slots=True)
class Stopped:
    name: str
    kind: str  # a stop_kind, or RESTARTED: systemd's own restart after a crash is up
    at: float
    known: bool = True  # False: the unit vanished while we were away; there is nothing to read


RESTARTED: Final = "restarted"


class SystemdError(BackendError):
    """systemd (or the bus) answered a call with an error."""

    def __init__(self, what: str, error_name: str | None, text: str) -> None:
        self.error_name = error_name
        super().__init__(f"systemd: {what}: {error_name}: {text}")


def job_id(path: str) -> int:
    """The id in a job's object path (/org/freedesktop/systemd1/job/ID); -1, matching no job, if none."""
    last = path.rsplit("/", 1)[-1]
    return int(last) if last.isdigit() else -1


def is_gone(state: UnitState) -> bool:
    return state.gone


def change_of(stopped: Stopped, service: dict[str, Any]) -> Change:
    code = service.get("ExecMainCode")
    status = service.get("ExecMainStatus")
    restarts = service.get("NRestarts")
    log.info(
        "%s stopped (%s): Result=%s, %s", stopped.name, stopped.kind, service.get("Result", "?"),
        how_it_ended(service) or "no exit status",
    )  # fmt: skip
    return Change(
        stopped.name,
        at=stopped.at,
        exit_code=int(status) if code == CLD_EXITED and status is not None else None,
        signal=int(status) if code in (CLD_KILLED, CLD_DUMPED) and status is not None else None,
        auto_restarting=stopped.kind == "auto-restart",
        restarts=int(restarts) if restarts is not None else None,
    )


def how_it_ended(service: dict[str, Any]) -> str:
    code, status = service.get("ExecMainCode"), service.get("ExecMainStatus")
    if code == CLD_EXITED:
        return f"exit status {status}"
    if code in (CLD_KILLED, CLD_DUMPED):
        return f"signal {status}"
    return ""


async def call(
    bus: MessageBus, destination: str, path: str, interface: str, member: str, signature: str, *body: Any
) -> list[Any]:
    """One D-Bus method call: the reply's body, or SystemdError with the error's name."""
    message = Message(
        destination=destination, path=path, interface=interface, member=member, signature=signature, body=list(body)
    )
    what = f"{member}({', '.join(repr(arg) for arg in body)})"
    try:
        reply = await bus.call(message)
    except Exception as e:
        raise BackendError(f"systemd: {what}: the D-Bus connection failed: {e}") from e
    if reply.message_type is MessageType.ERROR:
        raise SystemdError(what, reply.error_name, str(reply.body[0]) if reply.body else "")
    return list(reply.body)
