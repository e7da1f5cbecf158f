"""The approvals server's store: requests, their audit trail, events to deliver.

A request is `pending` until the operator acts. Approving claims it (`approving`) in one
transaction, so two approvals, or an approval racing a denial, resolve it once, whichever process
runs them; carrying it out then ends it `applied` or `failed`. A request still `approving` after a
crash is carried out (or found done) at start-up. Every state change is a conditional
`UPDATE … WHERE state = …`: only the transaction that changes the row writes its audit entry and
queues its event, and the three commit together. A store refuses what the rows it reads forbid (a
request asked for already, a full queue) in the transaction that would insert.

`ApprovalStore` is the contract; store_sqlite.py and store_pg.py keep it, one per engine, and
`approval_store(db)` picks the one for the database the server was given (common/storage.py).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from hyperhive.servers.approvals.models import RequestKind, RequestState
from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.errors import AlreadyResolved, LimitReached, NotFound, Refused
from hyperhive.servers.common.events import ApprovalResolved
from hyperhive.servers.common.storage import AnyDatabase, Row, is_postgresql

Kind = RequestKind  # the tools' own types (models.py): one definition of each
State = RequestState


@dataclass(frozen=True, slots=True)
class RequestRow:
    id: int
    kind: Kind
    agent: str
    commit_sha: str | None
    diff: str
    requested_by: str
    requested_at: float
    state: State
    resolved_by: str | None
    resolved_at: float | None
    note: str | None
    error: str | None
    base_sha: str | None
    widenings: list[str]
    reason: str | None
    message: str | None

    @classmethod
    def of(cls, row: Row) -> RequestRow:
        return cls(
            id=row["id"],
            kind=row["kind"],
            agent=row["agent"],
            commit_sha=row["commit_sha"],
            diff=row["diff"],
            requested_by=row["requested_by"],
            requested_at=row["requested_at"],
            state=row["state"],
            resolved_by=row["resolved_by"],
            resolved_at=row["resolved_at"],
            note=row["note"],
            error=row["error"],
            base_sha=row["base_sha"],
            widenings=json.loads(row["widenings"]),  # stored as a JSON list
            reason=row["reason"],
            message=row["message"],
        )

    def resolved_event(self) -> ApprovalResolved:
        """What its requester is told once it is applied, denied or failed."""
        assert self.state in ("applied", "denied", "failed") and self.resolved_by is not None
        return ApprovalResolved(
            request_id=self.id,
            request="apply_commit" if self.kind == "apply_commit" else "spawn",
            agent=self.agent,
            outcome=self.state,
            by=self.resolved_by,
            note=self.note,
            error=self.error,
        )


class ApprovalStore(ABC):
    """Each method is one transaction, or one consistent read."""

    # ------------------------------------------------------------------------------------ reading
    @abstractmethod
    async def get(self, request_id: int) -> RequestRow:
        """The request; NotFound if there is none."""

    @abstractmethod
    async def requested_by(self, requester: str, limit: int) -> list[RequestRow]:
        """`requester`'s requests: the open ones first, then the latest resolved; newest first in each."""

    @abstractmethod
    async def open_requests(self) -> list[RequestRow]:
        """Requests waiting for a decision or being carried out, oldest first."""

    @abstractmethod
    async def resolved(self, limit: int) -> list[RequestRow]:
        """The `limit` latest applied, denied or failed requests, newest first."""

    @abstractmethod
    async def approving(self) -> list[RequestRow]:
        """Requests approved and not yet carried out (a crash, or a lifecycle server away), oldest first."""

    # ------------------------------------------------------------------------------------ writing
    @abstractmethod
    async def add(
        self,
        kind: Kind,
        agent: str,
        commit_sha: str | None,
        base_sha: str | None,
        diff: str,
        widenings: list[str],
        reason: str,
        message: str | None,
        requester: str,
        now: float,
        max_pending: int,
    ) -> int:
        """The new request's id, with its audit entry. Refused (`asks_already`) if an open request asks
        the same already; LimitReached (`too_many_waiting`) if `max_pending` requests wait already."""

    @abstractmethod
    async def claim(self, request_id: int, operator: str, now: float) -> RequestRow:
        """pending -> approving, by `operator`: exactly one caller wins; AlreadyResolved for the others."""

    @abstractmethod
    async def deny(self, request_id: int, operator: str, note: str, now: float) -> RequestRow:
        """pending -> denied with `note`, its audit entry and the requester's event: exactly one caller
        wins (a denial racing an approval too); AlreadyResolved for the others."""

    @abstractmethod
    async def finish(
        self, request_id: int, outcome: Literal["applied", "failed"], error: str | None, now: float
    ) -> RequestRow:
        """approving -> applied | failed, with its audit entry and the requester's event; the request
        as it is after (recovery and an approval may both try: the first one records it)."""


def requested_detail(kind: Kind, agent: str, commit_sha: str | None) -> str:
    """The audit detail of a new request."""
    return f"{kind} {agent}" + (f" at {commit_sha}" if commit_sha else "")


def asks_already(request_id: int, state: State) -> Refused:
    return Refused(f"request #{request_id} asks for this already and is {state}")


def too_many_waiting(waiting: int) -> LimitReached:
    return LimitReached(
        f"{waiting} requests are waiting for the operator already, the limit; try again when some are resolved"
    )


def no_such_request(request_id: int) -> NotFound:
    return NotFound(f"there is no request #{request_id}; pending_approvals lists the waiting ones")


def already_resolved(row: RequestRow) -> AlreadyResolved:
    """How a request that is no longer pending was resolved, for whoever acts on it late."""
    when = iso(row.resolved_at) if row.resolved_at else "?"
    if row.state == "approving":
        return AlreadyResolved(
            f"request #{row.id} was approved by {row.resolved_by} at {when} and is being carried out"
        )
    return AlreadyResolved(f"request #{row.id} was already {row.state}: by {row.resolved_by} at {when}")


def approval_store(db: AnyDatabase) -> ApprovalStore:
    """The store for `db`'s engine."""
    if is_postgresql(db):
        from hyperhive.servers.approvals.store_pg import PgApprovalStore

        return PgApprovalStore(db)
    from hyperhive.servers.approvals.store_sqlite import SqliteApprovalStore

    return SqliteApprovalStore(db)
