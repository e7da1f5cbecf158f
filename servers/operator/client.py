"""The operator server's tools as the hive's own processes call them (the CLI, the dashboard),
with typed results."""

from __future__ import annotations

from typing import ClassVar

from hyperhive.servers.common.server_client import ServerClient
from hyperhive.servers.operator.models import HistoryResult, PendingQuestionsResult, Resolved


class OperatorClient(ServerClient):
    server: ClassVar[str] = "operator"

    async def pending_questions(self) -> PendingQuestionsResult:
        return await self._call("pending_questions", PendingQuestionsResult)

    async def answer(self, id: int, answer: str | list[str]) -> Resolved:
        return await self._call("answer", Resolved, id=id, answer=answer)

    async def cancel_question(self, id: int) -> Resolved:
        return await self._call("cancel_question", Resolved, id=id)

    async def question_history(self, limit: int = 50) -> HistoryResult:
        return await self._call("question_history", HistoryResult, limit=limit)
