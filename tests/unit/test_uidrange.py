"""The host-wide registry of hive homes' uid blocks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hyperhive.servers.lifecycle.uidrange import RANGE_SIZE, UidRange, UidRangeError, claim


def _home(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "hive.toml").write_text("")
    return path


def test_two_homes_get_blocks_of_their_own_and_keep_them(tmp_path: Path) -> None:
    registry = tmp_path / "var" / "uids"
    one, two = _home(tmp_path / "one"), _home(tmp_path / "two")
    first = claim(one, 200_000, registry)
    second = claim(two, 200_000, registry)  # same uid_base: it gets the next free block
    assert first == UidRange(200_000, RANGE_SIZE) and second == UidRange(200_000 + RANGE_SIZE, RANGE_SIZE)
    assert not first.overlaps(second)
    assert claim(one, 200_000, registry) == first and claim(two, 1000, registry) == second  # recorded
    assert (two / "uid-range").read_text() == f"{second.start} {second.count}\n"
    assert registry.read_text().splitlines() == [
        f"200000 {RANGE_SIZE} {one.resolve()}",
        f"{200_000 + RANGE_SIZE} {RANGE_SIZE} {two.resolve()}",
    ]


def test_a_block_another_live_home_holds_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "uids"
    one, two = _home(tmp_path / "one"), _home(tmp_path / "two")
    claim(one, 200_000, registry)
    (two / "uid-range").write_text(f"205000 {RANGE_SIZE}\n")  # e.g. a copy of another home
    with pytest.raises(UidRangeError, match=f"overlap uids 200000-{200_000 + RANGE_SIZE - 1} of the hive at"):
        claim(two, 200_000, registry)
    shutil.rmtree(one)  # that hive is gone: its block is free again
    assert claim(two, 200_000, registry) == UidRange(205_000, RANGE_SIZE)
    assert str(one.resolve()) not in registry.read_text()


def test_a_registry_others_may_write_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "uids"
    registry.write_text("")
    registry.chmod(0o666)
    with pytest.raises(UidRangeError, match="nobody else may write"):
        claim(_home(tmp_path / "one"), 200_000, registry)
