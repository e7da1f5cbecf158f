"""The pre-receive hook's reservation check: a push touching a path another holds exclusively is refused.

What a push touches: the files changed by the commits it brings that the repo did not hold (`git
rev-list <new>… --not --all`, run before any ref moves), each against its parent (a root commit
against nothing) and a merge by git's combined diff (the paths that differ from every parent: what
the merge itself changed, not what it brought from a branch already in the repo). A deleted ref, or
a ref moved onto commits the repo already holds, touches nothing: that content was in the forge
before, for anyone to see. The pusher's own reservations never refuse it.

The reservations are read from the forge's own database, read-only, by the rule the forge uses
(reservation_store.live), at the forge's time (its clock passed in the environment). If they cannot
be read, or git cannot list what the push changes within HOOK_SECONDS, the push is refused: an
enforced reservation that fails open would be none.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import quote

from hyperhive.servers.forge.globs import parse
from hyperhive.servers.forge.reservation_rows import ReservationRow, live, until_text

DB_ENV: Final = "HYPERHIVE_FORGE_DB"
INSTANCES_ENV: Final = "HYPERHIVE_FORGE_INSTANCES"
NOW_ENV: Final = "HYPERHIVE_FORGE_NOW"
HOOK_SECONDS: Final = 120.0
ZERO: Final = "0" * 40
MAX_SHOWN: Final = 5


def reservation_env(db: Path, instances_dir: Path, now: float) -> dict[str, str]:
    """What the forge puts in a push's CGI environment for this check."""
    return {DB_ENV: str(db), INSTANCES_ENV: str(instances_dir), NOW_ENV: repr(now)}


def reservation_check(git_dir: Path, updates: Sequence[tuple[str, str, str]]) -> str | None:
    env = os.environ
    if not env.get(DB_ENV):
        return None  # not run by the forge (a test of the size check alone)
    pusher = env.get("REMOTE_USER", "")
    repo = git_dir.name.removesuffix(".git")  # git runs the hook in the repo: <forge dir>/<name>.git
    try:
        held = [row for row in _live(env, repo) if row.exclusive and row.holder != pusher]
    except sqlite3.Error as e:
        return f"hyperhive forge: the repo's reservations could not be read ({e}); push refused. Try again."
    if not held:
        return None
    try:
        touched = changed_paths(git_dir, [new for _, new, _ in updates if new != ZERO])
    except (subprocess.SubprocessError, OSError) as e:
        return f"hyperhive forge: what this push changes could not be listed ({e}); push refused. Try again."
    patterns = [(row, parse(row.pattern)) for row in held]
    hits: list[tuple[str, ReservationRow]] = []
    for path in touched:
        for row, pattern in patterns:
            if pattern.covers(path):
                hits.append((path, row))
                break
    if not hits:
        return None
    lines = [
        f"hyperhive forge: {path} is reserved by {row.holder} until {until_text(row.expires_at)}"
        + (f" ({row.reason})" if row.reason else "")
        + f"; push refused. Ask {row.holder}, or wait."
        for path, row in hits[:MAX_SHOWN]
    ]
    if len(hits) > MAX_SHOWN:
        lines.append(f"hyperhive forge: and {len(hits) - MAX_SHOWN} more reserved paths.")
    lines.append("hyperhive forge: the repo is unchanged; reservations(repo) lists who holds what.")
    return "\n".join(lines)


def _live(env: Mapping[str, str], repo: str) -> list[ReservationRow]:
    now = float(env.get(NOW_ENV) or time.time())
    uri = f"file:{quote(env[DB_ENV])}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return live(conn, repo, now, Path(env.get(INSTANCES_ENV, "/nonexistent")))
    finally:
        conn.close()


def changed_paths(git_dir: Path, heads: Sequence[str]) -> list[str]:
    """The paths the commits reachable from `heads`, and new to the repo, change (see the module's doc).
    git runs with the hook's environment: it names the push's quarantined objects."""
    if not heads:
        return []
    deadline = time.monotonic() + HOOK_SECONDS

    def git(*args: str, stdin: bytes = b"") -> bytes:
        result = subprocess.run(
            ["git", "--git-dir", str(git_dir), *args],
            input=stdin,
            capture_output=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.SubprocessError(f"git {args[0]}: {result.stderr.decode(errors='replace').strip()[:300]}")
        return result.stdout

    commits = git("rev-list", *heads, "--not", "--all")
    if not commits.strip():
        return []
    out = git("diff-tree", "--stdin", "-r", "--root", "-c", "--name-only", "--no-commit-id", "-z", stdin=commits)
    return sorted({name.decode(errors="surrogateescape") for name in out.split(b"\0") if name})
