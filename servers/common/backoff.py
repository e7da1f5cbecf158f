"""Waiting between attempts: one delay that grows from `initial` by `factor` up to `maximum`.

Every retry loop in hyperhive (event delivery, the approvals recovery, a client's reconnects, the
harness's broker and stats calls, `hive up` restarting a server, the lifecycle server restarting a
crashed agent) waits this way. The delays are real time (anyio's clock), not the wall clock a
server's Clock gives: they pace attempts at something unreachable, they are not due times.
"""

from __future__ import annotations

from typing import Protocol

import anyio


class Wakeable(Protocol):
    """An event a wait can be cut short by (anyio.Event and asyncio.Event both are)."""

    async def wait(self) -> object: ...


class Backoff:
    def __init__(self, initial: float, maximum: float, factor: float = 2.0) -> None:
        if not 0 <= initial <= maximum or factor < 1:
            raise ValueError(
                f"a backoff needs 0 <= initial <= maximum and factor >= 1 (got {initial}, {maximum}, {factor})"
            )
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempts = 0  # failed attempts since the last reset

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1: the first): initial * factor**(attempt-1), capped."""
        try:
            return min(self.initial * self.factor ** max(attempt - 1, 0), self.maximum)
        except OverflowError:  # a loop may fail for weeks: long past the cap
            return self.maximum if self.initial else 0.0

    @property
    def next_delay(self) -> float:
        """What the next wait() will wait."""
        return self.delay(self.attempts + 1)

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits `initial` again."""
        self.attempts = 0

    def failed(self) -> float:
        """Count a failed attempt; returns the delay to wait before the next (for a caller that sleeps itself)."""
        delay = self.next_delay
        self.attempts += 1
        return delay

    async def wait(self, wake: Wakeable | None = None) -> bool:
        """Count a failed attempt and wait its delay, or until `wake` is set; True if woken."""
        return await sleep_or_wake(self.failed(), wake)


async def sleep_or_wake(seconds: float, wake: Wakeable | None) -> bool:
    """Sleep `seconds`, or less if `wake` is set meanwhile; True if woken."""
    if wake is None:
        await anyio.sleep(seconds)
        return False
    with anyio.move_on_after(seconds):
        await wake.wait()
        return True
    return False
