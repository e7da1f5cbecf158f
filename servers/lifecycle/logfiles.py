"""Per-agent log files: the sandbox writes its output there (O_APPEND); the lifecycle server adds
timestamped marker lines, rotates by size (copy, then truncate: the sandbox's open file keeps
appending) and reads the end back. Synchronous: callers run these in a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Final

from hyperhive.servers.common.clock import iso, parse_iso

_STAMP: Final = re.compile(r"^\[?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))\]?")
_BLOCK: Final = 64 * 1024
SCAN_MAX: Final = 16 * 1024 * 1024  # bytes one tail reads back at most (both files together)
RETURN_MAX: Final = 256 * 1024  # characters it returns at most
LINE_MAX: Final = 64 * 1024  # a longer line is cut, with a marker saying by how much


def mark(path: Path, when: float, text: str) -> None:
    """Append a line from hyperhive itself, stamped so `since` can find it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, f"[{iso(when)}] hyperhive: {text}\n".encode())
    finally:
        os.close(fd)


def one_line(text: str) -> str:
    """`text` with its line breaks written as \\n, so it stays one log line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def tail(path: Path, lines: int, since: float | None = None) -> list[str]:
    """The last `lines` lines (reaching into the rotated file when needed), oldest first.

    With `since`, only lines at or after it. Lines carry a leading ISO timestamp when hyperhive
    or the harness wrote them; a line without one belongs to the time of the line before it.

    The sandbox writes what it likes into its log, so this is bounded whatever the file holds: at
    most SCAN_MAX bytes are read (backwards, in blocks), a line is cut after LINE_MAX bytes and
    at most RETURN_MAX bytes are returned; a marker line says when older lines were left out.
    """
    found: list[str] = []  # newest first
    budget = _Budget()
    for file in (path, path.with_name(path.name + ".1")):
        if len(found) >= lines or budget.spent:
            break
        found += _last_lines(file, lines - len(found), budget)
    if budget.spent:
        found.append(f"[… older lines left out: {budget.why}]")
    found.reverse()
    if since is None:
        return found[-lines:] if len(found) > lines else found
    kept, current = [], None
    for line in found:
        match = _STAMP.match(line)
        if match:
            with contextlib.suppress(ValueError):
                current = parse_iso(match.group(1))
        if current is not None and current >= since:
            kept.append(line)
    return kept[-lines:]


def rotate_if_large(path: Path, max_bytes: int, keep: int) -> bool:
    """If `path` is over `max_bytes`: log.1 -> log.2 ..., copy log to log.1, truncate log. True if rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    with path.open("r+b") as f:
        f.truncate(0)
    return True


def remove_all(path: Path) -> None:
    for file in [path, *path.parent.glob(path.name + ".*")]:
        file.unlink(missing_ok=True)


class _Budget:
    """What one tail may still read and return."""

    def __init__(self) -> None:
        self.scan = SCAN_MAX
        self.out = RETURN_MAX
        self.why = ""

    @property
    def spent(self) -> bool:
        return bool(self.why)


def _last_lines(path: Path, wanted: int, budget: _Budget) -> list[str]:
    """Up to `wanted` lines from the end of `path`, newest first, within `budget`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    result: list[str] = []
    with os.fdopen(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        position = f.seek(0, os.SEEK_END)
        line = bytearray()  # the start of the line being read backwards: its first LINE_MAX bytes at most
        length = 0  # the whole line's length so far
        at_end = True  # the file's last byte, when a newline, ends the last line rather than starting one

        def finish(complete: bool) -> bool:
            """Add the line read so far; False once nothing more may be added."""
            text = line[:LINE_MAX].decode(errors="replace")
            if length > LINE_MAX:
                text += f" … [{length - LINE_MAX:,} more bytes of this line cut]"
            if not complete:
                text = "[… the start of this line was not read] " + text
            if len(text) > budget.out:
                budget.why = f"more than {RETURN_MAX // 1024} KiB"
                return False
            budget.out -= len(text)
            result.append(text)
            return len(result) < wanted

        while position > 0:
            if budget.scan <= 0:
                budget.why = f"only the last {SCAN_MAX // (1024 * 1024)} MiB are read back"
                if length and len(result) < wanted:
                    finish(complete=False)
                return result
            size = min(_BLOCK, position, budget.scan)
            position -= size
            budget.scan -= size
            f.seek(position)
            block = f.read(size)
            end = len(block)
            if at_end and block.endswith(b"\n"):
                end -= 1
            at_end = False
            while True:
                newline = block.rfind(b"\n", 0, end)
                piece = block[newline + 1 : end]
                length += len(piece)
                line[0:0] = piece
                del line[LINE_MAX:]  # keep the line's start; the rest is cut
                if newline < 0:
                    break
                if not finish(complete=True):
                    return result
                line.clear()
                length = 0
                end = newline
        if length or line:
            finish(complete=True)  # the file's first line
    return result[:wanted]
