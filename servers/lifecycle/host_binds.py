"""The shared workspace and agent.toml's [[binds]] on this host: refused over the hive's home (where
every agent's dirs, tokens and databases are), resolved at each start, and the shared dir made.

agent.toml's parse refuses what is wrong whatever the hive (servers/common/binds.py); here the
hive's home is added (at request and apply, through provisioning.validate), and at each start the
host's filesystem: the host path must exist, be a directory or a regular file, and be reached
without a link (it is checked again once resolved, and that resolved path is what is bound).
"""

from __future__ import annotations

import contextlib
import grp
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Final

from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.binds import SHARED_MOUNT, SYSTEM_DIRS, first_overlap, overlaps
from hyperhive.servers.lifecycle.backends.base import BackendError, Mount

SHARED_DIR: Final = "shared"  # <home>/shared
SHARED_MODE: Final = 0o2770  # setgid: what an agent makes there is the hive group's


def home_problems(home: Path, config: AgentConfig) -> list[str]:
    """What in `config`'s binds reaches into or over the hive's home (its agents' dirs, tokens,
    databases, the shared dir). The home is compared as written and as resolved."""
    homes = {PurePosixPath(home), PurePosixPath(os.path.realpath(home))}
    problems = []
    for bind in config.binds:
        for where, what in ((bind.host, "host"), (bind.path, "path")):
            for place in homes:
                if overlaps(PurePosixPath(where), place):
                    problems.append(
                        f"binds: {what} {where} is (or holds, or is inside) the hive's home {place}, where every "
                        "agent's dirs and tokens are; bind a directory outside it"
                    )
                    break
    return problems


def mounts(home: Path, config: AgentConfig) -> tuple[Mount, ...]:
    """The shared workspace (unless shared = "none") and [[binds]], as host paths checked now."""
    found = []
    if config.shared != "none":
        found.append(Mount(home / SHARED_DIR, Path(SHARED_MOUNT), read_only=config.shared == "ro"))
    if problems := home_problems(home, config):
        raise BackendError("; ".join(problems))
    for bind in config.binds:
        found.append(Mount(resolved_host(bind.host), Path(bind.path), read_only=bind.mode == "ro"))
    return tuple(found)


def resolved_host(host: str) -> Path:
    """`host`, which must exist, be a directory or a regular file, and have no link on its way."""
    real = os.path.realpath(host)
    if real != host:
        raise BackendError(
            f"binds: host {host} leads through a link (to {real}); name the real path in agent.toml, "
            "links are not followed"
        )
    try:
        mode = os.lstat(real).st_mode
    except FileNotFoundError:
        raise BackendError(f"binds: host {host} does not exist; make it, or drop the bind from agent.toml") from None
    except OSError as e:
        raise BackendError(f"binds: host {host} cannot be checked: {e.strerror}") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise BackendError(f"binds: host {host} is neither a directory nor a regular file")
    if (system := first_overlap(PurePosixPath(real), SYSTEM_DIRS)) is not None:  # again, resolved
        raise BackendError(f"binds: host {host} is (or holds, or is inside) the host's system dir {system}")
    return Path(real)


def make_shared_dir(home: Path, gid: int | None) -> Path:
    """<home>/shared, made if missing, the hive group's (`gid`; None: not root, every agent is this
    server's uid) with the setgid bit. Never follows a link: the home is ours, but what agents wrote
    inside the dir is theirs and nothing here opens it."""
    directory = home / SHARED_DIR
    if gid is not None:
        with contextlib.suppress(KeyError):
            group = grp.getgrgid(gid).gr_name
            raise BackendError(
                f"the hive's shared group gid {gid} is the host's group {group!r}, whose members would reach "
                "every agent's /hive/shared; set [lifecycle] uid_base in hive.toml to a free block"
            )
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise BackendError(
            f"{directory} is not a directory (a link?): {e.strerror}; remove it and start again"
        ) from None
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise BackendError(f"{directory} is not owned by uid {os.geteuid()}; remove it and start again")
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, SHARED_MODE if gid is not None else 0o700)
    finally:
        os.close(fd)
    return directory
