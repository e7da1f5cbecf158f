"""The broker's store: messages, their deliveries and reminders, as one contract with an
implementation per engine (store_sqlite.py, the default; store_pg.py, a hive across processes and
hosts). `broker_stores(db)` picks the pair for the database the server was given.

A message is stored once; each recipient has a delivery row (queued -> leased -> delivered). A
leased delivery whose lease has passed counts as queued again. A reminder is a row that becomes a
message when it comes due, and counts against its recipient's inbox cap from the moment it is
scheduled, so one that fires is always delivered. Checks that need the agent registry or settings
live in mailbox.py; a store reads and writes rows, and refuses (NotFound, LimitReached) what the
rows it reads forbid, in the same transaction.

Rows come back as the engine gives them (common/storage.py `Row`), read by column name: a message
row has the `messages` columns, plus `thread_root`, `recipients`, `snippet`, `state` and
`lease_until` where a method says so.

With several processes on one database (PostgreSQL), every rule holds across them: a delivery is
taken by one claim, a reminder fires once, an inbox's cap counts every sender; a store wakes the
receivers of the inboxes it changed in every process (`wakes`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from hyperhive.servers.common.errors import LimitReached, NotFound, Refused
from hyperhive.servers.common.storage import AnyDatabase, Row, is_postgresql

if TYPE_CHECKING:
    from hyperhive.servers.broker.search_query import Query

# How a search result's snippet marks the words that matched.
MARK_START: Final = "«"
MARK_END: Final = "»"
SNIPPET_TOKENS: Final = 16  # about how many words of a body a snippet shows

SearchOrder = Literal["newest", "relevance"]


@dataclass(frozen=True, slots=True)
class NewMessage:
    sender: str
    body: str
    kind: Literal["message", "reminder", "event"] = "message"
    event: str | None = None
    in_reply_to: int | None = None
    broadcast: bool = False
    late: bool = False


@dataclass(frozen=True, slots=True)
class Claimed:
    rows: Sequence[Row]  # messages rows, oldest first
    queued: int  # still available to the recipient after this claim
    # When the first lease of this inbox that is still running ends (its messages are then
    # available again): a receiver that found nothing waits no longer than that.
    next_lease_end: float | None = None


class BrokerStore(ABC):
    """Each method is one transaction, or one consistent read."""

    # ---------------------------------------------------------------------------------- sending
    @abstractmethod
    async def insert_message(
        self,
        message: NewMessage,
        recipients: Sequence[str],
        now: float,
        *,
        inbox_cap: int | None,
        reply_visible_to: str | None,
    ) -> tuple[int, list[str], list[str]]:
        """Store a message for `recipients`. Returns (id, delivered_to, skipped_full).

        Inboxes at `inbox_cap` undelivered messages are skipped; if all are, LimitReached.
        `in_reply_to` must exist (and, unless `reply_visible_to` is None, be visible to that
        principal), else NotFound.
        """

    # -------------------------------------------------------------------------------- receiving
    @abstractmethod
    async def claim(self, recipient: str, limit: int, now: float, lease_until: float | None) -> Claimed:
        """Take up to `limit` available messages, oldest first: delivered, or leased until `lease_until`."""

    @abstractmethod
    async def unclaim(self, recipient: str, ids: Sequence[int]) -> None:
        """Put back messages a recv took but could not hand over (its caller went away)."""

    @abstractmethod
    async def ack(self, recipient: str, ids: Sequence[int], now: float) -> tuple[int, int]:
        """Mark deliveries as delivered. Returns (acked, already_acked); NotFound if any id is not ours."""

    @abstractmethod
    async def set_lease(self, recipient: str, ids: Sequence[int], lease_until: float | None) -> None:
        """Extend the caller's leases to `lease_until`, or release them (None). NotFound if not leased."""

    @abstractmethod
    async def counts(self, recipient: str, now: float) -> tuple[int, int]:
        """(queued, leased) for one inbox: available now, and leased with time left."""

    # ---------------------------------------------------------------------------------- reading
    @abstractmethod
    async def thread(self, message_id: int, viewer: str | None) -> Sequence[Row]:
        """The whole thread of `message_id` as `viewer` may see it (None: everything), oldest first,
        each row with `recipients` (comma-separated)."""

    @abstractmethod
    async def list_messages(
        self, agent: str | None, since: int | None, thread: int | None, limit: int
    ) -> tuple[Sequence[Row], Sequence[Row]]:
        """Messages (newest `limit`, or the first `limit` after `since`), each with `thread_root`, and
        their delivery rows."""

    @abstractmethod
    async def search(
        self, query: Query, viewer: str | None, agent: str | None, limit: int, order: SearchOrder, timeout: float
    ) -> tuple[Sequence[Row], Sequence[Row]]:
        """Messages matching `query` (parsed by search_query.py) that `viewer` may see (None:
        everything), with `thread_root` and a `snippet`, and the delivery rows the viewer may see.
        A search that runs past `timeout` seconds is Refused, saying how to narrow it."""

    @abstractmethod
    async def peek(self, recipient: str, limit: int) -> Sequence[Row]:
        """The recipient's undelivered messages (queued or leased), oldest first, with `thread_root`
        and their delivery's `state` and `lease_until`: read only, so they stay waiting."""

    @abstractmethod
    async def stats(self, since: float) -> dict[str, tuple[int, int, int, int]]:
        """Per name: (undelivered, delivered since `since`, pending reminders owned, reminders
        delivered since `since`)."""

    # -------------------------------------------------------------------------------- retention
    @abstractmethod
    async def purge(self, before: float, batch: int = 5000) -> int:
        """Delete one batch of what retention allows; returns rows deleted (0: nothing left)."""

    # ----------------------------------------------------------------------------- other processes
    @abstractmethod
    async def watch(self, wake: Callable[[Sequence[str] | None], None], poke: Callable[[], None]) -> None:
        """Until cancelled: call `wake(names)` when another process changed those inboxes (None: any
        may have changed), `poke()` when it changed the reminders. A store only one process uses
        has nothing to hear."""


class ReminderStore(ABC):
    """Each method is one transaction, or one consistent read."""

    @abstractmethod
    async def add(
        self,
        owner: str,
        recipient: str,
        body: str,
        due_at: float,
        now: float,
        *,
        max_pending: int,
        max_per_minute: int,
        inbox_cap: int,
    ) -> int:
        """Insert a reminder and return its id; LimitReached (saying which limit) if it would pass one.

        A reminder takes its place in the recipient's inbox now, so one that comes due is always
        delivered without passing `inbox_cap`.
        """

    @abstractmethod
    async def pending_of(self, owner: str) -> Sequence[Row]:
        """The owner's pending reminders (reminders rows), soonest first."""

    @abstractmethod
    async def cancel(self, owner: str, reminder_id: int, now: float) -> None:
        """Cancel a pending reminder of `owner`'s; NotFound if it has none with that id."""

    @abstractmethod
    async def next_due(self) -> float | None: ...

    @abstractmethod
    async def fire_due(self, now: float, late_after: float, batch: int = 500) -> list[str]:
        """Turn due reminders into messages, each once whichever process fires it; returns the
        recipients to wake."""


def broker_stores(db: AnyDatabase) -> tuple[BrokerStore, ReminderStore]:
    """The stores for `db`'s engine."""
    if is_postgresql(db):
        from hyperhive.servers.broker.store_pg import PgBrokerStore, PgReminderStore

        return PgBrokerStore(db), PgReminderStore(db)
    from hyperhive.servers.broker.store_sqlite import SqliteBrokerStore, SqliteReminderStore

    return SqliteBrokerStore(db), SqliteReminderStore(db)


# ------------------------------------------------------------------------------------- refusals
# One wording for both engines.


def unknown_reply_target(message_id: int) -> NotFound:
    return NotFound(f"unknown in_reply_to {message_id}: no message with that id was sent to or by you")


def unknown_thread_message(message_id: int) -> NotFound:
    return NotFound(f"unknown message {message_id}: no message with that id was sent to or by you")


def unknown_listed_thread(message_id: int) -> NotFound:
    return NotFound(f"unknown message {message_id}: no message has that id (or retention removed it)")


def all_inboxes_full(full: Sequence[str], inbox_cap: int) -> LimitReached:
    whose = "the inbox of " + full[0] if len(full) == 1 else "every inbox"
    return LimitReached(
        f"{whose} is full ({inbox_cap:,} undelivered messages and reminders scheduled for it); "
        "nothing was sent. Try again later, or tell the operator the recipient is not reading its messages."
    )


def not_yours(missing: Sequence[int]) -> NotFound:
    return NotFound(f"not messages of yours: {_listed(missing)}; nothing was acked. Ack only ids you received.")


def not_leased(missing: Sequence[int]) -> NotFound:
    return NotFound(
        f"not leased to you: {_listed(missing)}; nothing changed. Only messages received with "
        "ack=false and not yet acked hold a lease."
    )


def too_many_reminders(pending: int) -> LimitReached:
    return LimitReached(f"you have {pending} pending reminders, the limit; cancel some with cancel_reminder first")


def reminders_too_fast(recent: int, max_per_minute: int, oldest_recent: float, now: float) -> LimitReached:
    retry = math.ceil(oldest_recent + 60 - now)
    return LimitReached(
        f"too many reminders: {recent} in the last minute (limit {max_per_minute}); try again in {retry} s"
    )


def reminder_inbox_full(recipient: str, load: int, inbox_cap: int) -> LimitReached:
    return LimitReached(
        f"the inbox of {recipient} is full ({load:,} undelivered messages and reminders scheduled "
        f"for it, the limit is {inbox_cap:,}); nothing was scheduled. Try again later."
    )


def no_such_reminder(reminder_id: int) -> NotFound:
    return NotFound(f"no pending reminder {reminder_id} of yours; list_my_reminders shows the ones you can cancel")


QUERY_HOW: Final = (
    'Put words with punctuation in double quotes ("foo-bar", "v1.2"), double a quote inside them '
    '(""), write AND, OR, NOT in capitals between words only, and prefix a column only with body: or '
    "sender: (sender:manager). Plain words match messages holding all of them; abc* matches a prefix."
)


def query_refusal(query: str, error: str) -> Refused:
    """A search query the broker cannot read: what was wrong (`error`) and how to write it."""
    return Refused(f"not a search query the broker can read ({error}): {query!r}. {QUERY_HOW}")


def search_too_slow(query: str, timeout: float) -> Refused:
    return Refused(
        f"the search for {query!r} took longer than {timeout:g} s and was stopped; make it narrower "
        "(more words, fewer prefixes like abc*, or an agent)"
    )


def _listed(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids))
