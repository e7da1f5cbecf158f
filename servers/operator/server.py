"""The operator server's MCP tools: thin wrappers that name the caller and call questions.Questions.

The asker of a question and the one answering it are the verified token's subject; no tool takes
a name for either.

No `from __future__ import annotations` here: ttl_seconds's description quotes this hive's limits,
so it is built inside create(), and FastMCP must see it evaluated when it reads the signatures.
"""

from typing import Annotated

from pydantic import Field

from hyperhive.servers.common.clock import Clock
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.models import Id
from hyperhive.servers.common.storage import Schemas
from hyperhive.servers.common.tokens import ServerCredentials, caller
from hyperhive.servers.common.toolserver import HiveServer, create_mcp
from hyperhive.servers.operator import store_pg, store_sqlite
from hyperhive.servers.operator.models import Asked, HistoryResult, MyAsksResult, PendingQuestionsResult, Resolved
from hyperhive.servers.operator.questions import Questions

INSTRUCTIONS = (
    "Questions for the operator and between agents. ask_operator and ask_agent return at once; the "
    "answer arrives later in your broker inbox as an operator_answered event (or '[cancelled]' / '[expired]')."
)

Options = Annotated[
    list[str] | None, Field(description="choices the answer must be one of; leave out for a free-text answer")
]
Multi = Annotated[bool, Field(description="the answer may pick several options")]
AnswerArg = Annotated[str | list[str], Field(description="text, one of the options, or a list of them if multi")]

SCHEMAS = Schemas(store_sqlite.MIGRATIONS, store_pg.MIGRATIONS)


def create(config: HiveConfig, credentials: ServerCredentials, *, clock: Clock | None = None) -> HiveServer:
    kit = ServiceKit("operator", config, SCHEMAS, token=credentials.service_token(), clock=clock)
    questions = Questions(kit)
    settings = config.questions
    ttl_help = (
        f"seconds until it expires unanswered (default {settings.default_ttl_seconds:g}, "
        f"max {settings.max_ttl_seconds:g})"
    )

    mcp = create_mcp(
        "operator", instructions=INSTRUCTIONS, credentials=credentials, agents=kit.agents, running=questions.running
    )

    @mcp.tool
    async def ask_operator(
        question: str,
        options: Options = None,
        multi: Multi = False,
        ttl_seconds: Annotated[float | None, Field(description=ttl_help)] = None,
        about: Annotated[
            Id | None, Field(description="the id of the message this is about: the operator sees its thread beside it")
        ] = None,
    ) -> Asked:
        """Ask the operator. Returns the question's id at once; the answer comes as an operator_answered event."""
        return await questions.ask_operator(caller(), question, options, multi, ttl_seconds, about)

    @mcp.tool
    async def ask_agent(
        to: Annotated[str, Field(description="the agent to ask")],
        question: str,
        options: Options = None,
        multi: Multi = False,
        ttl_seconds: Annotated[float | None, Field(description=ttl_help)] = None,
    ) -> Asked:
        """Ask another agent. Returns the question's id at once; the answer comes as an operator_answered event."""
        return await questions.ask_agent(caller(), to, question, options, multi, ttl_seconds)

    @mcp.tool
    async def answer_question(id: Id, answer: AnswerArg) -> Resolved:
        """Answer a question another agent asked you (a question_asked event)."""
        return await questions.answer(caller(), id, answer)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_my_asks() -> MyAsksResult:
        """Your questions: pending ones first, then the latest answered, cancelled or expired."""
        return await questions.my_asks(caller())

    @mcp.tool
    async def cancel_ask(id: Id) -> Resolved:
        """Withdraw a pending question of yours."""
        return await questions.cancel_ask(caller(), id)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def pending_questions() -> PendingQuestionsResult:
        """Questions waiting for the operator, oldest first, with the seconds left to answer."""
        return await questions.pending_questions()

    @mcp.tool
    async def answer(id: Id, answer: AnswerArg) -> Resolved:
        """Answer a pending question; the asker gets the answer in its inbox."""
        return await questions.answer(caller(), id, answer)

    @mcp.tool
    async def cancel_question(id: Id) -> Resolved:
        """Cancel a pending question; the asker gets '[cancelled]'."""
        return await questions.cancel_question(caller(), id)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def question_history(limit: Annotated[int, Field(ge=1, le=500)] = 50) -> HistoryResult:
        """Resolved questions, newest first: who asked, who resolved them and how, with the audit trail."""
        return await questions.history(limit)

    return HiveServer(mcp=mcp)
