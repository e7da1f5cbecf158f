"""Questions for the operator and between agents, over real HTTP: the operator server with a clock the
test moves, and the real broker, where the answers (and questions to agents) arrive as helper events."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Endpoint, Hive, in_process, next_event

from hyperhive.servers.common.clock import ManualClock, iso
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.operator.models import Resolved
from hyperhive.servers.operator.questions import Questions
from hyperhive.servers.operator.server import SCHEMAS

# Two servers per test, and events that travel through the outbox; on sqlite and on PostgreSQL.
pytestmark = [pytest.mark.slow, pytest.mark.stores]

DAY = 86_400  # the default [questions] default_ttl_seconds


@pytest.fixture
async def operator(hive: Hive, broker: BrokerEndpoint) -> AsyncIterator[Endpoint]:
    """The operator server over real HTTP, in-process, with a ManualClock at `operator.clock`; the broker runs too."""
    async with in_process(hive, "operator", clock=ManualClock(start=time.time())) as endpoint:
        yield endpoint


def clock_of(endpoint: Endpoint) -> ManualClock:
    assert endpoint.clock is not None
    return endpoint.clock


async def no_message(broker: BrokerEndpoint, name: str, wait: float = 0.5) -> None:
    message = (await broker.client(name).call("recv", {"wait_seconds": wait}))["message"]
    assert message is None, f"{name} got an unexpected message: {message}"


def answered(question_id: int, question: str, answer: str, by: str = "operator") -> dict[str, Any]:
    return {
        "type": "operator_answered",
        "question_id": question_id,
        "question": question,
        "answer": answer,
        "answered_by": by,
    }


# ----------------------------------------------------------------------------------- the operator


async def test_the_operator_answers_a_plain_question_and_the_asker_gets_it_in_its_inbox(
    broker: BrokerEndpoint, operator: Endpoint
) -> None:
    clock = clock_of(operator)
    asked_at = clock.now()
    asked = await operator.client("manager").call("ask_operator", {"question": "May I deploy on Friday?"})
    assert asked == {"id": asked["id"], "to": "operator", "expires_at": iso(asked_at + DAY)}
    clock.advance(100)
    pending = (await operator.client("operator").call("pending_questions", {}))["questions"]
    assert pending == [
        {
            "id": asked["id"],
            "asker": "manager",
            "question": "May I deploy on Friday?",
            "asked_at": iso(asked_at),
            "expires_at": asked["expires_at"],
            "seconds_left": DAY - 100,
        }
    ]
    result = await operator.client("operator").call("answer", {"id": asked["id"], "answer": "  Not this week.\n"})
    assert result == {"id": asked["id"], "state": "answered", "answer": "Not this week."}

    message = (await broker.client("manager").call("recv", {"wait_seconds": 5}))["message"]
    assert message["sender"] == "system" and message["kind"] == "event"
    assert message["event"] == answered(asked["id"], "May I deploy on Friday?", "Not this week.")
    assert message["body"] == f"question #{asked['id']} ('May I deploy on Friday?') was answered: Not this week."
    await no_message(broker, "manager")

    assert (await operator.client("operator").call("pending_questions", {}))["questions"] == []
    mine = (await operator.client("manager").call("list_my_asks", {}))["questions"]
    assert [(q["id"], q["state"], q["answer"], q["answered_by"]) for q in mine] == [
        (asked["id"], "answered", "Not this week.", "operator")
    ]


async def test_a_question_names_the_message_it_is_about(operator: Endpoint) -> None:
    asked = await operator.client("manager").call("ask_operator", {"question": "Merge it?", "about": 412})
    pending = (await operator.client("operator").call("pending_questions", {}))["questions"]
    assert [(q["id"], q.get("about")) for q in pending] == [(asked["id"], 412)]
    for bad in (0, -3, 2**63):
        with pytest.raises(ToolError, match=r"about"):  # the tool's schema names the argument at fault
            await operator.client("manager").call("ask_operator", {"question": "Merge it?", "about": bad})
    assert len((await operator.client("operator").call("pending_questions", {}))["questions"]) == 1  # none added
    await operator.client("operator").call("cancel_question", {"id": asked["id"]})


async def test_options_take_one_of_them_and_refuse_anything_else(broker: BrokerEndpoint, operator: Endpoint) -> None:
    asked = await operator.client("manager").call(
        "ask_operator", {"question": "Which database?", "options": ["sqlite", "PostgreSQL"]}
    )
    pending = (await operator.client("operator").call("pending_questions", {}))["questions"]
    assert pending[0]["options"] == ["sqlite", "PostgreSQL"] and "multi" not in pending[0]
    with pytest.raises(ToolError, match=r"^'mysql' is not one of the options: sqlite \| PostgreSQL$"):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": "mysql"})
    with pytest.raises(ToolError, match=rf"question {asked['id']} takes one option; pick one of: sqlite \| PostgreSQL"):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": ["sqlite", "PostgreSQL"]})
    with pytest.raises(ToolError, match=r"answer is empty; pick one of: sqlite \| PostgreSQL"):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": " "})
    # Case and surrounding spaces do not matter; the asker gets the option as it was written.
    result = await operator.client("operator").call("answer", {"id": asked["id"], "answer": " postgresql "})
    assert result["answer"] == "PostgreSQL"
    assert await next_event(broker, "manager") == answered(asked["id"], "Which database?", "PostgreSQL")


async def test_multi_takes_a_list_of_options_reported_in_the_options_order(
    broker: BrokerEndpoint, operator: Endpoint
) -> None:
    asked = await operator.client("manager").call(
        "ask_operator", {"question": "Which agents to start?", "options": ["alpha", "beta", "gamma"], "multi": True}
    )
    assert (await operator.client("operator").call("pending_questions", {}))["questions"][0]["multi"] is True
    with pytest.raises(ToolError, match=r"^'delta' is not one of the options: alpha \| beta \| gamma$"):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": ["gamma", "delta"]})
    with pytest.raises(ToolError, match=r"answer is empty; pick one or more of: alpha \| beta \| gamma"):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": []})
    result = await operator.client("operator").call(
        "answer", {"id": asked["id"], "answer": ["gamma", "alpha", "gamma"]}
    )
    assert result["answer"] == "alpha, gamma"
    assert await next_event(broker, "manager") == answered(asked["id"], "Which agents to start?", "alpha, gamma")


async def test_free_text_answers_are_checked(operator: Endpoint) -> None:
    asked = await operator.client("manager").call("ask_operator", {"question": "Why did the build fail?"})
    for answer, error in [
        ("", "answer is empty"),
        (["a", "b"], f"question {asked['id']} takes a free-text answer; give it as one string"),
        ("[expired]", "'\\[expired\\]' is reserved for questions that get no answer"),
        ("x" * 8193, "answer is 8,193 bytes; the limit is 8,192"),
    ]:
        with pytest.raises(ToolError, match=error):
            await operator.client("operator").call("answer", {"id": asked["id"], "answer": answer})
    assert len((await operator.client("operator").call("pending_questions", {}))["questions"]) == 1
    with pytest.raises(ToolError, match=r"^no question 999; pending_questions lists the open ones$"):
        await operator.client("operator").call("answer", {"id": 999, "answer": "yes"})


async def test_the_operator_cancels_and_a_late_answer_is_refused(broker: BrokerEndpoint, operator: Endpoint) -> None:
    clock = clock_of(operator)
    asked = await operator.client("manager").call("ask_operator", {"question": "Rotate the keys?"})
    result = await operator.client("operator").call("cancel_question", {"id": asked["id"]})
    assert result == {"id": asked["id"], "state": "cancelled", "answer": "[cancelled]"}
    event = await next_event(broker, "manager")
    assert event == answered(asked["id"], "Rotate the keys?", "[cancelled]")
    cancelled_at = iso(clock.now())
    clock.advance(5)
    late = f"^question {asked['id']} was already cancelled by operator at {cancelled_at}; nothing changed$"
    with pytest.raises(ToolError, match=late):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": "yes"})
    with pytest.raises(ToolError, match=late):
        await operator.client("operator").call("cancel_question", {"id": asked["id"]})
    await no_message(broker, "manager")


async def test_the_asker_withdraws_its_question_and_no_one_else_may(broker: BrokerEndpoint, operator: Endpoint) -> None:
    hive = operator.hive
    hive.add_agent("alice")
    asked = await operator.client("manager").call("ask_operator", {"question": "Can I have a GPU?"})
    for other in ("alice", "operator"):
        with pytest.raises(ToolError, match=f"^no question {asked['id']} of yours; list_my_asks shows"):
            await operator.client(other).call("cancel_ask", {"id": asked["id"]})
    with pytest.raises(ToolError, match=r"^no question 999 of yours"):  # the same words: nothing is revealed
        await operator.client("manager").call("cancel_ask", {"id": 999})
    assert (await operator.client("alice").call("list_my_asks", {}))["questions"] == []

    result = await operator.client("manager").call("cancel_ask", {"id": asked["id"]})
    assert result == {"id": asked["id"], "state": "cancelled", "answer": "[cancelled]"}
    assert (await operator.client("operator").call("pending_questions", {}))["questions"] == []
    with pytest.raises(ToolError, match=f"question {asked['id']} was already cancelled by manager at"):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": "yes"})
    await no_message(broker, "manager")  # it withdrew the question itself: no news to deliver
    mine = (await operator.client("manager").call("list_my_asks", {}))["questions"]
    assert [(q["state"], q["answered_by"]) for q in mine] == [("cancelled", "manager")]


# ------------------------------------------------------------------------------------------ expiry


async def test_an_unanswered_question_expires_at_its_deadline(broker: BrokerEndpoint, operator: Endpoint) -> None:
    clock = clock_of(operator)
    asked = await operator.client("manager").call("ask_operator", {"question": "Still there?", "ttl_seconds": 60})
    deadline = iso(clock.now() + 60)
    assert asked["expires_at"] == deadline
    clock.advance(59)
    pending = (await operator.client("operator").call("pending_questions", {}))["questions"]
    assert [(q["id"], q["seconds_left"]) for q in pending] == [(asked["id"], 1)]
    await no_message(broker, "manager", wait=0.3)

    clock.advance(2)
    started = time.monotonic()
    event = await next_event(broker, "manager", timeout=2)
    assert time.monotonic() - started < 1.0
    assert event == answered(asked["id"], "Still there?", "[expired]", by="system")
    assert (await operator.client("operator").call("pending_questions", {}))["questions"] == []
    late = f"^question {asked['id']} expired at {deadline} without an answer; nothing changed$"
    with pytest.raises(ToolError, match=late):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": "yes"})
    with pytest.raises(ToolError, match=late):
        await operator.client("manager").call("cancel_ask", {"id": asked["id"]})
    mine = (await operator.client("manager").call("list_my_asks", {}))["questions"]
    assert [(q["state"], q["answer"], q["answered_by"]) for q in mine] == [("expired", "[expired]", "system")]


async def test_questions_that_expired_while_the_server_was_down_are_resolved_at_start(
    hive: Hive, broker: BrokerEndpoint
) -> None:
    clock = ManualClock(start=time.time())
    async with in_process(hive, "operator", clock=clock) as operator:
        short = await operator.client("manager").call("ask_operator", {"question": "Short?", "ttl_seconds": 60})
        long = await operator.client("manager").call("ask_operator", {"question": "Long?", "ttl_seconds": 7200})
    clock.advance(3600)  # the operator server is down for an hour
    async with in_process(hive, "operator", clock=clock) as operator:
        assert await next_event(broker, "manager") == answered(short["id"], "Short?", "[expired]", by="system")
        pending = (await operator.client("operator").call("pending_questions", {}))["questions"]
        assert [(q["id"], q["seconds_left"]) for q in pending] == [(long["id"], 3600)]
        history = (await operator.client("operator").call("question_history", {}))["questions"]
        assert [(q["id"], q["state"], q["resolved_at"]) for q in history] == [
            (short["id"], "expired", iso(clock.now()))
        ]
        # The one still pending keeps its deadline across the restart.
        clock.advance(3600)
        assert await next_event(broker, "manager") == answered(long["id"], "Long?", "[expired]", by="system")
    await no_message(broker, "manager")


# --------------------------------------------------------------------------------------- races


async def test_answer_cancel_and_deadline_racing_resolve_a_question_exactly_once(
    broker: BrokerEndpoint, operator: Endpoint
) -> None:
    clock = clock_of(operator)
    answerer, canceller = operator.client("operator"), operator.client("operator")
    await answerer.call("pending_questions", {})  # connected first, so the two calls really overlap
    await canceller.call("pending_questions", {})
    winners: dict[int, str] = {}
    for round_ in range(8):
        asked = await operator.client("manager").call("ask_operator", {"question": f"q{round_}", "ttl_seconds": 30})
        calls = [
            asyncio.create_task(answerer.call("answer", {"id": asked["id"], "answer": "yes"})),
            asyncio.create_task(canceller.call("cancel_question", {"id": asked["id"]})),
        ]
        if round_ % 2:  # and the deadline passes while they are on their way
            await asyncio.sleep(0)
            clock.advance(30)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        won = [o for o in outcomes if isinstance(o, dict)]
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(won) <= 1 and len(won) + len(lost) == 2, outcomes
        assert all(isinstance(e, ToolError) and f"question {asked['id']} " in str(e) for e in lost), lost
        winners[asked["id"]] = won[0]["answer"] if won else "[expired]"
        if round_ % 2 == 0:
            assert len(won) == 1, outcomes  # no deadline in reach: answer or cancel won
    events = [await next_event(broker, "manager") for _ in winners]
    assert {e["question_id"]: e["answer"] for e in events} == winners
    await no_message(broker, "manager")  # exactly one event per question


# The two tests below drive questions.Questions directly, to reach moments HTTP cannot time: both
# calls having read the question as pending before either writes, and a deadline that has passed
# before the expiry task ran.

OPERATOR = Principal("operator", Role.OPERATOR)
MANAGER = Principal("manager", Role.MANAGER)


def questions_of(hive: Hive, clock: ManualClock) -> Questions:
    token = hive.credentials("operator").service_token()
    return Questions(ServiceKit("operator", hive.config, SCHEMAS, token=token, clock=clock))


async def test_calls_that_both_saw_a_question_pending_still_resolve_it_once(hive: Hive, broker: BrokerEndpoint) -> None:
    clock = ManualClock(start=time.time())
    questions = questions_of(hive, clock)
    winners: dict[int, str] = {}
    async with questions.running():
        for round_ in range(6):
            asked = await questions.ask_operator(MANAGER, f"q{round_}", None, False, 30)
            if round_ % 3 == 2:
                clock.advance(30)  # the deadline joins the race
            # gather starts both before either runs: both read the question as pending, then both write.
            outcomes = await asyncio.gather(
                questions.answer(OPERATOR, asked.id, "yes"),
                questions.cancel_question(OPERATOR, asked.id),
                return_exceptions=True,
            )
            won = [o for o in outcomes if isinstance(o, Resolved)]
            assert len(won) == (0 if round_ % 3 == 2 else 1), outcomes
            assert all(isinstance(o, Refused) for o in outcomes if o not in won), outcomes
            winners[asked.id] = won[0].answer if won else "[expired]"
        events = [await next_event(broker, "manager") for _ in winners]
    assert {e["question_id"]: e["answer"] for e in events} == winners
    await no_message(broker, "manager")


async def test_a_deadline_is_final_even_before_the_expiry_task_runs(hive: Hive) -> None:
    clock = ManualClock(start=time.time())
    questions = questions_of(hive, clock)
    async with questions.kit.db:  # the database alone: no expiry task, no delivery
        asked = await questions.ask_operator(MANAGER, "Now?", None, False, 10)
        clock.advance(10)
        late = f"^question {asked.id} expired at {re.escape(asked.expires_at)} without an answer"
        with pytest.raises(Refused, match=late):
            await questions.answer(OPERATOR, asked.id, "yes")
        with pytest.raises(Refused, match=late):
            await questions.cancel_question(OPERATOR, asked.id)
        queued = await questions.kit.db.fetch_all("SELECT recipient, event FROM outbox")
        assert [(row["recipient"], json.loads(row["event"])) for row in queued] == [
            ("manager", answered(asked.id, "Now?", "[expired]", by="system"))
        ]


# -------------------------------------------------------------------------------- agent to agent


async def test_an_agent_asks_another_which_alone_may_answer(broker: BrokerEndpoint, operator: Endpoint) -> None:
    hive = operator.hive
    alice, bob, carol = hive.add_agent("alice"), hive.add_agent("bob"), hive.add_agent("carol")
    clock = clock_of(operator)
    asked = await operator.client(alice).call(
        "ask_agent", {"to": bob, "question": "Is the API frozen?", "options": ["yes", "no"], "ttl_seconds": 600}
    )
    assert asked == {"id": asked["id"], "to": bob, "expires_at": iso(clock.now() + 600)}
    message = (await broker.client(bob).call("recv", {"wait_seconds": 5}))["message"]
    assert message["sender"] == "system" and message["event"] == {
        "type": "question_asked",
        "question_id": asked["id"],
        "asker": alice,
        "question": "Is the API frozen?",
        "options": ["yes", "no"],
        "multi": False,
        "expires_at": asked["expires_at"],
    }
    assert f"answer_question(id={asked['id']}, answer=...)" in message["body"]
    assert (await operator.client("operator").call("pending_questions", {}))["questions"] == []  # not the operator's

    for other in (carol, alice):
        with pytest.raises(ToolError, match=f"^no question {asked['id']} addressed to you"):
            await operator.client(other).call("answer_question", {"id": asked["id"], "answer": "yes"})
    with pytest.raises(ToolError, match=f"^question {asked['id']} is addressed to bob; only bob may answer it"):
        await operator.client("operator").call("answer", {"id": asked["id"], "answer": "yes"})
    with pytest.raises(ToolError, match=r"'maybe' is not one of the options: yes \| no"):
        await operator.client(bob).call("answer_question", {"id": asked["id"], "answer": "maybe"})

    result = await operator.client(bob).call("answer_question", {"id": asked["id"], "answer": "no"})
    assert result == {"id": asked["id"], "state": "answered", "answer": "no"}
    message = (await broker.client(alice).call("recv", {"wait_seconds": 5}))["message"]
    assert message["event"] == answered(asked["id"], "Is the API frozen?", "no", by=bob)
    assert message["body"] == f"question #{asked['id']} ('Is the API frozen?') was answered by bob: no"
    with pytest.raises(ToolError, match=f"^question {asked['id']} was already answered by bob at"):
        await operator.client(bob).call("answer_question", {"id": asked["id"], "answer": "yes"})
    await no_message(broker, alice)
    await no_message(broker, bob)


async def test_ask_agent_respects_allowed_recipients_and_refuses_impossible_targets(
    broker: BrokerEndpoint, operator: Endpoint
) -> None:
    hive = operator.hive
    alice = hive.add_agent("alice", extra='allowed_recipients = ["manager"]')
    bob = hive.add_agent("bob")
    mute = hive.add_agent("mute", extra='[tools]\noperator = ["ask_agent"]')
    refusals = [
        (alice, bob, "^you may not ask 'bob'; your allowed_recipients are: manager$"),
        (bob, "ghost", "^unknown agent 'ghost': no such agent. Known: "),
        (bob, "Bad Name", "^unknown agent: invalid agent name 'Bad Name'"),
        (bob, bob, "^'bob' is you; ask another agent$"),
        (bob, "operator", "^to ask the operator, use ask_operator$"),
        (bob, mute, r"^mute cannot answer questions \(its agent.toml leaves out operator.answer_question\)$"),
    ]
    for asker, to, error in refusals:
        with pytest.raises(ToolError, match=error):
            await operator.client(asker).call("ask_agent", {"to": to, "question": "hello?"})
    await operator.client(alice).call("ask_agent", {"to": "manager", "question": "hello?"})
    # The manager and the operator may ask anyone, whatever their lists say.
    hive.add_agent("boss", role="manager", extra="allowed_recipients = []")
    await operator.client("boss").call("ask_agent", {"to": bob, "question": "from a manager?"})
    await operator.client("operator").call("ask_agent", {"to": bob, "question": "from the operator?"})
    assert [(await next_event(broker, bob))["asker"] for _ in range(2)] == ["boss", "operator"]
    assert (await next_event(broker, "manager"))["asker"] == alice
    await no_message(broker, bob)


# ----------------------------------------------------------------------------------------- roles


async def test_agents_cannot_use_the_operators_tools(operator: Endpoint) -> None:
    hive = operator.hive
    alice = hive.add_agent("alice")
    calls: dict[str, dict[str, Any]] = {
        "pending_questions": {},
        "answer": {"id": 1, "answer": "x"},
        "cancel_question": {"id": 1},
        "question_history": {},
    }
    for principal in (alice, "manager"):
        for tool, arguments in calls.items():
            refusal = f"^permission denied: operator.{tool} is an operator tool; agents may not call it$"
            with pytest.raises(ToolError, match=refusal):
                await operator.client(principal).call(tool, arguments)
    assert sorted(await operator.client(alice).list_tools()) == [
        "answer_question",
        "ask_agent",
        "cancel_ask",
        "list_my_asks",
    ]


async def test_a_plain_agent_asks_the_operator_only_if_its_agent_toml_grants_it(
    broker: BrokerEndpoint, operator: Endpoint
) -> None:
    hive = operator.hive
    alice = hive.add_agent("alice")
    granted = hive.add_agent("bob", extra='[tools]\noperator = ["ask_operator", "list_my_asks"]')
    refusal = (
        '^permission denied: alice lacks operator.ask_operator; ask the manager to add "ask_operator" '
        "to \\[tools\\] operator in its agent.toml$"
    )
    with pytest.raises(ToolError, match=refusal):
        await operator.client(alice).call("ask_operator", {"question": "may I?"})
    assert sorted(await operator.client(granted).list_tools()) == ["ask_operator", "list_my_asks"]
    asked = await operator.client(granted).call("ask_operator", {"question": "may I?"})
    await operator.client("operator").call("answer", {"id": asked["id"], "answer": "you may"})
    assert await next_event(broker, granted) == answered(asked["id"], "may I?", "you may")
    mine = (await operator.client(granted).call("list_my_asks", {}))["questions"]
    assert [(q["id"], q["state"], q["answer"]) for q in mine] == [(asked["id"], "answered", "you may")]


# --------------------------------------------------------------------------------------- history


async def test_question_history_shows_who_resolved_what_with_the_audit_trail(
    broker: BrokerEndpoint, operator: Endpoint
) -> None:
    hive = operator.hive
    clock = clock_of(operator)
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    manager, op = operator.client("manager"), operator.client("operator")
    first = await manager.call("ask_operator", {"question": "one?", "options": ["a", "b"]})
    second = await manager.call("ask_operator", {"question": "two?"})
    third = await manager.call("ask_operator", {"question": "three?", "ttl_seconds": 30})
    fourth = await operator.client(alice).call("ask_agent", {"to": bob, "question": "four?"})
    fifth = await manager.call("ask_operator", {"question": "five?"})
    still_pending = await manager.call("ask_operator", {"question": "six?"})
    at = [clock.now()]  # the clock's reading at each step: asked, then each resolution

    def step(seconds: float) -> None:
        clock.advance(seconds)
        at.append(clock.now())

    step(1)
    await op.call("answer", {"id": first["id"], "answer": "b"})
    step(1)
    await op.call("cancel_question", {"id": second["id"]})
    step(30)
    assert (await next_event(broker, "manager", timeout=5))["answer"] == "b"
    assert (await next_event(broker, "manager"))["answer"] == "[cancelled]"
    assert (await next_event(broker, "manager"))["answer"] == "[expired]"  # the third's deadline passed
    step(1)
    await operator.client(bob).call("answer_question", {"id": fourth["id"], "answer": "four!"})
    step(1)
    await manager.call("cancel_ask", {"id": fifth["id"]})

    history = (await op.call("question_history", {}))["questions"]
    assert [(q["id"], q["asker"], q["to"], q["state"], q["answer"], q["resolved_by"]) for q in history] == [
        (fifth["id"], "manager", "operator", "cancelled", "[cancelled]", "manager"),
        (fourth["id"], alice, bob, "answered", "four!", bob),
        (third["id"], "manager", "operator", "expired", "[expired]", "system"),
        (second["id"], "manager", "operator", "cancelled", "[cancelled]", "operator"),
        (first["id"], "manager", "operator", "answered", "b", "operator"),
    ]
    assert still_pending["id"] not in [q["id"] for q in history]
    trail = {q["id"]: [(e["action"], e["actor"], e["at"], e.get("detail")) for e in q["audit"]] for q in history}
    assert trail[first["id"]] == [
        ("asked", "manager", iso(at[0]), "to operator"),
        ("answered", "operator", iso(at[1]), "b"),
    ]
    assert trail[second["id"]][1:] == [("cancelled", "operator", iso(at[2]), None)]
    assert trail[third["id"]][1:] == [("expired", "system", iso(at[3]), None)]
    assert trail[fourth["id"]] == [("asked", alice, iso(at[0]), "to bob"), ("answered", bob, iso(at[4]), "four!")]
    assert trail[fifth["id"]][1:] == [("cancelled", "manager", iso(at[5]), None)]
    assert "options" not in history[1]
    assert history[-1]["options"] == ["a", "b"]
    assert [q["id"] for q in (await op.call("question_history", {"limit": 2}))["questions"]] == [
        fifth["id"],
        fourth["id"],
    ]


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"question": ""}, "^question is empty; write the question in question$"),
        ({"question": " \n "}, "^question is empty"),
        ({"question": "é" * 4097}, "^question is 8,194 bytes; the limit is 8,192"),
        ({"question": "q", "options": ["only"]}, r"^give 2 to 20 options \(got 1\), or leave options out"),
        ({"question": "q", "options": []}, r"^give 2 to 20 options \(got 0\)"),
        ({"question": "q", "options": [str(i) for i in range(21)]}, r"^give 2 to 20 options \(got 21\)"),
        ({"question": "q", "options": ["a", "  "]}, "^option 2 is empty; every option needs text$"),
        ({"question": "q", "options": ["Yes", "yes"]}, r"^option 'yes' is given twice \(ignoring case\)"),
        ({"question": "q", "options": ["a", "[cancelled]"]}, "^option 2 .* is reserved"),
        ({"question": "q", "options": ["a", "x" * 8192]}, "^the options are 8,193 bytes together; the limit is 8,192$"),
        ({"question": "q", "multi": True}, "^multi needs options: list the choices in options, or leave multi out$"),
        ({"question": "q", "ttl_seconds": 0}, r"^ttl_seconds must be more than 0 and at most 604,800 \(7 days\)"),
        ({"question": "q", "ttl_seconds": -5}, "^ttl_seconds must be more than 0"),
        ({"question": "q", "ttl_seconds": 604_801}, "^ttl_seconds must be more than 0"),
    ],
)
async def test_ask_refusals_are_clear_and_store_nothing(
    operator: Endpoint, arguments: dict[str, Any], error: str
) -> None:
    hive = operator.hive
    bob = hive.add_agent("bob")
    with pytest.raises(ToolError, match=error):
        await operator.client("manager").call("ask_operator", arguments)
    with pytest.raises(ToolError, match=error):
        await operator.client("manager").call("ask_agent", {"to": bob, **arguments})
    assert (await operator.client("manager").call("list_my_asks", {}))["questions"] == []
    assert (await operator.client("operator").call("pending_questions", {}))["questions"] == []


async def test_the_longest_question_and_ttl_allowed_are_accepted(operator: Endpoint) -> None:
    clock = clock_of(operator)
    asked = await operator.client("manager").call("ask_operator", {"question": "é" * 4096, "ttl_seconds": 604_800})
    assert asked["expires_at"] == iso(clock.now() + 604_800)


async def test_pending_questions_per_asker_are_capped(hive: Hive, broker: BrokerEndpoint) -> None:
    hive.configure("[questions]\nmax_pending_per_asker = 2")
    alice = hive.add_agent("alice")
    async with in_process(hive, "operator", clock=ManualClock(start=time.time())) as operator:
        manager = operator.client("manager")
        ids = [(await manager.call("ask_operator", {"question": f"q{i}"}))["id"] for i in range(2)]
        with pytest.raises(ToolError, match=r"^you have 2 pending questions, the limit; wait for answers or withdraw"):
            await manager.call("ask_operator", {"question": "q2"})
        with pytest.raises(ToolError, match=r"^you have 2 pending questions"):  # asking agents counts too
            await manager.call("ask_agent", {"to": alice, "question": "q2"})
        await operator.client(alice).call("ask_agent", {"to": "manager", "question": "mine"})  # others are not limited
        await operator.client("operator").call("answer", {"id": ids[0], "answer": "done"})
        await manager.call("ask_operator", {"question": "q2"})
