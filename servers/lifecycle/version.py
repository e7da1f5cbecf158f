"""Which hyperhive is installed: what each agent's sandbox is recorded as built with.

The distribution's version alone would never tell an upgrade (it stays the same across every
build of a release, and across every patch a Nix build or a checkout carries), so it comes with a
digest of the installed package's own files: anything that changes what runs makes the agents
built before it stale ("needs update"), and nothing else does.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Iterable, Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Final

PACKAGES: Final = ("hyperhive.servers", "hyperhive.harness", "hyperhive.ui")
DIGEST_CHARS: Final = 16  # of the sha256, in hex: enough to tell builds apart
_SKIPPED_DIRS: Final = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES: Final = (".pyc", ".pyo")  # compiled caches: they change without the code changing


@functools.cache
def installed_version() -> str:
    """`VERSION+DIGEST`, e.g. `0.1.0+3f2a9c01d4e5b6a7`: the distribution's version and its files' digest."""
    return f"{package_version('hyperhive')}+{package_digest(package_roots())}"


def package_roots() -> list[Path]:
    """The directories the installed hyperhive packages are imported from (site-packages, the Nix
    store, or an editable checkout), without importing them."""
    roots: list[Path] = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            roots.extend(Path(location) for location in spec.submodule_search_locations)
    return roots


def package_digest(roots: Iterable[Path]) -> str:
    """sha256 over every file under `roots`: each one's place, path, size and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for index, root in enumerate(roots):
        for path in sorted(_files(root)):
            data = path.read_bytes()
            digest.update(f"{index}\0{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()[:DIGEST_CHARS]


def _files(root: Path) -> Iterator[Path]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        for name in files:
            path = Path(directory, name)
            if not name.endswith(_SKIPPED_SUFFIXES) and path.is_file():
                yield path
