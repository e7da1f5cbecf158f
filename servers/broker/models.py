"""What the broker's tools return. Optional fields that are null are left out: agents read these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class _Compact(BaseModel):
    model_config = ConfigDict(frozen=True)

    @model_serializer(mode="wrap")
    def _drop_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Only optional fields: a required field that is null (recv's `message`) says something.
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        return {k: v for k, v in data.items() if v is not None or (k in fields and fields[k].is_required())}


class Message(_Compact):
    id: int
    sender: str
    body: str
    sent_at: str  # ISO 8601 UTC
    in_reply_to: int | None = None
    broadcast: Literal[True] | None = None  # sent to every agent: it may need no action from you
    kind: Literal["reminder", "event"] | None = None  # absent for plain messages
    event: dict[str, Any] | None = None  # the helper event, when kind is "event"
    late: Literal[True] | None = None  # a reminder that fired after its time (the broker was down)


class SendResult(_Compact):
    id: int
    recipients: int  # how many inboxes it went to
    skipped_full: list[str] | None = None  # a broadcast skips inboxes that are full


class RecvResult(_Compact):
    message: Message | None
    queued: int  # messages still waiting after this one


class RecvBatchResult(_Compact):
    messages: list[Message]
    queued: int


class AckResult(_Compact):
    acked: int
    already_acked: int


class LeaseResult(_Compact):
    lease_until: str | None  # None: released for redelivery now
    messages: int


class PendingCount(_Compact):
    queued: int  # waiting to be received
    leased: int  # received with ack=false and not yet acked


class ThreadMessage(Message):
    to: list[str]  # ["*"] for a broadcast


class ThreadResult(_Compact):
    messages: list[ThreadMessage]


class Reminder(_Compact):
    id: int
    to: str
    body: str
    due_at: str


class RemindersResult(_Compact):
    reminders: list[Reminder]


class CancelResult(_Compact):
    cancelled: int


class Delivery(_Compact):
    to: str
    state: Literal["queued", "leased", "delivered"]
    delivered_at: str | None = None


class ListedMessage(Message):
    thread_id: int
    deliveries: list[Delivery]


class ListMessagesResult(_Compact):
    messages: list[ListedMessage]
    next_since: int | None  # pass as `since` to get what came after


class InboxStats(_Compact):
    name: str
    pending: int  # undelivered: queued or leased
    delivered_24h: int
    pending_reminders: int


class StatsResult(_Compact):
    inboxes: list[InboxStats]


class PostEventResult(_Compact):
    id: int
