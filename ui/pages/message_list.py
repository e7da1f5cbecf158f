"""A list of messages in columns: what one message shows (MessageRowData, made by `message_data`) and
the one element that shows a whole list of them (MessageListElement, rendered by message_list.js).

Columns: local date and time (the browser's timezone; UTC if it does not say), from → to, the body
(wrapping anywhere), and read state (pending, taken = leased and not acked yet, read), with a
button to the message's thread. Helper events from `system` carry an icon, their first line, and
the rest (a crash's log tail) folded. Newest (the highest id) at the top, in every list.

One element per list, its rows plain HTML: a NiceGUI element per cell (9 a message) made the
messages page with 200 rows take a second to load."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from hyperhive.servers.broker.models import ListedMessage, Message
from hyperhive.servers.common.clock import parse_iso
from hyperhive.servers.common.names import BROADCAST, SYSTEM
from hyperhive.ui.pages.delta_element import DeltaElement

UTC: Final = zoneinfo.ZoneInfo("UTC")
# A helper event's icon, by its type (servers/common/events.py); an unknown type gets "info".
EVENT_ICONS: Final = {
    "container_crash": ("error", "negative"),
    "budget_exhausted": ("paid", "warning"),
    "state_over_budget": ("storage", "warning"),
    "repo_pushed": ("commit", "info"),
    "reservation_released": ("lock_open", "info"),
    "approval_resolved": ("gavel", "info"),
    "spawned": ("add_circle", "positive"),
    "rebuilt": ("build", "info"),
    "killed": ("cancel", "negative"),
    "destroyed": ("delete", "negative"),
    "operator_answered": ("question_answer", "info"),
    "question_asked": ("help", "warning"),
}
# A delivery's state as every page says it: pending, taken (leased, not acked yet) or read.
DELIVERY_STATES: Final = {
    "queued": ("pending", "warning"),
    "leased": ("taken", "info"),
    "delivered": ("read", "positive"),
}
MESSAGE_LIST_CSS: Final = """
.hh-msgs { container-type: inline-size; width: 100%; min-width: 0; display: flex; flex-direction: column; }
.hh-msg { display: grid; grid-template-columns: 10.5rem minmax(6rem, 13rem) minmax(0, 1fr) auto; gap: 0.1rem 0.75rem;
  align-items: start; width: 100%; padding: 0.35rem 0.25rem; border-bottom: 1px solid rgba(255,255,255,0.08); }
.hh-msg > * { min-width: 0; }
.hh-msg-time { color: #b0b0b0; font-variant-numeric: tabular-nums; }
.hh-msg-who, .hh-msg-body, .hh-msg-body * { overflow-wrap: anywhere; word-break: break-word; }
.hh-msg-body { white-space: pre-wrap; }
.hh-msg-event { display: flex; align-items: flex-start; gap: 0.25rem; }
.hh-msg-icon { font-size: 1.125rem; }
.hh-msg-tail summary { cursor: pointer; min-height: 32px; display: flex; align-items: center; color: #bdbdbd; }
.hh-msg-actions { display: flex; align-items: center; gap: 0.25rem; white-space: nowrap; }
.hh-msg-state { border: 1px solid currentColor; border-radius: 4px; padding: 0 6px; font-size: 13px; }
.hh-msg-btn { background: transparent; color: inherit; border: 0; border-radius: 16px; min-width: 32px;
  min-height: 32px; padding: 0 6px; font: inherit; font-size: 14px; cursor: pointer; display: inline-flex;
  align-items: center; justify-content: center; }
.hh-msg-btn:hover { background: rgba(255, 255, 255, 0.1); }
.hh-msg-btn:focus-visible, .hh-msg-tail summary:focus-visible { outline: 2px solid var(--hh-primary-text); }
.hh-msg-btn .material-icons { font-size: 1.125rem; }
.hh-msg-reply { color: var(--hh-primary-text); text-transform: uppercase; font-weight: 500; }
@container (max-width: 640px) {
  .hh-msg { grid-template-columns: minmax(0, 1fr) auto; }
  .hh-msg-who { grid-column: 1 / 2; } .hh-msg-body { grid-column: 1 / -1; }
}
"""


def read_state(message: ListedMessage) -> tuple[str, str]:
    """(text, colour) of a message's read state: pending, taken (leased, not acked) or read; a
    message to several inboxes says how many read it."""
    states = [d.state for d in message.deliveries]
    if not states:
        return "", "grey"
    if len(states) == 1:
        return DELIVERY_STATES[states[0]]
    read = sum(state == "delivered" for state in states)
    return f"{read}/{len(states)} read", "positive" if read == len(states) else "grey"


def local_time(sent_at: str, tz: zoneinfo.ZoneInfo) -> str:
    """'2026-12-01 14:05:33' in `tz` (the browser's), or with ' UTC' while it is unknown."""
    moment = datetime.fromtimestamp(parse_iso(sent_at), tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if tz is UTC else "")


def recipients_of(message: ListedMessage) -> str:
    if message.broadcast:
        return BROADCAST
    return ", ".join(d.to for d in message.deliveries) or "?"


class MessageRowData(BaseModel):
    """What one message's row shows, as message_list.js reads it."""

    model_config = ConfigDict(frozen=True)

    id: int
    sent_at: str  # exact, UTC: the time's hover text
    time: str  # local date and time
    who: str  # "alice → manager · re #12"
    first: str  # the body; for a helper event, its first line
    icon: str | None  # a helper event's icon (EVENT_ICONS), its colour and its type
    icon_colour: str
    kind: str
    tail: tuple[str, ...]  # a helper event's further lines (a crash's log tail), folded
    tail_label: str
    state: str  # read state ("pending", "taken", "read", "2/3 read"), its colour
    state_colour: str
    thread: bool  # a button to its thread
    reply: bool  # a reply button

    def texts(self) -> list[str]:
        """What the row shows as text (the tail folded): for the tests' `should_see`."""
        return [text for text in (self.time, self.who, self.first, self.tail_label, self.state) if text]


def message_data(
    message: Message, to: str, state: tuple[str, str], tz: zoneinfo.ZoneInfo, *, thread: bool, reply: bool = False
) -> MessageRowData:
    """One message's row: sent to `to` (a name, names, or '*'), its read state (text, colour), in `tz`."""
    reply_note = f" · re #{message.in_reply_to}" if message.in_reply_to else ""
    first, _, rest = message.body.partition("\n")
    icon: str | None = None
    colour = kind = tail_label = ""
    lines: list[str] = []
    if message.sender == SYSTEM and message.event is not None:
        kind = str(message.event.get("type", ""))
        icon, colour = EVENT_ICONS.get(kind, ("info", "grey"))
        lines = [line for line in rest.splitlines() if line.strip()]
        log_tail = message.event.get("last_lines")
        if isinstance(log_tail, list) and log_tail:  # a crash's log: all the event carries, not the summary's 5
            lines = [str(line) for line in log_tail]
        tail_label = (f"log tail ({len(lines)} lines)" if log_tail else f"{len(lines)} more lines") if lines else ""
    else:
        first = message.body
    return MessageRowData(
        id=message.id,
        sent_at=message.sent_at,
        time=local_time(message.sent_at, tz),
        who=f"{message.sender} → {to}{reply_note}",
        first=first,
        icon=icon,
        icon_colour=colour,
        kind=kind,
        tail=tuple(lines),
        tail_label=tail_label,
        state=state[0],
        state_colour=state[1],
        thread=thread,
        reply=reply,
    )


class MessageListElement(DeltaElement, component="message_list.js"):
    """A list of messages, newest at the top. `show` makes it exactly the rows given, `put` adds or
    replaces some, `drop` removes some; each sends the browser only what changed (a DeltaElement).
    The rows are not in the element's props (NiceGUI wraps every nested dict there in an observable)
    but join them whenever the element is sent whole. Events: `thread` and `reply`, a message id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, MessageRowData] = {}

    def _to_dict(self) -> dict[str, Any]:
        element = super()._to_dict()
        element["props"] = {**element.get("props", {}), "rows": [row.model_dump(mode="json") for row in self.shown()]}
        return element

    def shown(self) -> list[MessageRowData]:
        """The rows, in the list's order: newest (the highest id) first."""
        return [self.rows[key] for key in sorted(self.rows, reverse=True)]

    def put(self, rows: Iterable[MessageRowData]) -> None:
        changed = [row for row in rows if self.rows.get(row.id) != row]
        if changed:
            self.rows.update((row.id, row) for row in changed)
            self._send("put", [row.model_dump(mode="json") for row in changed])

    def drop(self, ids: Iterable[int]) -> None:
        gone = [key for key in ids if self.rows.pop(key, None) is not None]
        if gone:
            self._send("drop", gone)

    def show(self, rows: Sequence[MessageRowData]) -> None:
        wanted = {row.id for row in rows}
        self.drop([key for key in self.rows if key not in wanted])
        self.put(rows)

    def _displayed_contents(self, *, only_visible: bool) -> list[Any]:
        return [text for row in self.shown() for text in row.texts()]
