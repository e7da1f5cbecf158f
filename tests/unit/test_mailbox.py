"""The broker's rules without HTTP: what a receiver that is cancelled mid-claim gives back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperhive.servers.broker.mailbox import Broker
from hyperhive.servers.broker.store import MIGRATIONS
from hyperhive.servers.common.clock import ManualClock
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.storage import Schemas
from hyperhive.servers.home import init_home

ALICE = Principal("alice", Role.AGENT)
BOB = Principal("bob", Role.AGENT)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    init_home(tmp_path)
    config = load_hive_config(tmp_path)
    for name in ("alice", "bob"):
        (config.applied_dir / name).mkdir()
        write_atomic(config.applied_dir / name / "agent.toml", "")
    broker = Broker(ServiceKit("broker", config, Schemas(MIGRATIONS), clock=ManualClock()))
    async with broker.running():
        yield broker


@pytest.mark.parametrize("ack", [True, False])
async def test_a_receiver_cancelled_during_its_claim_gives_the_messages_back(broker: Broker, ack: bool) -> None:
    await broker.send(ALICE, "bob", "precious", None)
    claim = broker.store.claim
    claiming, release = asyncio.Event(), asyncio.Event()

    async def slow_claim(*args: Any) -> Any:
        claiming.set()
        await release.wait()
        return await claim(*args)

    broker.store.claim = slow_claim  # type: ignore[method-assign]
    receiver = asyncio.create_task(broker.receive(BOB, 1, 0, ack))
    await claiming.wait()
    receiver.cancel()  # the client went away while the claim was running
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await receiver
    broker.store.claim = claim  # type: ignore[method-assign]

    again = await broker.receive(BOB, 1, 5, ack=True)  # woken when the give-back lands
    assert [row["body"] for row in again.rows] == ["precious"]


async def test_waiters_are_released_by_drain(broker: Broker) -> None:
    receiver = asyncio.create_task(broker.receive(BOB, 1, 60, ack=True))
    await asyncio.sleep(0.05)
    await broker.drain()
    claimed = await asyncio.wait_for(receiver, 1)
    assert claimed.rows == [] and claimed.queued == 0


async def test_hot_queries_use_the_open_deliveries_index_not_the_history(broker: Broker) -> None:
    """A busy inbox keeps 30 days of delivered rows; claims and counts must not walk them."""
    import sqlite3

    from hyperhive.servers.broker.store import _AVAILABLE, _OPEN

    def plans(conn: sqlite3.Connection) -> list[str]:
        queries = [
            f"SELECT message_id FROM {_OPEN} WHERE recipient = :me AND {_AVAILABLE} ORDER BY message_id LIMIT 5",
            f"SELECT count(*) FROM {_OPEN} WHERE recipient = :me AND {_AVAILABLE}",
            f"SELECT recipient FROM {_OPEN} WHERE state != 'delivered' AND recipient IN (:me) "
            "GROUP BY recipient HAVING count(*) >= 5",
        ]
        return [
            " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {q}", {"me": "bob", "now": 0}))
            for q in queries
        ]

    for plan in await broker.kit.db.read(plans):
        assert "deliveries_open" in plan and "PRIMARY KEY" not in plan, plan


async def test_an_agent_without_an_applied_config_sends_to_no_one(broker: Broker) -> None:
    # carol's config is gone (destroyed a moment ago): like asking, sending is refused, not unchecked.
    with pytest.raises(Refused, match=r"^you may not send to 'bob'; your allowed_recipients are: nobody$"):
        await broker.send(Principal("carol", Role.AGENT), "bob", "hello", None)
