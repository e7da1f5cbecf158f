"""The approval queue's rules: what the manager may request, and what approving does.

Requests are checked when they are made (the commit exists, its config is valid, the agent is
there or is not), so the operator reviews only what could be carried out. Approving claims the
request, then asks the lifecycle server to carry it out, as the service principal; the outcome
(applied, denied with the note, or failed with the error) is stored and sent to the requester as
an ApprovalResolved event. A request left `approving` by a crash, or by a lifecycle server that
did not answer, is finished by a recovery task sending the same lifecycle call again (lifecycle
answers "already applied" for what was carried out before, and does not do it twice).
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from fastmcp.exceptions import ToolError

from hyperhive.servers.approvals.models import DraftMade, Request, ReviewedRequest
from hyperhive.servers.approvals.store import Kind, RequestRow, approval_store
from hyperhive.servers.common import audit
from hyperhive.servers.common.agent_config import AGENT_TOML, agent_toml_template
from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.diffs import ConfigSummary, created_files, render_diff, summary, widenings
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import InvalidName, check_agent_name
from hyperhive.servers.common.principals import Principal
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.models import Applied, CommitDiff, Created

log = logging.getLogger("hyperhive.approvals")

RECOVERY_RETRY: Final = (1.0, 60.0)  # seconds between attempts while the lifecycle server is away
MY_REQUESTS: Final = 50  # list_my_requests shows this many
MAX_REASON: Final = 2000  # characters of a request's reason
MAX_MESSAGE: Final = 4000  # characters of a commit message kept with a request
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Proposal:
    """What a request asks to carry out, as the operator reviews it."""

    commit_sha: str | None  # the proposed commit; None: the template
    base_sha: str | None  # the applied config it is against; None: none (a new agent)
    diff: str
    widenings: list[str]
    message: str | None  # the commit's message, made plain and bounded

    @classmethod
    def of(cls, diff: CommitDiff) -> Proposal:
        message = _plain(diff.message)[:MAX_MESSAGE].strip() or None
        return cls(diff.proposed_sha, diff.applied_sha, diff.diff, diff.widenings, message)


class Approvals:
    def __init__(self, kit: ServiceKit) -> None:
        self.kit = kit
        self.config = kit.config
        self.clock = kit.clock
        self.store = approval_store(kit.db)
        self.outbox = kit.outbox
        # Creating or rebuilding an agent takes a while; a refused connection is retried a little.
        self.lifecycle = LifecycleClient(kit.client("lifecycle", timeout=300, retry_seconds=5))
        self._recover = asyncio.Event()
        self._carrying_out: set[int] = set()  # requests an approve or the recovery is working on now

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Approvals]:
        self._recover.set()  # requests a crash left half done are finished first
        async with self.kit.running(self._recovery):
            yield self

    # --------------------------------------------------------------------------------- requesting
    async def request_apply_commit(self, me: Principal, agent: str, ref: str, reason: str) -> Request:
        why = checked_reason(reason)
        diff = await self._diff(_checked(agent), ref)
        if diff.applied_sha is None:
            raise Refused(f"{agent} does not exist yet; for a draft, use request_spawn_commit")
        if not diff.diff:
            raise Refused(f"commit {diff.proposed_sha[:12]} changes nothing in {agent}'s applied config")
        return await self._add(me, "apply_commit", agent, Proposal.of(diff), why)

    async def request_spawn(self, me: Principal, name: str, reason: str) -> Request:
        why = checked_reason(reason)
        drafts = await self._must_not_exist(_checked(name))
        if name in drafts:  # the template is not what the draft holds: the operator reviews that instead
            raise Refused(
                f"a draft of {name} exists: use request_spawn_commit({name!r}, sha) to ask for it "
                f"(its config repo is {self.config.agents_dir / name / 'config'})"
            )
        template = {AGENT_TOML: agent_toml_template("agent")}
        shown = render_diff({}, template, "none", "template")
        return await self._add(me, "spawn", name, Proposal(None, None, shown, widenings({}, template), None), why)

    async def request_spawn_draft(self, me: Principal, name: str) -> DraftMade:
        del me  # drafting needs no approval; spawning it will
        await self._must_not_exist(_checked(name))
        draft = await self._lifecycle(self.lifecycle.create_draft(name))
        return DraftMade(name=draft.name, config_dir=draft.config_dir, state_dir=draft.state_dir, sha=draft.sha)

    async def request_spawn_commit(self, me: Principal, name: str, ref: str, reason: str) -> Request:
        why = checked_reason(reason)
        await self._must_not_exist(_checked(name))
        diff = await self._diff(name, ref)
        return await self._add(me, "spawn_commit", name, Proposal.of(diff), why)

    async def _add(self, me: Principal, kind: Kind, agent: str, proposal: Proposal, reason: str) -> Request:
        """Store a request with what the operator will review: the proposal and the requester's reason."""
        request_id = await self.store.add(
            kind,
            agent,
            proposal.commit_sha,
            proposal.base_sha,
            proposal.diff,
            proposal.widenings,
            reason,
            proposal.message,
            me.name,
            self.clock.now(),
            self.config.approvals.max_pending,
        )
        return _model(await self.store.get(request_id))

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
        rows = await self.store.requested_by(me.name, MY_REQUESTS)
        return [_model(row, with_diff=False) for row in rows]

    async def pending(self) -> list[ReviewedRequest]:
        return await self._reviewed(await self.store.open_requests())

    async def history(self, limit: int) -> list[ReviewedRequest]:
        return await self._reviewed(await self.store.resolved(limit))

    async def _reviewed(self, rows: list[RequestRow]) -> list[ReviewedRequest]:
        trails = await audit.entries(self.kit.db, [row.id for row in rows])
        return [ReviewedRequest(**_model(row).model_dump(), audit=trails[row.id]) for row in rows]

    # ---------------------------------------------------------------------------------- deciding
    async def approve(self, me: Principal, request_id: int) -> Request:
        row = await self.store.claim(request_id, me.name, self.clock.now())
        if not await self._finish(row):
            self._recover.set()  # the lifecycle server did not answer: finish it when it does
        return _model(await self.store.get(request_id))

    async def deny(self, me: Principal, request_id: int, note: str) -> Request:
        if not note.strip():
            raise Refused("say why in note: the manager reads it")
        row = await self.store.deny(request_id, me.name, note.strip(), self.clock.now())
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
        # One lifecycle call, the same every time: sent again after a crash, lifecycle answers
        # "already applied" for what an earlier attempt carried out, and does not do it twice.
        outcome: tuple[Literal["applied", "failed"], str | None] = ("applied", None)
        try:
            await _lifecycle_call(self.lifecycle, row)
        except ToolError as e:
            outcome = ("failed", str(e))
        except (ServerUnavailable, AuthRefused) as e:
            log.warning("request #%d is approved but the lifecycle server did not answer: %s", row.id, e)
            return False
        await self.store.finish(row.id, outcome[0], outcome[1], self.clock.now())
        self.outbox.wake()
        return True

    async def _recovery(self) -> None:
        """Finish every request left `approving`, retrying while the lifecycle server is away."""
        backoff = Backoff(*RECOVERY_RETRY)
        while True:
            await self._recover.wait()
            self._recover.clear()
            if await self._recovery_pass():
                backoff.reset()
                continue
            await backoff.wait(self._recover)
            self._recover.set()

    async def _recovery_pass(self) -> bool:
        """Try once to finish every request left `approving`; True if none is left waiting for lifecycle."""
        stuck = await self.store.approving()
        return all([await self._finish(row) for row in stuck])


def _lifecycle_call(lifecycle: LifecycleClient, row: RequestRow) -> Awaitable[Applied | Created]:
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


def checked_reason(reason: str) -> str:
    """The requester's reason, stripped; Refused unless it is a sentence or a few the operator can read."""
    why = reason.strip()
    if not why:
        raise Refused(
            "give a reason: why this change or agent is needed, in a sentence or two; the operator reads it "
            "before deciding"
        )
    if len(why) > MAX_REASON:
        raise Refused(
            f"the reason is {len(why)} characters, over the {MAX_REASON} allowed; say why in a few "
            "sentences and put the details in the commit message"
        )
    if _plain(why) != why:
        raise Refused("the reason has control characters; write it as plain text (newlines and tabs are fine)")
    return why


def _plain(text: str) -> str:
    """`text` without control characters (a terminal would obey them), newlines and tabs kept."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf"))


def _checked(name: str) -> str:
    try:
        return check_agent_name(name)
    except InvalidName as e:
        raise Refused(str(e)) from None


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
        widenings=row.widenings,
        reason=row.reason,
        message=row.message,
        summary=_summary(row) if with_diff else None,
    )


def _summary(row: RequestRow) -> ConfigSummary | None:
    """A new agent's config, read from its stored diff (made against nothing, it holds every file whole)."""
    if row.kind == "apply_commit" or row.base_sha is not None:
        return None
    files = created_files(row.diff)
    return None if files is None else summary(files)
