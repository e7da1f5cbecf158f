"""The dashboard's one view of the hive: a poll loop per server, feeding every open page.

It speaks MCP to the five servers with the operator's token, like any other client, keeps the
latest state, and emits an event per kind of change (one agent, the approvals, the questions,
new messages, a server's health). Pages subscribe and update their elements in place; nothing
polls per tab.

Each server is polled by a task of its own, every `interval`, with a short bound (POLL_SECONDS):
a hung broker leaves the other servers' data flowing. Each server has a health (`ServerHealth`):
up, slow (its answer takes over SLOW_SECONDS), or down (refused, or no answer for STALE_SECONDS),
so pages can grey out stale data and the frame shows a banner instead of old data passing for live.
An operator's action goes through its own session per server (ACTION_SECONDS), which a timed-out
poll never breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeVar

from fastmcp.exceptions import ToolError
from nicegui import Event
from pydantic import ValidationError

from hyperhive.servers.approvals.client import ApprovalsClient
from hyperhive.servers.approvals.models import ReviewedRequest
from hyperhive.servers.broker.client import BrokerClient
from hyperhive.servers.broker.models import ListedMessage, StatsResult
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.client import TokenSource
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.events import HELPER_EVENT, ContainerCrash, HelperEvent
from hyperhive.servers.common.formatting import request_kind
from hyperhive.servers.common.names import OPERATOR
from hyperhive.servers.common.registry import SERVER_NAMES
from hyperhive.servers.common.server_client import ServerClient
from hyperhive.servers.forge.client import ForgeClient
from hyperhive.servers.forge.models import Repo
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.models import AgentInfo, AgentList, HostInfo, Spend, TurnTotals
from hyperhive.servers.operator.client import OperatorClient
from hyperhive.servers.operator.models import PendingQuestion

log = logging.getLogger("hyperhive.ui")

MESSAGES_KEPT: Final = 500  # the message flow a new page starts with
SWARM_STATS_EVERY: Final = 10.0  # turn totals change with turns, not by the second: swarm_stats this often
ACTION_SECONDS: Final = 120.0  # an operator's action (a rebuild, a spawn) may take this long
POLL_SECONDS: Final = 2.0  # a poll's bound: no answer by then and the server is "not answering"
SLOW_SECONDS: Final = 1.0  # an answer (or a wait for one) longer than this: the server is "slow"
STALE_SECONDS: Final = 2.0  # no answer for this long while a poll waits: "down", its data stale
TICK: Final = 0.25  # how often a waiting poll looks at the clock (slow, down)
GIVE_UP_SECONDS: Final = 10.0  # a poll still not over (its client's own timeouts failed): cancelled
T = TypeVar("T")
Health = Literal["up", "slow", "down"]


@dataclass
class Notice:
    """Something the operator should hear about now: a toast, and a desktop notification if wanted."""

    kind: str  # approval | question | crash
    title: str
    body: str


@dataclass(frozen=True)
class ServerHealth:
    """How one server answers the dashboard's polls (times are time.monotonic()'s)."""

    state: Health = "up"
    trouble: str = ""  # what is wrong in a few words: "unreachable", "not answering", "slow"
    error: str = ""  # the last failure in full, or how long the last answer took
    answered_at: float | None = None  # when it last answered (None: not yet)
    took: float = 0.0  # how long its last answer took, in seconds

    @property
    def fresh(self) -> bool:
        """Whether what the view holds from this server is current (not down)."""
        return self.state != "down"

    def silent_for(self, now: float) -> float | None:
        """Seconds since its last answer (None: it never answered)."""
        return None if self.answered_at is None else max(0.0, now - self.answered_at)

    def describe(self, server: str, now: float) -> str:
        """One line for a tooltip: "broker: not answering · last answer 12 s ago · no answer in 2 s"."""
        silent = self.silent_for(now)
        last = "no answer yet" if silent is None else f"last answer {silent:.0f} s ago, in {self.took * 1000:.0f} ms"
        parts = [f"{server}: {self.trouble or self.state}", last]
        if self.error:
            parts.append(self.error)
        return " · ".join(parts)


@dataclass(frozen=True)
class SwarmAgent:
    """One agent as the swarm shows it: list_agents' row and its inbox's stats."""

    info: AgentInfo
    pending: int = 0  # messages waiting for it
    pending_reminders: int = 0
    delivered_24h: int = 0  # messages it took in the last 24 h
    reminders_24h: int = 0  # reminders it took in the last 24 h


@dataclass
class HiveState:
    agents: dict[str, SwarmAgent] = field(default_factory=dict)
    backend: str = ""
    isolation: str = ""
    approvals: list[ReviewedRequest] = field(default_factory=list)  # pending, with diffs
    questions: list[PendingQuestion] = field(default_factory=list)  # pending operator questions
    messages: deque[ListedMessage] = field(default_factory=lambda: deque(maxlen=MESSAGES_KEPT))
    health: dict[str, ServerHealth] = field(default_factory=lambda: dict.fromkeys(SERVER_NAMES, ServerHealth()))
    unread: int = 0  # messages to the operator not taken yet
    hive_spend: Spend | None = None  # every agent's cost today and this week, and hive.toml's budget
    repos: list[Repo] | None = None  # the forge's repos (None: not heard from the forge yet)
    turn_totals: dict[str, TurnTotals] = field(default_factory=dict)  # swarm_stats: each agent's turns today
    hosts: list[HostInfo] = field(default_factory=list)  # list_hosts, in a hive across hosts (else none)

    @property
    def spans_hosts(self) -> bool:
        """Whether the hive spans hosts: its agents then each name theirs."""
        return any(agent.info.host is not None for agent in self.agents.values())

    @property
    def reachable(self) -> dict[str, bool]:
        return {server: health.fresh for server, health in self.health.items()}

    def updated_at(self) -> float | None:
        """When the view was last wholly current: the oldest of the servers' last answers."""
        times = [health.answered_at for health in self.health.values()]
        return None if any(t is None for t in times) else min(t for t in times if t is not None)


class HiveView:
    """The dashboard's live view of the hive, shared by every open page (see the module's docstring)."""

    def __init__(self, config: HiveConfig, token: TokenSource, *, interval: float = 1.0) -> None:
        self.config = config
        self.interval = interval
        # Polls use these (POLL_SECONDS, their own sessions: a timed-out poll ends its session, and
        # must not take an operator's half-done action with it).
        self._broker = BrokerClient.for_server(config, token, timeout=POLL_SECONDS, retry_seconds=0)
        self._lifecycle = LifecycleClient.for_server(config, token, timeout=POLL_SECONDS, retry_seconds=0)
        self._approvals = ApprovalsClient.for_server(config, token, timeout=POLL_SECONDS, retry_seconds=0)
        self._operator = OperatorClient.for_server(config, token, timeout=POLL_SECONDS, retry_seconds=0)
        self._forge = ForgeClient.for_server(config, token, timeout=POLL_SECONDS, retry_seconds=0)
        # For the pages' actions, passed to call(): hive.call(hive.lifecycle.stop(name)).
        self.broker = BrokerClient.for_server(config, token, timeout=ACTION_SECONDS, retry_seconds=0)
        self.lifecycle = LifecycleClient.for_server(config, token, timeout=ACTION_SECONDS, retry_seconds=0)
        self.approvals = ApprovalsClient.for_server(config, token, timeout=ACTION_SECONDS, retry_seconds=0)
        self.operator = OperatorClient.for_server(config, token, timeout=ACTION_SECONDS, retry_seconds=0)
        self.forge = ForgeClient.for_server(config, token, timeout=ACTION_SECONDS, retry_seconds=0)
        self.clients: dict[str, ServerClient] = {
            client.server: client
            for client in (self._broker, self._lifecycle, self._approvals, self._operator, self._forge)
        }
        self._actors: list[ServerClient] = [self.broker, self.lifecycle, self.approvals, self.operator, self.forge]
        self._polls: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "lifecycle": self._poll_lifecycle,
            "broker": self._poll_broker,
            "approvals": self._poll_approvals,
            "operator": self._poll_operator,
            "forge": self._poll_forge,
        }
        self.state = HiveState()
        self.agent_changed = Event[SwarmAgent]()  # one agent's row changed (or it appeared)
        self.agent_removed = Event[str]()
        self.approvals_changed = Event[list[ReviewedRequest]]()
        self.questions_changed = Event[list[PendingQuestion]]()
        self.messages_added = Event[list[ListedMessage]]()
        self.unread_changed = Event[int]()
        self.hive_spend_changed = Event[Spend]()
        self.repos_changed = Event[list[Repo]]()
        self.turn_totals_changed = Event[dict[str, TurnTotals]]()
        self.hosts_changed = Event[list[HostInfo]]()  # a host went up or down, or its load changed
        self.health_changed = Event[dict[str, ServerHealth]]()  # a server went up, slow or down
        self.notice = Event[Notice]()
        self.first_poll = asyncio.Event()  # lifecycle's first poll is over (answered or not): agents are known
        self._listing: AgentList | None = None
        self._stats: StatsResult | None = None
        self._since: int | None = None
        self._seen_approvals: set[int] | None = None
        self._seen_questions: set[int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        # Silent this long (a poll waiting) and a server is down; never less than a round and a slow answer.
        self._stale_after = max(STALE_SECONDS, interval + SLOW_SECONDS)
        self._locks = {server: asyncio.Lock() for server in self._polls}

    # --------------------------------------------------------------------------------- running
    async def start(self) -> None:
        self._started = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._run(server), name=f"hyperhive-dashboard-poll-{server}") for server in self._polls
        ]
        self._tasks.append(asyncio.create_task(self._run_swarm_stats(), name="hyperhive-dashboard-swarm-stats"))

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._refresh] if self._refresh else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in [*self.clients.values(), *self._actors]:
            await client.close()

    async def _run(self, server: str) -> None:
        """Poll one server every `interval`, for as long as the view runs."""
        while True:
            started = time.monotonic()
            await self.poll_server(server)
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    async def poll(self) -> None:
        """Every server asked once, at the same time; what changed is emitted."""
        await asyncio.gather(*(self.poll_server(server) for server in self._polls))

    def is_fresh(self, server: str) -> bool:
        """Whether the view's data from `server` is current (the server is not down)."""
        return self.state.health[server].fresh

    async def poll_server(self, server: str) -> None:
        """Ask `server` once, within POLL_SECONDS; its health follows what happens meanwhile."""
        async with self._locks[server]:  # one poll per server at a time: the message cursor moves once
            started = time.monotonic()
            task = asyncio.create_task(self._polls[server](), name=f"hyperhive-dashboard-poll-{server}-call")
            try:
                while not task.done():
                    waited = time.monotonic() - started
                    if waited >= GIVE_UP_SECONDS:
                        await self._give_up(server, task)
                        break
                    self._waiting(server, started)
                    await asyncio.wait({task}, timeout=TICK)
            except asyncio.CancelledError:
                task.cancel()
                raise
            self._answered(server, task, time.monotonic() - started)
            if server == "lifecycle":
                self.first_poll.set()

    def _waiting(self, server: str, started: float) -> None:
        """A poll is waiting for `server`: slow after SLOW_SECONDS; down ("not answering") once the
        server has been silent for STALE_SECONDS, or this poll has waited POLL_SECONDS."""
        now = time.monotonic()
        waited = now - started
        health = self.state.health[server]
        silent = now - (health.answered_at if health.answered_at is not None else self._started)
        # A down server stays as it is (unreachable: refused at once) unless this poll now hangs.
        if (health.state != "down" and silent >= self._stale_after) or (
            waited >= POLL_SECONDS and health.trouble != "not answering"
        ):
            why = f"no answer for {silent:.0f} s" if health.answered_at is not None else "no answer yet"
            self._set_health(server, replace(health, state="down", trouble="not answering", error=why))
        elif waited >= SLOW_SECONDS and health.state == "up":
            self._set_health(server, replace(health, state="slow", trouble="slow", error="waiting for an answer"))

    async def _give_up(self, server: str, task: asyncio.Task[None]) -> None:
        """A poll its client's own timeouts did not end: cancel it and start the next with a new session."""
        log.warning("%s: a poll still not over after %.0f s: cancelled", server, GIVE_UP_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=1)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.clients[server].close(), timeout=POLL_SECONDS)

    def _answered(self, server: str, task: asyncio.Task[None], took: float) -> None:
        """The poll is over: the server's health from how it ended."""
        health = self.state.health[server]
        error = None if task.cancelled() else task.exception()
        if task.cancelled():
            self._set_health(
                server, replace(health, state="down", trouble="not answering", error=f"no answer in {took:.0f} s")
            )
        elif error is None:
            now = time.monotonic()
            if took >= SLOW_SECONDS:
                self._set_health(server, ServerHealth("slow", "slow", f"answered in {took:.1f} s", now, took))
            else:
                self._set_health(server, ServerHealth("up", "", "", now, took))
        elif isinstance(error, ServerUnavailable):
            trouble = "not answering" if took >= POLL_SECONDS else "unreachable"
            self._set_health(server, replace(health, state="down", trouble=trouble, error=str(error)))
        elif isinstance(error, AuthRefused):
            self._set_health(
                server, replace(health, state="down", trouble="refuses the dashboard's token", error=str(error))
            )
        elif isinstance(error, ToolError):
            log.warning("%s refused the dashboard's poll: %s", server, error)
            self._set_health(server, replace(health, state="down", trouble="refuses the poll", error=str(error)))
        else:  # a bug of ours: logged, shown, and the next poll tries again
            log.error("polling %s failed", server, exc_info=error)
            self._set_health(server, replace(health, state="down", trouble="poll failed", error=repr(error)))

    def _set_health(self, server: str, health: ServerHealth) -> None:
        before = self.state.health[server]
        self.state.health[server] = health
        if (before.state, before.trouble) != (health.state, health.trouble):
            if health.state == "down":
                log.warning("%s is %s: %s", server, health.trouble, health.error)
            elif before.state == "down":
                log.info("%s answers again", server)
            self.health_changed.emit(dict(self.state.health))

    async def _run_swarm_stats(self) -> None:
        while True:
            await self.poll_swarm_stats()
            await asyncio.sleep(SWARM_STATS_EVERY)

    async def poll_swarm_stats(self) -> None:
        """Every agent's turns today, in one call (lifecycle's swarm_stats); emitted when they changed.
        Lifecycle's health is the per-server poll's to tell: a failure here only waits for the next round."""
        try:
            stats = await asyncio.wait_for(self._lifecycle.swarm_stats(), GIVE_UP_SECONDS)
        except (TimeoutError, ServerUnavailable, AuthRefused, ToolError, ValidationError) as e:
            log.info("swarm_stats: %s", e or type(e).__name__)
            return
        totals = {agent.name: agent for agent in stats.agents}
        if totals != self.state.turn_totals:
            self.state.turn_totals = totals
            self.turn_totals_changed.emit(totals)

    async def call(self, call: Awaitable[T]) -> T:
        """Run an operator's call (`hive.call(hive.lifecycle.stop(name))`); ToolError carries the
        server's refusal, ServerUnavailable a dead server."""
        result = await call
        self._refresh = asyncio.create_task(self.poll())  # show its effect now, not at the next round
        return result

    # ------------------------------------------------------------------------------- polls
    async def _poll_lifecycle(self) -> None:
        self._listing = await self._lifecycle.list_agents()
        self._update_agents()
        # A hive across hosts (its agents name their hosts): which hosts are up. One host: none asked.
        self._update_hosts((await self._lifecycle.list_hosts()).hosts if self.state.spans_hosts else [])

    async def _poll_broker(self) -> None:
        stats = await self._broker.stats()
        messages = await self._broker.list_messages(since=self._since, limit=200 if self._since else 100)
        self._stats = stats
        self._update_unread(stats)
        self._update_agents()
        self._add_messages(messages.messages, messages.next_since)

    async def _poll_approvals(self) -> None:
        self._update_approvals((await self._approvals.pending_approvals()).requests)

    async def _poll_operator(self) -> None:
        self._update_questions((await self._operator.pending_questions()).questions)

    async def _poll_forge(self) -> None:
        repos = (await self._forge.list_repos()).repos
        if repos != self.state.repos:
            self.state.repos = repos
            self.repos_changed.emit(repos)

    # ------------------------------------------------------------------------------- changes
    def _update_agents(self) -> None:
        """The agents' rows from lifecycle's last listing and the broker's last stats."""
        listing, stats = self._listing, self._stats
        if listing is None:
            return
        self.state.backend, self.state.isolation = listing.backend, listing.isolation
        if listing.hive_spend is not None and listing.hive_spend != self.state.hive_spend:
            self.state.hive_spend = listing.hive_spend
            self.hive_spend_changed.emit(listing.hive_spend)
        inboxes = {inbox.name: inbox for inbox in (stats.inboxes if stats else [])}
        fresh: dict[str, SwarmAgent] = {}
        for agent in listing.agents:
            inbox = inboxes.get(agent.name)
            fresh[agent.name] = (
                SwarmAgent(agent, inbox.pending, inbox.pending_reminders, inbox.delivered_24h, inbox.reminders_24h)
                if inbox
                else SwarmAgent(agent)
            )
        for name in list(self.state.agents):
            if name not in fresh:
                del self.state.agents[name]
                self.agent_removed.emit(name)
        for name, row in fresh.items():
            if self.state.agents.get(name) != row:
                self.state.agents[name] = row
                self.agent_changed.emit(row)

    def _update_hosts(self, hosts: list[HostInfo]) -> None:
        """Emitted when a host changed but for its heartbeat's time (each poll would see a new one)."""
        if [_without_heartbeat(h) for h in hosts] != [_without_heartbeat(h) for h in self.state.hosts]:
            self.state.hosts = hosts
            self.hosts_changed.emit(hosts)

    def _update_unread(self, stats: StatsResult) -> None:
        unread = next((inbox.pending for inbox in stats.inboxes if inbox.name == OPERATOR), 0)
        if unread != self.state.unread:
            self.state.unread = unread
            self.unread_changed.emit(unread)

    def _update_approvals(self, requests: list[ReviewedRequest]) -> None:
        if requests != self.state.approvals:
            self.state.approvals = requests
            self.approvals_changed.emit(requests)
        ids = {r.id for r in requests}
        if self._seen_approvals is not None:
            for request in requests:
                if request.id not in self._seen_approvals:
                    what = f"{request_kind(request.kind)} for {request.agent}"
                    self.notice.emit(Notice("approval", f"approval #{request.id}", what))
        self._seen_approvals = ids

    def _update_questions(self, questions: list[PendingQuestion]) -> None:
        if [_without_clock(q) for q in questions] != [_without_clock(q) for q in self.state.questions]:
            self.state.questions = questions
            self.questions_changed.emit(questions)
        else:
            self.state.questions = questions
        ids = {q.id for q in questions}
        if self._seen_questions is not None:
            for question in questions:
                if question.id not in self._seen_questions:
                    self.notice.emit(Notice("question", f"{question.asker} asks", question.question))
        self._seen_questions = ids

    def _add_messages(self, messages: list[ListedMessage], next_since: int | None) -> None:
        first_round = self._since is None
        if next_since is not None:
            self._since = next_since
        elif messages:
            self._since = max(m.id for m in messages)
        elif first_round:
            self._since = 0
        if not messages:
            return
        self.state.messages.extend(messages)
        self.messages_added.emit(messages)
        if first_round:
            return
        for message in messages:
            event = _event(message)
            if isinstance(event, ContainerCrash):
                self.notice.emit(Notice("crash", f"{event.agent} crashed", message.body.splitlines()[0]))


def _event(message: ListedMessage) -> HelperEvent | None:
    """The helper event a message carries, if it is one this version knows."""
    if message.event is None:
        return None
    try:
        return HELPER_EVENT.validate_python(message.event)
    except ValidationError:  # from a newer or older hyperhive: shown as its text only
        return None


def _without_clock(question: PendingQuestion) -> PendingQuestion:
    return question.model_copy(update={"seconds_left": 0})


def _without_heartbeat(host: HostInfo) -> HostInfo:
    return host.model_copy(update={"last_seen": None})
