"""The broker's rules: who may send what to whom, long-poll receive, leases, threads, reminders.

Every method takes the verified caller (a Principal) and raises Refused with a message that
says what was wrong and what to do. Storage is store.py's; timed work is scheduler.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio

from hyperhive.servers.broker import search_query
from hyperhive.servers.broker.models import (
    AckResult,
    CancelResult,
    Delivery,
    InboxStats,
    LeaseResult,
    ListedMessage,
    ListMessagesResult,
    Message,
    PeekedMessage,
    PeekResult,
    PendingCount,
    PostEventResult,
    Reminder,
    RemindersResult,
    SearchHit,
    SearchResult,
    SendResult,
    StatsResult,
    ThreadMessage,
    ThreadResult,
)
from hyperhive.servers.broker.scheduler import Scheduler
from hyperhive.servers.broker.store import Claimed, NewMessage, broker_stores
from hyperhive.servers.broker.waiters import Waiters
from hyperhive.servers.common.clock import iso, parse_iso
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.events import HelperEvent
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import BROADCAST, OPERATOR, SYSTEM, InvalidName, check_agent_name
from hyperhive.servers.common.policy import check_recipient
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.storage import Row

log = logging.getLogger("hyperhive.broker")

MAX_WAIT_SECONDS = 180.0
MAX_SEARCH_RESULTS = 200
MAX_QUERY_CHARS = 500
SEARCH_SECONDS = 5.0  # a search running longer is stopped (the reader serves every other read too)


class Broker:
    def __init__(self, kit: ServiceKit) -> None:
        self.kit = kit
        self.settings = kit.config.broker
        self.clock = kit.clock
        self.agents = kit.agents
        self.store, self.reminder_store = broker_stores(kit.db)
        self.waiters = Waiters()
        self.scheduler = Scheduler(self.store, self.reminder_store, self.waiters, self.settings, kit.clock)
        self._background: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Broker]:
        """Open the database and run the registry watch, the scheduler and the watch on other broker
        processes (PostgreSQL) until exit."""
        async with self.kit.running(self.scheduler.run, self._hear_others):
            try:
                yield self
            finally:
                self.waiters.close()
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _hear_others(self) -> None:
        await self.store.watch(self._woken, self.scheduler.poke)

    def _woken(self, names: Sequence[str] | None) -> None:
        """Another process changed these inboxes (None: any of them may have changed)."""
        if names is None:
            self.waiters.notify_all()
        else:
            for name in names:
                self.waiters.notify(name)

    async def drain(self) -> None:
        """Answer every waiting long-poll now (empty), so the server can stop promptly."""
        self.waiters.close()

    # ----------------------------------------------------------------------------------- sending
    async def send(self, me: Principal, to: str, body: str, in_reply_to: int | None) -> SendResult:
        self._check_body(body)
        recipients = await self._recipients(me, to)
        message_id, delivered, full = await self.store.insert_message(
            NewMessage(sender=me.name, body=body, in_reply_to=in_reply_to, broadcast=to == BROADCAST),
            recipients,
            self.clock.now(),
            inbox_cap=self.settings.inbox_cap,
            reply_visible_to=None if me.role is Role.OPERATOR else me.name,
        )
        for name in delivered:
            self.waiters.notify(name)
        return SendResult(id=message_id, recipients=len(delivered), skipped_full=full or None)

    async def post_event(self, to: str, event: HelperEvent) -> PostEventResult:
        if to != OPERATOR:
            await self._known_agent(to)
        message_id, _, _ = await self.store.insert_message(
            NewMessage(sender=SYSTEM, body=event.summary(), kind="event", event=event.model_dump_json()),
            [to],
            self.clock.now(),
            inbox_cap=None,  # the hive's own news is never refused
            reply_visible_to=None,
        )
        self.waiters.notify(to)
        return PostEventResult(id=message_id)

    def _check_body(self, body: str) -> None:
        if not body.strip():
            raise Refused("body is empty; write the message in body")
        size = len(body.encode())
        if size > self.settings.max_body_bytes:
            raise Refused(
                f"body is {size:,} bytes; the limit is {self.settings.max_body_bytes:,}. "
                "Shorten it, split it, or write it to a file and send the path."
            )

    async def _recipients(self, me: Principal, to: str) -> list[str]:
        """Resolve `to` for a send or reminder by `me`, enforcing allowed_recipients for agents."""
        if to == BROADCAST:
            await check_recipient(self.agents, me, BROADCAST, verb="send to")
            await self.agents.refresh()  # rare and cheap: reach an agent created a moment ago too
            names = [name for name in self.agents.names() if name != me.name]
            if not names:
                raise Refused("there are no other agents to broadcast to")
            return names
        if to == me.name:
            raise Refused(f"{to!r} is you; to leave yourself a note for later, use remind")
        if to != OPERATOR:
            await self._known_agent(to)
        await check_recipient(self.agents, me, to, verb="send to")
        return [to]

    async def _known_agent(self, name: str) -> None:
        try:
            check_agent_name(name)
        except InvalidName as e:
            raise Refused(f"unknown recipient: {e}") from None
        if await self.agents.lookup(name) is None:
            known = ", ".join([*self.agents.names()[:20], OPERATOR])
            raise Refused(f"unknown recipient {name!r}: no such agent. Known: {known}, or '*' for all agents")

    # --------------------------------------------------------------------------------- receiving
    async def receive(self, me: Principal, limit: int, wait_seconds: float, ack: bool) -> Claimed:
        """Up to `limit` messages, waiting up to `wait_seconds` for the first to arrive."""
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise Refused(f"wait_seconds must be between 0 and {MAX_WAIT_SECONDS:.0f}")
        deadline = anyio.current_time() + wait_seconds
        while True:
            woken = self.waiters.event(me.name)  # before looking, so no send slips between
            claimed = await self._claim(me.name, limit, ack)
            remaining = deadline - anyio.current_time()
            if claimed.rows or remaining <= 0 or self.waiters.closed:
                return claimed
            if claimed.next_lease_end is not None:  # taken by a receiver here or in another process
                self.scheduler.lease_taken(me.name, claimed.next_lease_end)
            with anyio.move_on_after(remaining):
                await woken.wait()

    async def _claim(self, recipient: str, limit: int, ack: bool) -> Claimed:
        now = self.clock.now()
        lease_until = None if ack else now + self.settings.lease_seconds
        # The claim runs in its own task: a receiver that is cancelled (client gone) mid-claim
        # cannot interrupt it, and whatever it took is given back instead of being lost.
        claim = asyncio.ensure_future(self.store.claim(recipient, limit, now, lease_until))
        try:
            claimed = await asyncio.shield(claim)
        except asyncio.CancelledError:
            claim.add_done_callback(lambda done: self._give_back(recipient, done))
            raise
        if claimed.rows and anyio.current_effective_deadline() == -math.inf:
            # Cancelled while the claim ran (the cancellation lands at our next await).
            self._give_back(recipient, claim)
        elif lease_until is not None and claimed.rows:
            self.scheduler.lease_taken(recipient, lease_until)
        return claimed

    def _give_back(self, recipient: str, claim: asyncio.Future[Claimed]) -> None:
        if claim.cancelled() or claim.exception() is not None or not claim.result().rows:
            return
        ids = [row["id"] for row in claim.result().rows]
        task = asyncio.ensure_future(self.store.unclaim(recipient, ids))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self.waiters.notify(recipient))

    async def ack(self, me: Principal, ids: Sequence[int]) -> AckResult:
        acked, already = await self.store.ack(me.name, _unique(ids), self.clock.now())
        return AckResult(acked=acked, already_acked=already)

    async def lease(self, me: Principal, ids: Sequence[int], seconds: float) -> LeaseResult:
        ids = _unique(ids)
        until = self.clock.now() + seconds if seconds > 0 else None
        await self.store.set_lease(me.name, ids, until)
        if until is None:
            self.waiters.notify(me.name)
        else:
            self.scheduler.lease_taken(me.name, until)
        return LeaseResult(lease_until=iso(until) if until else None, messages=len(ids))

    async def pending(self, me: Principal) -> PendingCount:
        queued, leased = await self.store.counts(me.name, self.clock.now())
        return PendingCount(queued=queued, leased=leased)

    # ------------------------------------------------------------------------------------ reading
    async def thread(self, me: Principal, message_id: int) -> ThreadResult:
        rows = await self.store.thread(message_id, None if me.role is Role.OPERATOR else me.name)
        return ThreadResult(
            messages=[
                ThreadMessage(
                    **_message_fields(row),
                    to=[BROADCAST] if row["broadcast"] else sorted((row["recipients"] or "").split(",")),
                )
                for row in rows
            ]
        )

    async def list_messages(
        self, agent: str | None, since: int | None, thread: int | None, limit: int
    ) -> ListMessagesResult:
        if agent is not None:
            _check_listed_name(agent)
        rows, deliveries = await self.store.list_messages(agent, since, thread, limit)
        by_message = _deliveries_by_message(deliveries)
        messages = [
            ListedMessage(
                **_message_fields(row), thread_id=row["thread_root"], deliveries=by_message.get(row["id"], [])
            )
            for row in rows
        ]
        return ListMessagesResult(messages=messages, next_since=messages[-1].id if messages else since)

    async def search(
        self, me: Principal, query: str, agent: str | None, limit: int, order: Literal["newest", "relevance"]
    ) -> SearchResult:
        """Messages matching `query`: the operator's search covers every message, anyone else's only
        what they sent or received (and broadcasts they got), whatever `agent` names."""
        if not query.strip():
            raise Refused("query is empty; give the words to look for, e.g. query='deploy failed'")
        if not 1 <= limit <= MAX_SEARCH_RESULTS:
            raise Refused(f"limit must be between 1 and {MAX_SEARCH_RESULTS}")
        if agent is not None:
            _check_listed_name(agent)
        parsed = search_query.parse(query)
        viewer = None if me.role is Role.OPERATOR else me.name
        rows, deliveries = await self.store.search(parsed, viewer, agent, limit, order, SEARCH_SECONDS)
        by_message = _deliveries_by_message(deliveries)
        return SearchResult(
            messages=[
                SearchHit(
                    **_message_fields(row),
                    thread_id=row["thread_root"],
                    deliveries=by_message.get(row["id"], []),
                    snippet=row["snippet"],
                )
                for row in rows
            ]
        )

    async def peek(self, me: Principal, limit: int) -> PeekResult:
        """The caller's waiting messages, oldest first, read without taking or leasing them."""
        now = self.clock.now()
        rows = await self.store.peek(me.name, limit)
        queued, leased = await self.store.counts(me.name, now)
        messages = []
        for row in rows:
            leased_now = row["state"] == "leased" and row["lease_until"] > now  # a lease run out: queued again
            messages.append(
                PeekedMessage(
                    **_message_fields(row),
                    thread_id=row["thread_root"],
                    state="leased" if leased_now else "queued",
                    lease_until=iso(row["lease_until"]) if leased_now else None,
                )
            )
        return PeekResult(messages=messages, queued=queued, leased=leased)

    async def stats(self) -> StatsResult:
        counts = await self.store.stats(self.clock.now() - 86_400)
        names = sorted({*self.agents.names(), OPERATOR, *counts})
        return StatsResult(
            inboxes=[
                InboxStats(name=name, pending=c[0], delivered_24h=c[1], pending_reminders=c[2], reminders_24h=c[3])
                for name in names
                for c in [counts.get(name, (0, 0, 0, 0))]
            ]
        )

    # ---------------------------------------------------------------------------------- reminders
    async def remind(
        self, me: Principal, body: str, in_seconds: float | None, at: str | None, to: str | None
    ) -> Reminder:
        self._check_body(body)
        now = self.clock.now()
        limits = self.settings.reminders
        if (in_seconds is None) == (at is None):
            raise Refused("give exactly one of in_seconds (a delay) or at (an ISO 8601 time)")
        if at is not None:
            try:
                due = parse_iso(at)
            except ValueError as e:
                raise Refused(str(e)) from None
        else:
            assert in_seconds is not None
            due = now + in_seconds
        if due - now < limits.min_delay_seconds:
            raise Refused(f"a reminder must be at least {limits.min_delay_seconds:g} seconds ahead")
        if due - now > limits.max_horizon_days * 86_400:
            raise Refused(f"a reminder may be at most {limits.max_horizon_days:g} days ahead")
        recipient = me.name
        if to is not None and to != me.name:
            if to == BROADCAST:
                raise Refused("a reminder goes to one recipient, not '*'")
            recipient = (await self._recipients(me, to))[0]
        reminder_id = await self.reminder_store.add(
            me.name,
            recipient,
            body,
            due,
            now,
            max_pending=limits.max_pending,
            max_per_minute=limits.max_per_minute,
            inbox_cap=self.settings.inbox_cap,
        )
        self.scheduler.poke()
        return Reminder(id=reminder_id, to=recipient, body=body, due_at=iso(due))

    async def reminders(self, me: Principal) -> RemindersResult:
        rows = await self.reminder_store.pending_of(me.name)
        return RemindersResult(
            reminders=[
                Reminder(id=row["id"], to=row["recipient"], body=row["body"], due_at=iso(row["due_at"])) for row in rows
            ]
        )

    async def cancel_reminder(self, me: Principal, reminder_id: int) -> CancelResult:
        await self.reminder_store.cancel(me.name, reminder_id, self.clock.now())
        self.scheduler.poke()
        return CancelResult(cancelled=reminder_id)


def _check_listed_name(agent: str) -> None:
    """An `agent` filter names an agent, the operator or system."""
    if agent != OPERATOR and agent != SYSTEM:
        try:
            check_agent_name(agent)
        except InvalidName as e:
            raise Refused(str(e)) from None


def _deliveries_by_message(deliveries: Sequence[Row]) -> dict[int, list[Delivery]]:
    by_message: dict[int, list[Delivery]] = {}
    for d in deliveries:
        by_message.setdefault(d["message_id"], []).append(
            Delivery(
                to=d["recipient"],
                state=d["state"],
                delivered_at=iso(d["delivered_at"]) if d["delivered_at"] else None,
            )
        )
    return by_message


def to_message(row: Row) -> Message:
    return Message(**_message_fields(row))


def _message_fields(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "sender": row["sender"],
        "body": row["body"],
        "sent_at": iso(row["created_at"]),
        "in_reply_to": row["in_reply_to"],
        "broadcast": True if row["broadcast"] else None,
        "kind": None if row["kind"] == "message" else row["kind"],
        "event": json.loads(row["event"]) if row["event"] else None,
        "late": True if row["late"] else None,
    }


def _unique(ids: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(ids))
