"""Per-agent log files: the sandbox writes its output there (O_APPEND); the lifecycle server adds
timestamped marker lines, rotates by size (copy, then truncate: the sandbox's open file keeps
appending) and reads the end back. Synchronous: callers run these in a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Final

from hyperhive.servers.common.clock import iso, parse_iso

_STAMP: Final = re.compile(r"^\[?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))\]?")
_BLOCK: Final = 64 * 1024


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
    """
    found: list[str] = []
    for file in (path, path.with_name(path.name + ".1")):
        if len(found) >= lines:
            break
        found = _last_lines(file, lines - len(found)) + found
    if since is None:
        return found[-lines:]
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


def _last_lines(path: Path, wanted: int) -> list[str]:
    """Read backwards from the end in blocks until `wanted` whole lines are in hand."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= wanted:
            position = max(0, position - _BLOCK)
            f.seek(position)
            data = f.read(end - position)
    text = data.decode(errors="replace")
    result = text.splitlines()
    if position > 0 and result:
        result = result[1:]  # the first line is cut in the middle
    return result[-wanted:] if wanted > 0 else []
