"""Files shared across a trust boundary: written whole for others (write_atomic), and read from
an agent's dirs by privileged code without trusting them (read_agent_file)."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final, Literal, TypeVar

import anyio

T = TypeVar("T")


def write_atomic(path: Path, text: str, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace `path` with `text` so a reader sees the old file or the new one, never half of it.

    `durable=False` skips the fsync: for status files that only matter while the writer runs.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        Path(temp).chmod(mode)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------ agents' files
# A privileged process (the lifecycle server, `hive` as root) reads a file an agent can write only
# through read_agent_file: the agent may have put a symlink (to /etc/shadow, to another agent's
# file), a fifo that blocks a reader forever, a device, or a file of gigabytes there.

AGENT_FILE_SECONDS: Final = 2.0  # a read that takes longer is given up
_CHUNK: Final = 64 * 1024


class UnsafeFile(Exception):
    """The file cannot be read safely (or at all); the message says why, naming the relative path."""


class FileMissing(UnsafeFile):
    """There is no such file."""


def read_agent_file(
    trusted: Path, agent_dir: str, relative: str, *, cap: int, seconds: float = AGENT_FILE_SECONDS
) -> bytes:
    """The bytes of `trusted/agent_dir/relative`, a regular file of at most `cap` bytes.

    `trusted` is a directory only root can change (agents/<name>), `agent_dir` the agent's dir in
    it (state, harness), `relative` a path inside that. From `trusted` every component is
    opened relative to the one before with O_NOFOLLOW (a symlink anywhere is refused, never
    followed), the file itself first with O_PATH so that only a regular file is ever opened for
    reading, and then non-blocking. Reading stops at `cap` + 1 bytes and after `seconds`.
    Raises UnsafeFile (FileMissing when it is not there).
    """
    deadline = time.monotonic() + seconds
    inside = agent_path_parts(relative)
    parts = [agent_dir, *inside]
    with _descriptors(f"{relative} cannot be read") as fds:
        _open_dirs(trusted, agent_dir, inside[:-1], fds)
        path_fd = _open_component(parts[-1], fds[-1], os.O_PATH, relative)
        fds.append(path_fd)
        mode = os.fstat(path_fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFile(f"{relative} is {_kind(mode)}, not a regular file")
        # Reopening the O_PATH descriptor opens exactly the inode checked above, even if the name
        # was swapped for something else meanwhile.
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        fds.append(fd)
        size = os.fstat(fd).st_size
        if size > cap:
            raise UnsafeFile(f"{relative} is {size:,} bytes; files up to {cap:,} bytes can be read")
        chunks: list[bytes] = []
        total = 0
        while total <= cap:
            if time.monotonic() > deadline:
                raise UnsafeFile(f"reading {relative} took longer than {seconds:g} s")
            chunk = os.read(fd, min(_CHUNK, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise UnsafeFile(f"{relative} grew past {cap:,} bytes while it was read")
        return b"".join(chunks)


async def read_agent_file_async(
    trusted: Path, agent_dir: str, relative: str, *, cap: int, seconds: float = AGENT_FILE_SECONDS
) -> bytes:
    """read_agent_file in a worker thread, given up after `seconds` even if the thread is stuck in a
    system call (a file on a hung mount): the caller never waits longer."""
    call = functools.partial(read_agent_file, trusted, agent_dir, relative, cap=cap, seconds=seconds)
    return await _in_thread(call, seconds, f"reading {relative}")


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One entry of a directory an agent writes, as lstat sees it (links are not followed)."""

    name: str
    kind: Literal["file", "dir", "link", "other"]
    size: int
    modified: float
    uid: int


def list_agent_dir(
    trusted: Path, agent_dir: str, relative: str, *, limit: int, seconds: float = AGENT_FILE_SECONDS
) -> tuple[list[DirEntry], bool]:
    """The entries of directory `trusted/agent_dir/relative` ("" the agent dir itself), by name, and
    whether there were more than `limit`. Every component is opened as read_agent_file opens them
    (a link anywhere on the way is refused); the entries are lstat'ed relative to the directory's
    descriptor, never followed. Raises UnsafeFile (FileMissing when it is not there)."""
    deadline = time.monotonic() + seconds
    inside = agent_path_parts(relative) if relative.strip() not in ("", ".") else []
    entries: list[DirEntry] = []
    with _descriptors(f"{relative or agent_dir} cannot be listed") as fds:
        _open_dirs(trusted, agent_dir, inside, fds)
        with os.scandir(fds[-1]) as listing:
            for entry in listing:
                if time.monotonic() > deadline:
                    raise UnsafeFile(f"listing {relative or agent_dir} took longer than {seconds:g} s")
                if len(entries) > limit:
                    break
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed meanwhile
                entries.append(
                    DirEntry(entry.name, _entry_kind(info.st_mode), info.st_size, info.st_mtime, info.st_uid)
                )
    entries.sort(key=lambda e: (e.kind != "dir", e.name))
    return entries[:limit], len(entries) > limit


async def list_agent_dir_async(
    trusted: Path, agent_dir: str, relative: str, *, limit: int, seconds: float = AGENT_FILE_SECONDS
) -> tuple[list[DirEntry], bool]:
    """list_agent_dir in a worker thread, given up after `seconds` like read_agent_file_async."""
    call = functools.partial(list_agent_dir, trusted, agent_dir, relative, limit=limit, seconds=seconds)
    return await _in_thread(call, seconds, f"listing {relative or agent_dir}")


async def _in_thread(call: Callable[[], T], seconds: float, what: str) -> T:
    """`call` in a worker thread, abandoned after `seconds` (and a margin) even if the thread is stuck."""
    try:
        with anyio.fail_after(seconds + 0.5):
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except TimeoutError:
        raise UnsafeFile(f"{what} took longer than {seconds:g} s") from None


@contextlib.contextmanager
def _descriptors(failure: str) -> Iterator[list[int]]:
    """A list the caller appends the descriptors it opens to, all closed at the end; an OSError
    meanwhile becomes UnsafeFile("<failure>: <why>")."""
    fds: list[int] = []
    try:
        yield fds
    except UnsafeFile:
        raise
    except OSError as e:
        raise UnsafeFile(f"{failure}: {e.strerror}") from None
    finally:
        for fd in reversed(fds):
            with contextlib.suppress(OSError):
                os.close(fd)


def _open_dirs(trusted: Path, agent_dir: str, inside: list[str], fds: list[int]) -> None:
    """Open `trusted`, then `agent_dir` and each of `inside` relative to the one before, without
    following a link; the descriptors are appended to `fds` (the caller closes them)."""
    fds.append(os.open(trusted, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
    for i, part in enumerate([agent_dir, *inside]):
        where = "/".join(inside[:i]) or f"the agent's {agent_dir} dir"  # messages name paths inside it
        fds.append(_open_component(part, fds[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK, where))


EntryKind = Literal["file", "dir", "link", "other"]
_ENTRY_KINDS: Final[dict[int, EntryKind]] = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link"}


def _entry_kind(mode: int) -> EntryKind:
    return _ENTRY_KINDS.get(stat.S_IFMT(mode), "other")


def agent_path_parts(relative: str) -> list[str]:
    """The components of a path relative to an agent's dir; UnsafeFile unless it stays inside."""
    if not relative or "\0" in relative:
        raise UnsafeFile("give a path relative to the agent's dir, e.g. notes.md")
    if relative.startswith("/"):
        raise UnsafeFile(f"{relative} is absolute; give a path relative to the agent's dir")
    parts = [p for p in PurePosixPath(relative).parts if p != "."]
    if ".." in parts:
        raise UnsafeFile(f"{relative} contains '..'; only paths inside the agent's dir can be read")
    if not parts:
        raise UnsafeFile("give a file's path, not the directory itself")
    return parts


def _open_component(name: str, dir_fd: int, flags: int, where: str) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise FileMissing(f"{where} does not exist") from None
    except NotADirectoryError:
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise UnsafeFile(f"{where} is a symbolic link; links are not followed") from None
        raise UnsafeFile(f"{where} is not a directory") from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # the component is a symlink
            raise UnsafeFile(f"{where} is a symbolic link; links are not followed") from None
        raise UnsafeFile(f"{where} cannot be opened: {e.strerror}") from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"
