"""The approval queue's rules: what the manager may request, and what approving does.

Requests are checked when they are made (the commit exists, its config is valid, the agent is
there or is not), so the operator reviews only what could be carried out. Approving claims the
request, then asks the lifecycle server to carry it out, as the service principal; the outcome
(applied, denied with the note, or failed with the error) is stored and sent to the requester as
an ApprovalResolved event. A request left `approving` by a crash, or by a lifecycle server that
did not answer, is finished by a recovery task: found already done, or carried out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, Literal, TypeVar

import anyio
from fastmcp.exceptions import ToolError

from hyperhive.servers.approvals.models import DraftMade, Request, ReviewedRequest
from hyperhive.servers.approvals.store import (
    MIGRATIONS,
    ApprovalStore,
    Kind,
    NotPending,
    QueueFull,
    RequestRow,
    Unknown,
)
from hyperhive.servers.common import audit
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.background import background
from hyperhive.servers.common.client import AuthRefused, HiveClient, ServerUnavailable, server_address
from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.config import AGENT_TOML, HiveConfig, agent_toml_template
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.diffs import render_diff, widenings
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.names import InvalidName, check_agent_name
from hyperhive.servers.common.outbox import Outbox
from hyperhive.servers.common.principals import Principal
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.models import AgentInfo, Applied, CommitDiff

log = logging.getLogger("hyperhive.approvals")

RECOVERY_RETRY: Final = (1.0, 60.0)  # seconds between attempts while the lifecycle server is away
T = TypeVar("T")


class Approvals:
    def __init__(
        self,
        config: HiveConfig,
        token: Callable[[], str],
        agents: AgentRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.agents = agents
        self.clock = clock
        self.db = Database(config.db_path("approvals"), MIGRATIONS, synchronous=config.storage.synchronous)
        self.store = ApprovalStore(self.db)
        self.broker = HiveClient(server_address(config, "broker"), token, retry_seconds=0)
        self.outbox = Outbox(self.db, self.broker, clock)
        # Creating or rebuilding an agent takes a while; a refused connection is retried a little.
        self.lifecycle = LifecycleClient.for_server(config, token, timeout=300, retry_seconds=5)
        self._recover = asyncio.Event()
        self._carrying_out: set[int] = set()  # requests an approve or the recovery is working on now

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Approvals]:
        async with self.db:
            await self.agents.refresh()
            self._recover.set()  # requests a crash left half done are finished first
            try:
                async with background(self.agents.watch(), self.outbox.run(), self._recovery()):
                    yield self
            finally:
                await self.lifecycle.close()
                await self.broker.close()

    # --------------------------------------------------------------------------------- requesting
    async def request_apply_commit(self, me: Principal, agent: str, ref: str) -> Request:
        diff = await self._diff(_checked(agent), ref)
        if diff.applied_sha is None:
            raise Refused(f"{agent} does not exist yet; for a draft, use request_spawn_commit")
        if not diff.diff:
            raise Refused(f"commit {diff.proposed_sha[:12]} changes nothing in {agent}'s applied config")
        return await self._add(
            me, "apply_commit", agent, diff.proposed_sha, diff.applied_sha, diff.diff, diff.widenings
        )

    async def request_spawn(self, me: Principal, name: str) -> Request:
        drafts = await self._must_not_exist(_checked(name))
        if name in drafts:  # the template is not what the draft holds: the operator reviews that instead
            raise Refused(
                f"a draft of {name} exists: use request_spawn_commit({name!r}, sha) to ask for it "
                f"(its config repo is {self.config.agents_dir / name / 'config'})"
            )
        template = {AGENT_TOML: agent_toml_template("agent")}
        shown = render_diff({}, template, "none", "template")
        return await self._add(me, "spawn", name, None, None, shown, widenings({}, template))

    async def request_spawn_draft(self, me: Principal, name: str) -> DraftMade:
        del me  # drafting needs no approval; spawning it will
        await self._must_not_exist(_checked(name))
        draft = await self._lifecycle(self.lifecycle.create_draft(name))
        return DraftMade(name=draft.name, config_dir=draft.config_dir, state_dir=draft.state_dir, sha=draft.sha)

    async def request_spawn_commit(self, me: Principal, name: str, ref: str) -> Request:
        await self._must_not_exist(_checked(name))
        diff = await self._diff(name, ref)
        return await self._add(me, "spawn_commit", name, diff.proposed_sha, diff.applied_sha, diff.diff, diff.widenings)

    async def _add(
        self,
        me: Principal,
        kind: Kind,
        agent: str,
        proposed_sha: str | None,
        applied_sha: str | None,
        diff: str,
        widened: list[str],
    ) -> Request:
        """Store a request with what the operator will review: the commit, its base, diff and widenings."""
        added = await self.store.add(
            kind,
            agent,
            proposed_sha,
            applied_sha,
            diff,
            widened,
            me.name,
            self.clock(),
            self.config.approvals.max_pending,
        )
        if isinstance(added, RequestRow):
            raise Refused(f"request #{added.id} asks for this already and is {added.state}")
        if isinstance(added, QueueFull):
            raise Refused(
                f"{added.waiting} requests are waiting for the operator already, the limit; "
                "try again when some are resolved"
            )
        return _model(await self.store.get(added))

    async def _diff(self, name: str, ref: str) -> CommitDiff:
        diff = await self._lifecycle(self.lifecycle.diff_commit(name, ref))
        if not diff.valid:
            raise Refused(f"the config at {diff.proposed_sha[:12]} cannot be applied: {diff.problems}")
        return diff

    async def _must_not_exist(self, name: str) -> list[str]:
        """Refuse if agent `name` exists; the drafts there are otherwise."""
        listing = await self._lifecycle(self.lifecycle.list_agents())
        if any(agent.name == name for agent in listing.agents):
            raise Refused(f"{name} exists already")
        return listing.drafts

    async def _lifecycle(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except ToolError as e:
            raise Refused(str(e)) from None
        except (ServerUnavailable, AuthRefused) as e:
            raise Refused(f"the lifecycle server cannot be reached ({e}); try again shortly") from None

    # ---------------------------------------------------------------------------------- reviewing
    async def mine(self, me: Principal) -> list[Request]:
        rows = await self.store.where(
            "requested_by = ? ORDER BY state NOT IN ('pending', 'approving'), id DESC LIMIT 50", (me.name,)
        )
        return [_model(row, with_diff=False) for row in rows]

    async def pending(self) -> list[ReviewedRequest]:
        return await self._reviewed(await self.store.where("state IN ('pending', 'approving') ORDER BY id"))

    async def history(self, limit: int) -> list[ReviewedRequest]:
        rows = await self.store.where("state IN ('applied', 'denied', 'failed') ORDER BY id DESC LIMIT ?", (limit,))
        return await self._reviewed(rows)

    async def _reviewed(self, rows: list[RequestRow]) -> list[ReviewedRequest]:
        trails = await audit.entries(self.db, [row.id for row in rows])
        return [ReviewedRequest(**_model(row).model_dump(), audit=trails[row.id]) for row in rows]

    # ---------------------------------------------------------------------------------- deciding
    async def approve(self, me: Principal, request_id: int) -> Request:
        try:
            row = await self.store.claim(request_id, me.name, self.clock())
        except NotPending as e:
            raise Refused(_already(e.row)) from None
        except Unknown:
            raise Refused(f"there is no request #{request_id}; pending_approvals lists the waiting ones") from None
        if not await self._finish(row):
            self._recover.set()  # the lifecycle server did not answer: finish it when it does
        return _model(await self.store.get(request_id))

    async def deny(self, me: Principal, request_id: int, note: str) -> Request:
        if not note.strip():
            raise Refused("say why in note: the manager reads it")
        try:
            row = await self.store.deny(request_id, me.name, note.strip(), self.clock())
        except NotPending as e:
            raise Refused(_already(e.row)) from None
        except Unknown:
            raise Refused(f"there is no request #{request_id}; pending_approvals lists the waiting ones") from None
        self.outbox.wake()
        return _model(row)

    async def _finish(self, row: RequestRow) -> bool:
        """Carry out an approved request and record the outcome; False if lifecycle could not be asked."""
        if row.id in self._carrying_out:  # an approve is on it (and will hand it to recovery if it must)
            return True
        self._carrying_out.add(row.id)
        try:
            return await self._carry_out(row)
        finally:
            self._carrying_out.discard(row.id)

    async def _carry_out(self, row: RequestRow) -> bool:
        try:
            if await self._done_already(row):
                outcome: tuple[Literal["applied", "failed"], str | None] = ("applied", None)
            else:
                await _lifecycle_call(self.lifecycle, row)
                outcome = ("applied", None)
        except ToolError as e:
            outcome = ("failed", str(e))
        except (ServerUnavailable, AuthRefused) as e:
            log.warning("request #%d is approved but the lifecycle server did not answer: %s", row.id, e)
            return False
        await self.store.finish(row.id, outcome[0], outcome[1], self.clock())
        self.outbox.wake()
        return True

    async def _done_already(self, row: RequestRow) -> bool:
        """Did an earlier attempt (before a crash) carry this out? Asked before doing it again."""
        listing = await self.lifecycle.list_agents()
        if not any(agent.name == row.agent for agent in listing.agents):
            return False
        config = await self.lifecycle.agent_config(row.agent)
        if row.kind == "spawn":  # made from the template, as shown; not one made otherwise meanwhile
            return config.agent_toml == agent_toml_template("agent") and config.agent_nix is None
        return config.proposed_sha == row.commit_sha

    async def _recovery(self) -> None:
        """Finish every request left `approving`, retrying while the lifecycle server is away."""
        delay = RECOVERY_RETRY[0]
        while True:
            await self._recover.wait()
            self._recover.clear()
            if await self._recovery_pass():
                delay = RECOVERY_RETRY[0]
                continue
            with contextlib.suppress(TimeoutError):
                with anyio.fail_after(delay):
                    await self._recover.wait()
            self._recover.set()
            delay = min(delay * 2, RECOVERY_RETRY[1])

    async def _recovery_pass(self) -> bool:
        """Try once to finish every request left `approving`; True if none is left waiting for lifecycle."""
        stuck = await self.store.where("state = 'approving' ORDER BY id")
        return all([await self._finish(row) for row in stuck])


def _lifecycle_call(lifecycle: LifecycleClient, row: RequestRow) -> Awaitable[Applied | AgentInfo]:
    """What carries `row` out: exactly its commit, on exactly the applied config its diff was against."""
    if row.kind == "apply_commit":
        if row.commit_sha is None:  # the store never keeps one so; carrying it out fails, visibly
            raise ToolError(f"request #{row.id} names no commit to apply")
        # No base: a request stored before bases were; applied as it was then, by its sha.
        return lifecycle.apply_commit(row.agent, row.commit_sha, expected_base=row.base_sha)
    base = row.base_sha or "none"
    if row.kind == "spawn_commit":
        return lifecycle.create_agent(row.agent, row.commit_sha, expected_base=base)
    return lifecycle.create_agent(row.agent, expected_base=base)  # the template, and never a draft


def _checked(name: str) -> str:
    try:
        return check_agent_name(name)
    except InvalidName as e:
        raise Refused(str(e)) from None


def _already(row: RequestRow) -> str:
    when = iso(row.resolved_at) if row.resolved_at else "?"
    if row.state == "approving":
        return f"request #{row.id} was approved by {row.resolved_by} at {when} and is being carried out"
    return f"request #{row.id} was already {row.state}: by {row.resolved_by} at {when}"


def _model(row: RequestRow, *, with_diff: bool = True) -> Request:
    return Request(
        id=row.id,
        kind=row.kind,
        agent=row.agent,
        commit_sha=row.commit_sha,
        base_sha=row.base_sha,
        state=row.state,
        requested_by=row.requested_by,
        requested_at=iso(row.requested_at),
        resolved_by=row.resolved_by,
        resolved_at=iso(row.resolved_at) if row.resolved_at else None,
        note=row.note,
        error=row.error,
        diff=row.diff if with_diff else None,
        widenings=json.loads(row.widenings),
    )
