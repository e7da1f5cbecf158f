"""What an agent is recorded as built with: the installed hyperhive's version and its files' digest."""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path

from hyperhive.servers.lifecycle import version
from hyperhive.servers.lifecycle.version import installed_version, package_digest, package_roots


def _tree(root: Path) -> Path:
    (root / "lifecycle" / "__pycache__").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "lifecycle" / "supervisor.py").write_text("STEADY = 600\n")
    (root / "lifecycle" / "__pycache__" / "supervisor.cpython-311.pyc").write_bytes(b"\x00compiled")
    return root


def test_the_digest_changes_with_any_file_of_the_package_and_nothing_else(tmp_path: Path) -> None:
    root = _tree(tmp_path / "servers")
    first = package_digest([root])
    assert package_digest([root]) == first and len(first) == version.DIGEST_CHARS

    (root / "lifecycle" / "__pycache__" / "supervisor.cpython-311.pyc").write_bytes(b"recompiled")
    (root / "lifecycle" / "stale.pyc").write_bytes(b"x")
    assert package_digest([root]) == first  # caches are not what runs

    (root / "lifecycle" / "supervisor.py").write_text("STEADY = 601\n")  # an upgrade that changed one line
    edited = package_digest([root])
    assert edited != first
    (root / "lifecycle" / "supervisor.py").rename(root / "lifecycle" / "policy.py")  # the same bytes, moved
    assert package_digest([root]) not in (first, edited)
    (root / "lifecycle" / "policy.py").rename(root / "lifecycle" / "supervisor.py")
    (root / "static.css").write_text("")  # a file more, even an empty one
    assert package_digest([root]) not in (first, edited)


def test_the_same_files_in_another_package_digest_differently(tmp_path: Path) -> None:
    one, two = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert package_digest([one]) == package_digest([two])  # where it is installed does not matter
    assert package_digest([one, two]) != package_digest([one])


def test_the_installed_version_is_the_release_and_the_digest_of_what_is_installed() -> None:
    roots = package_roots()
    assert Path(version.__file__).parent.parent in roots  # servers/, wherever it is installed
    assert len(roots) == len(version.PACKAGES)
    assert installed_version() == f"{package_version('hyperhive')}+{package_digest(roots)}"
    assert installed_version() != package_version("hyperhive")  # the release alone never changes
