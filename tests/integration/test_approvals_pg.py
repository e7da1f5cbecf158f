"""The approvals store on PostgreSQL with several processes at once: each "process" here is a
PgApprovalStore on a PgDatabase (a connection pool) of its own, on one database. Decisions on one
request, its outcome, and requests made at once must come out as they would from one process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from hyperhive.servers.approvals.store import RequestRow
from hyperhive.servers.approvals.store_pg import MIGRATIONS, PgApprovalStore
from hyperhive.servers.common import audit
from hyperhive.servers.common.errors import AlreadyResolved, LimitReached, Refused
from hyperhive.servers.common.pg import PgDatabase

PROCESSES = 4


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[PgApprovalStore]]:
    """One store per process, each on a pool of its own."""
    async with AsyncExitStack() as stack:
        databases = [PgDatabase(pg_url, "approvals", MIGRATIONS) for _ in range(PROCESSES)]
        for db in databases:
            await stack.enter_async_context(db)
        yield [PgApprovalStore(db) for db in databases]


async def _add(store: PgApprovalStore, agent: str, *, max_pending: int = 100) -> int:
    return await store.add(
        "spawn", agent, None, None, "+++ template/agent.toml", [], "more hands", None, "manager", 1.0, max_pending
    )


async def _decisions(store: PgApprovalStore, request_id: int) -> list[str]:
    """The request's audit actions after `requested`."""
    trail = await audit.entries(store.db, [request_id])
    assert trail[request_id][0].action == "requested"
    return [entry.action for entry in trail[request_id][1:]]


async def _events(store: PgApprovalStore) -> list[tuple[str, dict[str, object]]]:
    rows = await store.db.fetch_all("SELECT recipient, event FROM outbox ORDER BY id")
    return [(row["recipient"], json.loads(row["event"])) for row in rows]


async def test_approvals_and_a_denial_from_several_processes_decide_a_request_once(
    stores: list[PgApprovalStore],
) -> None:
    denied: list[int] = []
    for n in range(10):
        request_id = await _add(stores[0], f"agent{n}")
        # Three processes approve while the fourth denies, all at once.
        deciding = [store.claim(request_id, f"operator{i}", 2.0) for i, store in enumerate(stores[:-1])]
        deciding.append(stores[-1].deny(request_id, "operator3", "not now", 2.0))
        outcomes = await asyncio.gather(*deciding, return_exceptions=True)

        [won] = [o for o in outcomes if isinstance(o, RequestRow)]
        lost = [o for o in outcomes if not isinstance(o, RequestRow)]
        assert len(lost) == PROCESSES - 1 and all(isinstance(o, AlreadyResolved) for o in lost), outcomes
        after = await stores[1].get(request_id)
        assert (after.state, after.resolved_by) == (won.state, won.resolved_by)
        if won.state == "approving":
            assert all(f"was approved by {won.resolved_by} at " in str(o) for o in lost), lost
            assert await _decisions(stores[0], request_id) == ["approved"]
        else:
            assert all("was already denied: by operator3 at " in str(o) for o in lost), lost
            assert await _decisions(stores[0], request_id) == ["denied"]
            denied.append(request_id)
    # The requester hears of each denial once; a claim tells it nothing yet.
    told = [(recipient, event["request_id"], event["outcome"]) for recipient, event in await _events(stores[0])]
    assert told == [("manager", request_id, "denied") for request_id in denied]


async def test_an_outcome_from_several_processes_is_recorded_once(stores: list[PgApprovalStore]) -> None:
    request_id = await _add(stores[0], "bob")
    await stores[0].claim(request_id, "operator", 2.0)
    # An approve and the recovery of other processes carry it out at once; each records what it saw.
    finished = await asyncio.gather(*(store.finish(request_id, "applied", None, 3.0) for store in stores))
    assert {(row.state, row.error) for row in finished} == {("applied", None)}
    assert await _decisions(stores[0], request_id) == ["approved", "applied"]
    assert [(recipient, event["outcome"]) for recipient, event in await _events(stores[0])] == [("manager", "applied")]
    # A late outcome changes nothing.
    late = await stores[1].finish(request_id, "failed", "too late", 4.0)
    assert (late.state, late.error) == ("applied", None)
    assert await _decisions(stores[0], request_id) == ["approved", "applied"]


async def test_identical_requests_from_several_processes_make_one(stores: list[PgApprovalStore]) -> None:
    outcomes = await asyncio.gather(*(_add(store, "bob") for store in stores * 2), return_exceptions=True)
    [made] = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if not isinstance(o, int)]
    assert all(isinstance(o, Refused) and f"request #{made} asks for this already" in str(o) for o in refused), outcomes
    assert [row.id for row in await stores[0].open_requests()] == [made]


async def test_the_queue_cap_holds_across_processes(stores: list[PgApprovalStore]) -> None:
    names = [f"agent{i}" for i in range(3 * PROCESSES)]
    adds = [_add(stores[i % PROCESSES], name, max_pending=3) for i, name in enumerate(names)]
    outcomes = await asyncio.gather(*adds, return_exceptions=True)
    made = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if not isinstance(o, int)]
    assert len(made) == 3, outcomes
    assert all(isinstance(o, LimitReached) and "3 requests are waiting" in str(o) for o in refused), outcomes
    assert len(await stores[0].open_requests()) == 3
