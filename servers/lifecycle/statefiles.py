"""Reading a file from an agent's state dir for the operator, safely.

The agent owns that directory and may have put anything there: symlinks pointing out of it,
fifos that block a reader, device nodes. So the path is relative with no `..`, every component
is opened relative to the one before with O_NOFOLLOW (a symlink anywhere is refused, not
followed), the last one first with O_PATH so nothing but a regular file is ever opened for
reading, and the size is capped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath


class UnsafePath(Exception):
    """The path is not a regular file inside the state dir; the message says why."""


def read_state_file(root: Path, relative: str, cap: int) -> bytes:
    parts = _parts(relative)
    fds: list[int] = []
    try:
        fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
        for i, part in enumerate(parts[:-1]):
            where = "/".join(parts[: i + 1])
            fds.append(_open(part, fds[-1], os.O_RDONLY | os.O_DIRECTORY, where))
        path_fd = _open(parts[-1], fds[-1], os.O_PATH, relative)
        fds.append(path_fd)
        mode = os.fstat(path_fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafePath(f"{relative} is {_kind(mode)}, not a regular file")
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC)
        fds.append(fd)
        size = os.fstat(fd).st_size
        if size > cap:
            raise UnsafePath(f"{relative} is {size:,} bytes; files up to {cap:,} bytes can be read")
        return os.read(fd, cap + 1)[:cap]
    finally:
        for fd in reversed(fds):
            with contextlib.suppress(OSError):
                os.close(fd)


def _parts(relative: str) -> list[str]:
    if not relative or "\0" in relative:
        raise UnsafePath("give a path relative to the agent's state dir, e.g. notes.md")
    if relative.startswith("/"):
        raise UnsafePath(f"{relative} is absolute; give a path relative to the agent's state dir")
    parts = [p for p in PurePosixPath(relative).parts if p != "."]
    if ".." in parts:
        raise UnsafePath(f"{relative} contains '..'; only paths inside the state dir can be read")
    if not parts:
        raise UnsafePath("give a file's path, not the state dir itself")
    return parts


def _open(name: str, dir_fd: int, flags: int, where: str) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise UnsafePath(f"{where} does not exist") from None
    except NotADirectoryError:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise UnsafePath(f"{where} is a symbolic link; links are not followed") from None
        raise UnsafePath(f"{where} is not a directory") from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # the component is a symlink
            raise UnsafePath(f"{where} is a symbolic link; links are not followed") from None
        raise UnsafePath(f"{where} cannot be opened: {e.strerror}") from None


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
