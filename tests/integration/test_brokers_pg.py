"""Several broker processes on one PostgreSQL database, any of them serving any agent (issue 17):
a send through one wakes a long-poll on another, concurrent claims take each message once, a
reminder fires once whichever scheduler sees it first, a lease taken through one runs out for a
receiver on another, and the inbox cap counts every process's senders. Here the processes are
brokers in this event loop on ports of their own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hivetest import Endpoint, Hive, free_port, in_process

from hyperhive.servers.common.clock import SystemClock
from hyperhive.servers.common.config import Listen

pytestmark = pytest.mark.parametrize("storage", ["postgresql"], indirect=True)


@contextlib.asynccontextmanager
async def brokers(hive: Hive, count: int = 2) -> AsyncIterator[list[Endpoint]]:
    """`count` brokers on the hive's database, each on a port of its own, on the real clock."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                in_process(hive, "broker", listen=Listen(port=free_port()), clock=SystemClock())
            )
            for _ in range(count)
        ]


async def recv(broker: Endpoint, name: str, **arguments: Any) -> dict[str, Any] | None:
    message: dict[str, Any] | None = (await broker.client(name).call("recv", arguments))["message"]
    return message


async def test_a_send_through_one_broker_wakes_a_long_poll_on_another(hive: Hive) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    async with brokers(hive) as (first, second):
        waiting = asyncio.create_task(recv(second, bob, wait_seconds=30))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        started = time.monotonic()
        await first.client(alice).call("send", {"to": bob, "body": "across processes"})
        message = await asyncio.wait_for(waiting, 5)
        assert message is not None and message["body"] == "across processes"
        assert time.monotonic() - started < 1.0  # woken by NOTIFY, not by the 30 s bound


async def test_concurrent_claims_through_two_brokers_take_each_message_once(hive: Hive) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    async with brokers(hive) as (first, second):
        sent = {(await first.client(alice).call("send", {"to": bob, "body": f"job {n}"}))["id"] for n in range(60)}

        async def drain(broker: Endpoint) -> list[int]:
            taken: list[int] = []
            while batch := (await broker.client(bob).call("recv_batch", {"max": 3}))["messages"]:
                taken += [message["id"] for message in batch]
            return taken

        # Four receivers, two through each broker, all on bob's inbox at once.
        results = await asyncio.gather(drain(first), drain(second), drain(first), drain(second))
        taken = [message_id for result in results for message_id in result]
        assert sorted(taken) == sorted(sent)  # none twice, none lost
        assert all(results), "every receiver took some: the claims really ran side by side"


async def test_a_reminder_fires_once_with_two_schedulers(hive: Hive) -> None:
    hive.configure("[broker.reminders]\nmin_delay_seconds = 0\nmax_per_minute = 100\n")
    alice = hive.add_agent("alice")
    async with brokers(hive) as (first, second):
        for n in range(20):  # all due at the same moment: both schedulers go for them together
            await (first if n % 2 else second).client(alice).call("remind", {"body": f"tick {n}", "in_seconds": 1.5})
        await asyncio.sleep(3)
        bodies: list[str] = []
        while batch := (await second.client(alice).call("recv_batch", {"max": 50}))["messages"]:
            bodies += [message["body"] for message in batch]
        assert sorted(bodies) == sorted(f"tick {n}" for n in range(20))


async def test_a_lease_taken_through_one_broker_runs_out_for_a_receiver_on_another(hive: Hive) -> None:
    hive.configure("[broker]\nlease_seconds = 1\n")
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    async with brokers(hive) as (first, second):
        await first.client(alice).call("send", {"to": bob, "body": "crash mid-turn"})
        leased = await recv(first, bob, ack=False)  # a harness that then dies without acking
        assert leased is not None
        started = time.monotonic()
        again = await recv(second, bob, ack=False, wait_seconds=30)
        assert again is not None and again["id"] == leased["id"]
        assert time.monotonic() - started < 5  # the lease's end, not the 30 s bound


async def test_the_inbox_cap_counts_senders_through_every_broker(hive: Hive) -> None:
    hive.configure("[broker]\ninbox_cap = 10\n")
    alice, carol, bob = hive.add_agent("alice"), hive.add_agent("carol"), hive.add_agent("bob")
    async with brokers(hive) as (first, second):

        async def send(broker: Endpoint, sender: str, n: int) -> bool:
            try:
                await broker.client(sender).call("send", {"to": bob, "body": f"{sender} {n}"})
            except Exception as e:  # the refusal of a full inbox
                assert "is full" in str(e), e
                return False
            return True

        sent = await asyncio.gather(
            *(send(first, alice, n) for n in range(15)), *(send(second, carol, n) for n in range(15))
        )
        assert sum(sent) == 10
        assert await first.client(bob).call("pending_count", {}) == {"queued": 10, "leased": 0}
