"""Reservations in the forge's sqlite: the table, which rows are live, and the transactions of
reserve and release. `live` is plain sqlite3, so the pre-receive hook (hook.py, a child of the
forge under its uid) reads the same rows by the same rule, read-only.

A row is one pattern one holder reserved. It is live while it is not ended (released), its
`expires_at` has not passed, and the instance it was taken under is still its holder's current one
(instances.py: a sandbox that ended, or an agent destroyed, ends every reservation it took; the
operator has no instance, so its reservations live until they expire or are released). Ended rows
are kept a week for the record, then deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hyperhive.servers.common.errors import LimitReached, NotFound, Refused
from hyperhive.servers.common.events import ReservationReleased
from hyperhive.servers.common.outbox import queue_event
from hyperhive.servers.forge.globs import Pattern, parse
from hyperhive.servers.forge.reservation_rows import ReservationRow, live, row_from, until_text

RESERVATIONS_SCHEMA: Final = """
CREATE TABLE reservations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    repo       TEXT NOT NULL REFERENCES repos (name) ON DELETE CASCADE,
    holder     TEXT NOT NULL,
    instance   TEXT,                -- the holder's instance when it reserved; NULL: it has none (operator)
    pattern    TEXT NOT NULL,       -- globs.py
    exclusive  INTEGER NOT NULL CHECK (exclusive IN (0, 1)),
    reason     TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    ended_at   REAL,                -- released
    ended_by   TEXT
);
CREATE INDEX reservations_open ON reservations (repo, ended_at, expires_at);
"""
MAX_HELD: Final = 200  # live patterns one holder may hold in one repo
KEPT_SECONDS: Final = 7 * 86_400  # ended and expired rows are deleted after this


@dataclass(frozen=True, slots=True)
class Claim:
    """What one reserve call asks for."""

    repo: str
    holder: str
    instance: str | None
    patterns: Sequence[Pattern]
    exclusive: bool
    reason: str
    expires_at: float


def conflicts(claim: Claim, held: Sequence[ReservationRow]) -> list[ReservationRow]:
    """Others' live reservations the claim collides with: exclusive against anything, shared against exclusive."""
    out = []
    for row in held:
        if row.holder == claim.holder or not (claim.exclusive or row.exclusive):
            continue
        theirs = parse(row.pattern)
        if any(mine.overlaps(theirs) for mine in claim.patterns):
            out.append(row)
    return out


def reserve(conn: sqlite3.Connection, claim: Claim, now: float, instances_dir: Path) -> list[ReservationRow]:
    """Check and take `claim` in the caller's transaction: Refused naming every conflict, or the
    caller's rows for its patterns (a pattern it holds already is extended and takes the new terms)."""
    conn.execute(
        "DELETE FROM reservations WHERE expires_at < ? OR ended_at < ?", (now - KEPT_SECONDS, now - KEPT_SECONDS)
    )
    held = live(conn, claim.repo, now, instances_dir)
    clashes = conflicts(claim, held)
    if clashes:
        shown = "; ".join(row.describe() for row in clashes[:5])
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        holders = ", ".join(sorted({row.holder for row in clashes}))
        raise Refused(
            f"not reserved: {shown}{more}. Ask {holders} to release it, wait until then, or reserve other paths"
        )
    mine = {row.pattern: row for row in held if row.holder == claim.holder}
    new = [pattern for pattern in dict.fromkeys(p.text for p in claim.patterns) if pattern not in mine]
    if len(mine) + len(new) > MAX_HELD:
        raise LimitReached(
            f"you would hold {len(mine) + len(new)} patterns in repo {claim.repo}, past the limit of {MAX_HELD}; "
            "release some, or reserve a directory ('src/api') instead of its files"
        )
    ids = []
    for pattern in dict.fromkeys(p.text for p in claim.patterns):
        if pattern in mine:
            row = mine[pattern]
            conn.execute(
                "UPDATE reservations SET exclusive = ?, reason = ?, instance = ?, expires_at = max(expires_at, ?) "
                "WHERE id = ?",
                (int(claim.exclusive), claim.reason, claim.instance, claim.expires_at, row.id),
            )
            ids.append(row.id)
        else:
            cursor = conn.execute(
                "INSERT INTO reservations (repo, holder, instance, pattern, exclusive, reason, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (claim.repo, claim.holder, claim.instance, pattern, int(claim.exclusive), claim.reason, now,
                 claim.expires_at),
            )  # fmt: skip
            assert cursor.lastrowid is not None
            ids.append(cursor.lastrowid)
    marks = ", ".join("?" for _ in ids)
    rows = conn.execute(f"SELECT * FROM reservations WHERE id IN ({marks}) ORDER BY id", ids).fetchall()
    return [row_from(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Release:
    """What one release call names: ids, or patterns of the caller's own, or (neither) all of the caller's."""

    repo: str
    by: str
    admin: bool  # the manager or the operator: may release anyone's (by id)
    ids: Sequence[int] | None
    patterns: Sequence[str] | None


def release(conn: sqlite3.Connection, what: Release, now: float, instances_dir: Path) -> list[ReservationRow]:
    """End the reservations `what` names in the caller's transaction; the rows ended. Ending another's
    reservation (only an admin may) tells its holder with a reservation_released event."""
    held = live(conn, what.repo, now, instances_dir)
    if what.ids is not None:
        by_id = {row.id: row for row in held}
        missing = [i for i in what.ids if i not in by_id]
        if missing:
            raise NotFound(
                f"no live reservation {', '.join(map(str, missing))} in repo {what.repo} (it expired, was released, "
                "or is of another repo); reservations(repo) lists the live ones"
            )
        chosen = [by_id[i] for i in dict.fromkeys(what.ids)]
        others = [row for row in chosen if row.holder != what.by]
        if others and not what.admin:
            row = others[0]
            raise Refused(
                f"reservation {row.id} ({row.pattern}) is {row.holder}'s: only its holder, the manager and the "
                f"operator release it; ask {row.holder}, or wait until {until_text(row.expires_at)}"
            )
    else:
        wanted = set(what.patterns) if what.patterns is not None else None
        chosen = [row for row in held if row.holder == what.by and (wanted is None or row.pattern in wanted)]
    for row in chosen:
        conn.execute("UPDATE reservations SET ended_at = ?, ended_by = ? WHERE id = ?", (now, what.by, row.id))
    broken: dict[str, list[ReservationRow]] = {}
    for row in chosen:
        if row.holder != what.by:
            broken.setdefault(row.holder, []).append(row)
    for holder, rows in broken.items():
        event = ReservationReleased(
            repo=what.repo, patterns=[row.pattern for row in rows], ids=[row.id for row in rows], released_by=what.by
        )
        queue_event(conn, holder, event, now)
    return chosen
