"""The shared workspace (<home>/shared, /hive/shared in sandboxes) as the operator reads it: one
directory level, and one file. Everything there is agent-written, so it is read as an agent's own
files are (servers/common/files.py): no link is followed, only regular files are opened, sizes and
times are capped. Nothing here writes."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from hyperhive.servers.common.errors import NotFound, Refused
from hyperhive.servers.common.files import FileMissing, UnsafeFile, list_agent_dir_async, read_agent_file_async
from hyperhive.servers.lifecycle.host_binds import SHARED_DIR
from hyperhive.servers.lifecycle.models import SharedDir, SharedEntry, SharedFile
from hyperhive.servers.lifecycle.state_view import file_entry, relative_dir

SHARED_FILE_CAP: Final = 1024 * 1024  # a file the dashboard shows; a bigger one is refused saying so
SHARED_LIST_LIMIT: Final = 1000  # entries of one listing


async def shared_dir(home: Path, path: str, owners: dict[int, str]) -> SharedDir:
    """The entries of `path` ("" the top) in the shared workspace; none while it is not made yet."""
    relative = relative_dir(path)
    try:
        entries, truncated = await list_agent_dir_async(home, SHARED_DIR, relative, limit=SHARED_LIST_LIMIT)
    except FileMissing as e:
        if not relative and not (home / SHARED_DIR).exists():  # no sandbox has started yet
            return SharedDir(path="", entries=[])
        raise NotFound(f"{e}: the shared workspace has no directory {relative!r}") from None
    except UnsafeFile as e:
        raise Refused(str(e)) from None
    return SharedDir(
        path=relative,
        entries=[
            SharedEntry(**file_entry(entry).model_dump(), owner=owners.get(entry.uid, str(entry.uid)))
            for entry in entries
        ],
        truncated=truncated,
    )


async def shared_file(home: Path, path: str) -> SharedFile:
    """A regular file of the shared workspace, up to SHARED_FILE_CAP; binary (NUL bytes) said so."""
    try:
        data = await read_agent_file_async(home, SHARED_DIR, path, cap=SHARED_FILE_CAP)
    except FileMissing as e:
        raise NotFound(f"{e}: no such file in the shared workspace") from None
    except UnsafeFile as e:
        raise Refused(str(e)) from None
    if b"\0" in data[:8192]:
        return SharedFile(path=path, size=len(data), binary=True)
    return SharedFile(path=path, size=len(data), text=data.decode(errors="replace"))
