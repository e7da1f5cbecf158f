"""The forge server's MCP tools (thin wrappers into forge.Forge) and its git endpoint beside /mcp.

Who calls is the verified token's subject, for the tools and for git alike (http.py); no tool
takes an owner or a pusher.
"""

from typing import Annotated

from fastmcp import FastMCP
from fastmcp.server.dependencies import get_access_token
from pydantic import Field

from hyperhive.servers.common.clock import Clock
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.registry import GIT_PATH
from hyperhive.servers.common.storage import Schemas
from hyperhive.servers.common.tokens import INSTANCE_CLAIM, HiveTokenVerifier, ServerCredentials, caller
from hyperhive.servers.common.toolserver import HiveServer, create_mcp
from hyperhive.servers.forge.browse import Browser
from hyperhive.servers.forge.forge import MAX_LOG, Forge
from hyperhive.servers.forge.http import GitHttp
from hyperhive.servers.forge.models import (
    Access,
    CommitShown,
    DiffResult,
    FileResult,
    Granted,
    LogResult,
    PushesResult,
    Released,
    Repo,
    ReposResult,
    ReservationsResult,
    Reserved,
    TreeResult,
    Watching,
)
from hyperhive.servers.forge.reservations import MAX_PATTERNS, MAX_TTL, MIN_TTL, Reservations
from hyperhive.servers.forge.store import MIGRATIONS, PUSHES_KEPT

INSTRUCTIONS = (
    "The hive's git forge. Create repos you own, grant others read or write, and use plain git on "
    "their clone_url (git clone/fetch/push work with your hive token). Every agent reads the `docs` repo. "
    "watch(repo) sends you a repo_pushed event for each push to it. Before editing files others may edit, "
    "reserve(repo, paths) them; release after you push (a push over another's exclusive reservation is refused)."
)

RepoName = Annotated[str, Field(description="the repo's name, e.g. 'app' (list_repos shows yours)")]
Ref = Annotated[str, Field(description="a branch, tag, full ref, HEAD or commit id (optionally ~N)")]
Who = Annotated[str, Field(description="an agent's name, 'manager', 'operator', or '*' for every agent")]


def create(config: HiveConfig, credentials: ServerCredentials, *, clock: Clock | None = None) -> HiveServer:
    kit = ServiceKit("forge", config, Schemas(MIGRATIONS), token=credentials.service_token(), clock=clock)
    forge = Forge(kit)
    mcp = create_mcp(
        "forge", instructions=INSTRUCTIONS, credentials=credentials, agents=kit.agents, running=forge.running
    )
    # git's smart HTTP, verified as /mcp verifies (the same keys, registry and audience).
    git = GitHttp(forge, HiveTokenVerifier("forge", credentials.keys, kit.agents))
    mcp.custom_route(GIT_PATH + "/{path:path}", methods=["GET", "POST"], include_in_schema=False)(git.handle)

    @mcp.tool
    async def create_repo(
        name: Annotated[str, Field(description="a-z, 0-9, '.', '_', '-'; e.g. 'app'")],
        description: Annotated[str, Field(description="what it holds, in a line")] = "",
    ) -> Repo:
        """Create a git repo you own; push to its clone_url. Others see it once you grant them."""
        return await forge.create_repo(caller(), name, description)

    @mcp.tool
    async def grant(repo: RepoName, who: Who, access: Access) -> Granted:
        """Give `who` read or write on a repo you own (the manager and operator: on any repo)."""
        return await forge.grant(caller(), repo, who, access)

    @mcp.tool
    async def revoke(repo: RepoName, who: Who) -> Granted:
        """Take back what `who` was granted on a repo you own."""
        return await forge.revoke(caller(), repo, who)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def list_repos() -> ReposResult:
        """The repos you can read: owner, grants, description, last push, clone URL."""
        return await forge.list_repos(caller())

    @mcp.tool(annotations={"readOnlyHint": True})
    async def repo_log(
        repo: RepoName, ref: Ref = "HEAD", limit: Annotated[int, Field(ge=1, le=MAX_LOG)] = 20
    ) -> LogResult:
        """The latest commits reachable from `ref`, newest first."""
        return await forge.repo_log(caller(), repo, ref, limit)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def read_file(
        repo: RepoName, path: Annotated[str, Field(description="relative, e.g. 'src/main.py'")], ref: Ref = "HEAD"
    ) -> FileResult:
        """A file of a repo at `ref` (text up to [forge] max_file_bytes; binary files are said so)."""
        return await forge.read_file(caller(), repo, ref, path)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def diff(repo: RepoName, base: Ref, head: Ref = "HEAD") -> DiffResult:
        """The unified diff from `base` to `head` (capped at [forge] max_diff_bytes)."""
        return await forge.diff(caller(), repo, base, head)

    @mcp.tool
    async def watch(repo: RepoName) -> Watching:
        """Get a repo_pushed event in your inbox for every push to this repo (owners get them anyway)."""
        return await forge.watch(caller(), repo, True)

    @mcp.tool
    async def unwatch(repo: RepoName) -> Watching:
        """Stop watching a repo."""
        return await forge.watch(caller(), repo, False)

    _reservation_tools(mcp, Reservations(forge))
    browse_tools(mcp, Browser(forge))
    return HiveServer(mcp=mcp)


Patterns = Annotated[
    list[str],
    Field(
        description="globs relative to the repo's root, anchored there: 'src/api/**', 'src/api' (a directory "
        "and all under it), '*.md' (top level only), '**/*.md' (anywhere); * and ? stop at '/'",
        min_length=1,
        max_length=MAX_PATTERNS,
    ),
]


def _reservation_tools(mcp: FastMCP, desk: Reservations) -> None:
    @mcp.tool
    async def reserve(
        repo: RepoName,
        paths: Patterns,
        ttl_seconds: Annotated[int, Field(ge=MIN_TTL, le=MAX_TTL, description="how long: 60 s to a day")],
        reason: Annotated[str, Field(description="what you are doing, shown to whoever it blocks")] = "",
        exclusive: Annotated[bool, Field(description="False: shared with other shared reservations")] = True,
    ) -> Reserved:
        """Announce you are editing these paths of a repo, before you edit them. Refused (saying who holds
        what until when, and why) if another's reservation collides: exclusive against anything, shared
        against exclusive. Pushes touching what another holds exclusively are refused by the forge.
        Reserving a pattern you hold extends it. It ends at ttl_seconds, at release, or when your sandbox ends."""
        instance = _instance()
        return await desk.reserve(caller(), instance, repo, paths, ttl_seconds, reason, exclusive)

    @mcp.tool
    async def release(
        repo: RepoName,
        paths: Annotated[list[str] | None, Field(description="your patterns to release, as you reserved them")] = None,
        ids: Annotated[list[int] | None, Field(description="reservation ids (the manager, operator: anyone's)")] = None,
    ) -> Released:
        """End your reservations in a repo after pushing: those of `paths`, those of `ids`, or (neither) all yours."""
        return await desk.release(caller(), repo, paths, ids)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def reservations(repo: RepoName) -> ReservationsResult:
        """The live reservations in a repo: holder, pattern, exclusive, reason, until."""
        return await desk.list(caller(), repo)


def _instance() -> str | None:
    """The sandbox instance the caller's token names (None for the operator): its reservations end with it."""
    token = get_access_token()
    value = token.claims.get(INSTANCE_CLAIM) if token is not None else None
    return value if isinstance(value, str) else None


def browse_tools(mcp: FastMCP, browser: Browser) -> None:
    """Browsing a repo: a directory of a commit's tree, the recent pushes, one commit and its diff."""

    @mcp.tool(annotations={"readOnlyHint": True})
    async def tree(
        repo: RepoName,
        ref: Ref = "HEAD",
        path: Annotated[str, Field(description="a directory, relative; '' for the top")] = "",
    ) -> TreeResult:
        """One directory of a repo at `ref`: its entries' names, kinds (file, dir, link, submodule) and sizes."""
        return await browser.tree(caller(), repo, ref, path)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def pushes(repo: RepoName, limit: Annotated[int, Field(ge=1, le=PUSHES_KEPT)] = 20) -> PushesResult:
        """The latest pushes to a repo, newest first: each changed ref, old..new, who pushed, when."""
        return await browser.pushes(caller(), repo, limit)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def show_commit(repo: RepoName, sha: Ref) -> CommitShown:
        """One commit: author, date, message, parents and its diff from its first parent."""
        return await browser.show_commit(caller(), repo, sha)
