"""What the approvals server's tools return."""

from __future__ import annotations

from typing import Literal

from hyperhive.servers.common.audit import AuditEntry
from hyperhive.servers.common.diffs import ConfigSummary
from hyperhive.servers.common.models import CompactModel

RequestKind = Literal["apply_commit", "spawn", "spawn_commit"]
# approving: approved, being carried out; failed: approved, but carrying it out failed (see `error`).
RequestState = Literal["pending", "approving", "applied", "denied", "failed"]


class Request(CompactModel):
    id: int
    kind: RequestKind
    agent: str
    commit_sha: str | None  # the proposed commit approving applies, exactly
    base_sha: str | None  # the applied config the diff is against (None: none, a new agent); it must not move
    state: RequestState
    requested_by: str
    requested_at: str
    resolved_by: str | None
    resolved_at: str | None
    note: str | None  # the operator's reason for a denial
    error: str | None  # why carrying it out failed
    diff: str | None = None  # what approving changes (left out where the caller does not need it)
    # What the new config may do that the old could not (role, bash, tools, servers, sandbox), one line each.
    widenings: list[str]
    reason: str | None = None  # the requester's why (None only on requests made before reasons were)
    message: str | None = None  # the proposed commit's message (None: no commit, the template)
    # A new agent's config, read from its agent.toml: role, model, recipients, bash, tools, binds, …
    summary: ConfigSummary | None = None


class ReviewedRequest(Request):
    audit: list[AuditEntry]


class RequestList(CompactModel):
    requests: list[Request]


class ReviewList(CompactModel):
    requests: list[ReviewedRequest]


class DraftMade(CompactModel):
    name: str
    config_dir: str  # edit agent.toml (and agent.nix) here and commit, then request_spawn_commit
    state_dir: str  # seed the agent's notes.md here
    sha: str  # the proposed repo's HEAD (the template)
