"""How much an agent's state dir holds, against its budget (agent.toml / hive.toml [sandbox] state_max).

The dir is the agent's own, so hostile: the walk follows no link, crosses no mount, and stops at
a time bound; what it has counted by then is a lower bound, enough to tell "over budget".
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

WALK_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int  # disk space of its files (allocated blocks, so a sparse file counts what it holds)
    complete: bool  # False: the walk ran out of time, `bytes` is a lower bound


def usage(root: Path, seconds: float = WALK_SECONDS) -> Usage:
    """Disk space used under `root`, without following links or leaving its filesystem."""
    deadline = time.monotonic() + seconds
    try:
        device = root.lstat().st_dev
    except OSError:
        return Usage(0, True)
    total = 0
    stack = [str(root)]
    while stack:
        if time.monotonic() > deadline:
            return Usage(total, False)
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode) and info.st_dev == device:
                        stack.append(entry.path)
        except OSError:
            continue
    return Usage(total, True)


def human(size: int) -> str:
    """1.5G, 512M, 12K: sizes as hive.toml writes them."""
    for unit, scale in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + unit
    return f"{size}B"


def over_budget_message(name: str, used: Usage, budget: int) -> str:
    at_least = "" if used.complete else "at least "
    return (
        f"{name}'s state dir holds {at_least}{human(used.bytes)}, past its budget of {human(budget)} "
        f"([sandbox] state_max); free space in it or raise state_max, then start it"
    )
