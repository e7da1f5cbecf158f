"""The forge's tools as the hive's own processes call them (the dashboard, the CLI), with typed results."""

from __future__ import annotations

from typing import ClassVar

from hyperhive.servers.common.server_client import ServerClient
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


class ForgeClient(ServerClient):
    server: ClassVar[str] = "forge"

    async def create_repo(self, name: str, description: str = "") -> Repo:
        return await self._call("create_repo", Repo, name=name, description=description)

    async def grant(self, repo: str, who: str, access: Access) -> Granted:
        return await self._call("grant", Granted, repo=repo, who=who, access=access)

    async def revoke(self, repo: str, who: str) -> Granted:
        return await self._call("revoke", Granted, repo=repo, who=who)

    async def list_repos(self) -> ReposResult:
        return await self._call("list_repos", ReposResult)

    async def repo_log(self, repo: str, ref: str = "HEAD", limit: int = 20) -> LogResult:
        return await self._call("repo_log", LogResult, repo=repo, ref=ref, limit=limit)

    async def read_file(self, repo: str, path: str, ref: str = "HEAD") -> FileResult:
        return await self._call("read_file", FileResult, repo=repo, path=path, ref=ref)

    async def diff(self, repo: str, base: str, head: str = "HEAD") -> DiffResult:
        return await self._call("diff", DiffResult, repo=repo, base=base, head=head)

    async def watch(self, repo: str) -> Watching:
        return await self._call("watch", Watching, repo=repo)

    async def unwatch(self, repo: str) -> Watching:
        return await self._call("unwatch", Watching, repo=repo)

    async def tree(self, repo: str, ref: str = "HEAD", path: str = "") -> TreeResult:
        return await self._call("tree", TreeResult, repo=repo, ref=ref, path=path)

    async def pushes(self, repo: str, limit: int = 20) -> PushesResult:
        return await self._call("pushes", PushesResult, repo=repo, limit=limit)

    async def show_commit(self, repo: str, sha: str) -> CommitShown:
        return await self._call("show_commit", CommitShown, repo=repo, sha=sha)
