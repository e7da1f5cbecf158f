"""The operator server's rules: asking the operator or another agent, answering, cancelling, deadlines.

Every method takes the verified caller (a Principal) and raises Refused with a message that says
what was wrong and what to do. A question is resolved exactly once, by an answer, a cancel or its
deadline (see store.py); the asker hears of it through an OperatorAnswered event that the outbox
delivers through the broker, and a question to an agent reaches it as a QuestionAsked event.
Questions never reveal themselves to principals they do not concern.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, TypedDict

from hyperhive.servers.common.clock import DueLoop, iso
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import OPERATOR, InvalidName, check_agent_name
from hyperhive.servers.common.policy import check_recipient
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.operator.models import (
    Asked,
    HistoryEntry,
    HistoryResult,
    MyAsk,
    MyAsksResult,
    PendingQuestion,
    PendingQuestionsResult,
    Resolved,
)
from hyperhive.servers.operator.store import CANCELLED, EXPIRED, NewQuestion, QuestionRow, question_store

log = logging.getLogger("hyperhive.operator")

RECENT_RESOLVED: Final = 20  # list_my_asks shows this many resolved questions after the pending ones
NO_ANSWER: Final = (CANCELLED, EXPIRED)  # what a question resolves as without an answer; no one may answer it

Answer = str | list[str]


class Questions:
    def __init__(self, kit: ServiceKit) -> None:
        self.kit = kit
        self.settings = kit.config.questions
        self.clock = kit.clock
        self.agents = kit.agents
        self.store = question_store(kit.db)
        self.outbox = kit.outbox
        # Sleeps until the earliest deadline; a new question may be sooner, and pokes it.
        self._expiry = DueLoop(kit.clock, self._expire_due, what="expiring questions")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Questions]:
        """Open the database; run the registry watch, event delivery and expiry until exit."""
        # Questions whose deadline passed while the server was down are resolved before any call.
        async with self.kit.running(self._expiry.run, first=self._expire_due):
            yield self

    # ------------------------------------------------------------------------------------ asking
    async def ask_operator(
        self,
        me: Principal,
        question: str,
        options: Sequence[str] | None,
        multi: bool,
        ttl_seconds: float | None,
        about: int | None = None,
    ) -> Asked:
        return await self._ask(me, OPERATOR, question, options, multi, ttl_seconds, about)

    async def ask_agent(
        self,
        me: Principal,
        to: str,
        question: str,
        options: Sequence[str] | None,
        multi: bool,
        ttl_seconds: float | None,
    ) -> Asked:
        await self._check_target(me, to)
        return await self._ask(me, to, question, options, multi, ttl_seconds)

    async def _ask(
        self,
        me: Principal,
        target: str,
        question: str,
        options: Sequence[str] | None,
        multi: bool,
        ttl_seconds: float | None,
        about: int | None = None,
    ) -> Asked:
        text = self._check_text("question", question)
        choices = self._check_options(options, multi)
        now = self.clock.now()
        expires_at = now + self._check_ttl(ttl_seconds)
        limit = self.settings.max_pending_per_asker
        question_id = await self.store.add(
            NewQuestion(me.name, target, text, choices, multi, expires_at, about), now, max_pending=limit
        )
        self._expiry.poke()  # the expiry task sleeps until the earliest deadline; this may be sooner
        if target != OPERATOR:
            self.outbox.wake()  # QuestionAsked for the agent asked
        return Asked(id=question_id, to=target, expires_at=iso(expires_at))

    async def _check_target(self, me: Principal, to: str) -> None:
        if to == OPERATOR:
            raise Refused("to ask the operator, use ask_operator")
        if to == me.name:
            raise Refused(f"{to!r} is you; ask another agent")
        try:
            check_agent_name(to)
        except InvalidName as e:
            raise Refused(f"unknown agent: {e}") from None
        target = await self.agents.lookup(to)
        if target is None:
            known = ", ".join(name for name in self.agents.names()[:20] if name != me.name) or "none"
            raise Refused(f"unknown agent {to!r}: no such agent. Known: {known}")
        await check_recipient(self.agents, me, to, verb="ask")  # whom it may message, it may ask
        if "answer_question" not in target.allowed_tools("operator"):
            # Asking would only wait out the deadline: say so now.
            raise Refused(f"{to} cannot answer questions (its agent.toml leaves out operator.answer_question)")

    def _check_text(self, what: Literal["question", "answer"], text: str) -> str:
        stripped = text.strip()
        if not stripped:
            raise Refused(f"{what} is empty; write the {what} in {what}")
        size = len(stripped.encode())
        limit = self.settings.max_question_bytes
        if size > limit:
            raise Refused(
                f"{what} is {size:,} bytes; the limit is {limit:,}. "
                "Shorten it, or write the details to a file and give its path."
            )
        return stripped

    def _check_options(self, options: Sequence[str] | None, multi: bool) -> list[str] | None:
        if options is None:
            if multi:
                raise Refused("multi needs options: list the choices in options, or leave multi out")
            return None
        limit = self.settings.max_options
        if not 2 <= len(options) <= limit:
            raise Refused(
                f"give 2 to {limit} options (got {len(options)}), or leave options out for a free-text answer"
            )
        choices = [option.strip() for option in options]
        seen: set[str] = set()
        for number, option in enumerate(choices, start=1):
            if not option:
                raise Refused(f"option {number} is empty; every option needs text")
            if option in NO_ANSWER:
                raise Refused(f"option {number} ({option!r}) is reserved for questions that get no answer")
            # Answers match options ignoring case, so options that differ only in case would be ambiguous.
            if option.casefold() in seen:
                raise Refused(f"option {option!r} is given twice (ignoring case); make each option distinct")
            seen.add(option.casefold())
        size = sum(len(option.encode()) for option in choices)
        if size > self.settings.max_question_bytes:
            raise Refused(f"the options are {size:,} bytes together; the limit is {self.settings.max_question_bytes:,}")
        return choices

    def _check_ttl(self, ttl_seconds: float | None) -> float:
        if ttl_seconds is None:
            return self.settings.default_ttl_seconds
        limit = self.settings.max_ttl_seconds
        if not 0 < ttl_seconds <= limit:  # also refuses NaN
            raise Refused(
                f"ttl_seconds must be more than 0 and at most {limit:,.0f} ({_duration(limit)}); "
                f"leave it out for the default, {self.settings.default_ttl_seconds:,.0f}"
            )
        return ttl_seconds

    # --------------------------------------------------------------------------------- resolving
    async def answer(self, me: Principal, question_id: int, answer: Answer) -> Resolved:
        """Answer a question addressed to `me` (the operator's, or an agent's from ask_agent)."""
        question = await self._addressed_to(me, question_id)
        if question.state != "pending":  # say how it ended rather than what is wrong with a late answer
            raise Refused(_already(question))
        return await self._resolve(me, question, "answered", self._check_answer(question, answer))

    async def cancel_ask(self, me: Principal, question_id: int) -> Resolved:
        """Withdraw a question `me` asked."""
        question = await self.store.get(question_id)
        if question is None or question.asker != me.name:
            raise Refused(f"no question {question_id} of yours; list_my_asks shows the ones you asked")
        return await self._resolve(me, question, "cancelled", CANCELLED)

    async def cancel_question(self, me: Principal, question_id: int) -> Resolved:
        """The operator cancels any pending question; its asker gets "[cancelled]"."""
        question = await self.store.get(question_id)
        if question is None:
            raise Refused(f"no question {question_id}; pending_questions lists the open ones")
        return await self._resolve(me, question, "cancelled", CANCELLED)

    async def _addressed_to(self, me: Principal, question_id: int) -> QuestionRow:
        question = await self.store.get(question_id)
        if question is not None and question.target == me.name:
            return question
        if me.role is not Role.OPERATOR:  # an agent learns nothing about questions not meant for it
            raise Refused(f"no question {question_id} addressed to you; its question_asked event has the id")
        if question is None:
            raise Refused(f"no question {question_id}; pending_questions lists the open ones")
        raise Refused(
            f"question {question_id} is addressed to {question.target}; only {question.target} may answer it "
            "(cancel_question withdraws it)"
        )

    async def _resolve(
        self, me: Principal, question: QuestionRow, state: Literal["answered", "cancelled"], answer: str
    ) -> Resolved:
        if question.state != "pending":
            raise Refused(_already(question))
        resolution = await self.store.resolve(question.id, state, answer, me.name, self.clock.now())
        self.outbox.wake()  # the winner's event, or the expiry the store found due on the way
        if not resolution.won:
            raise Refused(_already(resolution.question))
        return Resolved(id=question.id, state=state, answer=answer)

    def _check_answer(self, question: QuestionRow, answer: Answer) -> str:
        """The answer as the asker will get it, or Refused saying what would fit."""
        if question.options is None:
            if not isinstance(answer, str):
                raise Refused(f"question {question.id} takes a free-text answer; give it as one string")
            text = self._check_text("answer", answer)
            if text in NO_ANSWER:
                raise Refused(f"{text!r} is reserved for questions that get no answer; answer in words")
            return text
        choices = [answer] if isinstance(answer, str) else list(answer)
        listed = " | ".join(question.options)
        if not any(choice.strip() for choice in choices):
            raise Refused(f"answer is empty; pick {'one or more' if question.multi else 'one'} of: {listed}")
        picked: set[str] = set()
        for choice in choices:
            option = _match(question.options, choice)
            if option is None:
                raise Refused(f"{choice!r} is not one of the options: {listed}")
            picked.add(option)
        if len(picked) > 1 and not question.multi:
            raise Refused(f"question {question.id} takes one option; pick one of: {listed}")
        # In the options' order, whatever order they were picked in: the asker reads a stable answer.
        return ", ".join(option for option in question.options if option in picked)

    # ----------------------------------------------------------------------------------- reading
    async def my_asks(self, me: Principal) -> MyAsksResult:
        rows = await self.store.asked_by(me.name, RECENT_RESOLVED)
        return MyAsksResult(
            questions=[
                MyAsk(
                    **_shown(q),
                    to=q.target,
                    state=q.state,
                    expires_at=iso(q.expires_at),
                    answer=q.answer,
                    answered_by=q.resolved_by,
                    resolved_at=iso(q.resolved_at) if q.resolved_at is not None else None,
                )
                for q in rows
            ]
        )

    async def pending_questions(self) -> PendingQuestionsResult:
        now = self.clock.now()
        rows = await self.store.pending_for(OPERATOR)
        return PendingQuestionsResult(
            questions=[
                PendingQuestion(
                    **_shown(q),
                    asker=q.asker,
                    expires_at=iso(q.expires_at),
                    seconds_left=_seconds_left(q.expires_at, now),
                    about=q.about,
                )
                for q in rows
                if q.expires_at > now  # past its deadline it is as good as expired: the expiry task is on it
            ]
        )

    async def history(self, limit: int) -> HistoryResult:
        rows = await self.store.resolved(limit)
        trails = await self.store.audit_trails([q.id for q in rows])
        entries = []
        for q in rows:
            assert q.state != "pending" and q.answer is not None
            assert q.resolved_by is not None and q.resolved_at is not None
            entries.append(
                HistoryEntry(
                    **_shown(q),
                    asker=q.asker,
                    to=q.target,
                    state=q.state,
                    answer=q.answer,
                    resolved_by=q.resolved_by,
                    resolved_at=iso(q.resolved_at),
                    audit=trails.get(q.id, []),
                )
            )
        return HistoryResult(questions=entries)

    # ------------------------------------------------------------------------------------ expiry
    async def _expire_due(self) -> float:
        """Expire every question past its deadline; return the next deadline (inf: none pending)."""
        while await self.store.expire_due(self.clock.now()):
            self.outbox.wake()
        deadline = await self.store.next_deadline()
        return math.inf if deadline is None else deadline


class _Shown(TypedDict):
    id: int
    question: str
    options: list[str] | None
    multi: Literal[True] | None
    asked_at: str


def _shown(q: QuestionRow) -> _Shown:
    """What every listing of a question shows of it, whoever lists it (its asker, the operator, the history)."""
    return _Shown(
        id=q.id, question=q.question, options=q.options, multi=True if q.multi else None, asked_at=iso(q.asked_at)
    )


def _already(question: QuestionRow) -> str:
    """How a resolved question ended, for whoever tries to answer or cancel it late."""
    if question.state == "expired":
        return f"question {question.id} expired at {iso(question.expires_at)} without an answer; nothing changed"
    assert question.resolved_at is not None
    return (
        f"question {question.id} was already {question.state} by {question.resolved_by} "
        f"at {iso(question.resolved_at)}; nothing changed"
    )


def _seconds_left(deadline: float, now: float) -> int:
    # Whole seconds, rounded up while any time is left; first to milliseconds, so that float noise
    # in epoch seconds (deadline 60 s ahead, 59 s later) reads 1, not 2.
    return math.ceil(round(deadline - now, 3))


def _match(options: Sequence[str], choice: str) -> str | None:
    """The option `choice` names, ignoring case and surrounding spaces (options are distinct that way)."""
    wanted = choice.strip().casefold()
    return next((option for option in options if option.casefold() == wanted), None)


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} s"
