"""Dropping root for good: one way, for every process that does (the dashboard, `hive claude`,
the sandbox network keeper). Only `os`: the keeper imports little on purpose."""

from __future__ import annotations

import os


def drop_to(uid: int, gid: int) -> None:
    """Become uid/gid for good: no supplementary groups, and the real, effective and saved ids all
    set, so nothing can switch back. Raises OSError (PermissionError) where that is not allowed."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):  # never carry on half-dropped
        raise PermissionError(f"could not drop to uid {uid}, gid {gid}")
