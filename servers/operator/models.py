"""What the operator server's tools return. Optional fields that are null are left out: agents read these."""

from __future__ import annotations

from typing import Literal

from hyperhive.servers.common.audit import AuditEntry
from hyperhive.servers.common.models import CompactModel

State = Literal["pending", "answered", "cancelled", "expired"]


class Asked(CompactModel):
    id: int
    to: str  # "operator" or the agent asked
    expires_at: str  # ISO 8601 UTC; unanswered by then, it resolves as "[expired]"


class Resolved(CompactModel):
    id: int
    state: Literal["answered", "cancelled"]
    answer: str  # as the asker gets it: several options joined with ", "; "[cancelled]"


class MyAsk(CompactModel):
    id: int
    to: str
    question: str
    options: list[str] | None = None
    multi: Literal[True] | None = None
    state: State
    asked_at: str
    expires_at: str
    answer: str | None = None
    answered_by: str | None = None  # who resolved it: the one asked, the operator, or "system" (expiry)
    resolved_at: str | None = None


class MyAsksResult(CompactModel):
    questions: list[MyAsk]  # pending first (oldest first), then the latest resolved ones


class PendingQuestion(CompactModel):
    id: int
    asker: str
    question: str
    options: list[str] | None = None
    multi: Literal[True] | None = None  # the answer may pick several options
    asked_at: str
    expires_at: str
    seconds_left: int
    about: int | None = None  # the message it is about, as its asker said: its thread


class PendingQuestionsResult(CompactModel):
    questions: list[PendingQuestion]


class HistoryEntry(CompactModel):
    id: int
    asker: str
    to: str
    question: str
    options: list[str] | None = None
    multi: Literal[True] | None = None
    state: Literal["answered", "cancelled", "expired"]
    answer: str
    resolved_by: str  # a principal, or "system" for an expiry
    asked_at: str
    resolved_at: str
    audit: list[AuditEntry]


class HistoryResult(CompactModel):
    questions: list[HistoryEntry]  # newest resolution first
