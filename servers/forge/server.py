"""The forge server's MCP tools (thin wrappers into forge.Forge) and its git endpoint beside /mcp.

Who calls is the verified token's subject, for the tools and for git alike (http.py); no tool
takes an owner or a pusher.
"""

from typing import Annotated

from fastmcp import FastMCP
from pydantic import Field

from hyperhive.servers.common.clock import Clock
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.registry import GIT_PATH
from hyperhive.servers.common.tokens import HiveTokenVerifier, ServerCredentials, caller
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
    Repo,
    ReposResult,
    TreeResult,
    Watching,
)
from hyperhive.servers.forge.store import MIGRATIONS, PUSHES_KEPT

INSTRUCTIONS = (
    "The hive's git forge. Create repos you own, grant others read or write, and use plain git on "
    "their clone_url (git clone/fetch/push work with your hive token). Every agent reads the `docs` repo. "
    "watch(repo) sends you a repo_pushed event for each push to it."
)

RepoName = Annotated[str, Field(description="the repo's name, e.g. 'app' (list_repos shows yours)")]
Ref = Annotated[str, Field(description="a branch, tag, full ref, HEAD or commit id (optionally ~N)")]
Who = Annotated[str, Field(description="an agent's name, 'manager', 'operator', or '*' for every agent")]


def create(config: HiveConfig, credentials: ServerCredentials, *, clock: Clock | None = None) -> HiveServer:
    kit = ServiceKit("forge", config, MIGRATIONS, token=credentials.service_token(), clock=clock)
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

    browse_tools(mcp, Browser(forge))
    return HiveServer(mcp=mcp)


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
