"""PgDatabase (servers/common/pg.py) against the session's throw-away PostgreSQL: migrations taken once
by concurrent processes, a newer schema refused, a failed migration named with nothing half done, an
unreachable database a clear error within its bound, a write finished when its caller goes away,
reads read-only, and each server in a schema of its own; and a broker whose database goes away and
comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from hivetest import Endpoint, Hive, in_process
from pgtest import PgCluster

from hyperhive.servers.common.clock import SystemClock
from hyperhive.servers.common.db import DatabaseError
from hyperhive.servers.common.pg import Conn, PgDatabase

SCHEMA = ["CREATE TABLE things (id bigint PRIMARY KEY, name text NOT NULL);"]


async def test_processes_opening_at_once_migrate_once(pg_url: str) -> None:
    migrations = [*SCHEMA, "ALTER TABLE things ADD COLUMN size integer;"]
    databases = [PgDatabase(pg_url, "broker", migrations) for _ in range(4)]
    await asyncio.gather(*(db.open() for db in databases))  # would fail on a second CREATE TABLE
    try:
        versions = await databases[0].fetch_all("SELECT version FROM schema_version ORDER BY version")
        assert [row["version"] for row in versions] == [1, 2]
    finally:
        await asyncio.gather(*(db.close() for db in databases))


async def test_each_server_has_a_schema_of_its_own(pg_url: str) -> None:
    async with PgDatabase(pg_url, "broker", SCHEMA) as broker, PgDatabase(pg_url, "operator", SCHEMA) as operator:

        async def insert(conn: Conn) -> None:
            await conn.execute("INSERT INTO things VALUES (1, 'message')")

        await broker.write(insert)
        assert await broker.fetch_value("SELECT count(*) FROM things") == 1
        assert await operator.fetch_value("SELECT count(*) FROM things") == 0


async def test_a_newer_schema_is_refused_with_what_to_do(pg_url: str) -> None:
    async with PgDatabase(pg_url, "operator", [*SCHEMA, "CREATE INDEX things_name ON things (name);"]):
        pass
    newer = r"the operator schema has version 2, newer than this hyperhive knows \(1\)"
    with pytest.raises(DatabaseError, match=newer):
        async with PgDatabase(pg_url, "operator", SCHEMA):
            pass


async def test_a_failed_migration_is_named_and_leaves_nothing_half_done(pg_url: str) -> None:
    async with PgDatabase(pg_url, "operator", SCHEMA):
        pass
    broken = [*SCHEMA, "CREATE TABLE more (id bigint); CREATE TABLE things (id bigint);"]
    with pytest.raises(DatabaseError, match=r"the operator schema: migration 2 failed: .*already exists"):
        async with PgDatabase(pg_url, "operator", broken):
            pass
    async with PgDatabase(pg_url, "operator", SCHEMA) as db:  # still at version 1, and `more` was not made
        assert await db.fetch_value("SELECT max(version) FROM schema_version") == 1
        assert await db.fetch_value("SELECT to_regclass('operator.more') IS NULL") is True


async def test_an_unreachable_database_is_a_clear_error_within_its_bound(pg_cluster: PgCluster) -> None:
    url = f"postgresql:///nowhere?host={pg_cluster.dir}/missing&user={pg_cluster.user}"
    started = asyncio.get_running_loop().time()
    with pytest.raises(DatabaseError, match=r"did not answer within 1 s: is the server up and the url right\?"):
        async with PgDatabase(url, "broker", SCHEMA, connect_seconds=1):
            pass
    assert asyncio.get_running_loop().time() - started < 5


async def test_a_write_whose_caller_is_cancelled_still_commits_whole(pg_url: str) -> None:
    async with PgDatabase(pg_url, "broker", SCHEMA) as db:
        started = asyncio.Event()

        async def slow(conn: Conn) -> None:
            await conn.execute("INSERT INTO things VALUES (1, 'first')")
            started.set()
            await asyncio.sleep(0.3)
            await conn.execute("INSERT INTO things VALUES (2, 'second')")

        caller = asyncio.create_task(db.write(slow))
        await started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.5)
        assert await db.fetch_value("SELECT count(*) FROM things") == 2


async def test_a_failed_write_leaves_nothing_and_reads_cannot_write(pg_url: str) -> None:
    async with PgDatabase(pg_url, "broker", SCHEMA) as db:

        async def half(conn: Conn) -> None:
            await conn.execute("INSERT INTO things VALUES (1, 'first')")
            raise RuntimeError("changed my mind")

        with pytest.raises(RuntimeError):
            await db.write(half)
        assert await db.fetch_value("SELECT count(*) FROM things") == 0

        async def sneaky(conn: Conn) -> None:
            await conn.execute("INSERT INTO things VALUES (3, 'via a read')")

        with pytest.raises(Exception, match="read-only transaction"):
            await db.read(sneaky)
        assert await db.fetch_value("SELECT count(*) FROM things") == 0


def test_the_url_never_shows_in_its_repr() -> None:
    db = PgDatabase("postgresql://hive:s3cret@db/hive", "broker", SCHEMA)
    assert "s3cret" not in repr(db)


async def test_a_database_that_goes_away_is_a_clear_refusal_and_its_return_heals_the_broker(
    tmp_path: Path,
) -> None:
    """PostgreSQL stopped under a running broker: a send is refused saying to try again (not the
    masked "Error calling tool"), and once the database is back sends work and a long-poll is woken
    again (the pool and the notification listener reconnect by themselves)."""
    # Its own: stopping the session's would stop every other test's. Commits durable at once, as by
    # default (the session's cluster trades that for speed), so a crash of it loses none of them.
    cluster = PgCluster(settings={"synchronous_commit": "on"}).start()
    try:
        hive = Hive(tmp_path / "hive", storage_url=cluster.url(cluster.create_database()))
        alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
        async with in_process(hive, "broker", clock=SystemClock()) as broker:
            await broker.client(alice).call("send", {"to": bob, "body": "before"})
            cluster.pause()
            refusal = r"^the broker server cannot reach its database right now \(.*try again"
            with pytest.raises(ToolError, match=refusal):
                await broker.client(alice).call("send", {"to": bob, "body": "while down"})
            cluster.resume()
            for _ in range(50):  # the pool notices its broken connections and makes new ones
                try:
                    assert (await broker.client(bob).call("recv", {}))["message"]["body"] == "before"
                    break
                except ToolError:
                    await asyncio.sleep(0.2)
            else:
                pytest.fail("the broker did not come back with its database")
            await asyncio.sleep(1.5)  # the listener's backoff: listening again
            waiting: asyncio.Task[Any] = asyncio.create_task(broker.client(bob).call("recv", {"wait_seconds": 20}))
            await asyncio.sleep(0.3)
            other = Endpoint(hive, broker.url)  # another client: the send goes through another connection
            await other.client(alice).call("send", {"to": bob, "body": "after"})
            assert (await asyncio.wait_for(waiting, 10))["message"]["body"] == "after"
            await other.close_clients()
    finally:
        cluster.stop()
