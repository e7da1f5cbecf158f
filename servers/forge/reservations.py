"""Advisory reservations of a repo's paths: who is editing what, so two agents do not edit the same
files at once. Checked when taken (a conflict is refused, naming holder, pattern, time and reason)
and enforced at push (hook.py refuses a push touching another's exclusive reservation).

Anyone who may read a repo reserves in it; a reservation is the caller's (its token's subject) and
lives until its ttl, its release, or the end of the sandbox instance it was taken under. Patterns
are globs (globs.py). An agent releases its own; the manager and the operator release anyone's by
id, and its holder gets a reservation_released event (the row keeps who ended it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.forge import reservation_rows, reservation_store
from hyperhive.servers.forge.forge import Forge
from hyperhive.servers.forge.globs import BadPattern, Pattern, parse
from hyperhive.servers.forge.models import Released, Reservation, ReservationsResult, Reserved
from hyperhive.servers.forge.reservation_rows import ReservationRow
from hyperhive.servers.forge.reservation_store import Claim, Release

log = logging.getLogger("hyperhive.forge.reservations")

MIN_TTL: Final = 60
MAX_TTL: Final = 86_400
MAX_PATTERNS: Final = 64  # in one call
MAX_REASON: Final = 300


class Reservations:
    def __init__(self, forge: Forge) -> None:
        self.forge = forge
        self.db = forge.store.db
        self.clock = forge.clock
        self.instances_dir = forge.kit.config.instances_dir

    async def reserve(
        self,
        me: Principal,
        instance: str | None,
        name: str,
        paths: Sequence[str],
        ttl_seconds: int,
        reason: str,
        exclusive: bool,
    ) -> Reserved:
        if not isinstance(ttl_seconds, int) or not MIN_TTL <= ttl_seconds <= MAX_TTL:
            raise Refused(
                f"ttl_seconds must be between {MIN_TTL} and {MAX_TTL} (a day); reserve again to extend, "
                f"not {ttl_seconds!r}"
            )
        patterns = [_pattern(path) for path in _paths(paths)]
        text = reason.strip()
        if len(text) > MAX_REASON:
            raise Refused(f"the reason is {len(text)} characters; say it in under {MAX_REASON}")
        repo = await self.forge.readable(me, name)
        now = self.clock.now()
        claim = Claim(repo.name, me.name, instance, patterns, exclusive, text, now + ttl_seconds)
        rows = await self.db.write(lambda conn: reservation_store.reserve(conn, claim, now, self.instances_dir))
        log.info("%s reserved %s in %s for %d s", me.name, ", ".join(p.text for p in patterns), repo.name, ttl_seconds)
        return Reserved(repo=repo.name, reservations=[_view(row) for row in rows])

    async def release(
        self, me: Principal, name: str, paths: Sequence[str] | None, ids: Sequence[int] | None
    ) -> Released:
        if paths is not None and ids is not None:
            raise Refused("give paths (your own patterns) or ids (from reservations), not both")
        if ids is not None and (not ids or len(ids) > MAX_PATTERNS * 4):
            raise Refused(f"ids must name 1 to {MAX_PATTERNS * 4} reservations (reservations(repo) lists them)")
        patterns = [_pattern(path).text for path in _paths(paths)] if paths is not None else None
        repo = await self.forge.readable(me, name)
        what = Release(repo.name, me.name, me.role in (Role.MANAGER, Role.OPERATOR), ids, patterns)
        now = self.clock.now()
        rows = await self.db.write(lambda conn: reservation_store.release(conn, what, now, self.instances_dir))
        for row in rows:
            if row.holder != me.name:
                log.warning("%s released %s's reservation %d (%s) in %s", me.name, row.holder, row.id, row.pattern,
                            repo.name)  # fmt: skip
        if any(row.holder != me.name for row in rows):
            self.forge.kit.outbox.wake()
        return Released(repo=repo.name, released=[_view(row) for row in rows])

    async def list(self, me: Principal, name: str) -> ReservationsResult:
        repo = await self.forge.readable(me, name)
        now = self.clock.now()
        rows = await self.db.read(lambda conn: reservation_rows.live(conn, repo.name, now, self.instances_dir))
        return ReservationsResult(repo=repo.name, reservations=[_view(row) for row in rows])


def _paths(paths: Sequence[str] | None) -> Sequence[str]:
    if not paths or len(paths) > MAX_PATTERNS:
        raise Refused(
            f"paths must hold 1 to {MAX_PATTERNS} patterns relative to the repo's root, like ['src/api/**', '*.md']"
            + (f"; it holds {len(paths)}" if paths else "")
        )
    return paths


def _view(row: ReservationRow) -> Reservation:
    return Reservation(
        id=row.id,
        repo=row.repo,
        holder=row.holder,
        pattern=row.pattern,
        exclusive=row.exclusive,
        reason=row.reason or None,
        until=iso(row.expires_at),
    )


def _pattern(text: object) -> Pattern:
    """A pattern from a tool's caller: its mistakes are refusals that say what to give instead."""
    try:
        return parse(text)
    except BadPattern as e:
        raise Refused(str(e)) from None
