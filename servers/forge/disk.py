"""How much a repo takes on disk, for the forge and its pre-receive hook (hook.py).

Kept apart from gitrepo.py, and importing nothing of hyperhive's: the hook runs as a fresh
interpreter for every push, and the MCP stack gitrepo's errors bring costs about a second to import.
"""

from __future__ import annotations

import os
from pathlib import Path


def tree_size(path: Path) -> int:
    """Bytes in the files under `path`, links not followed."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total
