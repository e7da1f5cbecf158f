"""sqlite for one server: WAL, a busy timeout, versioned migrations, one writer path.

aiosqlite gives each connection its own thread. A write is a plain function of a sqlite3
connection, run whole on the writer's thread as one transaction (committed if it returns,
rolled back if it raises): one hop to the thread instead of one per statement, and no other
write can interleave, because that thread runs one job at a time. Reads run the same way on a
second, read-only connection and never wait for the writer (WAL).

Once a job is queued it runs to its end even if the caller is cancelled (its client went
away), so a change is whole or absent, never half made.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import aiosqlite
from fastmcp.exceptions import ToolError

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


class DatabaseError(Exception):
    """The database cannot be used as it is (for example, it was written by a newer version)."""


class StoreUnavailable(DatabaseError, ToolError):
    """The database did not answer, or the connection to it broke (PostgreSQL). A ToolError: a tool
    call that meets it tells its caller so, in its own words, and to try again."""


class Database:
    def __init__(
        self,
        path: Path,
        migrations: Sequence[str],
        *,
        synchronous: Literal["normal", "full"] = "normal",
    ) -> None:
        self.path = path
        self.migrations = migrations
        self.synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._jobs: set[asyncio.Future[Any]] = set()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            # Messages are private: create the file 0600 before sqlite does (with the umask).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._writer = await self._connect()
            await self._run(self._writer, self._migrate)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._jobs:  # let jobs whose callers were cancelled finish
            await asyncio.gather(*self._jobs, return_exceptions=True)
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _transaction).
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        await conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(self.migrations):
            raise DatabaseError(
                f"{self.path} has schema version {version}, newer than this hyperhive knows "
                f"({len(self.migrations)}); upgrade hyperhive or restore a backup"
            )
        for number, script in enumerate(self.migrations[version:], start=version + 1):
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.rollback()
                raise DatabaseError(f"{self.path}: migration {number} failed: {e}") from e

    # ----------------------------------------------------------------------------------------- jobs
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` as one write transaction on the writer's thread."""
        return await self._run(self._require(self._writer), _transaction, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the reader's thread (a consistent snapshot while it runs)."""
        return await self._run(self._require(self._reader), fn)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self.read(lambda conn: conn.execute(sql, params).fetchall())

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = await self.read(lambda conn: conn.execute(sql, params).fetchone())
        return row

    async def fetch_value(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetch_one(sql, params)
        return None if row is None else row[0]

    async def _run(self, conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
        # aiosqlite's Connection._execute queues fn on the connection's thread, as each of its
        # public methods does for one statement; raw is the sqlite3 connection that thread owns.
        execute = cast(Callable[..., Awaitable[T]], conn._execute)
        job: asyncio.Future[T] = asyncio.ensure_future(execute(fn, conn._conn, *args))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return await asyncio.shield(job)

    def _require(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise DatabaseError(f"{self.path} is not open")
        return conn


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return result


def placeholders(values: Iterable[object]) -> str:
    """'?, ?, ?' for an IN (...) clause with one marker per value."""
    return ", ".join("?" for _ in values)
