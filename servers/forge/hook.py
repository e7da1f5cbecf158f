"""The forge's pre-receive hook: `python -m hyperhive.servers.forge.hook`, run by git receive-pack.

It refuses a push that would make the repo bigger than [forge] max_repo_size, or that touches a path
another holds an exclusive reservation on (push_reservations.py). git keeps a push's objects in a
quarantine directory inside objects/ until this hook passes, so measuring objects/ measures the repo
as it would be; a refused push's objects are deleted by git and no ref moves: the repo stays as it
was, whole (the hook sees every ref update of the push at once, on stdin as "<old> <new> <ref>"
lines). What it reads comes from the forge's CGI environment (never the client's): the repo's name,
the limit, the pusher (REMOTE_USER), the forge's database, instances dir and time.
It runs as a fresh interpreter for every push: it imports nothing heavy (no MCP stack, no pydantic;
tests/unit/test_forge_hook.py checks), so a push does not wait a second for imports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from hyperhive.servers.forge import push_reservations
from hyperhive.servers.forge.disk import tree_size

REPO_ENV: Final = "HYPERHIVE_FORGE_REPO"
LIMIT_ENV: Final = "HYPERHIVE_FORGE_MAX_REPO_BYTES"

Update = tuple[str, str, str]  # old, new, ref
Check = Callable[[Path, Sequence[Update]], str | None]  # (git dir, updates) -> why the push is refused


def size_check(git_dir: Path, updates: Sequence[Update]) -> str | None:
    limit = int(os.environ.get(LIMIT_ENV, "0") or 0)
    if limit <= 0:
        return None
    size = tree_size(git_dir / "objects")
    if size <= limit:
        return None
    repo = os.environ.get(REPO_ENV, git_dir.name.removesuffix(".git"))
    return (
        f"hyperhive forge: this push would make repo {repo} {_mb(size)}, past the forge's limit of {_mb(limit)} "
        "([forge] max_repo_size); the repo is unchanged. Push less (drop large files or build output) or ask "
        "the operator to raise the limit."
    )


CHECKS: Final[tuple[Check, ...]] = (size_check, push_reservations.reservation_check)


def main(stdin: Sequence[str] | None = None) -> int:
    lines = sys.stdin.read().splitlines() if stdin is None else stdin
    updates: list[Update] = []
    for line in lines:
        old, _, rest = line.partition(" ")
        new, _, ref = rest.partition(" ")
        if ref:
            updates.append((old, new, ref))
    git_dir = Path(os.environ.get("GIT_DIR", ".")).resolve()
    for check in CHECKS:
        why = check(git_dir, updates)
        if why:
            print(why, file=sys.stderr)
            return 1
    return 0


def _mb(size: int) -> str:
    return f"{size / 1024**2:.1f} MB"


if __name__ == "__main__":
    sys.exit(main())
