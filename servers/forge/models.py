"""What the forge's tools return. Optional fields that are null are left out: agents read these."""

from __future__ import annotations

from typing import Literal

from hyperhive.servers.common.models import CompactModel

Access = Literal["read", "write"]


class Repo(CompactModel):
    name: str
    owner: str
    description: str | None = None
    clone_url: str  # http://…/git/<name>.git: `git clone` it (the harness configured git with your token)
    access: Access  # what you hold on it
    grants: dict[str, Access] | None = None  # who else holds what ("*": every agent)
    watching: Literal[True] | None = None
    pushed_at: str | None = None  # ISO 8601 UTC of the last push, and by whom
    pushed_by: str | None = None


class ReposResult(CompactModel):
    repos: list[Repo]  # the repos you can read, by name


class Granted(CompactModel):
    repo: str
    who: str
    access: Access | None = None  # None: revoked
    changed: bool


class Watching(CompactModel):
    repo: str
    watching: bool
    changed: bool


class Commit(CompactModel):
    sha: str
    author: str
    date: str  # ISO 8601 author date
    subject: str


class LogResult(CompactModel):
    repo: str
    ref: str
    commits: list[Commit]  # newest first


class FileResult(CompactModel):
    repo: str
    commit: str
    path: str
    size: int  # bytes of the whole file
    binary: Literal[True] | None = None  # it holds NUL bytes: no text is returned
    truncated: Literal[True] | None = None  # text holds only the first [forge] max_file_bytes
    text: str | None = None


class DiffResult(CompactModel):
    repo: str
    base: str  # the commits compared
    head: str
    diff: str  # unified diff, base to head
    truncated: Literal[True] | None = None  # cut at [forge] max_diff_bytes; clone the repo for the rest


class Reservation(CompactModel):
    id: int  # release(repo, ids=[id]) ends it
    repo: str
    holder: str
    pattern: str  # a glob relative to the repo's root: 'src/api/**', '*.md' (see reserve)
    exclusive: bool  # True: no one else may reserve or push what it covers; False: shared with other shared ones
    reason: str | None = None
    until: str  # ISO 8601 UTC: it ends then (or when its holder's sandbox ends, or at release)


class Reserved(CompactModel):
    repo: str
    reservations: list[Reservation]  # yours, for the patterns you asked for


class Released(CompactModel):
    repo: str
    released: list[Reservation]  # what this call ended (empty: you held none of it)


class ReservationsResult(CompactModel):
    repo: str
    reservations: list[Reservation]  # the live ones, oldest first


# ------------------------------------------------------------------------------ browsing (tree, pushes, show_commit)
EntryKind = Literal["file", "dir", "link", "submodule"]


class TreeEntry(CompactModel):
    name: str
    kind: EntryKind  # a link is git's symlink blob: its target is what read_file returns
    size: int | None = None  # bytes, for a file or a link


class TreeResult(CompactModel):
    repo: str
    commit: str
    path: str  # the directory listed; "" for the repo's top
    entries: list[TreeEntry]  # directories first, then files, each by name
    truncated: Literal[True] | None = None  # more entries than a listing returns


class Push(CompactModel):
    ref: str
    old: str | None = None  # None: the ref was created
    new: str | None = None  # None: the ref was deleted
    pusher: str
    at: str  # ISO 8601 UTC


class PushesResult(CompactModel):
    repo: str
    pushes: list[Push]  # newest first


class CommitShown(CompactModel):
    repo: str
    sha: str
    parents: list[str]
    author: str
    date: str  # ISO 8601 author date
    subject: str
    body: str | None = None
    diff: str  # unified diff from its first parent (a root commit: from nothing)
    truncated: Literal[True] | None = None  # cut at [forge] max_diff_bytes
