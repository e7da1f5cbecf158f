"""The broker's tools as the hive's own processes call them (the harness, the CLI, the dashboard,
the other servers' outboxes), with typed results."""

from __future__ import annotations

from typing import ClassVar, Literal

from hyperhive.servers.broker.models import (
    AckResult,
    LeaseResult,
    ListMessagesResult,
    PeekResult,
    PostEventResult,
    RecvBatchResult,
    RecvResult,
    SearchResult,
    SendResult,
    StatsResult,
)
from hyperhive.servers.common.events import HelperEvent
from hyperhive.servers.common.server_client import ServerClient


class BrokerClient(ServerClient):
    server: ClassVar[str] = "broker"

    async def send(self, to: str, body: str, in_reply_to: int | None = None) -> SendResult:
        return await self._call("send", SendResult, to=to, body=body, in_reply_to=in_reply_to)

    async def recv(self, *, wait_seconds: float, ack: bool) -> RecvResult:
        return await self._call("recv", RecvResult, wait_seconds=wait_seconds, ack=ack)

    async def recv_batch(self, *, max: int, wait_seconds: float = 0, ack: bool) -> RecvBatchResult:
        return await self._call("recv_batch", RecvBatchResult, max=max, wait_seconds=wait_seconds, ack=ack)

    async def ack(self, ids: list[int]) -> AckResult:
        return await self._call("ack", AckResult, ids=ids)

    async def lease(self, ids: list[int], seconds: float) -> LeaseResult:
        return await self._call("lease", LeaseResult, ids=ids, seconds=seconds)

    async def list_messages(
        self, *, agent: str | None = None, since: int | None = None, thread: int | None = None, limit: int = 100
    ) -> ListMessagesResult:
        return await self._call(
            "list_messages", ListMessagesResult, agent=agent, since=since, thread=thread, limit=limit
        )

    async def search_messages(
        self,
        query: str,
        *,
        agent: str | None = None,
        limit: int = 50,
        order: Literal["newest", "relevance"] = "newest",
    ) -> SearchResult:
        return await self._call("search_messages", SearchResult, query=query, agent=agent, limit=limit, order=order)

    async def peek_inbox(self, limit: int = 50) -> PeekResult:
        return await self._call("peek_inbox", PeekResult, limit=limit)

    async def stats(self) -> StatsResult:
        return await self._call("stats", StatsResult)

    async def post_event(self, to: str, event: HelperEvent) -> PostEventResult:
        return await self._call("post_event", PostEventResult, to=to, event=event.model_dump(mode="json"))
