"""The broker's MCP tools: thin wrappers that name the caller and call mailbox.Broker.

The sender of everything is the verified token's subject; no tool takes a sender argument.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from hyperhive.servers.broker import store_pg, store_sqlite
from hyperhive.servers.broker.mailbox import (
    MAX_QUERY_CHARS,
    MAX_SEARCH_RESULTS,
    MAX_WAIT_SECONDS,
    Broker,
    to_message,
)
from hyperhive.servers.broker.models import (
    AckResult,
    CancelResult,
    LeaseResult,
    ListMessagesResult,
    PeekResult,
    PendingCount,
    PostEventResult,
    RecvBatchResult,
    RecvResult,
    Reminder,
    RemindersResult,
    SearchResult,
    SendResult,
    StatsResult,
    ThreadResult,
)
from hyperhive.servers.common.clock import Clock
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.events import HelperEvent
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.models import Cursor, Id
from hyperhive.servers.common.storage import Schemas, is_postgresql
from hyperhive.servers.common.tokens import ServerCredentials, caller
from hyperhive.servers.common.toolserver import HiveServer, create_mcp

INSTRUCTIONS = (
    "The hyperhive message broker. Messages you send are signed with your identity. "
    "Use recv/recv_batch to get messages (long-poll up to 180 s), send to reply, thread to see "
    "a conversation, remind to schedule a message."
)

Wait = Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for a message (0-180)")]
Ack = Annotated[
    bool,
    Field(
        description="true: at-most-once, the message is gone once this returns (a lost reply loses it). "
        "false (at-least-once, recommended): leased; ack(ids) after handling, or they come back when the lease ends"
    ),
]
Ids = Annotated[list[Id], Field(min_length=1, max_length=100)]

SCHEMAS = Schemas(store_sqlite.MIGRATIONS, store_pg.MIGRATIONS)


def create(config: HiveConfig, credentials: ServerCredentials, *, clock: Clock | None = None) -> HiveServer:
    kit = ServiceKit("broker", config, SCHEMAS, clock=clock)
    if not is_postgresql(kit.db):
        store_sqlite.check_fts5()  # search_messages' index: say so now, not as a failed migration
    broker = Broker(kit)

    mcp = create_mcp(
        "broker", instructions=INSTRUCTIONS, credentials=credentials, agents=kit.agents, running=broker.running
    )

    @mcp.tool(annotations={"readOnlyHint": False})
    async def send(
        to: Annotated[str, Field(description="agent name, 'manager', 'operator', or '*' for all other agents")],
        body: str,
        in_reply_to: Annotated[Id | None, Field(description="id of the message this answers")] = None,
    ) -> SendResult:
        """Send a message. Returns its id."""
        return await broker.send(caller(), to, body, in_reply_to)

    @mcp.tool
    async def recv(wait_seconds: Wait = 0, ack: Ack = True) -> RecvResult:
        """Take your oldest pending message (null if none came in wait_seconds); queued: how many remain."""
        claimed = await broker.receive(caller(), 1, wait_seconds, ack)
        message = to_message(claimed.rows[0]) if claimed.rows else None
        return RecvResult(message=message, queued=claimed.queued)

    @mcp.tool
    async def recv_batch(
        max: Annotated[int, Field(ge=1, le=50)] = 10, wait_seconds: Wait = 0, ack: Ack = True
    ) -> RecvBatchResult:
        """Like recv, for up to max messages at once."""
        claimed = await broker.receive(caller(), max, wait_seconds, ack)
        return RecvBatchResult(messages=[to_message(row) for row in claimed.rows], queued=claimed.queued)

    @mcp.tool
    async def ack(ids: Ids) -> AckResult:
        """Confirm messages received with ack=false, so they are not delivered again."""
        return await broker.ack(caller(), ids)

    @mcp.tool
    async def lease(
        ids: Ids,
        seconds: Annotated[float, Field(ge=0, le=86_400, description="0 releases them for redelivery now")],
    ) -> LeaseResult:
        """Extend the lease on messages received with ack=false to seconds from now."""
        return await broker.lease(caller(), ids, seconds)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def pending_count() -> PendingCount:
        """How many messages wait for you."""
        return await broker.pending(caller())

    @mcp.tool(annotations={"readOnlyHint": True})
    async def thread(message_id: Id) -> ThreadResult:
        """The conversation a message belongs to (what you sent or received), oldest first."""
        return await broker.thread(caller(), message_id)

    @mcp.tool
    async def remind(
        body: str,
        in_seconds: Annotated[float | None, Field(gt=0)] = None,
        at: Annotated[str | None, Field(description="ISO 8601 time, e.g. 2026-11-21T15:30:00Z")] = None,
        to: Annotated[str | None, Field(description="default: yourself")] = None,
    ) -> Reminder:
        """Schedule a message after in_seconds or at a time."""
        return await broker.remind(caller(), body, in_seconds, at, to)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_my_reminders() -> RemindersResult:
        """Your pending reminders."""
        return await broker.reminders(caller())

    @mcp.tool
    async def cancel_reminder(id: Id) -> CancelResult:
        """Cancel a pending reminder of yours."""
        return await broker.cancel_reminder(caller(), id)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_messages(
        agent: Annotated[str | None, Field(description="only messages this name sent or received")] = None,
        since: Annotated[Cursor | None, Field(description="only messages with a larger id (a cursor)")] = None,
        thread: Annotated[Id | None, Field(description="only the thread of this message id")] = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
    ) -> ListMessagesResult:
        """Messages and their deliveries, oldest first: the newest `limit`, or the `limit` after `since`."""
        return await broker.list_messages(agent, since, thread, limit)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def search_messages(
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_QUERY_CHARS,
                description='words to find (all must match); "an exact phrase" in double quotes, abc* a prefix, '
                "OR/NOT between words, sender:NAME or body:WORD for one field",
            ),
        ],
        agent: Annotated[str | None, Field(description="only messages this name sent or received")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_RESULTS)] = 50,
        order: Annotated[
            Literal["newest", "relevance"], Field(description="newest first (default), or best match first")
        ] = "newest",
    ) -> SearchResult:
        """Search message bodies and senders. You find only messages you sent or received; the operator, all."""
        return await broker.search(caller(), query, agent, limit, order)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def peek_inbox(limit: Annotated[int, Field(ge=1, le=200)] = 50) -> PeekResult:
        """Your waiting messages, oldest first, without taking them: they stay unread (recv takes them)."""
        return await broker.peek(caller(), limit)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def stats() -> StatsResult:
        """Per inbox: undelivered messages, deliveries in the last 24 h, pending reminders."""
        return await broker.stats()

    @mcp.tool
    async def post_event(
        to: Annotated[str, Field(description="agent name or 'operator'")], event: HelperEvent
    ) -> PostEventResult:
        """Deliver a helper event from sender 'system'."""
        return await broker.post_event(to, event)

    return HiveServer(mcp=mcp, before_shutdown=broker.drain)
