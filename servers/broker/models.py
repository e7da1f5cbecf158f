"""What the broker's tools return. Optional fields that are null are left out: agents read these."""

from __future__ import annotations

from typing import Any, Literal

from hyperhive.servers.common.models import CompactModel


class Message(CompactModel):
    id: int
    sender: str
    body: str
    sent_at: str  # ISO 8601 UTC
    in_reply_to: int | None = None
    broadcast: Literal[True] | None = None  # sent to every agent: it may need no action from you
    kind: Literal["reminder", "event"] | None = None  # absent for plain messages
    event: dict[str, Any] | None = None  # the helper event, when kind is "event"
    late: Literal[True] | None = None  # a reminder that fired after its time (the broker was down)


class SendResult(CompactModel):
    id: int
    recipients: int  # how many inboxes it went to
    skipped_full: list[str] | None = None  # a broadcast skips inboxes that are full


class RecvResult(CompactModel):
    message: Message | None
    queued: int  # messages still waiting after this one


class RecvBatchResult(CompactModel):
    messages: list[Message]
    queued: int


class AckResult(CompactModel):
    acked: int
    already_acked: int


class LeaseResult(CompactModel):
    lease_until: str | None  # None: released for redelivery now
    messages: int


class PendingCount(CompactModel):
    queued: int  # waiting to be received
    leased: int  # received with ack=false and not yet acked


class ThreadMessage(Message):
    to: list[str]  # ["*"] for a broadcast


class ThreadResult(CompactModel):
    messages: list[ThreadMessage]


class Reminder(CompactModel):
    id: int
    to: str
    body: str
    due_at: str


class RemindersResult(CompactModel):
    reminders: list[Reminder]


class CancelResult(CompactModel):
    cancelled: int


class Delivery(CompactModel):
    to: str
    state: Literal["queued", "leased", "delivered"]
    delivered_at: str | None = None


class ListedMessage(Message):
    thread_id: int
    deliveries: list[Delivery]


class ListMessagesResult(CompactModel):
    messages: list[ListedMessage]
    next_since: int | None  # pass as `since` to get what came after


class InboxStats(CompactModel):
    name: str
    pending: int  # undelivered: queued or leased
    delivered_24h: int  # messages and reminders it took in the last 24 h
    pending_reminders: int  # reminders it set that have not fired
    reminders_24h: int  # reminders it took in the last 24 h


class StatsResult(CompactModel):
    inboxes: list[InboxStats]


class PostEventResult(CompactModel):
    id: int


class SearchHit(ListedMessage):
    snippet: str  # the best matching part of the body (or sender), matches between « and »


class SearchResult(CompactModel):
    messages: list[SearchHit]  # newest first, or best first (order="relevance")


class PeekedMessage(Message):
    thread_id: int
    state: Literal["queued", "leased"]  # leased: taken with ack=false and not acked yet
    lease_until: str | None = None


class PeekResult(CompactModel):
    messages: list[PeekedMessage]  # oldest first, as recv hands them out
    queued: int  # all waiting to be received
    leased: int  # all taken with ack=false, not acked yet
