"""Sending and receiving over real HTTP: identity, refusals, long-poll, batches, broadcast."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Hive

from hyperhive.servers.common.call_errors import ServerUnavailable

pytestmark = pytest.mark.stores  # on sqlite and on PostgreSQL


async def test_send_and_recv_carry_the_token_subject_as_sender(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    sent = await broker.client(alice).call("send", {"to": bob, "body": "hello bob"})
    got = await broker.client(bob).call("recv", {})
    assert got["message"]["id"] == sent["id"]
    assert got["message"]["sender"] == "alice"
    assert got["message"]["body"] == "hello bob"
    assert got["message"]["sent_at"].endswith("Z")
    assert got["queued"] == 0
    assert "in_reply_to" not in got["message"] and "broadcast" not in got["message"]  # nulls left out
    assert (await broker.client(bob).call("recv", {}))["message"] is None


async def test_messages_come_oldest_first_and_queued_counts_the_rest(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    for i in range(3):
        await broker.client(alice).call("send", {"to": bob, "body": f"m{i}"})
    first = await broker.client(bob).call("recv", {})
    assert (first["message"]["body"], first["queued"]) == ("m0", 2)
    batch = await broker.client(bob).call("recv_batch", {"max": 5})
    assert [m["body"] for m in batch["messages"]] == ["m1", "m2"]
    assert batch["queued"] == 0


async def test_operator_and_manager_have_inboxes(hive: Hive, broker: BrokerEndpoint) -> None:
    alice = hive.add_agent("alice")
    await broker.client(alice).call("send", {"to": "operator", "body": "need help"})
    await broker.client(alice).call("send", {"to": "manager", "body": "need a package"})
    assert (await broker.client("operator").call("recv", {}))["message"]["body"] == "need help"
    assert (await broker.client("manager").call("recv", {}))["message"]["body"] == "need a package"
    sent = await broker.client("operator").call("send", {"to": alice, "body": "from the operator"})
    got = await broker.client(alice).call("recv", {})
    assert got["message"] == {**got["message"], "id": sent["id"], "sender": "operator"}


@pytest.mark.parametrize(
    ("to", "body", "error"),
    [
        ("nobody", "hi", "unknown recipient 'nobody': no such agent"),
        ("Bad Name!", "hi", "invalid agent name"),
        ("alice", "hi", "'alice' is you"),
        ("bob", "", "body is empty"),
        ("bob", "   \n ", "body is empty"),
        ("bob", "x" * (64 * 1024 + 1), "body is 65,537 bytes; the limit is 65,536"),
    ],
)
async def test_send_refusals_are_clear_and_store_nothing(
    hive: Hive, broker: BrokerEndpoint, to: str, body: str, error: str
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    with pytest.raises(ToolError, match=error):
        await broker.client(alice).call("send", {"to": to, "body": body})
    assert await broker.client(bob).call("pending_count", {}) == {"queued": 0, "leased": 0}
    listed = await broker.client("operator").call("list_messages", {})
    assert listed["messages"] == []


async def test_body_at_the_limit_is_accepted(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    body = "é" * (32 * 1024)  # 64 KiB of UTF-8 exactly
    await broker.client(alice).call("send", {"to": bob, "body": body})
    assert (await broker.client(bob).call("recv", {}))["message"]["body"] == body


async def test_allowed_recipients_limit_agents_but_not_the_manager_or_operator(
    hive: Hive, broker: BrokerEndpoint
) -> None:
    alice = hive.add_agent("alice", extra='allowed_recipients = ["manager"]')
    bob = hive.add_agent("bob")
    with pytest.raises(ToolError, match="you may not send to 'bob'; your allowed_recipients are: manager"):
        await broker.client(alice).call("send", {"to": bob, "body": "hi"})
    with pytest.raises(ToolError, match="broadcast"):
        await broker.client(alice).call("send", {"to": "*", "body": "hi all"})
    with pytest.raises(ToolError, match="you may not send to 'operator'"):
        await broker.client(alice).call("send", {"to": "operator", "body": "hi"})
    await broker.client(alice).call("send", {"to": "manager", "body": "allowed"})
    # The manager and the operator may always send, whatever their own lists say.
    hive.add_agent("boss", role="manager", extra="allowed_recipients = []")
    await broker.client("boss").call("send", {"to": bob, "body": "from a manager"})
    await broker.client("operator").call("send", {"to": alice, "body": "from the operator"})


async def test_inbox_cap_refuses_sends_once_full(hive: Hive) -> None:
    hive.configure("[broker]\ninbox_cap = 3")
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    from hivetest import in_process_broker

    async with in_process_broker(hive) as broker:
        for i in range(3):
            await broker.client(alice).call("send", {"to": bob, "body": f"m{i}"})
        full = r"the inbox of bob is full \(3 undelivered messages and reminders scheduled for it\); nothing was sent"
        with pytest.raises(ToolError, match=full):
            await broker.client(alice).call("send", {"to": bob, "body": "one too many"})
        await broker.client(bob).call("recv", {})  # delivering one makes room
        await broker.client(alice).call("send", {"to": bob, "body": "fits again"})


async def test_broadcast_reaches_every_other_agent_with_the_hint(hive: Hive, broker: BrokerEndpoint) -> None:
    names = [hive.add_agent(n) for n in ("alice", "bob", "carol")]
    sent = await broker.client("alice").call("send", {"to": "*", "body": "standup in 5"})
    assert sent["recipients"] == 3  # bob, carol and the manager; not alice, not the operator
    for name in ["bob", "carol", "manager"]:
        got = (await broker.client(name).call("recv", {}))["message"]
        assert got["broadcast"] is True and got["id"] == sent["id"] and got["sender"] == "alice"
    assert (await broker.client("alice").call("recv", {}))["message"] is None
    assert (await broker.client("operator").call("recv", {}))["message"] is None
    assert names


async def test_broadcast_skips_full_inboxes_and_says_so(hive: Hive) -> None:
    hive.configure("[broker]\ninbox_cap = 1")
    for name in ("alice", "bob", "carol"):
        hive.add_agent(name)
    from hivetest import in_process_broker

    async with in_process_broker(hive) as broker:
        await broker.client("alice").call("send", {"to": "bob", "body": "fills bob"})
        sent = await broker.client("alice").call("send", {"to": "*", "body": "all"})
        assert sent["skipped_full"] == ["bob"] and sent["recipients"] == 2


async def test_recv_long_poll_is_woken_by_a_send_within_milliseconds(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    receiver = broker.client(bob)
    await receiver.call("pending_count", {})  # connect first, so only the wake is timed
    waiting = asyncio.create_task(receiver.call("recv", {"wait_seconds": 30}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await broker.client(alice).call("send", {"to": bob, "body": "wake up"})
    sent_at = time.monotonic()
    got = await asyncio.wait_for(waiting, 5)
    woke_after = time.monotonic() - sent_at
    assert got["message"]["body"] == "wake up"
    assert woke_after < 0.25, f"recv returned {woke_after * 1000:.0f} ms after the send"


async def test_recv_returns_empty_after_wait_seconds(hive: Hive, broker: BrokerEndpoint) -> None:
    bob = hive.add_agent("bob")
    started = time.monotonic()
    got = await broker.client(bob).call("recv", {"wait_seconds": 0.5})
    assert got == {"message": None, "queued": 0}
    assert 0.45 <= time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"wait_seconds": -1}, "wait_seconds: Input should be greater than or equal to 0"),
        ({"wait_seconds": 181}, "wait_seconds: Input should be less than or equal to 180"),
        ({"wait_seconds": "soon"}, "wait_seconds: Input should be a valid number"),
    ],
)
async def test_recv_arguments_are_checked(
    hive: Hive, broker: BrokerEndpoint, arguments: dict[str, object], error: str
) -> None:
    bob = hive.add_agent("bob")
    with pytest.raises(ToolError, match=f"invalid arguments for recv: {error}"):
        await broker.client(bob).call("recv", arguments)


async def test_missing_arguments_are_named(hive: Hive, broker: BrokerEndpoint) -> None:
    alice = hive.add_agent("alice")
    with pytest.raises(ToolError, match="invalid arguments for send: body: required"):
        await broker.client(alice).call("send", {"to": "manager"})


async def test_a_cancelled_recv_consumes_nothing(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    impatient = broker.client(bob, timeout=0.5)
    # "call to broker.recv failed: …", or "cannot reach broker …" when the client's own timeout ran out
    # before the request left (a loaded machine): either way the call gave up, and nothing was taken.
    timed_out = r"broker.*Request 'tools/call' timed out"
    with pytest.raises(ServerUnavailable, match=timed_out):
        await impatient.call("recv", {"wait_seconds": 10})
    await broker.client(alice).call("send", {"to": bob, "body": "for a patient receiver"})
    got = await broker.client(bob).call("recv", {"wait_seconds": 5})
    assert got["message"]["body"] == "for a patient receiver"


async def test_recv_batch_waits_for_the_first_then_takes_up_to_max(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    for i in range(7):
        await broker.client(alice).call("send", {"to": bob, "body": f"m{i}"})
    batch = await broker.client(bob).call("recv_batch", {"max": 5, "wait_seconds": 1})
    assert [m["body"] for m in batch["messages"]] == [f"m{i}" for i in range(5)]
    assert batch["queued"] == 2
    with pytest.raises(ToolError):
        await broker.client(bob).call("recv_batch", {"max": 51})
