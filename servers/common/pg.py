"""PostgreSQL for one server: a schema of its own in the hive's database, versioned migrations, an
asyncio connection pool, one transaction per job.

The counterpart of db.py (sqlite) for a hive whose stores are shared by several processes or hosts
(`[storage] url`). A write is an async function of a connection, run whole in one transaction
(committed if it returns, rolled back if it raises); a read runs the same way in a read-only
transaction, so what it sees is one snapshot. Several processes may serve one database at once: the
migrations take an advisory lock, and a store's own races are settled by row locks and conditional
updates in its transactions, never by state in one process.

As in db.py, once a job has started it runs to its end even if its caller is cancelled (its client
went away), so a change is whole or absent, never half made; and `close()` waits for such jobs.

A server's tables live in a schema named after it (`broker`, `operator`, …) on the connection's
search_path, so the SQL names tables as the sqlite stores do. psycopg is imported here alone: a hive
on sqlite never loads libpq.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, IsolationLevel, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hyperhive.servers.common.db import DatabaseError, StoreUnavailable

T = TypeVar("T")
Conn = AsyncConnection[DictRow]
Params = Sequence[Any] | dict[str, Any]

CONNECT_SECONDS = 10.0  # to open the pool (the database reachable) and to wait for a free connection


class PgDatabase:
    def __init__(
        self,
        url: str,
        schema: str,
        migrations: Sequence[str],
        *,
        pool_size: int = 10,
        connect_seconds: float = CONNECT_SECONDS,
    ) -> None:
        self.url = url
        self.schema = schema
        self.migrations = migrations
        self.pool_size = pool_size
        self.connect_seconds = connect_seconds
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._jobs: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:  # the url may hold a password: never shown
        return f"PgDatabase(schema={self.schema!r})"

    async def __aenter__(self) -> PgDatabase:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.connect_seconds,
            kwargs={"autocommit": True, "row_factory": dict_row, "options": f"-c search_path={self.schema}"},
            connection_class=AsyncConnection[DictRow],
            name=f"hyperhive-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_seconds)
        except PoolTimeout as e:
            await pool.close()
            raise DatabaseError(
                f"PostgreSQL ([storage] url) did not answer within {self.connect_seconds:g} s: is the server up and "
                f"the url right? ({_last_error(e)})"
            ) from None
        self._pool = pool
        try:
            async with pool.connection() as conn:
                await self._migrate(conn)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._jobs:  # let jobs whose callers were cancelled finish
            await asyncio.gather(*self._jobs, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    async def _migrate(self, conn: Conn) -> None:
        schema = sql.Identifier(self.schema)
        async with conn.transaction():
            # One process migrates at a time; the others then find the schema up to date.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(f"hyperhive:{self.schema}"),))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            await conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {}.schema_version (version integer NOT NULL)").format(schema)
            )
            row = await (
                await conn.execute(sql.SQL("SELECT max(version) AS version FROM {}.schema_version").format(schema))
            ).fetchone()
            version = int(row["version"] or 0) if row else 0
            if version > len(self.migrations):
                raise DatabaseError(
                    f"the {self.schema} schema has version {version}, newer than this hyperhive knows "
                    f"({len(self.migrations)}); upgrade hyperhive or restore a backup"
                )
            for number, script in enumerate(self.migrations[version:], start=version + 1):
                try:
                    async with conn.transaction():  # a savepoint: the failure is named, nothing half done
                        await conn.execute(script)  # no parameters: several statements may run as one script
                        await conn.execute(
                            sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(schema), (number,)
                        )
                except psycopg.Error as e:
                    raise DatabaseError(f"the {self.schema} schema: migration {number} failed: {e}") from e

    # ----------------------------------------------------------------------------------------- jobs
    async def write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn(conn)` as one read-write transaction."""
        return await self._job(fn)

    async def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn(conn)` in a read-only transaction (REPEATABLE READ: one snapshot for all it reads)."""
        return await self._job(fn, read_only=True)

    # One statement alone is its own transaction and its own snapshot: no BEGIN and COMMIT around
    # it (each a round trip to the server).
    async def fetch_all(self, query: str, params: Params = ()) -> list[DictRow]:
        async def run(conn: Conn) -> list[DictRow]:
            return await (await conn.execute(query, params)).fetchall()

        return await self._job(run, transaction=False)

    async def fetch_one(self, query: str, params: Params = ()) -> DictRow | None:
        async def run(conn: Conn) -> DictRow | None:
            return await (await conn.execute(query, params)).fetchone()

        return await self._job(run, transaction=False)

    async def write_one(self, query: str, params: Params = ()) -> DictRow | None:
        """One statement that changes something, as its own transaction (one round trip); its first row."""
        return await self.fetch_one(query, params)

    async def write_all(self, query: str, params: Params = ()) -> list[DictRow]:
        """One statement that changes something, as its own transaction (one round trip); its rows."""
        return await self.fetch_all(query, params)

    async def fetch_value(self, query: str, params: Params = ()) -> Any:
        row = await self.fetch_one(query, params)
        return None if row is None else next(iter(row.values()))

    async def listen(self, channels: Sequence[str]) -> AsyncIterator[tuple[str, str]]:
        """(channel, payload) of each NOTIFY on `channels`, on a connection of its own: first ("", "")
        once listening (what was sent before is not heard: look again then), and DatabaseError when
        the connection is lost (listen again)."""
        try:
            conn = await AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self.connect_seconds))
            )
        except psycopg.Error as e:
            raise DatabaseError(f"could not connect to listen: {_last_error(e)}") from None
        async with conn:
            try:
                for channel in channels:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                yield "", ""
                async for notify in conn.notifies():
                    yield notify.channel, notify.payload
            except psycopg.Error as e:
                raise DatabaseError(f"the listening connection was lost: {_last_error(e)}") from None

    async def _job(self, fn: Callable[[Conn], Awaitable[T]], *, read_only: bool = False, transaction: bool = True) -> T:
        pool = self._require()

        async def run() -> T:
            async with pool.connection(timeout=self.connect_seconds) as conn:
                if not transaction:
                    return await fn(conn)
                # The connection's settings go out with its BEGIN (BEGIN READ ONLY ISOLATION LEVEL
                # REPEATABLE READ), not as statements of their own. (libpq's pipeline mode was slower
                # here: a job reads each result before it sends the next statement.)
                if conn.read_only != (read_only or None):
                    await conn.set_read_only(read_only or None)
                    await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ if read_only else None)
                async with conn.transaction():
                    return await fn(conn)

        job: asyncio.Future[T] = asyncio.ensure_future(run())
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        try:
            return await asyncio.shield(job)
        except PoolTimeout as e:
            raise self._unavailable(
                f"no PostgreSQL connection free within {self.connect_seconds:g} s ({self.pool_size} in the pool, "
                f"[storage] pool_size): {_last_error(e)}"
            ) from None
        except psycopg.OperationalError as e:
            if not _connection_lost(e):
                raise
            raise self._unavailable(f"the connection to PostgreSQL broke: {_last_error(e)}") from None

    def _unavailable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"the {self.schema} server cannot reach its database right now ({why}); try again in a moment. "
            "If this call changed something, look before you repeat it: it may have been stored."
        )

    def _require(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise DatabaseError(f"the {self.schema} database is not open")
        return self._pool


def _lock_key(name: str) -> int:
    """A stable 32-bit advisory lock key for `name` (crc32: the same in every process)."""
    return zlib.crc32(name.encode())


def _connection_lost(e: psycopg.OperationalError) -> bool:
    """A failure of the connection or the server (no SQLSTATE: the client's side; class 08: the
    connection; 57P: the server shutting down or starting), not of the statement."""
    return e.sqlstate is None or e.sqlstate.startswith(("08", "57P"))


def _last_error(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__  # libpq's messages run over several lines
