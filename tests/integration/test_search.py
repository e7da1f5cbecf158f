"""search_messages (SQLite FTS5) and peek_inbox over real HTTP: what is found, in what order, by whom."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Hive, in_process_broker

from hyperhive.servers.broker.models import PeekResult, SearchResult
from hyperhive.servers.broker.store_sqlite import MIGRATIONS
from hyperhive.servers.common.db import Database

pytestmark = pytest.mark.stores  # on sqlite and on PostgreSQL

T = TypeVar("T")


async def search(broker: BrokerEndpoint, who: str, query: str, **arguments: Any) -> SearchResult:
    return SearchResult.model_validate(await broker.client(who).call("search_messages", {"query": query, **arguments}))


def bodies(result: SearchResult) -> list[str]:
    return [hit.body for hit in result.messages]


async def test_search_finds_words_newest_first_with_a_snippet(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    await broker.client(alice).call("send", {"to": bob, "body": "the deploy failed on staging"})
    await broker.client(alice).call("send", {"to": bob, "body": "lunch at noon?"})
    last = await broker.client(bob).call("send", {"to": alice, "body": "Déploy retried: the DEPLOY worked"})
    found = await search(broker, "operator", "deploy")
    assert bodies(found) == ["Déploy retried: the DEPLOY worked", "the deploy failed on staging"]  # é folded
    hit = found.messages[0]
    assert (hit.id, hit.sender, hit.thread_id) == (last["id"], "bob", last["id"])
    assert [(d.to, d.state) for d in hit.deliveries] == [("alice", "queued")]
    assert hit.snippet == "«Déploy» retried: the «DEPLOY» worked"
    assert bodies(await search(broker, "operator", "deploy staging")) == ["the deploy failed on staging"]  # AND
    assert bodies(await search(broker, "operator", "lunch OR staging")) == [
        "lunch at noon?",
        "the deploy failed on staging",
    ]
    assert bodies(await search(broker, "operator", "lun*")) == ["lunch at noon?"]  # a prefix
    assert bodies(await search(broker, "operator", "sender:bob")) == ["Déploy retried: the DEPLOY worked"]
    assert bodies(await search(broker, "operator", '"deploy failed"')) == ["the deploy failed on staging"]
    assert bodies(await search(broker, "operator", "nothing like it")) == []
    assert bodies(await search(broker, "operator", "deploy", limit=1)) == ["Déploy retried: the DEPLOY worked"]


async def test_relevance_ranks_the_best_match_first(hive: Hive, broker: BrokerEndpoint) -> None:
    alice = hive.add_agent("alice")
    for body in ["disk full", "the disk, the disk, the disk is full again: disk disk", "a disk"]:
        await broker.client(alice).call("send", {"to": "operator", "body": body})
    ranked = await search(broker, "operator", "disk", order="relevance")
    assert ranked.messages[0].body.startswith("the disk, the disk")
    assert bodies(await search(broker, "operator", "disk")) == [  # newest first by default
        "a disk",
        "the disk, the disk, the disk is full again: disk disk",
        "disk full",
    ]


async def test_an_agent_finds_only_what_it_sent_or_received(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob, carol = hive.add_agent("alice"), hive.add_agent("bob"), hive.add_agent("carol")
    await broker.client(alice).call("send", {"to": bob, "body": "secret plan for bob"})
    await broker.client(bob).call("send", {"to": carol, "body": "secret plan for carol"})
    await broker.client("operator").call("send", {"to": "*", "body": "secret plan for everyone"})
    await broker.client("operator").call("send", {"to": alice, "body": "secret plan for alice"})

    assert bodies(await search(broker, alice, "secret")) == [
        "secret plan for alice",
        "secret plan for everyone",
        "secret plan for bob",
    ]
    assert bodies(await search(broker, carol, "secret")) == ["secret plan for everyone", "secret plan for carol"]
    # Naming another agent narrows what the caller may see; it never widens it.
    assert bodies(await search(broker, carol, "secret", agent=alice)) == ["secret plan for everyone"]
    assert bodies(await search(broker, carol, "sender:alice")) == []
    # A broadcast shows the caller its own delivery only, not who else read it.
    [everyone] = (await search(broker, carol, "everyone")).messages
    assert [d.to for d in everyone.deliveries] == [carol]
    # The operator sees all, and filters by agent.
    assert len((await search(broker, "operator", "secret")).messages) == 4
    assert bodies(await search(broker, "operator", "secret", agent=carol)) == [
        "secret plan for everyone",
        "secret plan for carol",
    ]
    [listed] = (await search(broker, "operator", "everyone")).messages
    assert [d.to for d in listed.deliveries] == sorted([alice, bob, carol, "manager"])


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("foo-bar", r"not a search query the broker can read \(syntax error near \"-\"\).*double quotes \(\"foo-bar\""),
        ('"unterminated', r"unterminated string"),
        ("AND", r"syntax error near \"AND\""),
        ("(deploy", r"missing \"\)\""),
        ("deploy NOT", r"syntax error at the end of the query"),
        ("nope:deploy", r"no such column: nope.*sender:manager"),
        ("   ", r"query is empty"),
        ("x" * 501, r"at most 500 characters"),
    ],
)
async def test_a_query_the_broker_cannot_read_is_refused_with_how_to_quote(
    hive: Hive, broker: BrokerEndpoint, query: str, error: str
) -> None:
    await broker.client("operator").call("send", {"to": "manager", "body": "foo-bar v1.2"})
    with pytest.raises(ToolError, match=error):
        await search(broker, "operator", query)
    assert bodies(await search(broker, "operator", '"foo-bar"')) == ["foo-bar v1.2"]  # quoted, as the refusal says


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 201}, "less than or equal to 200"),
        ({"agent": "Not A Name"}, "invalid agent name"),
        ({"order": "oldest"}, "'newest' or 'relevance'"),
    ],
)
async def test_search_arguments_are_checked(
    hive: Hive, broker: BrokerEndpoint, arguments: dict[str, Any], error: str
) -> None:
    with pytest.raises(ToolError, match=error):
        await search(broker, "operator", "deploy", **arguments)


async def test_retention_removes_messages_from_the_index(hive: Hive, broker: BrokerEndpoint) -> None:
    assert broker.clock is not None
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    await broker.client(alice).call("send", {"to": bob, "body": "ancient history"})
    await broker.client(bob).call("recv", {})
    broker.clock.advance(31 * 86_400)  # retention runs hourly; it runs now
    await broker.client(alice).call("send", {"to": bob, "body": "recent history"})

    async def purged() -> SearchResult | None:
        found = await search(broker, "operator", "history")
        return found if bodies(found) == ["recent history"] else None

    await eventually(purged)
    if hive.storage_url:  # PostgreSQL: a plain index, of the rows themselves (nothing to go stale)
        return
    db = Database(hive.config.db_path("broker"), MIGRATIONS)
    async with db:  # the index itself holds no trace of it (an external-content index could go stale)
        assert await db.fetch_value("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'ancient'") == 0
        check = "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
        await db.write(lambda conn: conn.execute(check))  # raises if the index and the rows disagree


async def test_the_migration_indexes_messages_stored_before_it(hive: Hive) -> None:
    """sqlite: a broker's database from before search (PostgreSQL stores began with search)."""
    if hive.storage_url:
        pytest.skip("sqlite's migration: a PostgreSQL broker store has had search from its first schema")
    old = Database(hive.config.db_path("broker"), MIGRATIONS[:2])  # a broker from before search
    async with old:
        await old.write(
            lambda conn: conn.executemany(
                "INSERT INTO messages (sender, body, created_at) VALUES (?, ?, ?)",
                [("manager", "written before the index existed", time.time()), ("manager", "another one", 0)],
            )
        )
    async with in_process_broker(hive) as broker:
        found = await search(broker, "operator", "index")
        assert bodies(found) == ["written before the index existed"]
        assert found.messages[0].snippet == "written before the «index» existed"


async def test_peek_reads_the_operators_inbox_without_taking_it(hive: Hive, broker: BrokerEndpoint) -> None:
    alice = hive.add_agent("alice")
    for body in ("one", "two", "three"):
        await broker.client(alice).call("send", {"to": "operator", "body": body})
    operator = broker.client("operator")
    await operator.call("recv", {"ack": False})  # "one" is leased, not acked
    peeked = PeekResult.model_validate(await operator.call("peek_inbox", {}))
    assert [(m.body, m.state) for m in peeked.messages] == [("one", "leased"), ("two", "queued"), ("three", "queued")]
    assert (peeked.queued, peeked.leased) == (2, 1) and peeked.messages[0].lease_until is not None
    assert [m.body for m in PeekResult.model_validate(await operator.call("peek_inbox", {"limit": 1})).messages] == [
        "one"
    ]
    # Peeking took nothing: they are still waiting, and recv hands them out.
    assert await operator.call("pending_count", {}) == {"queued": 2, "leased": 1}
    got = await operator.call("recv_batch", {"max": 10})
    assert [m["body"] for m in got["messages"]] == ["two", "three"]
    with pytest.raises(ToolError, match=r"permission denied: broker\.peek_inbox is an operator tool"):
        await broker.client(alice).call("peek_inbox", {})


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 10) -> T:
    deadline = time.monotonic() + timeout
    while (result := await check()) is None:
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        await asyncio.sleep(0.05)
    return result
