"""Which reservations are live, by plain sqlite3 and the instances dir: the half of the reservation
store the forge's pre-receive hook shares (hook.py runs as a fresh interpreter on every push, so
this imports nothing heavy; tests/unit/test_forge_hook.py checks).

A row is one pattern one holder reserved. It is live while it is not ended (released), its
`expires_at` has not passed, and the instance it was taken under is still its holder's current one
(instances.py: a sandbox that ended, or an agent destroyed, ends every reservation it took; the
operator has no instance, so its reservations live until they expire or are released).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hyperhive.servers.common.instances import current_instance


@dataclass(frozen=True, slots=True)
class ReservationRow:
    id: int
    repo: str
    holder: str
    pattern: str
    exclusive: bool
    reason: str
    created_at: float
    expires_at: float

    def describe(self) -> str:
        """For a refusal: 'src/api/** is reserved exclusively by bob until 14:05:00 UTC (refactoring auth)'."""
        how = "exclusively" if self.exclusive else "(shared)"
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.pattern} is reserved {how} by {self.holder} until {until_text(self.expires_at)}{why}"


def until_text(ts: float) -> str:
    """A time as people read it in a message: 2026-11-21 14:05:00 UTC."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def live(conn: sqlite3.Connection, repo: str, now: float, instances_dir: Path) -> list[ReservationRow]:
    """The repo's live reservations, oldest first."""
    rows = conn.execute(
        "SELECT * FROM reservations WHERE repo = ? AND ended_at IS NULL AND expires_at > ? ORDER BY id",
        (repo, now),
    ).fetchall()
    instances: dict[str, str | None] = {}
    out = []
    for row in rows:
        instance = row["instance"]
        if instance is not None:
            holder = row["holder"]
            if holder not in instances:
                instances[holder] = current_instance(instances_dir, holder)
            if instances[holder] != instance:
                continue  # its holder's sandbox ended (or the agent is gone) since it reserved
        out.append(row_from(row))
    return out


def row_from(row: sqlite3.Row) -> ReservationRow:
    return ReservationRow(
        id=row["id"],
        repo=row["repo"],
        holder=row["holder"],
        pattern=row["pattern"],
        exclusive=bool(row["exclusive"]),
        reason=row["reason"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )
