"""The approvals server's MCP tools: thin wrappers over approval_queue.Approvals.

The manager requests; the operator approves or denies; the lifecycle server carries it out.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hyperhive.servers.approvals import store_pg, store_sqlite
from hyperhive.servers.approvals.approval_queue import MAX_REASON, Approvals
from hyperhive.servers.approvals.models import DraftMade, Request, RequestList, ReviewList
from hyperhive.servers.common.clock import Clock
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.models import Id
from hyperhive.servers.common.storage import Schemas
from hyperhive.servers.common.tokens import ServerCredentials, caller
from hyperhive.servers.common.toolserver import HiveServer, create_mcp

INSTRUCTIONS = (
    "The hyperhive approval queue. The manager requests config changes and new agents; the operator "
    "approves or denies them; approved requests are carried out and their outcome sent to the requester."
)

Agent = Annotated[str, Field(description="agent name")]
Ref = Annotated[str, Field(description="a commit of the agent's proposed config repo (sha)")]
Reason = Annotated[
    str,
    Field(
        description=f"why it is needed, in a sentence or two (required, at most {MAX_REASON} characters): "
        "the operator reads it before deciding"
    ),
]

SCHEMAS = Schemas(store_sqlite.MIGRATIONS, store_pg.MIGRATIONS)


def create(config: HiveConfig, credentials: ServerCredentials, *, clock: Clock | None = None) -> HiveServer:
    kit = ServiceKit("approvals", config, SCHEMAS, token=credentials.service_token(), clock=clock)
    approvals = Approvals(kit)

    mcp = create_mcp(
        "approvals", instructions=INSTRUCTIONS, credentials=credentials, agents=kit.agents, running=approvals.running
    )

    # ------------------------------------------------------------------------------ the manager
    @mcp.tool
    async def request_apply_commit(agent: Agent, commit_ref: Ref, reason: Reason) -> Request:
        """Ask the operator to apply a commit of an agent's proposed config (shown as a diff, with your
        reason and the commit's message)."""
        return await approvals.request_apply_commit(caller(), agent, commit_ref, reason)

    @mcp.tool
    async def request_spawn(name: Agent, reason: Reason) -> Request:
        """Ask the operator to create a new agent from the template config, saying why."""
        return await approvals.request_spawn(caller(), name, reason)

    @mcp.tool
    async def request_spawn_draft(name: Agent) -> DraftMade:
        """Make a new agent's config repo and state dir now, to edit and seed before request_spawn_commit."""
        return await approvals.request_spawn_draft(caller(), name)

    @mcp.tool
    async def request_spawn_commit(name: Agent, commit_ref: Ref, reason: Reason) -> Request:
        """Ask the operator to create a drafted agent from a commit of its config repo, saying why."""
        return await approvals.request_spawn_commit(caller(), name, commit_ref, reason)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_my_requests() -> RequestList:
        """Your requests: waiting ones first, then the latest resolved."""
        return RequestList(requests=await approvals.mine(caller()))

    # ----------------------------------------------------------------------------- the operator
    @mcp.tool(annotations={"readOnlyHint": True})
    async def pending_approvals() -> ReviewList:
        """Requests waiting for a decision, oldest first, with their diffs."""
        return ReviewList(requests=await approvals.pending())

    @mcp.tool
    async def approve(id: Id) -> Request:
        """Approve a request: it is carried out now and the requester told the outcome."""
        return await approvals.approve(caller(), id)

    @mcp.tool
    async def deny(id: Id, note: Annotated[str, Field(description="why; the requester reads it")]) -> Request:
        """Deny a request, saying why."""
        return await approvals.deny(caller(), id, note)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def approval_history(limit: Annotated[int, Field(ge=1, le=500)] = 50) -> ReviewList:
        """Resolved requests, newest first, with who did what and when."""
        return ReviewList(requests=await approvals.history(limit))

    return HiveServer(mcp=mcp)
