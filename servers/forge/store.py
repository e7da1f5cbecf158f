"""The forge's sqlite: repos (owner, description, last push), grants, watchers, and the events
pushes owe (outbox). The bare repos themselves are git's, under [forge] dir."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from hyperhive.servers.common.db import Database
from hyperhive.servers.common.errors import LimitReached, NotFound, Refused
from hyperhive.servers.common.events import RepoPushed
from hyperhive.servers.common.outbox import OUTBOX_SCHEMA, queue_event
from hyperhive.servers.forge.reservation_store import RESERVATIONS_SCHEMA

MIGRATIONS: Final = [
    """
    CREATE TABLE repos (
        name        TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at  REAL NOT NULL,
        pushed_at   REAL,
        pushed_by   TEXT,
        state       TEXT NOT NULL DEFAULT 'creating' CHECK (state IN ('creating', 'ready'))
    );
    CREATE INDEX repos_owner ON repos (owner);
    CREATE TABLE grants (
        repo    TEXT NOT NULL REFERENCES repos (name) ON DELETE CASCADE,
        who     TEXT NOT NULL,                                  -- an agent, 'operator' or '*'
        access  TEXT NOT NULL CHECK (access IN ('read', 'write')),
        granted_by TEXT NOT NULL,
        granted_at REAL NOT NULL,
        PRIMARY KEY (repo, who)
    );
    CREATE INDEX grants_who ON grants (who);
    CREATE TABLE watchers (
        repo    TEXT NOT NULL REFERENCES repos (name) ON DELETE CASCADE,
        who     TEXT NOT NULL,
        PRIMARY KEY (repo, who)
    );
    """
    + OUTBOX_SCHEMA,
    RESERVATIONS_SCHEMA,
    # Recent pushes, one row per changed ref (repo_pushed's contents), for the dashboard and `pushes`.
    """
    CREATE TABLE pushes (
        id      INTEGER PRIMARY KEY,
        repo    TEXT NOT NULL REFERENCES repos (name) ON DELETE CASCADE,
        ref     TEXT NOT NULL,
        old     TEXT,
        new     TEXT,
        pusher  TEXT NOT NULL,
        at      REAL NOT NULL
    );
    CREATE INDEX pushes_repo ON pushes (repo, id);
    """,
]
PUSHES_KEPT: Final = 1000  # per repo; older rows are dropped as new pushes are recorded

Access = Literal["read", "write"]
EVERYONE: Final = "*"


@dataclass(frozen=True, slots=True)
class RepoRow:
    name: str
    owner: str
    description: str
    created_at: float
    pushed_at: float | None
    pushed_by: str | None
    grants: dict[str, Access]

    def access_of(self, who: str) -> Access | None:
        """What `who` holds through ownership and grants (admins' rights are the caller's business)."""
        if who == self.owner:
            return "write"
        mine, everyone = self.grants.get(who), self.grants.get(EVERYONE)
        if "write" in (mine, everyone):
            return "write"
        return mine or everyone


@dataclass(frozen=True, slots=True)
class RefChange:
    ref: str
    old: str | None
    new: str | None


class ForgeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin_repo(self, name: str, owner: str, description: str, now: float, *, max_owned: int | None) -> None:
        """Claim the name (state 'creating') under the owner's cap, in one transaction; the repo on
        disk follows, then finish_repo. A name taken (even half-created) is refused."""

        def tx(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM repos WHERE name = ?", (name,)).fetchone():
                raise Refused(f"a repo named {name!r} exists already; pick another name")
            if max_owned is not None:
                owned = conn.execute("SELECT count(*) FROM repos WHERE owner = ?", (owner,)).fetchone()[0]
                if owned >= max_owned:
                    raise LimitReached(
                        f"you own {owned} repos, the limit ([forge] max_repos_per_agent); "
                        "ask the operator to raise it or to remove one"
                    )
            conn.execute(
                "INSERT INTO repos (name, owner, description, created_at) VALUES (?, ?, ?, ?)",
                (name, owner, description, now),
            )

        await self.db.write(tx)

    async def finish_repo(self, name: str, grants: Sequence[tuple[str, Access]] = (), *, by: str, now: float) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE repos SET state = 'ready' WHERE name = ?", (name,))
            for who, access in grants:
                _grant(conn, name, who, access, by, now)

        await self.db.write(tx)

    async def drop_repo(self, name: str) -> None:
        await self.db.write(lambda conn: conn.execute("DELETE FROM repos WHERE name = ?", (name,)))

    async def unfinished(self) -> list[str]:
        """Repos whose creation a crash cut short (their rows and directories are removed at start-up)."""
        rows = await self.db.fetch_all("SELECT name FROM repos WHERE state = 'creating'")
        return [row["name"] for row in rows]

    async def get(self, name: str) -> RepoRow | None:
        rows = await self.db.read(lambda conn: _repos(conn, "WHERE name = ? AND state = 'ready'", (name,)))
        return rows[0] if rows else None

    async def require(self, name: str) -> RepoRow:
        repo = await self.get(name)
        if repo is None:
            raise NotFound(f"no repo named {name!r}; list_repos shows the repos you can read")
        return repo

    async def all(self) -> list[RepoRow]:
        return await self.db.read(lambda conn: _repos(conn, "WHERE state = 'ready'", ()))

    async def grant(self, repo: str, who: str, access: Access, by: str, now: float) -> None:
        await self.db.write(lambda conn: _grant(conn, repo, who, access, by, now))

    async def revoke(self, repo: str, who: str) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM grants WHERE repo = ? AND who = ?", (repo, who)).rowcount > 0

        return await self.db.write(tx)

    async def watch(self, repo: str, who: str, on: bool) -> bool:
        """Start (on) or stop watching; False if that changed nothing."""
        if on:
            sql = "INSERT OR IGNORE INTO watchers (repo, who) VALUES (?, ?)"
        else:
            sql = "DELETE FROM watchers WHERE repo = ? AND who = ?"
        return await self.db.write(lambda conn: conn.execute(sql, (repo, who)).rowcount > 0)

    async def watching(self, who: str) -> set[str]:
        rows = await self.db.fetch_all("SELECT repo FROM watchers WHERE who = ?", (who,))
        return {row["repo"] for row in rows}

    async def record_push(self, repo: RepoRow, pusher: str, changes: Sequence[RefChange], now: float) -> int:
        """The push's time and pusher, and a RepoPushed event per changed ref to the owner and each watcher
        (not the pusher: it knows), in one transaction; returns how many events were queued."""

        def tx(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE repos SET pushed_at = ?, pushed_by = ? WHERE name = ?", (now, pusher, repo.name))
            watchers = [row[0] for row in conn.execute("SELECT who FROM watchers WHERE repo = ?", (repo.name,))]
            recipients = [who for who in dict.fromkeys([repo.owner, *watchers]) if who != pusher]
            _keep_pushes(conn, repo.name, pusher, changes, now)
            for change in changes:
                event = RepoPushed(repo=repo.name, ref=change.ref, old=change.old, new=change.new, pusher=pusher)
                for who in recipients:
                    queue_event(conn, who, event, now)
            return len(recipients) * len(changes)

        return await self.db.write(tx)


@dataclass(frozen=True, slots=True)
class PushRow:
    ref: str
    old: str | None
    new: str | None
    pusher: str
    at: float


async def recent_pushes(db: Database, repo: str, limit: int) -> list[PushRow]:
    """The latest `limit` ref changes pushed to `repo`, newest first."""
    rows = await db.fetch_all(
        "SELECT ref, old, new, pusher, at FROM pushes WHERE repo = ? ORDER BY id DESC LIMIT ?", (repo, limit)
    )
    return [PushRow(row["ref"], row["old"], row["new"], row["pusher"], row["at"]) for row in rows]


def _keep_pushes(conn: sqlite3.Connection, repo: str, pusher: str, changes: Sequence[RefChange], now: float) -> None:
    """The push's ref changes as rows of `pushes`; only the latest PUSHES_KEPT of the repo stay."""
    conn.executemany(
        "INSERT INTO pushes (repo, ref, old, new, pusher, at) VALUES (?, ?, ?, ?, ?, ?)",
        [(repo, change.ref, change.old, change.new, pusher, now) for change in changes],
    )
    conn.execute(
        "DELETE FROM pushes WHERE repo = ? AND id <= "
        "(SELECT id FROM pushes WHERE repo = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (repo, repo, PUSHES_KEPT),
    )


def _grant(conn: sqlite3.Connection, repo: str, who: str, access: Access, by: str, now: float) -> None:
    conn.execute(
        "INSERT INTO grants (repo, who, access, granted_by, granted_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (repo, who) DO UPDATE SET access = excluded.access, granted_by = excluded.granted_by, "
        "granted_at = excluded.granted_at",
        (repo, who, access, by, now),
    )


def _repos(conn: sqlite3.Connection, where: str, params: tuple[object, ...]) -> list[RepoRow]:
    rows = conn.execute(f"SELECT * FROM repos {where} ORDER BY name", params).fetchall()
    grants: dict[str, dict[str, Access]] = {row["name"]: {} for row in rows}
    if rows:
        names = [row["name"] for row in rows]
        marks = ", ".join("?" for _ in names)
        for grant in conn.execute(f"SELECT repo, who, access FROM grants WHERE repo IN ({marks})", names):
            grants[grant["repo"]][grant["who"]] = grant["access"]
    return [
        RepoRow(
            name=row["name"],
            owner=row["owner"],
            description=row["description"],
            created_at=row["created_at"],
            pushed_at=row["pushed_at"],
            pushed_by=row["pushed_by"],
            grants=grants[row["name"]],
        )
        for row in rows
    ]
