"""Reminders and retention, with a clock the test moves (and one reminder in real time)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Hive, in_process_broker

from hyperhive.servers.common.clock import ManualClock, iso

pytestmark = pytest.mark.stores  # on sqlite and on PostgreSQL


async def _eventually(check: Any, timeout: float = 5.0) -> Any:
    """Await `check()` until it returns something truthy (the scheduler runs in its own task)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def test_a_reminder_fires_when_its_time_comes(hive: Hive, broker: BrokerEndpoint) -> None:
    assert broker.clock is not None
    alice = hive.add_agent("alice")
    client = broker.client(alice)
    reminder = await client.call("remind", {"body": "check the build", "in_seconds": 60})
    assert reminder["to"] == alice and reminder["due_at"] == iso(broker.clock.now() + 60)
    broker.clock.advance(59)
    assert (await client.call("recv", {"wait_seconds": 0.3}))["message"] is None
    waiting = asyncio.create_task(client.call("recv", {"wait_seconds": 10}))
    await asyncio.sleep(0.2)
    broker.clock.advance(2)
    got = (await asyncio.wait_for(waiting, 5))["message"]
    assert got["body"] == "check the build" and got["kind"] == "reminder" and got["sender"] == alice
    assert "late" not in got
    assert (await client.call("list_my_reminders", {}))["reminders"] == []


async def test_reminders_at_a_time_to_others_listed_and_cancelled_by_their_owner(
    hive: Hive, broker: BrokerEndpoint
) -> None:
    assert broker.clock is not None
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    at = iso(broker.clock.now() + 3600)
    for_bob = await broker.client(alice).call("remind", {"body": "standup", "at": at, "to": bob})
    mine = await broker.client(alice).call("remind", {"body": "notes", "in_seconds": 120})
    listed = await broker.client(alice).call("list_my_reminders", {})
    assert [r["id"] for r in listed["reminders"]] == [mine["id"], for_bob["id"]]  # soonest first
    assert (await broker.client(bob).call("list_my_reminders", {}))["reminders"] == []
    with pytest.raises(ToolError, match=f"no pending reminder {mine['id']} of yours"):
        await broker.client(bob).call("cancel_reminder", {"id": mine["id"]})
    assert await broker.client(alice).call("cancel_reminder", {"id": mine["id"]}) == {"cancelled": mine["id"]}
    with pytest.raises(ToolError, match="no pending reminder"):
        await broker.client(alice).call("cancel_reminder", {"id": mine["id"]})
    broker.clock.advance(3601)
    got = (await broker.client(bob).call("recv", {"wait_seconds": 5}))["message"]
    assert (got["body"], got["sender"], got["kind"]) == ("standup", alice, "reminder")
    assert (await broker.client(alice).call("recv", {}))["message"] is None  # the cancelled one never fired


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"body": "x"}, "exactly one of in_seconds"),
        ({"body": "x", "in_seconds": 10, "at": "2030-01-01T00:00:00Z"}, "exactly one of in_seconds"),
        ({"body": "x", "in_seconds": 1}, "at least 5 seconds ahead"),
        ({"body": "x", "in_seconds": 366 * 86_400}, "at most 365 days ahead"),
        ({"body": "x", "at": "tomorrow"}, "not an ISO 8601 time"),
        ({"body": "x", "at": "2030-01-01T00:00:00"}, "has no timezone"),
        ({"body": "x", "at": "2001-01-01T00:00:00Z"}, "at least 5 seconds ahead"),
        ({"body": "", "in_seconds": 60}, "body is empty"),
        ({"body": "x", "in_seconds": 60, "to": "*"}, "one recipient"),
        ({"body": "x", "in_seconds": 60, "to": "ghost"}, "unknown recipient 'ghost'"),
        ({"body": "x", "in_seconds": 60, "to": "bob"}, "you may not send to 'bob'"),
    ],
)
async def test_remind_refusals(hive: Hive, broker: BrokerEndpoint, arguments: dict[str, Any], error: str) -> None:
    alice = hive.add_agent("alice", extra='allowed_recipients = ["manager"]')
    hive.add_agent("bob")
    with pytest.raises(ToolError, match=error):
        await broker.client(alice).call("remind", arguments)
    assert (await broker.client(alice).call("list_my_reminders", {}))["reminders"] == []


async def test_reminder_limits_pending_and_rate(hive: Hive) -> None:
    hive.configure("[broker.reminders]\nmax_pending = 3\nmax_per_minute = 4")
    alice = hive.add_agent("alice")
    clock = ManualClock(start=time.time())
    async with in_process_broker(hive, clock) as broker:
        client = broker.client(alice)
        ids = [(await client.call("remind", {"body": f"r{i}", "in_seconds": 600}))["id"] for i in range(3)]
        with pytest.raises(ToolError, match="you have 3 pending reminders, the limit; cancel some"):
            await client.call("remind", {"body": "r3", "in_seconds": 600})
        await client.call("cancel_reminder", {"id": ids[0]})
        await client.call("remind", {"body": "r3", "in_seconds": 600})  # the 4th this minute
        await client.call("cancel_reminder", {"id": ids[1]})
        clock.advance(20)
        with pytest.raises(ToolError, match=r"too many reminders: 4 in the last minute \(limit 4\); try again in 40 s"):
            await client.call("remind", {"body": "r4", "in_seconds": 600})
        clock.advance(41)
        await client.call("remind", {"body": "r4", "in_seconds": 600})


async def test_reminders_that_came_due_while_the_broker_was_down_fire_at_start_marked_late(
    hive: Hive,
) -> None:
    alice = hive.add_agent("alice")
    clock = ManualClock(start=time.time())
    async with in_process_broker(hive, clock) as broker:
        await broker.client(alice).call("remind", {"body": "missed it", "in_seconds": 60})
        await broker.client(alice).call("remind", {"body": "not yet", "in_seconds": 7200})
    clock.advance(3600)  # the broker is down for an hour
    async with in_process_broker(hive, clock) as broker:
        got = (await broker.client(alice).call("recv", {"wait_seconds": 5}))["message"]
        assert (got["body"], got["late"]) == ("missed it", True)
        pending = (await broker.client(alice).call("list_my_reminders", {}))["reminders"]
        assert [r["body"] for r in pending] == ["not yet"]


@pytest.mark.slow
async def test_a_reminder_fires_on_time_in_real_time(hive: Hive) -> None:
    from hyperhive.servers.common.clock import SystemClock

    hive.configure("[broker.reminders]\nmin_delay_seconds = 0")
    alice = hive.add_agent("alice")
    async with in_process_broker(hive, SystemClock()) as broker:
        client = broker.client(alice)
        await client.call("pending_count", {})
        asked = time.monotonic()
        await client.call("remind", {"body": "tick", "in_seconds": 1.5})
        got = (await client.call("recv", {"wait_seconds": 10}))["message"]
        took = time.monotonic() - asked
        assert got["body"] == "tick" and "late" not in got
        assert 1.4 <= took < 2.5, f"fired after {took:.2f} s"


async def test_retention_deletes_old_delivered_messages_only(hive: Hive, broker: BrokerEndpoint) -> None:
    assert broker.clock is not None
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    old = (await broker.client(alice).call("send", {"to": bob, "body": "read long ago"}))["id"]
    await broker.client(bob).call("recv", {})
    unread = (await broker.client(alice).call("send", {"to": bob, "body": "never read"}))["id"]
    broker.clock.advance(31 * 86_400)
    recent = (await broker.client(alice).call("send", {"to": bob, "body": "read today"}))["id"]
    await broker.client(bob).call("recv", {})  # takes "never read" (oldest first)
    await broker.client(bob).call("recv", {})

    async def remaining() -> list[int] | None:
        ids = [m["id"] for m in (await broker.client("operator").call("list_messages", {}))["messages"]]
        return ids if old not in ids else None

    # Retention runs hourly; the clock moved 31 days, so it runs now.
    assert await _eventually(remaining) == [unread, recent]


async def test_reminders_hold_their_place_under_the_inbox_cap(hive: Hive) -> None:
    hive.configure("[broker]\ninbox_cap = 3")
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    async with in_process_broker(hive) as broker:
        assert broker.clock is not None
        to_bob = broker.client(alice)
        await to_bob.call("send", {"to": bob, "body": "one"})
        await to_bob.call("remind", {"body": "later", "in_seconds": 60, "to": bob})
        await to_bob.call("remind", {"body": "later too", "in_seconds": 60, "to": bob})
        # Two messages' worth of bob's inbox is promised to the reminders: neither a send nor
        # another reminder may take it.
        with pytest.raises(ToolError, match=f"the inbox of {bob} is full .*reminders scheduled for it"):
            await to_bob.call("send", {"to": bob, "body": "two"})
        with pytest.raises(ToolError, match=f"the inbox of {bob} is full"):
            await to_bob.call("remind", {"body": "and another", "in_seconds": 60, "to": bob})
        broker.clock.advance(61)  # both fire into what is now a full inbox: their places were kept
        assert await _eventually(lambda: _queued(broker.client(bob), 3))
        got = await broker.client(bob).call("recv_batch", {"max": 10, "ack": False})
        assert [m["body"] for m in got["messages"]] == ["one", "later", "later too"]


async def _queued(client: Any, count: int) -> bool:
    return bool((await client.call("pending_count", {}))["queued"] == count)
