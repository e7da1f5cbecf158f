"""Reservations in the forge, over real HTTP with the real git CLI and the real broker: conflicts are
refused with who/until/why, a push touching another's exclusive reservation is refused whole (the
repo intact), and a reservation ends at its ttl, its release, or its holder's next instance."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Endpoint, Hive, in_process
from test_forge import git, git_url, new_work_tree, next_event

from hyperhive.servers.common.clock import ManualClock

pytestmark = pytest.mark.slow  # git processes, two servers per test


@pytest.fixture
async def forge(hive: Hive, broker: BrokerEndpoint) -> AsyncIterator[Endpoint]:
    async with in_process(hive, "forge", clock=ManualClock(start=time.time())) as endpoint:
        yield endpoint


async def shared_app(hive: Hive, forge: Endpoint, tmp_path: Path) -> tuple[str, str, Path]:
    """Agent a owns `app` (pushed once), b writes it and has a clone; returns (a, b, b's clone)."""
    a, b = hive.add_agent("a"), hive.add_agent("b")
    await forge.client(a).call("create_repo", {"name": "app"})
    await forge.client(a).call("grant", {"repo": "app", "who": b, "access": "write"})
    work = await new_work_tree(tmp_path / "a-work", {"src/api/x.py": "x = 1\n", "docs/a.md": "# A\n"})
    await git("push", "-q", git_url(forge, "app", hive.token(a)), "main", cwd=work)
    clone = tmp_path / "b-clone"
    await git("clone", "-q", git_url(forge, "app", hive.token(b)), str(clone))
    return a, b, clone


async def commit(clone: Path, files: dict[str, str], message: str = "change") -> None:
    for name, content in files.items():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_text(content)
        await git("add", name, cwd=clone)
    await git("commit", "-q", "-m", message, cwd=clone)


async def reserve(forge: Endpoint, who: str, paths: list[str], **extra: object) -> dict[str, object]:
    args: dict[str, object] = {"repo": "app", "paths": paths, "ttl_seconds": 600, **extra}
    return await forge.client(who).call("reserve", args)


async def held(forge: Endpoint, who: str = "manager") -> list[tuple[str, str, bool]]:
    rows = (await forge.client(who).call("reservations", {"repo": "app"}))["reservations"]
    return [(row["holder"], row["pattern"], row["exclusive"]) for row in rows]


async def test_a_conflicting_reservation_is_refused_with_holder_until_and_reason(
    hive: Hive, forge: Endpoint, tmp_path: Path
) -> None:
    a, b, _ = await shared_app(hive, forge, tmp_path)
    mine = await reserve(forge, a, ["src/api/**"], reason="refactoring auth")
    assert [(r["holder"], r["pattern"], r["exclusive"]) for r in mine["reservations"]] == [(a, "src/api/**", True)]
    for paths, exclusive in ((["src/api/x.py"], True), (["src/*"], False), (["**"], False)):
        with pytest.raises(
            ToolError, match=r"src/api/\*\* is reserved exclusively by a until .* UTC \(refactoring auth\)"
        ):
            await reserve(forge, b, paths, exclusive=exclusive)
    assert await held(forge) == [(a, "src/api/**", True)]  # nothing of b's was written
    await reserve(forge, b, ["docs/*.md", "src/web"])  # elsewhere: fine
    # Shared with shared is fine; exclusive over a shared one is refused.
    c = hive.add_agent("c")
    await forge.client(a).call("grant", {"repo": "app", "who": c, "access": "read"})
    await reserve(forge, c, ["lib/**"], exclusive=False)
    await reserve(forge, b, ["lib/util.py"], exclusive=False)
    with pytest.raises(ToolError, match=r"lib/\*\* is reserved \(shared\) by c"):
        await reserve(forge, a, ["lib/x"])


async def test_own_overlap_extends_and_release_lifts(hive: Hive, forge: Endpoint, tmp_path: Path) -> None:
    a, b, _ = await shared_app(hive, forge, tmp_path)
    first = (await reserve(forge, a, ["src/api"], reason="one"))["reservations"][0]
    again = (await reserve(forge, a, ["src/api", "src/api/x.py"], reason="two", ttl_seconds=3600))["reservations"]
    assert again[0]["id"] == first["id"] and again[0]["reason"] == "two" and again[0]["until"] > first["until"]
    assert await held(forge) == [(a, "src/api", True), (a, "src/api/x.py", True)]
    released = await forge.client(a).call("release", {"repo": "app", "paths": ["src/api"]})
    assert [r["pattern"] for r in released["released"]] == ["src/api"]
    with pytest.raises(ToolError, match=r"src/api/x\.py is reserved exclusively by a"):
        await reserve(forge, b, ["src/**"])
    # b cannot release a's; the manager can, and a hears of it.
    (row,) = (await forge.client(b).call("reservations", {"repo": "app"}))["reservations"]
    with pytest.raises(ToolError, match=f"reservation {row['id']} .* is a's: only its holder"):
        await forge.client(b).call("release", {"repo": "app", "ids": [row["id"]]})
    await forge.client("manager").call("release", {"repo": "app", "ids": [row["id"]]})
    assert await held(forge) == []
    await reserve(forge, b, ["src/**"])
    assert (await forge.client(a).call("release", {"repo": "app"}))["released"] == []


async def test_a_push_touching_anothers_exclusive_reservation_is_refused_whole(
    hive: Hive, forge: Endpoint, tmp_path: Path
) -> None:
    a, _, clone = await shared_app(hive, forge, tmp_path)
    await reserve(forge, a, ["src/api/**"], reason="refactoring auth")
    bare = hive.config.forge_dir / "app.git"
    refs_before = (await git("--git-dir", str(bare), "for-each-ref", cwd=tmp_path)).stdout

    # One push, two refs: one touches only docs, the other a reserved file. Neither moves.
    await git("checkout", "-q", "-b", "side", cwd=clone)
    await commit(clone, {"docs/b.md": "# B\n"})
    await git("checkout", "-q", "main", cwd=clone)
    await commit(clone, {"src/api/x.py": "x = 2\n"})
    refused = await git("push", "origin", "main", "side", cwd=clone, check=False)
    assert refused.returncode != 0
    assert "remote: hyperhive forge: src/api/x.py is reserved by a until " in refused.stderr, refused.stderr
    assert "UTC (refactoring auth); push refused. Ask a, or wait." in refused.stderr
    assert (await git("--git-dir", str(bare), "for-each-ref", cwd=tmp_path)).stdout == refs_before
    assert (await git("--git-dir", str(bare), "fsck", "--full", "--strict", cwd=tmp_path)).returncode == 0

    # The other paths alone pass.
    pushed = await git("push", "origin", "side", cwd=clone, check=False)
    assert pushed.returncode == 0, pushed.stderr

    # a's own push of the reserved path passes.
    work = tmp_path / "a-clone"
    await git("clone", "-q", git_url(forge, "app", hive.token(a)), str(work))
    await commit(work, {"src/api/x.py": "x = 3\n", "src/api/new.py": "y = 1\n"})
    assert (await git("push", "origin", "main", cwd=work, check=False)).returncode == 0

    # b merges main (a's change to the reserved file) into its branch: the merge itself changes no
    # reserved path, so it passes; a deleted ref touches nothing.
    await git("fetch", "-q", "origin", cwd=clone)
    await git("checkout", "-q", "side", cwd=clone)
    await git("merge", "-q", "--no-edit", "origin/main", cwd=clone)
    merged = await git("push", "origin", "side", cwd=clone, check=False)
    assert merged.returncode == 0, merged.stderr
    assert (await git("push", "origin", ":side", cwd=clone, check=False)).returncode == 0


async def test_expiry_release_and_a_new_instance_lift_the_push_refusal(
    hive: Hive, forge: Endpoint, tmp_path: Path
) -> None:
    a, _, clone = await shared_app(hive, forge, tmp_path)
    await commit(clone, {"src/api/x.py": "x = 2\n"})

    async def push() -> bool:
        return (await git("push", "origin", "main", cwd=clone, check=False)).returncode == 0

    await reserve(forge, a, ["src/api/x.py"], ttl_seconds=60)
    assert not await push()
    assert forge.clock is not None
    forge.clock.advance(61)  # the forge's clock: its tools and its hook agree on the time
    assert await held(forge) == []
    assert await push()

    await commit(clone, {"src/api/x.py": "x = 3\n"})
    await reserve(forge, a, ["src/api/x.py"])
    assert not await push()
    await forge.client(a).call("release", {"repo": "app", "paths": ["src/api/x.py"]})
    assert await push()

    await commit(clone, {"src/api/x.py": "x = 4\n"})
    await reserve(forge, a, ["src/**"])
    assert not await push()
    hive.add_agent(a)  # a's sandbox ended: a new instance, as the lifecycle server writes it
    assert await held(forge) == []
    assert await push()


async def test_the_holder_hears_when_the_operator_releases_its_reservation(
    hive: Hive, broker: BrokerEndpoint, forge: Endpoint, tmp_path: Path
) -> None:
    a, _, _ = await shared_app(hive, forge, tmp_path)
    (row,) = (await reserve(forge, a, ["src/**"], reason="big refactor"))["reservations"]
    await forge.client("operator").call("release", {"repo": "app", "ids": [row["id"]]})
    event = await next_event(broker, a)
    assert event == {
        "type": "reservation_released",
        "repo": "app",
        "patterns": ["src/**"],
        "ids": [row["id"]],
        "released_by": "operator",
    }


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ({"paths": ["/etc/passwd"]}, "is absolute"),
        ({"paths": ["src/../../x"]}, r"'\.\.' segment"),
        ({"paths": [f"f{i}" for i in range(1000)]}, "at most 64|paths must hold 1 to 64"),
        ({"paths": []}, "at least 1|paths must hold"),
        ({"ttl_seconds": 0}, "greater than or equal to 60|between 60"),
        ({"ttl_seconds": 10 * 86_400}, "less than or equal to 86400|between 60"),
        ({"repo": "nope"}, "no repo named 'nope'"),
        ({"repo": "../x"}, "is not a repo name"),
        ({"reason": "x" * 400}, "under 300"),
    ],
)
async def test_bad_reservations_are_refused_and_nothing_is_written(
    hive: Hive, forge: Endpoint, tmp_path: Path, args: dict[str, object], why: str
) -> None:
    a, _, _ = await shared_app(hive, forge, tmp_path)
    call = {"repo": "app", "paths": ["src/**"], "ttl_seconds": 600, **args}
    with pytest.raises(ToolError, match=why):
        await forge.client(a).call("reserve", call)
    assert await held(forge) == []


async def test_reserving_needs_read_access(hive: Hive, forge: Endpoint, tmp_path: Path) -> None:
    await shared_app(hive, forge, tmp_path)
    stranger = hive.add_agent("s")
    with pytest.raises(ToolError, match="not yours to read"):
        await reserve(forge, stranger, ["src/**"])
    with pytest.raises(ToolError, match="not yours to read"):
        await forge.client(stranger).call("reservations", {"repo": "app"})
    assert await held(forge) == []
