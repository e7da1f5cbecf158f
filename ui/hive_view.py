"""The dashboard's one view of the hive: a poll loop per process, feeding every open page.

It speaks MCP to the five servers with the operator's token, like any other client, keeps the
latest state, and emits an event per kind of change (one agent, the approvals, the questions,
new messages, a server coming and going). Pages subscribe and update their elements in place;
nothing polls per tab. A server that is down is retried every round and reported through
`reachable`, so pages can show a banner instead of stale data passing for live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Final, TypeVar

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
from hyperhive.servers.lifecycle.models import AgentInfo, AgentList, Spend, TurnTotals
from hyperhive.servers.operator.client import OperatorClient
from hyperhive.servers.operator.models import PendingQuestion

log = logging.getLogger("hyperhive.ui")

MESSAGES_KEPT: Final = 500  # the message flow a new page starts with
SWARM_STATS_EVERY: Final = 10.0  # turn totals change with turns, not by the second: swarm_stats this often
ACTION_SECONDS: Final = 120.0  # an operator's action (a rebuild, a spawn) may take this long; a poll 30 s
T = TypeVar("T")


@dataclass
class Notice:
    """Something the operator should hear about now: a toast, and a desktop notification if wanted."""

    kind: str  # approval | question | crash
    title: str
    body: str


@dataclass(frozen=True)
class SwarmAgent:
    """One agent as the swarm shows it: list_agents' row and its inbox's stats."""

    info: AgentInfo
    pending: int = 0  # messages waiting for it
    pending_reminders: int = 0
    delivered_24h: int = 0  # messages it took in the last 24 h


@dataclass
class HiveState:
    agents: dict[str, SwarmAgent] = field(default_factory=dict)
    backend: str = ""
    isolation: str = ""
    approvals: list[ReviewedRequest] = field(default_factory=list)  # pending, with diffs
    questions: list[PendingQuestion] = field(default_factory=list)  # pending operator questions
    messages: deque[ListedMessage] = field(default_factory=lambda: deque(maxlen=MESSAGES_KEPT))
    reachable: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(SERVER_NAMES, True))
    unread: int = 0  # messages to the operator not taken yet
    hive_spend: Spend | None = None  # every agent's cost today and this week, and hive.toml's budget
    repos: list[Repo] | None = None  # the forge's repos (None: not heard from the forge yet)
    polled_at: float = 0.0
    turn_totals: dict[str, TurnTotals] = field(default_factory=dict)  # swarm_stats: each agent's turns today


class HiveView:
    """The dashboard's live view of the hive, shared by every open page (see the module's docstring)."""

    def __init__(self, config: HiveConfig, token: TokenSource, *, interval: float = 1.0) -> None:
        self.config = config
        self.interval = interval
        # Polls use these (30 s); the operator's actions the same sessions with ACTION_SECONDS.
        self._broker = BrokerClient.for_server(config, token, timeout=30, retry_seconds=0)
        self._lifecycle = LifecycleClient.for_server(config, token, timeout=30, retry_seconds=0)
        self._approvals = ApprovalsClient.for_server(config, token, timeout=30, retry_seconds=0)
        self._operator = OperatorClient.for_server(config, token, timeout=30, retry_seconds=0)
        self._forge = ForgeClient.for_server(config, token, timeout=30, retry_seconds=0)
        self.clients: dict[str, ServerClient] = {
            client.server: client
            for client in (self._broker, self._lifecycle, self._approvals, self._operator, self._forge)
        }
        # For the pages' actions, passed to call(): hive.call(hive.lifecycle.stop(name)).
        self.broker = self._broker.with_timeout(ACTION_SECONDS)
        self.lifecycle = self._lifecycle.with_timeout(ACTION_SECONDS)
        self.approvals = self._approvals.with_timeout(ACTION_SECONDS)
        self.operator = self._operator.with_timeout(ACTION_SECONDS)
        self.forge = self._forge.with_timeout(ACTION_SECONDS)
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
        self.reachability_changed = Event[dict[str, bool]]()
        self.notice = Event[Notice]()
        self._since: int | None = None
        self._seen_approvals: set[int] | None = None
        self._seen_questions: set[int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self.first_poll = asyncio.Event()
        self._polling = asyncio.Lock()

    # --------------------------------------------------------------------------------- running
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hyperhive-dashboard-poll")
        self._stats_task = asyncio.create_task(self._run_swarm_stats(), name="hyperhive-dashboard-swarm-stats")

    async def stop(self) -> None:
        for task in (self._task, self._stats_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for client in self.clients.values():
            await client.close()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self.poll()
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    async def poll(self) -> None:
        """One round: every server asked once, at the same time; what changed is emitted."""
        async with self._polling:
            await self._poll()

    async def _poll(self) -> None:
        agents, stats, approvals, questions, messages, repos = await asyncio.gather(
            self._ask("lifecycle", self._lifecycle.list_agents()),
            self._ask("broker", self._broker.stats()),
            self._ask("approvals", self._approvals.pending_approvals()),
            self._ask("operator", self._operator.pending_questions()),
            self._ask("broker", self._broker.list_messages(since=self._since, limit=200 if self._since else 100)),
            self._ask("forge", self._forge.list_repos()),
        )
        if agents is not None:
            self._update_agents(agents, stats)
        if stats is not None:
            self._update_unread(stats)
        if approvals is not None:
            self._update_approvals(approvals.requests)
        if questions is not None:
            self._update_questions(questions.questions)
        if messages is not None:
            self._add_messages(messages.messages, messages.next_since)
        if repos is not None and repos.repos != self.state.repos:
            self.state.repos = repos.repos
            self.repos_changed.emit(repos.repos)
        self.state.polled_at = time.time()
        self.first_poll.set()

    async def _run_swarm_stats(self) -> None:
        while True:
            await self.poll_swarm_stats()
            await asyncio.sleep(SWARM_STATS_EVERY)

    async def poll_swarm_stats(self) -> None:
        """Every agent's turns today, in one call (lifecycle's swarm_stats); emitted when they changed."""
        stats = await self._ask("lifecycle", self._lifecycle.swarm_stats())
        if stats is None:
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

    async def _ask(self, server: str, call: Awaitable[T]) -> T | None:
        try:
            result = await call
        except (ServerUnavailable, AuthRefused) as e:
            self._set_reachable(server, False, str(e))
            return None
        except ToolError as e:
            log.warning("%s refused the dashboard: %s", server, e)
            return None
        self._set_reachable(server, True)
        return result

    def _set_reachable(self, server: str, up: bool, why: str = "") -> None:
        if self.state.reachable.get(server) != up:
            self.state.reachable[server] = up
            (log.info if up else log.warning)(
                "%s is %s%s", server, "reachable" if up else "unreachable", f": {why}" if why else ""
            )
            self.reachability_changed.emit(dict(self.state.reachable))

    # ------------------------------------------------------------------------------- changes
    def _update_agents(self, listing: AgentList, stats: StatsResult | None) -> None:
        self.state.backend, self.state.isolation = listing.backend, listing.isolation
        if listing.hive_spend is not None and listing.hive_spend != self.state.hive_spend:
            self.state.hive_spend = listing.hive_spend
            self.hive_spend_changed.emit(listing.hive_spend)
        inboxes = {inbox.name: inbox for inbox in (stats.inboxes if stats else [])}
        fresh: dict[str, SwarmAgent] = {}
        for agent in listing.agents:
            inbox = inboxes.get(agent.name)
            fresh[agent.name] = (
                SwarmAgent(agent, inbox.pending, inbox.pending_reminders, inbox.delivered_24h)
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
