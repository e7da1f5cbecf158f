"""The forge's browsing tools over real HTTP with real git pushes: tree, pushes, show_commit, and
what they refuse (bad refs and paths, repos the caller may not read)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Endpoint, Hive, in_process
from test_forge import git, git_url, new_work_tree

pytestmark = pytest.mark.slow  # git processes, two servers per test


@pytest.fixture
async def forge(hive: Hive, broker: BrokerEndpoint) -> AsyncIterator[Endpoint]:
    async with in_process(hive, "forge") as endpoint:
        yield endpoint


async def test_tree_lists_one_directory_of_a_commit(hive: Hive, forge: Endpoint, tmp_path: Path) -> None:
    a = hive.add_agent("a")
    await forge.client(a).call("create_repo", {"name": "app"})
    work = await new_work_tree(
        tmp_path / "w", {"README.md": "hi\n", "src/main.py": "print(1)\n", "src/lib/x.py": "", "logo.bin": b"\0\1"}
    )
    (work / "link").symlink_to("README.md")
    await git("add", "link", cwd=work)
    await git("commit", "-q", "-m", "a link", cwd=work)
    await git("push", "-q", git_url(forge, "app", hive.token(a)), "main", cwd=work)

    top = await forge.client(a).call("tree", {"repo": "app"})
    assert top["path"] == "" and len(top["commit"]) == 40
    assert top["entries"] == [  # directories first, then by name
        {"name": "src", "kind": "dir"},
        {"name": "README.md", "kind": "file", "size": 3},
        {"name": "link", "kind": "link", "size": 9},
        {"name": "logo.bin", "kind": "file", "size": 2},
    ]
    src = await forge.client(a).call("tree", {"repo": "app", "ref": "main", "path": "src/"})
    assert src["path"] == "src"
    assert src["entries"] == [{"name": "lib", "kind": "dir"}, {"name": "main.py", "kind": "file", "size": 9}]
    older = await forge.client(a).call("tree", {"repo": "app", "ref": "main~1", "path": "."})
    assert "link" not in [entry["name"] for entry in older["entries"]]

    with pytest.raises(ToolError, match="is a file at main, not a directory"):
        await forge.client(a).call("tree", {"repo": "app", "ref": "main", "path": "README.md"})
    with pytest.raises(ToolError, match="'nope' is not in repo 'app'"):
        await forge.client(a).call("tree", {"repo": "app", "path": "nope"})
    for path in ("../x", "/etc", "src/../../x"):
        with pytest.raises(ToolError, match="leaves the repo"):
            await forge.client(a).call("tree", {"repo": "app", "path": path})
    for ref in ("--output=/tmp/x", "main..x", "x:y"):
        with pytest.raises(ToolError, match="is not a ref"):
            await forge.client(a).call("tree", {"repo": "app", "ref": ref})
    with pytest.raises(ToolError, match="is no commit in repo"):
        await forge.client(a).call("tree", {"repo": "app", "ref": "nobranch"})
    with pytest.raises(ToolError, match="not yours to read: ask its owner, a"):
        await forge.client(hive.add_agent("b")).call("tree", {"repo": "app"})
    # The empty repo (no commit yet): HEAD names nothing, said plainly.
    await forge.client(a).call("create_repo", {"name": "empty"})
    with pytest.raises(ToolError, match="'HEAD' is no commit in repo 'empty'"):
        await forge.client(a).call("tree", {"repo": "empty"})


async def test_pushes_are_recorded_newest_first_with_old_new_and_pusher(
    hive: Hive, forge: Endpoint, tmp_path: Path
) -> None:
    a, b = hive.add_agent("a"), hive.add_agent("b")
    await forge.client(a).call("create_repo", {"name": "app"})
    assert (await forge.client(a).call("pushes", {"repo": "app"}))["pushes"] == []
    work = await new_work_tree(tmp_path / "w", {"README.md": "1\n"})
    first = (await git("rev-parse", "HEAD", cwd=work)).stdout.strip()
    await git("push", "-q", git_url(forge, "app", hive.token(a)), "main", cwd=work)
    await forge.client(a).call("grant", {"repo": "app", "who": b, "access": "write"})
    (work / "README.md").write_text("2\n")
    await git("commit", "-q", "-am", "two", cwd=work)
    second = (await git("rev-parse", "HEAD", cwd=work)).stdout.strip()
    await git("push", "-q", git_url(forge, "app", hive.token(b)), "main", "main:refs/heads/topic", cwd=work)
    await git("push", "-q", git_url(forge, "app", hive.token(b)), ":topic", cwd=work)

    pushes = (await forge.client(b).call("pushes", {"repo": "app"}))["pushes"]
    stripped = [{k: v for k, v in push.items() if k != "at"} for push in pushes]
    assert stripped == [
        {"ref": "refs/heads/topic", "old": second, "pusher": b},  # deleted: no new
        {"ref": "refs/heads/topic", "new": second, "pusher": b},  # created: no old
        {"ref": "refs/heads/main", "old": first, "new": second, "pusher": b},
        {"ref": "refs/heads/main", "new": first, "pusher": a},
    ]
    assert all(push["at"].endswith("Z") for push in pushes)
    assert len((await forge.client(a).call("pushes", {"repo": "app", "limit": 1}))["pushes"]) == 1
    with pytest.raises(ToolError, match="limit"):
        await forge.client(a).call("pushes", {"repo": "app", "limit": 0})
    with pytest.raises(ToolError, match="not yours to read"):
        await forge.client(hive.add_agent("c")).call("pushes", {"repo": "app"})
    with pytest.raises(ToolError, match="no repo named 'nope'"):
        await forge.client(a).call("pushes", {"repo": "nope"})


async def test_show_commit_gives_the_message_and_the_diff_from_its_parent(
    hive: Hive, forge: Endpoint, tmp_path: Path
) -> None:
    a = hive.add_agent("a")
    await forge.client(a).call("create_repo", {"name": "app"})
    work = await new_work_tree(tmp_path / "w", {"README.md": "one\n"})
    (work / "README.md").write_text("two\n")
    await git("commit", "-q", "-am", "second\n\nwhy it changed", cwd=work)
    await git("push", "-q", git_url(forge, "app", hive.token(a)), "main", cwd=work)
    root = (await git("rev-parse", "HEAD~1", cwd=work)).stdout.strip()

    shown = await forge.client(a).call("show_commit", {"repo": "app", "sha": "main"})
    assert shown["subject"] == "second" and shown["body"] == "why it changed"
    assert shown["parents"] == [root] and shown["author"] == "t <t@t>"
    assert "-one\n+two\n" in shown["diff"]
    first = await forge.client(a).call("show_commit", {"repo": "app", "sha": root})
    assert first["parents"] == [] and first["subject"] == "first" and "body" not in first
    assert "+one\n" in first["diff"] and "new file mode" in first["diff"]  # a root commit: all of it
    with pytest.raises(ToolError, match="is not a ref"):
        await forge.client(a).call("show_commit", {"repo": "app", "sha": "-p"})
    with pytest.raises(ToolError, match="is no commit"):
        await forge.client(a).call("show_commit", {"repo": "app", "sha": "f" * 40})
