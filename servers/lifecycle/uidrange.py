"""Each hive home's block of host uids for its agents, from a registry shared by the whole host.

Two hives on one host (two homes, each with its own lifecycle server running as root) must not
give their agents the same uids: an agent of one could then read the other's files. The registry
is one root-owned file, `/var/lib/hyperhive-uids` (it must survive reboots, so not under /run;
$HIVE_UID_REGISTRY names another, for tests), with one line per home: `START COUNT HOME`. It is
read and written under flock. A home keeps its block in `<home>/uid-range` too, so it gets the
same uids after a restart; a block recorded for a home that another live home (its hive.toml
still there) holds is refused with a clear error. Lines of homes that are gone are dropped.
"""

from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hyperhive.servers.common.files import write_atomic

REGISTRY_ENV: Final = "HIVE_UID_REGISTRY"
DEFAULT_REGISTRY: Final = Path("/var/lib/hyperhive-uids")
HOME_RECORD: Final = "uid-range"
RANGE_SIZE: Final = 10_000
MAX_UID: Final = 2**31 - 2  # below the "no uid" values (uid_t -1)


class UidRangeError(Exception):
    """This home cannot have the uids it needs; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class UidRange:
    start: int
    count: int

    @property
    def end(self) -> int:
        """One past the last uid of the block."""
        return self.start + self.count

    def overlaps(self, other: UidRange) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.start}-{self.end - 1}"


def registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def claim(home: Path, base: int, registry: Path | None = None) -> UidRange:
    """The block of uids `home` owns on this host: its recorded one, or a free one from `base` up."""
    home = home.resolve()
    registry = registry or registry_path()
    registry.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(registry, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "r+") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise UidRangeError(
                f"{registry} must be a regular file owned by uid {os.geteuid()} that nobody else may write "
                f"(it is owned by uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); fix or remove it"
            )
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file closes
        entries = _parse(file.read())
        others = {other: block for other, block in entries.items() if other != home and _live(other)}
        block = _recorded(home) or _free_block(base, list(others.values()))
        for other, held in others.items():
            if held.overlaps(block):
                raise UidRangeError(
                    f"this home's agent uids {block} overlap uids {held} of the hive at {other} (host registry "
                    f"{registry}); two hives must not share uids. Remove {home / HOME_RECORD} and set another "
                    f"[lifecycle] uid_base in hive.toml, or remove that hive's line if it is gone"
                )
        others[home] = block
        file.seek(0)
        file.truncate()
        file.write("".join(f"{held.start} {held.count} {path}\n" for path, held in sorted(others.items())))
        file.flush()
        os.fsync(fd)
    write_atomic(home / HOME_RECORD, f"{block.start} {block.count}\n")
    return block


def _parse(text: str) -> dict[Path, UidRange]:
    entries: dict[Path, UidRange] = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            entries[Path(parts[2])] = UidRange(int(parts[0]), int(parts[1]))
    return entries


def _live(home: Path) -> bool:
    return (home / "hive.toml").exists()


def _recorded(home: Path) -> UidRange | None:
    try:
        start, count = (home / HOME_RECORD).read_text().split()
        return UidRange(int(start), int(count))
    except FileNotFoundError:
        return None
    except ValueError:
        raise UidRangeError(f"{home / HOME_RECORD} is not 'START COUNT'; fix or remove it") from None


def _free_block(base: int, held: list[UidRange]) -> UidRange:
    start = base
    while start + RANGE_SIZE <= MAX_UID:
        block = UidRange(start, RANGE_SIZE)
        clash = [other for other in held if other.overlaps(block)]
        if not clash:
            return block
        start = max(other.end for other in clash)
    raise UidRangeError(f"no free block of {RANGE_SIZE} uids from {base} up on this host")
