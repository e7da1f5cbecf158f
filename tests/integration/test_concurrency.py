"""Many agents at once against a real broker process: nothing lost, nothing delivered twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hivetest import BrokerProcess, Hive

pytestmark = [pytest.mark.slow, pytest.mark.stores]

AGENTS = 50
PER_SENDER = 6


async def test_50_senders_and_receivers_every_message_exactly_once(hive: Hive, broker_process: BrokerProcess) -> None:
    names = [hive.add_agent(f"c{i:02d}") for i in range(AGENTS)]
    broker = broker_process.start().endpoint()
    expected = {name: {f"{sender}:{k}" for sender in names if _target(sender, names) == name
                       for k in range(PER_SENDER)} for name in names}  # fmt: skip
    received: dict[str, list[str]] = {name: [] for name in names}
    ids: Counter[int] = Counter()

    async def sender(name: str) -> None:
        client = broker.client(name)
        for k in range(PER_SENDER):
            await client.call("send", {"to": _target(name, names), "body": f"{name}:{k}"})

    async def receiver(name: str) -> None:
        # Two receivers compete for each inbox: a message must reach exactly one of them.
        client = broker.client(name, timeout=60)
        while len(received[name]) < len(expected[name]):
            batch = await client.call("recv_batch", {"max": 4, "wait_seconds": 2})
            for message in batch["messages"]:
                received[name].append(message["body"])
                ids[message["id"]] += 1

    tasks = [sender(n) for n in names] + [receiver(n) for n in names] + [receiver(n) for n in names]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=240)

    assert sum(len(bodies) for bodies in received.values()) == AGENTS * PER_SENDER
    for name in names:
        assert sorted(received[name]) == sorted(expected[name]), name  # none lost, none twice
    assert all(count == 1 for count in ids.values()) and len(ids) == AGENTS * PER_SENDER
    operator = broker.client("operator")
    assert all(row["pending"] == 0 for row in (await operator.call("stats", {}))["inboxes"])
    await broker.close_clients()


def _target(sender: str, names: list[str]) -> str:
    return names[(names.index(sender) + 1) % len(names)]
