"""Which database a server's store is on: its sqlite file (the default), or the hive's PostgreSQL
database (`[storage] url`) for the stores the hive shares across processes and hosts (SHARED_STORES).

A server names both schemas (`Schemas`); its store module picks the implementation that matches the
database it is given (`is_postgresql`). pg.py, and so psycopg and libpq, is imported only when a
PostgreSQL url is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

from typing_extensions import TypeIs

from hyperhive.servers.common.config import SHARED_STORES, HiveConfig
from hyperhive.servers.common.db import Database

if TYPE_CHECKING:
    from hyperhive.servers.common.pg import PgDatabase

# Either engine's database. A Union with the name in quotes: importable without psycopg.
AnyDatabase = Union[Database, "PgDatabase"]


class Row(Protocol):
    """A row as both engines give it: sqlite3.Row, or psycopg's dict_row. Read it by column name."""

    def __getitem__(self, column: str, /) -> Any: ...


@dataclass(frozen=True)
class Schemas:
    """A server's migrations for each engine; `postgresql` None: its store is sqlite only."""

    sqlite: Sequence[str]
    postgresql: Sequence[str] | None = None


def store_database(server: str, config: HiveConfig, schemas: Schemas) -> AnyDatabase:
    """The database `server`'s store lives in, not yet open."""
    url = config.storage.url
    if url is not None and server in SHARED_STORES:
        if schemas.postgresql is None:
            raise RuntimeError(f"the {server} server has no PostgreSQL schema")  # a hyperhive bug
        from hyperhive.servers.common.pg import PgDatabase

        return PgDatabase(url, server, schemas.postgresql, pool_size=config.storage.pool_size)
    return Database(config.db_path(server), schemas.sqlite, synchronous=config.storage.synchronous)


def is_postgresql(db: AnyDatabase) -> TypeIs[PgDatabase]:
    return not isinstance(db, Database)
