"""What agent.toml may bind into an agent's sandbox besides its own dirs: the hive's shared
workspace (`shared`), and extra host paths (`[[binds]]`). The checks here need nothing but the
paths themselves (agent.toml's parse); the lifecycle server adds the hive's own (its home) and,
at each start, the host's filesystem (host_binds.py)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Final, Literal

from pydantic import BaseModel, Field, field_validator

from hyperhive.servers.common.config_parsing import STRICT

SharedMode = Literal["rw", "ro", "none"]
SHARED_MOUNT: Final = PurePosixPath("/hive/shared")  # where every sandbox sees <home>/shared
MAX_BINDS: Final = 32

# Bind paths are word-split by a nixos-container's start script and split on ':' by nspawn: only
# characters that survive both are allowed (the same rule for every backend).
BIND_PATH_RE: Final = re.compile(r"/[A-Za-z0-9._+@%=,~/-]*")

# Host paths no agent may have: the system's own dirs, and anything over them ("/", "/var").
SYSTEM_DIRS: Final = tuple(
    PurePosixPath(p)
    for p in (
        "/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
        "/libx32", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/cache", "/run", "/nix",
    )
)  # fmt: skip
# Sandbox paths a bind may not cover, shadow or sit in: where the sandbox keeps its own things.
SANDBOX_DIRS: Final = tuple(
    PurePosixPath(p)
    for p in (
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/proc", "/sys", "/dev", "/tmp",
        "/run", "/nix", "/var/lib", "/hive",
    )
)  # fmt: skip


def overlaps(a: PurePosixPath, b: PurePosixPath) -> bool:
    """One is the other, or inside it."""
    return a == b or a in b.parents or b in a.parents


def bind_path(text: str, what: str) -> PurePosixPath:
    """`text` as an absolute, normalised path ('//' and a trailing '/' folded, '.' dropped);
    ValueError saying why for a relative one, one with '..' or characters a bind cannot carry."""
    if not text.startswith("/"):
        raise ValueError(f"{what} {text!r} must be an absolute path")
    parts = PurePosixPath(text).parts
    if ".." in parts:
        raise ValueError(f"{what} {text!r} contains '..'; give the path it means")
    path = PurePosixPath("/", *(p for p in parts[1:] if p != "."))
    if not BIND_PATH_RE.fullmatch(str(path)):
        raise ValueError(f"{what} {text!r} may use only letters, digits and ._+@%=,~/-")
    return path


class Bind(BaseModel):
    """agent.toml [[binds]]: the host's `host` at `path` in the sandbox, read-only unless mode = "rw"."""

    model_config = STRICT

    host: Annotated[str, Field(min_length=1, max_length=1000)]
    path: Annotated[str, Field(min_length=1, max_length=1000)]
    mode: Literal["ro", "rw"] = "ro"

    @field_validator("host")
    @classmethod
    def _host(cls, text: str) -> str:
        return _place(text, "host", "is the whole host", SYSTEM_DIRS, "the host's system dir {}")

    @field_validator("path")
    @classmethod
    def _path(cls, text: str) -> str:
        return _place(
            text, "path", "would cover the whole sandbox", SANDBOX_DIRS, "{}, which the sandbox keeps for itself"
        )


def _place(text: str, what: str, whole: str, refused: tuple[PurePosixPath, ...], says: str) -> str:
    path = bind_path(text, what)
    if path == PurePosixPath("/"):
        raise ValueError(f"{what} '/' {whole}; bind the directory the agent needs")
    if (place := first_overlap(path, refused)) is not None:
        raise ValueError(f"{what} {text!r} is (or holds, or is inside) " + says.format(place))
    return str(path)


def first_overlap(path: PurePosixPath, places: tuple[PurePosixPath, ...]) -> PurePosixPath | None:
    """The first of `places` that `path` is, holds or is inside."""
    return next((place for place in places if overlaps(path, place)), None)


def check_binds(binds: list[Bind]) -> list[Bind]:
    """No more than MAX_BINDS, and no two at the same place in the sandbox (one would hide the other)."""
    if len(binds) > MAX_BINDS:
        raise ValueError(f"{len(binds)} binds; at most {MAX_BINDS}")
    for i, bind in enumerate(binds):
        for other in binds[i + 1 :]:
            if overlaps(PurePosixPath(bind.path), PurePosixPath(other.path)):
                raise ValueError(f"binds at {bind.path} and {other.path} overlap; give each its own place")
    return binds
