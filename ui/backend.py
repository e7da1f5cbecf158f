"""The dashboard's one view of the hive: a poll loop per process, feeding every open page.

It speaks MCP to the four servers with the operator's token, like any other client, keeps the
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
from dataclasses import dataclass, field
from typing import Any, Final

from fastmcp.exceptions import ToolError
from nicegui import Event

from hyperhive.servers.common.catalog import SERVERS
from hyperhive.servers.common.client import AuthRefused, HiveClient, ServerUnavailable, TokenSource
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.names import OPERATOR

log = logging.getLogger("hyperhive.ui")

MESSAGES_KEPT: Final = 500  # the message flow a new page starts with


@dataclass
class Notice:
    """Something the operator should hear about now: a toast, and a desktop notification if wanted."""

    kind: str  # approval | question | crash
    title: str
    body: str


@dataclass
class HiveState:
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)  # list_agents + inbox stats
    backend: str = ""
    isolation: str = ""
    approvals: list[dict[str, Any]] = field(default_factory=list)  # pending, with diffs
    questions: list[dict[str, Any]] = field(default_factory=list)  # pending operator questions
    messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MESSAGES_KEPT))
    reachable: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(SERVERS, True))
    unread: int = 0  # messages to the operator not taken yet
    polled_at: float = 0.0


class Backend:
    def __init__(self, config: HiveConfig, token: TokenSource, *, interval: float = 1.0) -> None:
        self.config = config
        self.interval = interval
        self.clients = {
            server: HiveClient.for_server(config, server, token, timeout=30, retry_seconds=0) for server in SERVERS
        }
        self.state = HiveState()
        self.agent_changed = Event[dict[str, Any]]()  # one agent's row changed (or it appeared)
        self.agent_removed = Event[str]()
        self.approvals_changed = Event[list[dict[str, Any]]]()
        self.questions_changed = Event[list[dict[str, Any]]]()
        self.messages_added = Event[list[dict[str, Any]]]()
        self.unread_changed = Event[int]()
        self.reachability_changed = Event[dict[str, bool]]()
        self.notice = Event[Notice]()
        self._since: int | None = None
        self._seen_approvals: set[int] | None = None
        self._seen_questions: set[int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self.first_poll = asyncio.Event()
        self._polling = asyncio.Lock()

    # --------------------------------------------------------------------------------- running
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hyperhive-dashboard-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
        results = await asyncio.gather(
            self._ask("lifecycle", "list_agents"),
            self._ask("broker", "stats"),
            self._ask("approvals", "pending_approvals"),
            self._ask("operator", "pending_questions"),
            self._ask("broker", "list_messages", since=self._since, limit=200 if self._since else 100),
        )
        agents, stats, approvals, questions, messages = results
        if agents is not None:
            self._update_agents(agents, stats)
        if stats is not None:
            self._update_unread(stats)
        if approvals is not None:
            self._update_approvals(approvals["requests"])
        if questions is not None:
            self._update_questions(questions["questions"])
        if messages is not None:
            self._add_messages(messages["messages"], messages.get("next_since"))
        self.state.polled_at = time.time()
        self.first_poll.set()

    async def call(self, server: str, tool: str, **arguments: Any) -> Any:
        """Call a tool as the operator; ToolError carries the server's refusal, ServerUnavailable a dead server."""
        result = await self.clients[server].call(tool, arguments, timeout=120)
        self._refresh = asyncio.create_task(self.poll())  # show its effect now, not at the next round
        return result

    async def _ask(self, server: str, tool: str, **arguments: Any) -> Any:
        try:
            result = await self.clients[server].call(tool, arguments)
        except (ServerUnavailable, AuthRefused) as e:
            self._set_reachable(server, False, str(e))
            return None
        except ToolError as e:
            log.warning("%s.%s refused the dashboard: %s", server, tool, e)
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
    def _update_agents(self, listing: dict[str, Any], stats: dict[str, Any] | None) -> None:
        self.state.backend, self.state.isolation = listing["backend"], listing["isolation"]
        inboxes = {inbox["name"]: inbox for inbox in (stats or {}).get("inboxes", [])}
        fresh: dict[str, dict[str, Any]] = {}
        for agent in listing["agents"]:
            inbox = inboxes.get(agent["name"], {})
            fresh[agent["name"]] = {
                **agent,
                "pending": inbox.get("pending", 0),
                "pending_reminders": inbox.get("pending_reminders", 0),
            }
        for name in list(self.state.agents):
            if name not in fresh:
                del self.state.agents[name]
                self.agent_removed.emit(name)
        for name, agent in fresh.items():
            if self.state.agents.get(name) != agent:
                self.state.agents[name] = agent
                self.agent_changed.emit(agent)

    def _update_unread(self, stats: dict[str, Any]) -> None:
        unread = next((inbox["pending"] for inbox in stats["inboxes"] if inbox["name"] == OPERATOR), 0)
        if unread != self.state.unread:
            self.state.unread = unread
            self.unread_changed.emit(unread)

    def _update_approvals(self, requests: list[dict[str, Any]]) -> None:
        if requests != self.state.approvals:
            self.state.approvals = requests
            self.approvals_changed.emit(requests)
        ids = {r["id"] for r in requests}
        if self._seen_approvals is not None:
            for request in requests:
                if request["id"] not in self._seen_approvals:
                    what = request["kind"].replace("_", " ")
                    self.notice.emit(Notice("approval", f"approval #{request['id']}", f"{what} for {request['agent']}"))
        self._seen_approvals = ids

    def _update_questions(self, questions: list[dict[str, Any]]) -> None:
        if [_without_clock(q) for q in questions] != [_without_clock(q) for q in self.state.questions]:
            self.state.questions = questions
            self.questions_changed.emit(questions)
        else:
            self.state.questions = questions
        ids = {q["id"] for q in questions}
        if self._seen_questions is not None:
            for question in questions:
                if question["id"] not in self._seen_questions:
                    self.notice.emit(Notice("question", f"{question['asker']} asks", question["question"]))
        self._seen_questions = ids

    def _add_messages(self, messages: list[dict[str, Any]], next_since: int | None) -> None:
        first_round = self._since is None
        if next_since is not None:
            self._since = next_since
        elif messages:
            self._since = max(m["id"] for m in messages)
        elif first_round:
            self._since = 0
        if not messages:
            return
        self.state.messages.extend(messages)
        self.messages_added.emit(messages)
        if first_round:
            return
        for message in messages:
            event = message.get("event") or {}
            if event.get("type") == "container_crash":
                self.notice.emit(Notice("crash", f"{event['agent']} crashed", message["body"].splitlines()[0]))


def _without_clock(question: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in question.items() if k != "seconds_left"}
