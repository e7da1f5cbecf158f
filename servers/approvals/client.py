"""The approvals server's tools as the hive's own processes call them (the CLI, the dashboard),
with typed results."""

from __future__ import annotations

from typing import ClassVar

from hyperhive.servers.approvals.models import Request, ReviewList
from hyperhive.servers.common.server_client import ServerClient


class ApprovalsClient(ServerClient):
    server: ClassVar[str] = "approvals"

    async def pending_approvals(self) -> ReviewList:
        return await self._call("pending_approvals", ReviewList)

    async def approve(self, id: int) -> Request:
        """The request after approving: `state` "failed" (and `error`) when carrying it out failed."""
        return await self._call("approve", Request, id=id)

    async def deny(self, id: int, note: str) -> Request:
        return await self._call("deny", Request, id=id, note=note)

    async def approval_history(self, limit: int = 50) -> ReviewList:
        return await self._call("approval_history", ReviewList, limit=limit)
