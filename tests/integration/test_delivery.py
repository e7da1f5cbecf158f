"""At-least-once delivery (leases, ack, redelivery), threads, helper events, listing and stats."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Hive

from hyperhive.harness.loop import Harness
from hyperhive.servers.common.harnessdir import HarnessInfo

pytestmark = pytest.mark.stores  # on sqlite and on PostgreSQL

LEASE = 120  # the default [broker] lease_seconds


async def _send(broker: BrokerEndpoint, sender: str, to: str, body: str, reply: int | None = None) -> int:
    result = await broker.client(sender).call("send", {"to": to, "body": body, "in_reply_to": reply})
    return int(result["id"])


# ------------------------------------------------------------------------------------------ leases


async def test_a_leased_message_is_not_handed_to_another_recv_and_ack_confirms_it(
    hive: Hive, broker: BrokerEndpoint
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    first = await _send(broker, alice, bob, "one")
    await _send(broker, alice, bob, "two")
    leased = await broker.client(bob).call("recv", {"ack": False})
    assert leased["message"]["id"] == first and leased["queued"] == 1
    assert await broker.client(bob).call("pending_count", {}) == {"queued": 1, "leased": 1}
    other = await broker.client(bob).call("recv", {"ack": False})
    assert other["message"]["body"] == "two"  # the leased one is skipped, not handed out again
    acked = await broker.client(bob).call("ack", {"ids": [first, other["message"]["id"]]})
    assert acked == {"acked": 2, "already_acked": 0}
    assert await broker.client(bob).call("ack", {"ids": [first]}) == {"acked": 0, "already_acked": 1}
    assert await broker.client(bob).call("pending_count", {}) == {"queued": 0, "leased": 0}


async def test_an_unacked_lease_comes_back_after_it_runs_out_and_wakes_a_waiting_recv(
    hive: Hive, broker: BrokerEndpoint
) -> None:
    assert broker.clock is not None
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    message_id = await _send(broker, alice, bob, "handle me")
    assert (await broker.client(bob).call("recv", {"ack": False}))["message"]["id"] == message_id
    # A harness that crashed mid-turn never acks; its next recv waits for the lease to run out.
    waiting = asyncio.create_task(broker.client(bob).call("recv", {"ack": False, "wait_seconds": 30}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    broker.clock.advance(LEASE + 1)
    again = await asyncio.wait_for(waiting, 5)
    assert again["message"]["id"] == message_id
    assert await broker.client(bob).call("ack", {"ids": [message_id]}) == {"acked": 1, "already_acked": 0}


async def test_lease_extends_or_releases(hive: Hive, broker: BrokerEndpoint) -> None:
    assert broker.clock is not None
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    message_id = await _send(broker, alice, bob, "long job")
    await broker.client(bob).call("recv", {"ack": False})
    extended = await broker.client(bob).call("lease", {"ids": [message_id], "seconds": 600})
    assert extended["messages"] == 1 and extended["lease_until"].endswith("Z")
    broker.clock.advance(LEASE + 1)  # past the original lease, inside the extension
    assert (await broker.client(bob).call("recv", {}))["message"] is None
    released = await broker.client(bob).call("lease", {"ids": [message_id], "seconds": 0})
    assert released == {"lease_until": None, "messages": 1}
    assert (await broker.client(bob).call("recv", {}))["message"]["id"] == message_id


async def test_ack_and_lease_refuse_ids_that_are_not_yours_and_change_nothing(
    hive: Hive, broker: BrokerEndpoint
) -> None:
    alice, bob, carol = hive.add_agent("alice"), hive.add_agent("bob"), hive.add_agent("carol")
    mine = await _send(broker, alice, bob, "for bob")
    theirs = await _send(broker, alice, carol, "for carol")
    await broker.client(bob).call("recv", {"ack": False})
    with pytest.raises(ToolError, match=rf"not messages of yours: {theirs}; nothing was acked"):
        await broker.client(bob).call("ack", {"ids": [mine, theirs]})
    assert await broker.client(bob).call("pending_count", {}) == {"queued": 0, "leased": 1}
    with pytest.raises(ToolError, match=rf"not leased to you: {theirs}"):
        await broker.client(bob).call("lease", {"ids": [theirs], "seconds": 10})
    with pytest.raises(ToolError):
        await broker.client(bob).call("ack", {"ids": []})


def _harness(tmp_path: Path, hive: Hive, broker: BrokerEndpoint, agent: str, batch_max: int) -> Harness:
    token = tmp_path / "harness" / "credentials" / "token"
    token.parent.mkdir(parents=True)
    token.write_text(hive.token(agent))
    info = HarnessInfo(
        agent=agent, role="agent", model="sonnet", servers={"broker": broker.url}, tools={"broker": ["recv"]},
        bash=[], mcp_servers={}, env={}, prompt="", state_dir=str(tmp_path / "state"),
        harness_dir=str(tmp_path / "harness"), token_file=str(token), batch_max=batch_max,
    )  # fmt: skip
    return Harness(info)


async def test_the_harness_wakes_with_one_leasing_recv_batch_long_poll(
    hive: Hive, broker: BrokerEndpoint, tmp_path: Path
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    harness = _harness(tmp_path, hive, broker, bob, batch_max=2)
    calls: list[str] = []
    call = harness.broker.hive.call  # every tool call of the typed client goes through it

    async def counted(tool: str, arguments: dict[str, Any], **kwargs: Any) -> Any:
        calls.append(tool)
        return await call(tool, arguments, **kwargs)

    harness.broker.hive.call = counted  # type: ignore[method-assign]
    try:
        waking = asyncio.create_task(harness._wake())
        await asyncio.sleep(0.3)
        assert not waking.done()  # it long-polls for the first message
        first = await _send(broker, alice, bob, "one")
        batch = await asyncio.wait_for(waking, 5)
        assert batch is not None and [m.id for m in batch.messages] == [first] and batch.queued == 0
        second, third, _ = [await _send(broker, alice, bob, body) for body in ("two", "three", "four")]
        batch = await asyncio.wait_for(harness._wake(), 5)
        assert batch is not None and [m.id for m in batch.messages] == [second, third]
        assert batch.queued == 1  # batch_max, and what is left
        assert calls == ["recv_batch", "recv_batch"]  # one call a wake, not recv and then recv_batch
        # All three are leased (ack=false): a crash mid-turn gets them delivered again.
        assert await broker.client(bob).call("pending_count", {}) == {"queued": 1, "leased": 3}
    finally:
        await harness.broker.close()
        await harness.recorder.close()


# ----------------------------------------------------------------------------------------- threads


async def test_thread_shows_the_conversation_the_caller_took_part_in(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob, carol = hive.add_agent("alice"), hive.add_agent("bob"), hive.add_agent("carol")
    m1 = await _send(broker, alice, bob, "question")
    m2 = await _send(broker, bob, alice, "answer", reply=m1)
    m3 = await _send(broker, bob, carol, "fyi", reply=m2)  # carol joins through bob
    m4 = await _send(broker, alice, bob, "thanks", reply=m2)
    other = await _send(broker, alice, bob, "unrelated")

    def ids(result: dict[str, list[dict[str, int]]]) -> list[int]:
        return [m["id"] for m in result["messages"]]

    assert ids(await broker.client(bob).call("thread", {"message_id": m4})) == [m1, m2, m3, m4]
    assert ids(await broker.client(alice).call("thread", {"message_id": m1})) == [m1, m2, m4]  # not bob→carol
    assert ids(await broker.client(carol).call("thread", {"message_id": m3})) == [m3]
    assert ids(await broker.client("operator").call("thread", {"message_id": m2})) == [m1, m2, m3, m4]
    thread = await broker.client(bob).call("thread", {"message_id": m2})
    assert thread["messages"][1] == {
        **thread["messages"][1],
        "in_reply_to": m1,
        "to": ["alice"],
        "sender": "bob",
    }
    with pytest.raises(ToolError, match=f"unknown message {m1}"):
        await broker.client(carol).call("thread", {"message_id": m1})
    assert ids(await broker.client(bob).call("thread", {"message_id": other})) == [other]


async def test_in_reply_to_must_be_a_message_you_saw(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob, carol = hive.add_agent("alice"), hive.add_agent("bob"), hive.add_agent("carol")
    private = await _send(broker, alice, bob, "between us")
    with pytest.raises(ToolError, match=f"unknown in_reply_to {private}"):
        await _send(broker, carol, alice, "butting in", reply=private)
    with pytest.raises(ToolError, match="unknown in_reply_to 999999"):
        await _send(broker, alice, bob, "to nothing", reply=999999)
    await _send(broker, "operator", alice, "the operator may reply to anything", reply=private)


async def test_a_reply_to_a_broadcast_joins_its_thread(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    announcement = await _send(broker, alice, "*", "release at 5")
    reply = await _send(broker, bob, alice, "ok", reply=announcement)
    thread = await broker.client(alice).call("thread", {"message_id": reply})
    assert [(m["id"], m["to"]) for m in thread["messages"]] == [(announcement, ["*"]), (reply, ["alice"])]


# -------------------------------------------------------------------------------------- events


async def test_post_event_delivers_a_typed_helper_event_from_system(hive: Hive, broker: BrokerEndpoint) -> None:
    event = {
        "type": "approval_resolved",
        "request_id": 7,
        "request": "apply_commit",
        "agent": "alice",
        "outcome": "denied",
        "by": "operator",
        "note": "too broad",
    }
    posted = await broker.client("service:approvals").call("post_event", {"to": "manager", "event": event})
    got = (await broker.client("manager").call("recv", {}))["message"]
    assert got["id"] == posted["id"] and got["sender"] == "system" and got["kind"] == "event"
    assert got["event"] == {**event, "error": None}
    assert got["body"] == "request #7 (apply commit for alice) was denied by operator: too broad"


async def test_post_event_refuses_bad_events_and_recipients(hive: Hive, broker: BrokerEndpoint) -> None:
    service = broker.client("service:lifecycle")
    with pytest.raises(ToolError):
        await service.call("post_event", {"to": "manager", "event": {"type": "exploded"}})
    with pytest.raises(ToolError):
        await service.call("post_event", {"to": "manager", "event": {"type": "killed"}})  # missing fields
    with pytest.raises(ToolError, match="unknown recipient 'ghost'"):
        await service.call("post_event", {"to": "ghost", "event": {"type": "killed", "agent": "x", "by": "op"}})
    await service.call("post_event", {"to": "operator", "event": {"type": "container_crash", "agent": "alice"}})
    got = (await broker.client("operator").call("recv", {}))["message"]
    assert got["body"] == "agent alice crashed (0 restarts so far)"


# ----------------------------------------------------------------------------------- operator views


async def test_list_messages_filters_and_pages_with_a_cursor(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob, carol = hive.add_agent("alice"), hive.add_agent("bob"), hive.add_agent("carol")
    a = await _send(broker, alice, bob, "a")
    b = await _send(broker, bob, carol, "b", reply=None)
    c = await _send(broker, carol, alice, "c")
    d = await _send(broker, alice, bob, "d", reply=a)
    await broker.client(bob).call("recv", {})
    operator = broker.client("operator")

    everything = await operator.call("list_messages", {})
    assert [m["id"] for m in everything["messages"]] == [a, b, c, d] and everything["next_since"] == d
    first = everything["messages"][0]
    assert first["deliveries"][0]["to"] == "bob" and first["deliveries"][0]["state"] == "delivered"
    assert everything["messages"][3]["deliveries"][0]["state"] == "queued"
    assert everything["messages"][3]["thread_id"] == a

    assert [m["id"] for m in (await operator.call("list_messages", {"agent": "carol"}))["messages"]] == [b, c]
    assert [m["id"] for m in (await operator.call("list_messages", {"thread": d}))["messages"]] == [a, d]
    newest = await operator.call("list_messages", {"limit": 2})
    assert [m["id"] for m in newest["messages"]] == [c, d]
    page = await operator.call("list_messages", {"since": a, "limit": 2})
    assert [m["id"] for m in page["messages"]] == [b, c] and page["next_since"] == c
    nothing_new = await operator.call("list_messages", {"since": d})
    assert nothing_new == {"messages": [], "next_since": d}
    with pytest.raises(ToolError, match="unknown message 424242"):
        await operator.call("list_messages", {"thread": 424242})


async def test_stats_counts_each_inbox(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    for body in ("1", "2", "3"):
        await _send(broker, alice, bob, body)
    await broker.client(bob).call("recv", {})
    await broker.client(alice).call("remind", {"body": "later", "in_seconds": 600})
    await broker.client(bob).call("remind", {"body": "soon", "in_seconds": 5})  # fires, and bob takes it
    assert broker.clock is not None
    broker.clock.advance(6)
    took = (await broker.client(bob).call("recv", {"wait_seconds": 5}))["message"]
    while took is not None and took.get("kind") != "reminder":  # its earlier messages first (kind omitted)
        took = (await broker.client(bob).call("recv", {"wait_seconds": 5}))["message"]
    assert took is not None and took["body"] == "soon"
    inboxes = {row["name"]: row for row in (await broker.client("operator").call("stats", {}))["inboxes"]}
    assert set(inboxes) >= {"alice", "bob", "manager", "operator"}
    assert inboxes["bob"] == {
        "name": "bob", "pending": 0, "delivered_24h": 4, "pending_reminders": 0, "reminders_24h": 1
    }  # fmt: skip
    assert inboxes["alice"] == {
        "name": "alice", "pending": 0, "delivered_24h": 0, "pending_reminders": 1, "reminders_24h": 0
    }  # fmt: skip
    assert inboxes["operator"]["pending"] == 0
