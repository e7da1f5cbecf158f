"""An agent's state dir (agents/<name>/state, its cwd) as the operator reads it: one directory
level (list_state_dir) and one file (read_state_file). Everything there is agent-written, so it is
read through servers/common/files.py: no link is followed (a link is listed as a link), only
regular files are opened, sizes, entries and times are capped. Nothing here writes."""

from __future__ import annotations

from typing import Final

from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.errors import NotFound, Refused
from hyperhive.servers.common.files import (
    DirEntry,
    FileMissing,
    UnsafeFile,
    list_agent_dir_async,
    read_agent_file_async,
)
from hyperhive.servers.lifecycle.models import FileEntry, StateDir, StateFile
from hyperhive.servers.lifecycle.paths import AgentPaths

STATE_FILE_CAP: Final = 1024 * 1024  # a file the dashboard shows; a bigger one is refused saying so
STATE_LIST_LIMIT: Final = 1000  # entries of one listing
BINARY_SNIFF: Final = 8192  # a NUL byte in the first this many bytes: binary


def file_entry(entry: DirEntry) -> FileEntry:
    return FileEntry(name=entry.name, kind=entry.kind, size=entry.size, modified=iso(entry.modified))


def relative_dir(path: str) -> str:
    """A directory path as the listing tools take it: '' (or '.', '/') is the top."""
    return path.strip().strip("/") if path.strip() not in ("", ".") else ""


async def state_dir(paths: AgentPaths, path: str) -> StateDir:
    """The entries of `path` ("" the top) in the agent's state dir; none while it has none yet."""
    relative = relative_dir(path)
    try:
        entries, truncated = await list_agent_dir_async(paths.root, paths.state.name, relative, limit=STATE_LIST_LIMIT)
    except FileMissing as e:
        if not relative:  # no state dir (yet): nothing to list
            return StateDir(name=paths.name, path="", entries=[])
        raise NotFound(f"{e}: {paths.name}'s state dir has no directory {relative!r}") from None
    except UnsafeFile as e:
        raise Refused(str(e)) from None
    return StateDir(name=paths.name, path=relative, entries=[file_entry(e) for e in entries], truncated=truncated)


async def state_file(paths: AgentPaths, path: str) -> StateFile:
    """A regular file of the agent's state dir, up to STATE_FILE_CAP; binary (NUL bytes, or not
    UTF-8) said so, without its bytes."""
    try:
        data = await read_agent_file_async(paths.root, paths.state.name, path, cap=STATE_FILE_CAP)
    except FileMissing as e:
        raise NotFound(f"{e} in {paths.name}'s state dir; list_state_dir shows what there is") from None
    except UnsafeFile as e:
        raise Refused(str(e)) from None
    if b"\0" not in data[:BINARY_SNIFF]:
        try:
            return StateFile(name=paths.name, path=path, size=len(data), text=data.decode())
        except UnicodeDecodeError:
            pass
    return StateFile(name=paths.name, path=path, size=len(data), text="", binary=True)
