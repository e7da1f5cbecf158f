"""The operator server's store: questions, the events they owe (outbox) and their audit trail.

A question is `pending` until exactly one of answer, cancel or expiry resolves it. Each of those
is one write transaction whose state change is a conditional `UPDATE … WHERE state = 'pending'`:
only the transaction that changes the row queues the asker's event and writes the audit entry,
so a race between an answer, a cancel and the deadline resolves the question once, whichever
process runs them. Checks that need settings or the agent registry live in questions.py; a store
reads and writes rows, and refuses what the rows it reads forbid (LimitReached), in the same
transaction.

`QuestionStore` is the contract; store_sqlite.py and store_pg.py keep it, one per engine, and
`question_store(db)` picks the one for the database the server was given (common/storage.py).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, Literal

from hyperhive.servers.common.audit import AuditEntry
from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.errors import LimitReached
from hyperhive.servers.common.events import OperatorAnswered, QuestionAsked
from hyperhive.servers.common.storage import AnyDatabase, Row, is_postgresql
from hyperhive.servers.operator.models import State as QuestionState

State = QuestionState  # the tools' own type (models.py): one definition
CANCELLED: Final = "[cancelled]"
EXPIRED: Final = "[expired]"


@dataclass(frozen=True, slots=True)
class NewQuestion:
    asker: str
    target: str
    question: str
    options: list[str] | None
    multi: bool
    expires_at: float
    about: int | None = None  # a broker message id

    def asked_event(self, question_id: int) -> QuestionAsked:
        """What an agent asked is told (the operator reads pending_questions instead)."""
        return QuestionAsked(
            question_id=question_id,
            asker=self.asker,
            question=self.question,
            options=self.options,
            multi=self.multi,
            expires_at=iso(self.expires_at),
        )


@dataclass(frozen=True, slots=True)
class QuestionRow:
    id: int
    asker: str
    target: str
    question: str
    options: list[str] | None
    multi: bool
    asked_at: float
    expires_at: float
    state: State
    answer: str | None
    resolved_by: str | None
    resolved_at: float | None
    about: int | None

    @classmethod
    def of(cls, row: Row) -> QuestionRow:
        return cls(
            id=row["id"],
            asker=row["asker"],
            target=row["target"],
            question=row["question"],
            options=json.loads(row["options"]) if row["options"] is not None else None,
            multi=bool(row["multi"]),
            asked_at=row["asked_at"],
            expires_at=row["expires_at"],
            state=row["state"],
            answer=row["answer"],
            resolved_by=row["resolved_by"],
            resolved_at=row["resolved_at"],
            about=row["about"],
        )

    def answered_event(self) -> OperatorAnswered:
        """What its asker is told once it is resolved."""
        assert self.answer is not None and self.resolved_by is not None
        return OperatorAnswered(
            question_id=self.id, question=self.question, answer=self.answer, answered_by=self.resolved_by
        )


@dataclass(frozen=True, slots=True)
class Resolution:
    question: QuestionRow  # as it is after the transaction
    won: bool  # False: it was already resolved (or had just expired), and nothing changed


class QuestionStore(ABC):
    """Each method is one transaction, or one consistent read."""

    @abstractmethod
    async def add(self, new: NewQuestion, now: float, *, max_pending: int) -> int:
        """Insert a question (its audit entry and, for an agent, the QuestionAsked event) and return its id;
        LimitReached (`too_many_pending`) if its asker has `max_pending` pending already."""

    @abstractmethod
    async def resolve(
        self, question_id: int, state: Literal["answered", "cancelled"], answer: str, actor: str, now: float
    ) -> Resolution:
        """Answer or cancel a pending question, unless something resolved it first.

        A question past its deadline is expired first, in the same transaction: a deadline is
        final even in the moment before the expiry task gets to it.
        """

    @abstractmethod
    async def expire_due(self, now: float, batch: int = 500) -> int:
        """Expire one batch of pending questions past their deadline; returns how many (0: none left)."""

    @abstractmethod
    async def next_deadline(self) -> float | None: ...

    @abstractmethod
    async def get(self, question_id: int) -> QuestionRow | None: ...

    @abstractmethod
    async def asked_by(self, asker: str, resolved_limit: int) -> list[QuestionRow]:
        """The asker's pending questions (oldest first), then its `resolved_limit` latest resolved ones."""

    @abstractmethod
    async def pending_for(self, target: str) -> list[QuestionRow]: ...

    @abstractmethod
    async def resolved(self, limit: int) -> list[QuestionRow]: ...

    @abstractmethod
    async def audit_trails(self, question_ids: list[int]) -> dict[int, list[AuditEntry]]: ...


def tells_asker(state: Literal["answered", "cancelled"], actor: str, question: QuestionRow) -> bool:
    """Whether resolving `question` sends its asker an event: not when it withdrew the question itself."""
    return not (state == "cancelled" and actor == question.asker)


def too_many_pending(pending: int) -> LimitReached:
    return LimitReached(
        f"you have {pending} pending questions, the limit; wait for answers or withdraw some "
        "with cancel_ask (list_my_asks shows them)"
    )


def question_store(db: AnyDatabase) -> QuestionStore:
    """The store for `db`'s engine."""
    if is_postgresql(db):
        from hyperhive.servers.operator.store_pg import PgQuestionStore

        return PgQuestionStore(db)
    from hyperhive.servers.operator.store_sqlite import SqliteQuestionStore

    return SqliteQuestionStore(db)
