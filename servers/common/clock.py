"""Wall-clock time for schedulers, replaceable in tests, and its text form (ISO 8601, UTC)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

import anyio


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
