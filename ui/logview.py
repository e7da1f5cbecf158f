"""An agent's log as its page shows it: the lines kept, each with its level, which new lines a poll
brought, and which lines a level and a search let through. Pure (no NiceGUI), for tests.

The log is what the sandbox wrote (the harness's logging lines, Claude Code's output, tracebacks)
and hyperhive's own marker lines ("[time] hyperhive: sandbox ended (exit 1)"). A line names its
level when Python's logging wrote it ("2026-11-21 15:30:00,123 alice hyperhive.harness WARNING …");
a traceback's lines and other continuations take the level of the line before them.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

Level = Literal["debug", "info", "warning", "error"]
LEVELS: Final[tuple[Level, ...]] = ("debug", "info", "warning", "error")
_RANK: Final[dict[Level, int]] = {level: rank for rank, level in enumerate(LEVELS)}
_NAMED: Final[dict[str, Level]] = {
    "DEBUG": "debug", "INFO": "info", "WARNING": "warning", "WARN": "warning",
    "ERROR": "error", "CRITICAL": "error", "FATAL": "error",
}  # fmt: skip
_LEVEL: Final = re.compile(r"\b(" + "|".join(_NAMED) + r")\b")
_LEVEL_WITHIN: Final = 160  # the level is in a line's prefix (time, agent, logger), not in its message
_CONTINUATION: Final = re.compile(
    r"^(\s|Traceback \(most recent call last\)|During handling of|The above exception"
    r"|[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b)"
)
OVERLAP: Final = 20  # lines of the kept tail a fetched tail must repeat to say where the new ones start
GAP: Final = "[… lines may be missing here: more were written between two looks than one look reads]"


@dataclass(frozen=True, slots=True)
class LogLine:
    text: str
    level: Level


def line_level(text: str, previous: Level) -> Level:
    """The level `text` names in its prefix; a continuation (a traceback's lines) the previous line's."""
    found = _LEVEL.search(text, 0, _LEVEL_WITHIN)
    if found:
        return _NAMED[found.group(1)]
    if _CONTINUATION.match(text):
        return previous
    return "info"


def new_lines(kept: list[str], fetched: list[str]) -> tuple[list[str], bool]:
    """The lines of `fetched` (the log's end now) that came after `kept` (the end seen before), and
    whether some may be missing between them (`fetched` does not reach back to `kept`'s end).

    Where `kept` ends is found by its last OVERLAP lines, so a line repeated in the log (a
    heartbeat) is not taken for the last one seen unless what came before it matches too.
    """
    if not kept or not fetched:
        return list(fetched), False
    for end in range(len(fetched) - 1, -1, -1):
        width = min(len(kept), end + 1, OVERLAP)
        if fetched[end + 1 - width : end + 1] == kept[-width:]:
            return fetched[end + 1 :], False
    return list(fetched), True


def passes(line: LogLine, level: Level, search: str) -> bool:
    """Whether `line` is at `level` or above and holds `search` (any case; '' holds everywhere)."""
    return _RANK[line.level] >= _RANK[level] and (not search or search.casefold() in line.text.casefold())


class LogBuffer:
    """The newest `keep` lines of an agent's log, with their levels."""

    def __init__(self, keep: int) -> None:
        self.lines: deque[LogLine] = deque(maxlen=keep)
        self._tail: deque[str] = deque(maxlen=OVERLAP)  # the raw end last seen

    def add(self, fetched: list[str]) -> list[LogLine]:
        """Take the log's end as a poll read it; the lines that are new (a gap marker first if some
        may be missing)."""
        fresh, gap = new_lines(list(self._tail), fetched)
        added: list[LogLine] = []
        previous: Level = self.lines[-1].level if self.lines else "info"
        if gap:
            added.append(LogLine(GAP, "warning"))
        for text in fresh:
            previous = line_level(text, previous)
            added.append(LogLine(text, previous))
        self.lines.extend(added)
        self._tail.extend(fresh)
        return added

    def matching(self, level: Level, search: str) -> list[LogLine]:
        return [line for line in self.lines if passes(line, level, search)]
