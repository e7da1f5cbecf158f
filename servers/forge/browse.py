"""Browsing a repo, for the dashboard and agents alike: one directory level of a commit's tree, the
recent pushes, and one commit with its diff. Reading rights are the repo tools' (Forge.readable);
refs and paths are checked as read_file checks them before git sees them.
"""

from __future__ import annotations

from typing import Final

from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.errors import NotFound, Refused
from hyperhive.servers.common.principals import Principal
from hyperhive.servers.forge.forge import Forge
from hyperhive.servers.forge.gitrepo import GitFailed, check_path
from hyperhive.servers.forge.models import (
    CommitShown,
    EntryKind,
    Push,
    PushesResult,
    TreeEntry,
    TreeResult,
)
from hyperhive.servers.forge.store import PUSHES_KEPT, recent_pushes

MAX_TREE_ENTRIES: Final = 1000  # one listing; a directory with more says it was cut
_TREE_BYTES: Final = 1024 * 1024  # what git's listing may print before it is stopped
_KINDS: Final[dict[str, EntryKind]] = {"tree": "dir", "commit": "submodule"}
_LINK_MODE: Final = "120000"
_SHOW_FORMAT: Final = "%P%x00%an <%ae>%x00%aI%x00%s%x00%b"  # parents, author, date, subject, body


class Browser:
    def __init__(self, forge: Forge) -> None:
        self.forge = forge

    async def tree(self, me: Principal, name: str, ref: str, path: str) -> TreeResult:
        """The entries of directory `path` ("" the top) of `ref`'s tree: names, kinds, sizes."""
        repo = await self.forge.readable(me, name)
        relative = "" if path.strip() in ("", ".") else check_path(path)
        commit = await self.forge._commit(repo.name, ref)
        where = self.forge.repos.path(repo.name)
        spec = f"{commit}:{relative}"
        if relative:
            try:
                kind = (await self.forge.repos.run("cat-file", "-t", spec, cwd=where)).decode().strip()
            except GitFailed:
                raise NotFound(f"{path!r} is not in repo {name!r} at {ref} ({commit[:12]})") from None
            if kind != "tree":
                raise Refused(f"{path!r} is a file at {ref}, not a directory; read it with read_file")
        try:
            output = await self.forge.repos.run_capped("ls-tree", "-z", "--long", spec, cwd=where, limit=_TREE_BYTES)
        except GitFailed as e:
            raise Refused(f"git failed on repo {name!r}: {e}") from None
        records = output.data.split(b"\0")
        if output.truncated or not output.data.endswith(b"\0"):
            records = records[:-1]  # the last one may be cut
        entries = [entry for record in records if record and (entry := _entry(record)) is not None]
        entries.sort(key=lambda e: (e.kind != "dir", e.name))
        cut = output.truncated or len(entries) > MAX_TREE_ENTRIES
        return TreeResult(
            repo=repo.name,
            commit=commit,
            path=relative,
            entries=entries[:MAX_TREE_ENTRIES],
            truncated=True if cut else None,
        )

    async def pushes(self, me: Principal, name: str, limit: int) -> PushesResult:
        repo = await self.forge.readable(me, name)
        if not 1 <= limit <= PUSHES_KEPT:
            raise Refused(f"limit must be between 1 and {PUSHES_KEPT}")
        rows = await recent_pushes(self.forge.store.db, repo.name, limit)
        return PushesResult(
            repo=repo.name,
            pushes=[Push(ref=r.ref, old=r.old, new=r.new, pusher=r.pusher, at=iso(r.at)) for r in rows],
        )

    async def show_commit(self, me: Principal, name: str, ref: str) -> CommitShown:
        """A commit's author, date, message and its diff from its first parent (a root commit: whole)."""
        repo = await self.forge.readable(me, name)
        commit = await self.forge._commit(repo.name, ref)
        head = await self.forge._git(repo.name, "log", "-1", f"--format={_SHOW_FORMAT}", commit, "--")
        parents, author, date, subject, body = head.decode(errors="replace").split("\0", 4)
        parent_list = parents.split()
        if parent_list:
            args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", parent_list[0], commit, "--"]
        else:
            args = ["diff-tree", "-p", "--root", "--no-commit-id", "--no-color", "--no-ext-diff", "--no-textconv",
                    commit, "--"]  # fmt: skip
        try:
            output = await self.forge.repos.run_capped(
                *args, cwd=self.forge.repos.path(repo.name), limit=self.forge.settings.max_diff_bytes
            )
        except GitFailed as e:
            raise Refused(f"git failed on repo {name!r}: {e}") from None
        return CommitShown(
            repo=repo.name,
            sha=commit,
            parents=parent_list,
            author=author,
            date=date,
            subject=subject,
            body=body.strip() or None,
            diff=output.data.decode(errors="replace"),
            truncated=True if output.truncated else None,
        )


def _entry(record: bytes) -> TreeEntry | None:
    """One line of `ls-tree --long`: "<mode> <type> <object> <size>\t<name>"."""
    meta, tab, raw_name = record.partition(b"\t")
    fields = meta.decode(errors="replace").split()
    if not tab or len(fields) != 4:
        return None
    mode, kind, _, size = fields
    entry_kind: EntryKind = "link" if mode == _LINK_MODE else _KINDS.get(kind, "file")
    return TreeEntry(
        name=raw_name.decode(errors="replace"),
        kind=entry_kind,
        size=int(size) if size.isdigit() else None,
    )
