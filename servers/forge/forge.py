"""The forge's rules: who may do what to which repo, and the repo tools.

Who holds what on a repo: its owner writes; a grant gives an agent (or `*`, every agent, or the
operator) read or write; the operator reads and writes every repo; the manager reads every repo
(and, like the operator, may grant on any, itself included: that is visible in the grants). A repo
a caller cannot read is refused as "not yours to read" — its name is no secret, its content is.
Every method takes the verified caller and raises Refused saying what was wrong and what to do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

from hyperhive.servers.common.client import forge_git_url
from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.errors import NotFound, Refused
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.names import MANAGER, OPERATOR, InvalidName, check_agent_name
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.forge.gitrepo import GitFailed, Repos, check_path, check_ref, check_repo_name
from hyperhive.servers.forge.models import (
    Commit,
    DiffResult,
    FileResult,
    Granted,
    LogResult,
    Repo,
    ReposResult,
    Watching,
)
from hyperhive.servers.forge.store import EVERYONE, Access, ForgeStore, RefChange, RepoRow

log = logging.getLogger("hyperhive.forge")

DOCS: Final = "docs"  # created on first start: every agent reads it, the manager and the operator write it
DOCS_DESCRIPTION: Final = "the hive's shared docs: runbooks, conventions, skills"
MAX_DESCRIPTION: Final = 500
MAX_LOG: Final = 200


class Forge:
    def __init__(self, kit: ServiceKit) -> None:
        self.kit = kit
        self.settings = kit.config.forge
        self.clock = kit.clock
        self.store = ForgeStore(kit.sqlite)
        self.repos = Repos(kit.config.forge_dir, kit.config.forge_hooks_dir)
        self.git_url = forge_git_url(kit.config) or "http://127.0.0.1/git"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Forge]:
        async with self.kit.running(first=self._start):
            yield self

    async def _start(self) -> None:
        """The repos' directory and hooks; creations a crash cut short undone; the docs repo on first start."""
        self.repos.prepare()
        for name in await self.store.unfinished():
            log.warning("repo %s was half created when the forge stopped; removing it", name)
            await self.repos.remove(name)
            await self.store.drop_repo(name)
        if await self.store.get(DOCS) is None:
            await self._create(DOCS, OPERATOR, DOCS_DESCRIPTION, [(EVERYONE, "read"), (MANAGER, "write")], cap=None)

    # ----------------------------------------------------------------------------- access
    def access(self, me: Principal, repo: RepoRow) -> Access | None:
        if me.role is Role.OPERATOR:
            return "write"
        if not me.is_agent:  # a service principal reads no repo
            return None
        held = repo.access_of(me.name)
        if held is None and me.role is Role.MANAGER:
            return "read"
        return held

    async def readable(self, me: Principal, name: str) -> RepoRow:
        """The repo, if `me` may read it; NotFound or Refused saying why not."""
        repo = await self.store.require(check_repo_name(name))
        if self.access(me, repo) is None:
            raise Refused(f"repo {name!r} is not yours to read: ask its owner, {repo.owner}, to grant you read")
        return repo

    async def writable(self, me: Principal, name: str) -> RepoRow:
        repo = await self.readable(me, name)
        if self.access(me, repo) != "write":
            raise Refused(f"you may read repo {name!r} but not push to it: ask its owner, {repo.owner}, for write")
        return repo

    # ----------------------------------------------------------------------------- repos
    async def create_repo(self, me: Principal, name: str, description: str) -> Repo:
        check_repo_name(name)
        text = description.strip()
        if len(text) > MAX_DESCRIPTION:
            raise Refused(f"the description is {len(text)} characters; keep it under {MAX_DESCRIPTION}")
        if not me.is_agent and me.role is not Role.OPERATOR:
            raise Refused("only agents and the operator own repos")
        cap = None if me.role is Role.OPERATOR else self.settings.max_repos_per_agent
        await self._create(name, me.name, text, [], cap=cap)
        return await self._view(me, await self.store.require(name))

    async def _create(
        self, name: str, owner: str, description: str, grants: Sequence[tuple[str, Access]], cap: int | None
    ) -> None:
        now = self.clock.now()
        await self.store.begin_repo(name, owner, description, now, max_owned=cap)
        try:
            await self.repos.init(name)
        except (GitFailed, OSError, Refused) as e:
            await self.store.drop_repo(name)
            log.error("creating repo %s failed: %s", name, e)
            raise Refused(f"creating repo {name!r} failed: {e}") from None
        await self.store.finish_repo(name, grants, by=owner, now=now)
        log.info("repo %s created by %s", name, owner)

    async def list_repos(self, me: Principal) -> ReposResult:
        watching = await self.store.watching(me.name)
        repos = [repo for repo in await self.store.all() if self.access(me, repo) is not None]
        return ReposResult(repos=[self._describe(me, repo, repo.name in watching) for repo in repos])

    async def _view(self, me: Principal, repo: RepoRow) -> Repo:
        return self._describe(me, repo, repo.name in await self.store.watching(me.name))

    def _describe(self, me: Principal, repo: RepoRow, watching: bool) -> Repo:
        access = self.access(me, repo)
        assert access is not None
        return Repo(
            name=repo.name,
            owner=repo.owner,
            description=repo.description or None,
            clone_url=f"{self.git_url}/{repo.name}.git",
            access=access,
            grants=dict(repo.grants) or None,
            watching=True if watching else None,
            pushed_at=iso(repo.pushed_at) if repo.pushed_at is not None else None,
            pushed_by=repo.pushed_by,
        )

    # ----------------------------------------------------------------------------- grants
    async def grant(self, me: Principal, name: str, who: str, access: Access) -> Granted:
        repo = await self._grantable(me, name, who)
        before = repo.grants.get(who)
        await self.store.grant(repo.name, who, access, me.name, self.clock.now())
        return Granted(repo=repo.name, who=who, access=access, changed=before != access)

    async def revoke(self, me: Principal, name: str, who: str) -> Granted:
        repo = await self._grantable(me, name, who)
        changed = await self.store.revoke(repo.name, who)
        return Granted(repo=repo.name, who=who, changed=changed)

    async def _grantable(self, me: Principal, name: str, who: str) -> RepoRow:
        repo = await self.readable(me, name)
        if me.name != repo.owner and me.role not in (Role.OPERATOR, Role.MANAGER):
            raise Refused(f"only repo {name!r}'s owner ({repo.owner}), the manager and the operator grant on it")
        if who not in (EVERYONE, OPERATOR):
            try:
                check_agent_name(who)
            except InvalidName as e:
                raise Refused(f"who must be an agent's name, 'manager', 'operator' or '*': {e}") from None
        if who == repo.owner:
            raise Refused(f"{who} owns repo {name!r} and holds write on it already")
        return repo

    # ----------------------------------------------------------------------------- watching
    async def watch(self, me: Principal, name: str, on: bool) -> Watching:
        repo = await self.readable(me, name)
        if not me.is_agent and me.role is not Role.OPERATOR:
            raise Refused("only agents and the operator watch repos (their inbox gets repo_pushed)")
        changed = await self.store.watch(repo.name, me.name, on)
        return Watching(repo=repo.name, watching=on, changed=changed)

    # ----------------------------------------------------------------------------- reading
    async def repo_log(self, me: Principal, name: str, ref: str, limit: int) -> LogResult:
        repo = await self.readable(me, name)
        if not 1 <= limit <= MAX_LOG:
            raise Refused(f"limit must be between 1 and {MAX_LOG}")
        commit = await self._commit(repo.name, ref)
        out = await self._git(
            repo.name, "log", f"--max-count={limit}", "--format=%H%x00%an <%ae>%x00%aI%x00%s%x00", commit, "--"
        )
        fields = out.decode(errors="replace").split("\0")
        commits = [
            Commit(sha=fields[i].strip(), author=fields[i + 1], date=fields[i + 2], subject=fields[i + 3])
            for i in range(0, len(fields) - 4, 4)
        ]
        return LogResult(repo=repo.name, ref=ref, commits=commits)

    async def read_file(self, me: Principal, name: str, ref: str, path: str) -> FileResult:
        repo = await self.readable(me, name)
        relative = check_path(path)
        commit = await self._commit(repo.name, ref)
        where = self.repos.path(repo.name)
        spec = f"{commit}:{relative}"
        try:
            kind = (await self.repos.run("cat-file", "-t", spec, cwd=where)).decode().strip()
        except GitFailed:
            raise NotFound(f"{path!r} is not in repo {name!r} at {ref} ({commit[:12]})") from None
        if kind != "blob":
            raise Refused(f"{path!r} is a {'directory' if kind == 'tree' else kind} at {ref}; name a file in it")
        size = int((await self.repos.run("cat-file", "-s", spec, cwd=where)).decode())
        cap = self.settings.max_file_bytes
        output = await self.repos.run_capped("cat-file", "blob", spec, cwd=where, limit=cap)
        result = FileResult(repo=repo.name, commit=commit, path=relative, size=size)
        if b"\0" in output.data[:8192]:
            return result.model_copy(update={"binary": True})
        text = output.data.decode(errors="replace")
        return result.model_copy(update={"text": text, "truncated": True if size > cap else None})

    async def diff(self, me: Principal, name: str, base: str, head: str) -> DiffResult:
        repo = await self.readable(me, name)
        base_commit = await self._commit(repo.name, base)
        head_commit = await self._commit(repo.name, head)
        output = await self.repos.run_capped(
            "diff", "--no-color", "--no-ext-diff", "--no-textconv", base_commit, head_commit, "--",
            cwd=self.repos.path(repo.name), limit=self.settings.max_diff_bytes,
        )  # fmt: skip
        return DiffResult(
            repo=repo.name,
            base=base_commit,
            head=head_commit,
            diff=output.data.decode(errors="replace"),
            truncated=True if output.truncated else None,
        )

    async def _commit(self, name: str, ref: str) -> str:
        check_ref(ref)
        return await self.repos.commit(name, ref)

    async def _git(self, name: str, *args: str) -> bytes:
        try:
            return await self.repos.run(*args, cwd=self.repos.path(name))
        except GitFailed as e:
            log.error("repo %s: %s", name, e)
            raise Refused(f"git failed on repo {name!r}: {e}") from None

    # ----------------------------------------------------------------------------- pushes
    async def pushed(self, repo: RepoRow, pusher: str, before: dict[str, str], after: dict[str, str]) -> None:
        """A receive-pack request ended: each ref it changed is a repo_pushed event."""
        changes = [
            RefChange(ref, before.get(ref), after.get(ref))
            for ref in sorted(before.keys() | after.keys())
            if before.get(ref) != after.get(ref)
        ]
        if not changes:
            return
        queued = await self.store.record_push(repo, pusher, changes, self.clock.now())
        if queued:
            self.kit.outbox.wake()
        log.info("%s pushed %d ref(s) to %s", pusher, len(changes), repo.name)
