"""The turn loop: wait for messages, run one Claude Code turn on them, acknowledge, record.

    long-poll recv_batch(batch_max, ack=false) -> turn -> ack -> stats

Messages are leased, not taken: if this process dies mid-turn the broker delivers them again
once the lease ends, and while a turn runs the lease is extended so a long turn keeps them.
The broker being down, a refused token or a failed turn are retried with backoff, with the
reason shown in turn.json; a wake is never dropped. Only a turn that ran (or the operator
cancelled) acknowledges its messages. After idle_close_seconds without a wake, run() returns True
and the harness execs its idle form (harness/idle.py), which execs this loop again with the next
messages in wake.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

from fastmcp.exceptions import ToolError

from hyperhive.harness.claude import NO_CREDENTIALS, ClaudeSession, TurnOutcome, has_credentials
from hyperhive.harness.idle import POLL_SECONDS, take_wake
from hyperhive.harness.notes import NotesKeeper
from hyperhive.harness.stats import StatsReporter, TurnRecorder, turn_row
from hyperhive.harness.wake import render_wake, restart_note
from hyperhive.servers.broker.client import BrokerClient
from hyperhive.servers.broker.models import Message, RecvBatchResult
from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.harnessdir import CANCEL_FILE, CREDENTIALS, MODEL_FILE, HarnessInfo, TurnState
from hyperhive.servers.lifecycle.client import LifecycleClient

log = logging.getLogger("hyperhive.harness")

LEASE_SECONDS: Final = 300.0  # how far each extension moves a running turn's lease
LEASE_EVERY: Final = 60.0
CANCEL_POLL: Final = 0.2  # how often a running turn looks for the operator's cancel
CREDENTIALS_POLL: Final = 10.0
BUDGET_POLL: Final = 5.0  # while paused for its budget, how often it asks lifecycle again
STATS_DRAIN: Final = 10.0  # how long a budget check waits for the last turn's cost to be recorded
MAX_BACKOFF: Final = 300.0
TURN_BACKOFF: Final = Backoff(2.0, MAX_BACKOFF)  # after the nth failed turn in a row: 2, 4, 8 … 300 s

T = TypeVar("T")


class Harness:
    def __init__(
        self,
        info: HarnessInfo,
        *,
        session: ClaudeSession | None = None,
        from_idle: bool = False,
        note_pending: bool = False,
    ) -> None:
        self.info = info
        self.from_idle = from_idle  # exec'd by the idle waiter: the same run of the sandbox goes on
        self.note_pending = note_pending  # and the restart note was not said before it went idle
        self.harness_dir = Path(info.harness_dir)
        self.control = self.harness_dir / CREDENTIALS  # read-only: written by the lifecycle server
        self.token_path = Path(info.token_file)
        self.session = session or ClaudeSession(info, stderr=_claude_stderr)
        self.budget = self._lifecycle()  # budget_check before each wake
        self.recorder = TurnRecorder(self.harness_dir, StatsReporter(self._lifecycle()))
        self.notes = NotesKeeper(info, self.session.env, self.recorder)
        self.session.on_tool = self.recorder.set_tool  # turn.json says what the running turn is calling
        # Every broker process hive.json names: a long-poll broken by its process dying is tried
        # again (_persist), and the client takes the retry to the next process that answers.
        self.broker = BrokerClient.at_any(
            info.endpoints("broker"), self.token, timeout=POLL_SECONDS + 30, retry_seconds=5
        )
        self._failures = 0
        self._restart_note: str | None = None  # said before the first wake after a restart
        self._idle_since = time.monotonic()  # when the last turn ended (or the harness started)

    @property
    def restart_note_pending(self) -> bool:
        """The restart note is still to be said (no wake came yet): carried across the idle form."""
        return self._restart_note is not None

    def _lifecycle(self) -> LifecycleClient | None:
        """Where turn stats go (record_turn): the lifecycle server, if hive.json names it."""
        url = self.info.servers.get("lifecycle")
        if url is None:
            log.warning("hive.json names no lifecycle URL: turn stats are not recorded")
            return None
        certificate = self.info.tls_certs.get("lifecycle")
        return LifecycleClient.at(url, self.token, tls_cert_pem=certificate, timeout=30, retry_seconds=2)

    def token(self) -> str:
        return self.token_path.read_text().strip()

    def model(self) -> str:
        """The model for the next turn: the operator's override (set_model), else agent.toml's."""
        with contextlib.suppress(OSError):
            override = (self.control / MODEL_FILE).read_text().strip()
            if override:
                return override
        return self.info.model

    # ------------------------------------------------------------------------------------ loop
    async def run(self) -> bool:
        """Turns until cancelled; returns True once it has been idle for idle_close_seconds (the
        caller then execs the idle waiter, which holds no Claude Code and little memory)."""
        previous = await self.recorder.open()
        if self.from_idle:  # the same run went on from its idle form: a note not said yet is still due
            idle = TurnState(state="idle", since=time.time())
            self._restart_note = restart_note(idle, self.info.start) if self.note_pending else None
        else:
            self._restart_note = restart_note(previous, self.info.start)
        handoff = take_wake(self.harness_dir, time.time())  # what the idle waiter received
        try:
            if previous is not None and previous.leased:
                await self._release(previous.leased)
            while True:
                if handoff is not None and not await self._may_take_turns():
                    await self._release([m.id for m in handoff.messages])  # they wait in the inbox
                    handoff = None
                if handoff is None:
                    await self._wait_for_credentials()
                    await self._wait_for_budget()
                await self.recorder.set("idle")
                batch, handoff = handoff or await self._wake(), None
                if batch is None:
                    return True
                await self._handle(batch.messages, batch.queued)
        finally:
            await self.session.close()
            await self.broker.close()
            await self.recorder.close()
            if self.budget is not None:
                await self.budget.close()

    async def _may_take_turns(self) -> bool:
        """Whether a turn could start now (credentials, budget), without waiting."""
        if not has_credentials(self.session.env):
            return False
        if self.budget is None:
            return True
        check = await self._persist("checking the budget", self.budget.budget_check)
        return check.paused is None

    async def _wait_for_credentials(self) -> None:
        while not has_credentials(self.session.env):
            if self.recorder.state.reason != NO_CREDENTIALS:
                log.error("%s; this agent waits until there are some", NO_CREDENTIALS)
            await self.recorder.set("error", reason=NO_CREDENTIALS)
            await asyncio.sleep(CREDENTIALS_POLL)

    async def _wait_for_budget(self) -> None:
        """Take no messages while lifecycle says this agent (or the hive) spent its daily budget; they
        wait in the inbox. The last turn's cost is recorded first, so the check counts it."""
        if self.budget is None:
            return
        await self.recorder.reporter.drained(STATS_DRAIN)
        while True:
            check = await self._persist("checking the budget", self.budget.budget_check)
            if check.paused is None:
                return
            if self.recorder.state.reason != check.paused:
                log.warning("%s; messages wait until it is raised or the day ends (UTC)", check.paused)
                await self.session.close()  # no turn for a while: Claude Code need not wait with us
            await self.recorder.set("paused", reason=check.paused)
            await asyncio.sleep(BUDGET_POLL)

    async def _wake(self) -> RecvBatchResult | None:
        """Block until at least one message is here; lease it and up to batch_max - 1 more, in one
        long-poll (it returns as soon as the first message arrives, with what else is waiting).
        None: no message came for idle_close_seconds (time for the idle waiter)."""
        self._idle_since = time.monotonic()
        while True:
            batch = await self._persist("waiting for messages", self._recv_batch)
            if batch.messages:
                return batch
            if self._idle_for() >= self.info.idle_close_seconds:
                return None

    def _idle_for(self) -> float:
        return time.monotonic() - self._idle_since

    async def _recv_batch(self) -> RecvBatchResult:
        wait = min(POLL_SECONDS, max(1.0, self.info.idle_close_seconds - self._idle_for()))  # back in time to go idle
        return await self.broker.recv_batch(max=self.info.batch_max, wait_seconds=wait, ack=False)

    async def _handle(self, messages: list[Message], queued: int) -> None:
        """Run turns on `messages` until one runs through (or is cancelled), then acknowledge them."""
        ids = [m.id for m in messages]
        prompt = render_wake(messages, queued, self.info.role)
        if self._restart_note:
            prompt, self._restart_note = f"{self._restart_note}\n\n{prompt}", None
        async with self._leased(ids):
            while True:
                model = self.model()
                self.session.broker_url = self.broker.hive.address.url  # Claude Code follows a failover
                started = time.time()
                turn_id = int(started * 1000)
                await self.recorder.set("running", turn=turn_id, leased=ids)
                outcome, cancelled = await self._turn(prompt, model, turn_id)
                await self.recorder.record(turn_row("wake", started, model, outcome, len(messages), queued))
                if outcome.ok or cancelled or not outcome.retry:
                    break
                self._failures += 1
                delay = TURN_BACKOFF.delay(self._failures)
                reason = f"turn failed: {outcome.error}; trying again in {delay:.0f} s"
                log.warning("%s", reason)
                await self.recorder.set("error", leased=ids, reason=reason)  # still ours if we die now
                await asyncio.sleep(delay)
        self._failures = 0
        if not outcome.ok:
            log.warning("turn %d ended: %s", turn_id, "cancelled by the operator" if cancelled else outcome.error)
        await self._ack(ids)
        await self.recorder.set("idle")  # handled: a restart from here on has nothing to hand back
        await self.notes.keep_short(self.model())

    async def _turn(self, prompt: str, model: str, turn_id: int) -> tuple[TurnOutcome, bool]:
        """One Claude Code turn, interrupted if the operator cancels it. (outcome, whether cancelled)."""
        cancelled = asyncio.Event()
        watcher = asyncio.create_task(self._watch_cancel(turn_id, cancelled))
        try:
            outcome = await self.session.turn(prompt, model)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if cancelled.is_set():
            outcome.ok, outcome.retry = False, False
            outcome.terminal_reason, outcome.error = "cancelled", "cancelled by the operator"
        return outcome, cancelled.is_set()

    async def _watch_cancel(self, turn_id: int, cancelled: asyncio.Event) -> None:
        path = self.control / CANCEL_FILE
        while True:
            await asyncio.sleep(CANCEL_POLL)
            with contextlib.suppress(OSError, ValueError):
                if int(path.read_text().strip()) == turn_id:
                    log.info("the operator cancelled turn %d", turn_id)
                    cancelled.set()
                    await self.session.interrupt()
                    return

    @contextlib.asynccontextmanager
    async def _leased(self, ids: list[int]) -> AsyncIterator[None]:
        """Keep extending the lease on `ids` while the body runs (turns and retries can be long)."""

        async def extend() -> None:
            while True:
                await asyncio.sleep(LEASE_EVERY)
                try:
                    await self.broker.lease(ids, LEASE_SECONDS)
                except (ServerUnavailable, AuthRefused, ToolError) as e:
                    log.warning("extending the lease of messages %s: %s", ids, e)

        keeper = asyncio.create_task(extend())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _release(self, ids: list[int]) -> None:
        """Messages this harness holds but will not handle now (a previous run died mid-turn, or it
        must wait): deliver them again now, not when their lease runs out."""
        log.info("handing messages %s back for redelivery", ids)
        try:
            await self._persist("releasing messages", lambda: self.broker.lease(ids, 0), refusal_is_final=True)
        except ToolError as e:  # acked already (the last run died just after its ack): nothing to hand back
            log.warning("handing back messages %s: %s; any still leased come back when their lease ends", ids, e)

    async def _ack(self, ids: list[int]) -> None:
        try:
            await self._persist("acknowledging messages", lambda: self.broker.ack(ids), refusal_is_final=True)
        except ToolError as e:  # not ours: asking again would not change that
            log.warning("acknowledging messages %s: %s", ids, e)

    async def _persist(self, doing: str, call: Callable[[], Awaitable[T]], *, refusal_is_final: bool = False) -> T:
        """Call the broker until it answers; the reason it does not is the harness's state meanwhile.

        Only calls that are safe to repeat come here: recv and recv_batch lease (a lost answer's
        messages come back when the lease ends), ack and lease are idempotent. `refusal_is_final`:
        a ToolError (the server refused these arguments) is raised, not tried again.
        """
        backoff = Backoff(1.0, 30.0)
        while True:
            try:
                return await call()
            except (ServerUnavailable, AuthRefused, ToolError) as e:
                if refusal_is_final and isinstance(e, ToolError):
                    raise
                reason = f"{doing}: {e}; trying again in {backoff.next_delay:.0f} s"
                log.warning("%s", reason)
                await self.recorder.set("error", reason=reason)
                await backoff.wait()


def _claude_stderr(line: str) -> None:
    log.info("claude: %s", line.rstrip())
