"""The operator's read-only view of the shared workspace (lifecycle's shared_files and
read_shared_file): what a real sandboxed agent wrote there, listed with its writer, and the hostile
entries it can make (links, fifos, big files, binaries) refused or said plainly, never followed."""

from __future__ import annotations

import os

import pytest
from fastmcp.exceptions import ToolError
from hivetest import Hivemind
from test_shared_workspace import _result, _run, _script

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: agents run as their own uids"),
]


async def test_the_operator_reads_the_shared_workspace_without_following_what_agents_put_there(
    hivemind: Hivemind,
) -> None:
    empty = await hivemind.call("shared_files")
    assert empty["path"] == "" and empty["truncated"] is False
    writer = _script(
        "cd /hive/shared && mkdir -p notes/deep && echo plan > notes/plan.md && printf 'a\\0b' > blob.bin && "
        "ln -s /etc/shadow shadow && ln -s /etc notes/etc-link && mkfifo pipe && "
        "head -c 1100000 /dev/zero | tr '\\0' x > big.txt && echo WROTE"
    )
    await _run(hivemind, "alice", writer)
    assert "WROTE" in await _result(hivemind, "alice")

    top = await hivemind.call("shared_files")
    entries = {entry["name"]: entry for entry in top["entries"]}
    assert top["entries"][0]["name"] == "notes", "directories first"
    assert {name: entry["kind"] for name, entry in entries.items()} == {
        "notes": "dir", "blob.bin": "file", "big.txt": "file", "pipe": "other", "shadow": "link",
    }  # fmt: skip
    assert entries["blob.bin"]["owner"] == "alice" and entries["blob.bin"]["size"] == 3
    assert entries["big.txt"]["modified"].endswith("Z")

    notes = await hivemind.call("shared_files", path="notes")
    assert [(e["name"], e["kind"]) for e in notes["entries"]] == [
        ("deep", "dir"),
        ("etc-link", "link"),
        ("plan.md", "file"),
    ]
    assert (await hivemind.call("read_shared_file", path="notes/plan.md"))["text"] == "plan\n"
    binary = await hivemind.call("read_shared_file", path="blob.bin")
    assert binary["binary"] is True and binary["text"] is None and binary["size"] == 3

    for path, why in (
        ("shadow", "symbolic link"),  # never followed to /etc/shadow
        ("notes/etc-link/passwd", "symbolic link"),
        ("pipe", "a fifo, not a regular file"),
        ("big.txt", "files up to 1,048,576 bytes can be read"),
        ("../state/notes.md", "contains '..'"),
        ("/etc/passwd", "is absolute"),
        ("nope.md", "no such file in the shared workspace"),
        ("notes", "a directory, not a regular file"),
    ):
        with pytest.raises(ToolError, match=why):
            await hivemind.call("read_shared_file", path=path)
    for path, why in (("notes/etc-link", "symbolic link"), ("../agents", "contains '..'"), ("nope", "no directory")):
        with pytest.raises(ToolError, match=why):
            await hivemind.call("shared_files", path=path)

    # Agents read /hive/shared themselves; these tools are the operator's.
    manager = hivemind.lifecycle.client("manager")
    with pytest.raises(ToolError, match="shared_files"):
        await manager.call("shared_files", {})
