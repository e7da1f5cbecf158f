"""The shared workspace (/hive/shared) and agent.toml's [[binds]] in real bubblewrap sandboxes, as
root: each agent its own uid, sharing the hive's group there; binds refused over the hive's home,
the host's system dirs and links."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time
from pathlib import Path

import pytest
from fastmcp.exceptions import ToolError
from hivetest import Hivemind, toml_list

from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: agents run as their own uids"),
]

# Waits (bounded) for a file, then runs the rest; what it found goes to result in its state dir.
WAIT_FOR = 'i=0; while [ ! -e "$F" ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done'


def _script(body: str) -> list[str]:
    """A sandbox command: `body`, its output and errors kept in result, then it stays up."""
    return ["/bin/sh", "-c", f'({body}) > "$HIVE_STATE_DIR/result.tmp" 2>&1; mv "$HIVE_STATE_DIR/result.tmp" '
            f'"$HIVE_STATE_DIR/result"; exec sleep 3600']  # fmt: skip


async def _run(hivemind: Hivemind, name: str, command: list[str], extra: str = "") -> None:
    """Create `name` and apply an agent.toml that runs `command` (with `extra` settings), as approved."""
    await hivemind.call("create_agent", name=name)
    await hivemind.event("spawned")
    sha = await hivemind.propose(name, f"{extra}\n[sandbox]\ncommand = {toml_list(command)}\n")
    await hivemind.approvals.call("apply_commit", {"name": name, "sha": sha})
    await hivemind.event("rebuilt")
    await hivemind.until_state(name, "running")


async def _result(hivemind: Hivemind, name: str, within: float = 30) -> str:
    path = AgentPaths.of(hivemind.hive.config, name).state / "result"
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{name} wrote no result within {within} s"
        await asyncio.sleep(0.05)
    return path.read_text()


async def test_agents_read_and_write_each_others_files_in_the_shared_workspace(hivemind: Hivemind) -> None:
    alice = _script(
        "echo from-alice > /hive/shared/a.txt && mkdir /hive/shared/docs && echo plan > /hive/shared/docs/plan.md; "
        f"F=/hive/shared/b.txt; {WAIT_FOR}; "
        "cat /hive/shared/b.txt && echo alice-edit >> /hive/shared/b.txt && echo ALICE-OK"
    )
    bob = _script(
        f"F=/hive/shared/docs/plan.md; {WAIT_FOR}; cat /hive/shared/a.txt && echo bob-edit >> /hive/shared/a.txt && "
        "echo bob >> /hive/shared/docs/plan.md && echo from-bob > /hive/shared/b.txt && echo BOB-OK"
    )
    await _run(hivemind, "alice", alice)
    await _run(hivemind, "bob", bob)
    assert "from-alice" in (bob_result := await _result(hivemind, "bob")) and "BOB-OK" in bob_result, bob_result
    assert "from-bob" in (alice_result := await _result(hivemind, "alice")) and "ALICE-OK" in alice_result

    shared = hivemind.hive.config.home / "shared"
    assert (shared / "a.txt").read_text() == "from-alice\nbob-edit\n"
    assert (shared / "b.txt").read_text() == "from-bob\nalice-edit\n"
    assert (shared / "docs" / "plan.md").read_text() == "plan\nbob\n"
    # Files keep their writer's uid; the hive's group (setgid dir) lets the others write them.
    alice_uid, bob_uid = (await hivemind.status("alice"))["uid"], (await hivemind.status("bob"))["uid"]
    info = shared.stat()
    assert info.st_mode & 0o7777 == 0o2770 and info.st_uid == 0 and info.st_gid not in (0, alice_uid, bob_uid)
    for path, owner in ((shared / "a.txt", alice_uid), (shared / "b.txt", bob_uid), (shared / "docs", alice_uid)):
        assert (path.stat().st_uid, path.stat().st_gid) == (owner, info.st_gid), path
        assert path.stat().st_mode & stat.S_IWGRP, f"{path} is not group-writable"
    assert (shared / "docs").stat().st_mode & stat.S_ISGID, "a new dir keeps the setgid bit"


async def test_shared_ro_reads_but_cannot_write_and_none_sees_nothing(hivemind: Hivemind) -> None:
    shared = hivemind.hive.config.home / "shared"
    assert shared.is_dir(), "made at the manager's start"
    (shared / "note.md").write_text("hello\n")
    (shared / "note.md").chmod(0o664)
    reader = _script("cat /hive/shared/note.md; echo x > /hive/shared/new.md || echo WRITE-REFUSED")
    await _run(hivemind, "carol", reader, 'shared = "ro"')
    result = await _result(hivemind, "carol")
    assert "hello" in result and "Read-only file system" in result and "WRITE-REFUSED" in result, result
    assert not (shared / "new.md").exists()

    blind = _script("ls -a /hive/shared || echo NO-SHARED; ls -a /hive || echo NO-HIVE; id -G")
    await _run(hivemind, "dave", blind, 'shared = "none"')
    result = await _result(hivemind, "dave")
    assert "NO-SHARED" in result and "NO-HIVE" in result and "note.md" not in result, result
    gid = str(shared.stat().st_gid)
    assert gid not in result.split(), "without the workspace the agent is not in the hive's group either"


async def test_an_extra_ro_bind_is_readable_and_not_writable(hivemind: Hivemind, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the host would let anyone write: only the read-only bind stops it
    (data / "input.csv").write_text("a,b\n")
    checker = _script("cat /data/in/input.csv; echo x > /data/in/out.csv || echo WRITE-REFUSED")
    await _run(hivemind, "erin", checker, f'[[binds]]\nhost = "{data}"\npath = "/data/in"\n')
    result = await _result(hivemind, "erin")
    assert "a,b" in result and "Read-only file system" in result and "WRITE-REFUSED" in result, result
    assert not (data / "out.csv").exists()


async def test_binds_over_the_hive_home_or_a_system_dir_are_refused_before_applying(
    hivemind: Hivemind, tmp_path: Path
) -> None:
    await hivemind.call("create_agent", name="frank")
    await hivemind.event("spawned")
    home = hivemind.hive.config.home
    bob_state = AgentPaths.of(hivemind.hive.config, "bob").state
    for host, path, why in (
        (home, "/data", "the hive's home"),
        (bob_state, "/data", "the hive's home"),  # another agent's dirs are in it
        (home.parent, "/data", "the hive's home"),  # over it
        # Over the agents' dirs in the sandbox (a test's home is in /tmp, which parse refuses first).
        ("/srv/x", str(home / "agents"), "the hive's home|/tmp, which the sandbox keeps"),
        ("/etc", "/data", "system dir /etc"),
    ):
        sha = await hivemind.propose("frank", f'[[binds]]\nhost = "{host}"\npath = "{path}"\n')
        diff = await hivemind.approvals.call("diff_commit", {"name": "frank", "sha": sha})
        assert not diff["valid"] and re.search(why, diff["problems"]), diff
        with pytest.raises(ToolError, match=why):
            await hivemind.approvals.call("apply_commit", {"name": "frank", "sha": sha})
    applied = AgentPaths.of(hivemind.hive.config, "frank").applied
    assert "\n[[binds]]" not in (applied / "agent.toml").read_text(), "nothing was applied"

    # A valid bind is flagged to the operator as a widening.
    (tmp_path / "data").mkdir()
    sha = await hivemind.propose("frank", f'[[binds]]\nhost = "{tmp_path / "data"}"\npath = "/data"\nmode = "rw"\n')
    diff = await hivemind.approvals.call("diff_commit", {"name": "frank", "sha": sha})
    assert diff["valid"] and f"binds: + host {tmp_path / 'data'} at /data (rw)" in diff["widenings"], diff


async def test_a_bind_through_a_link_or_to_nothing_is_refused_at_start(hivemind: Hivemind, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    await hivemind.call("create_agent", name="gina")
    await hivemind.event("spawned")
    for host, why in ((tmp_path / "link", "leads through a link"), (tmp_path / "missing", "does not exist")):
        await hivemind.call("stop", name="gina")
        await hivemind.until_state("gina", "stopped")
        sha = await hivemind.propose("gina", f'[[binds]]\nhost = "{host}"\npath = "/data"\n')
        with pytest.raises(ToolError, match=why):  # applied, but its rebuild finds the bind cannot be made
            await hivemind.approvals.call("apply_commit", {"name": "gina", "sha": sha})
        with pytest.raises(ToolError, match=why):
            await hivemind.call("start", name="gina")
        assert (await hivemind.status("gina"))["state"] != "running"
