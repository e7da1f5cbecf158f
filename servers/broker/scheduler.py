"""The broker's timed work, in one task: fire reminders, wake receivers when leases run out,
delete what retention allows. It sleeps until the next due time or until poked."""

from __future__ import annotations

import heapq
import logging
import math

import anyio
import anyio.lowlevel

from hyperhive.servers.broker.store import BrokerStore, ReminderStore
from hyperhive.servers.broker.waiters import Waiters
from hyperhive.servers.common.clock import Clock, DueLoop
from hyperhive.servers.common.config import BrokerSettings

log = logging.getLogger("hyperhive.broker")

LATE_AFTER = 2.0  # seconds past due after which a fired reminder is marked late


class Scheduler:
    def __init__(
        self, store: BrokerStore, reminders: ReminderStore, waiters: Waiters, settings: BrokerSettings, clock: Clock
    ) -> None:
        self.store = store
        self.reminders = reminders
        self.waiters = waiters
        self.settings = settings
        self.clock = clock
        self._lease_wakes: list[tuple[float, str]] = []
        self._lease_wakes_set: set[tuple[float, str]] = set()  # what the heap holds: each once
        self._due = DueLoop(clock, self._run_due, what="the broker's scheduler step")
        self._next_retention = 0.0  # at start-up: run once

    def poke(self) -> None:
        """Something due may have changed (a reminder was added or cancelled): look again."""
        self._due.poke()

    def lease_taken(self, recipient: str, until: float) -> None:
        """Wake `recipient`'s receivers here when this lease runs out (in case it is never acked),
        whichever process took it: a receiver that found nothing registers its inbox's next lease end."""
        if (until, recipient) in self._lease_wakes_set:
            return
        self._lease_wakes_set.add((until, recipient))
        heapq.heappush(self._lease_wakes, (until, recipient))
        if self._lease_wakes[0][0] == until:
            self.poke()

    async def run(self) -> None:
        await self._due.run()

    async def _run_due(self) -> float:
        now = self.clock.now()
        while True:
            fired = await self.reminders.fire_due(now, LATE_AFTER)
            for recipient in fired:
                self.waiters.notify(recipient)
            if not fired:
                break
        while self._lease_wakes and self._lease_wakes[0][0] <= now:
            due = heapq.heappop(self._lease_wakes)
            self._lease_wakes_set.discard(due)
            self.waiters.notify(due[1])
        if now >= self._next_retention:
            await self._retention(now)
            self._next_retention = now + self.settings.retention_interval_seconds
        next_reminder = await self.reminders.next_due()
        return min(
            self._next_retention,
            next_reminder if next_reminder is not None else math.inf,
            self._lease_wakes[0][0] if self._lease_wakes else math.inf,
        )

    async def _retention(self, now: float) -> None:
        cutoff = now - self.settings.retention_days * 86_400
        total = 0
        while deleted := await self.store.purge(cutoff):
            total += deleted
            await anyio.lowlevel.checkpoint()  # let sends and receives in between batches
        if total:
            log.info("retention deleted %d rows older than %.0f days", total, self.settings.retention_days)
