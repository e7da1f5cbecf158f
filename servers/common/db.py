"""sqlite for one server: WAL, a busy timeout, versioned migrations, one writer path.

All writes go through `Database.write(fn)`: one transaction at a time on the writer connection,
each in its own task so a caller that is cancelled (its client went away) can neither interrupt
it nor leave half a change. Reads use a second, read-only connection and never wait for the
writer (WAL).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import anyio

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


class DatabaseError(Exception):
    """The database cannot be used as it is (for example, it was written by a newer version)."""


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
        self._write_lock = anyio.Lock()
        self._writing: set[asyncio.Task[Any]] = set()

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
            await self._writer.execute("PRAGMA journal_mode = WAL")
            await self._migrate(self._writer)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._writing:  # let transactions whose callers were cancelled finish
            await asyncio.gather(*self._writing, return_exceptions=True)
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in write()).
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        await conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(self.migrations):
            raise DatabaseError(
                f"{self.path} has schema version {version}, newer than this hyperhive knows "
                f"({len(self.migrations)}); upgrade hyperhive or restore a backup"
            )
        for number, script in enumerate(self.migrations[version:], start=version + 1):
            try:
                await conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                )
            except sqlite3.Error as e:
                if conn.in_transaction:
                    await conn.rollback()
                raise DatabaseError(f"{self.path}: migration {number} failed: {e}") from e

    # ------------------------------------------------------------------------------------ writes
    async def write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `fn` in one write transaction: committed if it returns, rolled back if it raises.

        If the caller is cancelled meanwhile, the transaction still runs to its end.
        """
        task = asyncio.ensure_future(self._transaction(self._require(self._writer), fn))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return await asyncio.shield(task)

    async def _transaction(
        self, conn: aiosqlite.Connection, fn: Callable[[aiosqlite.Connection], Awaitable[T]]
    ) -> T:
        async with self._write_lock:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                result = await fn(conn)
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()
            return result

    # ------------------------------------------------------------------------------------- reads
    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        conn = self._require(self._reader)
        async with conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        conn = self._require(self._reader)
        async with conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def fetch_value(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetch_one(sql, params)
        return None if row is None else row[0]

    def _require(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise DatabaseError(f"{self.path} is not open")
        return conn


def placeholders(values: Iterable[object]) -> str:
    """'?, ?, ?' for an IN (...) clause with one marker per value."""
    return ", ".join("?" for _ in values)
