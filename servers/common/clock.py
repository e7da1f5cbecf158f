"""Wall-clock time for schedulers, replaceable in tests, and its text form (ISO 8601, UTC)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import anyio

from hyperhive.servers.common.db import StoreUnavailable

log = logging.getLogger("hyperhive.clock")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def wait_until(self, deadline: float, wake: anyio.Event) -> None:
        """Return at `deadline` (epoch seconds) or as soon as `wake` is set, whichever is first."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def wait_until(self, deadline: float, wake: anyio.Event) -> None:
        with anyio.move_on_after(max(0.0, deadline - time.time())):
            await wake.wait()


class ManualClock:
    """A clock that only moves when told to; `advance` wakes every waiter so it re-reads the time."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._waiting: set[anyio.Event] = set()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        for wake in self._waiting:
            wake.set()

    async def wait_until(self, deadline: float, wake: anyio.Event) -> None:
        if self._now >= deadline:
            return
        self._waiting.add(wake)
        try:
            await wake.wait()
        finally:
            self._waiting.discard(wake)


class DueLoop:
    """One task that runs `step` whenever something is due: `step` does what is due now and returns
    the next due time (epoch seconds; math.inf for none); the loop sleeps until then on `clock`, or
    until poke() says something due may have changed. A step that fails is logged and tried again
    `retry_seconds` later, so one bad row never ends the loop."""

    def __init__(
        self, clock: Clock, step: Callable[[], Awaitable[float]], *, what: str, retry_seconds: float = 5.0
    ) -> None:
        self.clock = clock
        self.step = step
        self.what = what
        self.retry_seconds = retry_seconds
        self._wake = anyio.Event()

    def poke(self) -> None:
        """Something due may be sooner than the loop sleeps until (added, cancelled): look again."""
        self._wake.set()

    async def run(self) -> None:
        """Forever (run it as a task; cancel it to stop)."""
        while True:
            # A fresh event before the step looks: a poke while it looks still cuts the sleep short.
            self._wake = anyio.Event()
            try:
                due = await self.step()
            except StoreUnavailable as e:  # the database is away: one line each time, not a traceback
                log.warning("%s: %s; retrying in %g s", self.what, e, self.retry_seconds)
                due = self.clock.now() + self.retry_seconds
            except Exception:
                log.exception("%s failed; retrying in %g s", self.what, self.retry_seconds)
                due = self.clock.now() + self.retry_seconds
            await self.clock.wait_until(due, self._wake)


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds: 2026-11-21T12:00:00.123Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """ISO 8601 with a timezone (or Z) to epoch seconds; ValueError with a clear message otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time like 2026-11-21T15:30:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone; add Z for UTC or an offset like +01:00")
    return moment.timestamp()
