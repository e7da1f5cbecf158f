"""Every lifecycle action leaves an audit record (who, what, when, outcome), refusals too."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from fastmcp.exceptions import ToolError
from hivetest import Hivemind

pytestmark = pytest.mark.slow


async def test_every_action_is_audited_with_its_outcome(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    await hivemind.call("stop", name="alice")
    await hivemind.call("start", name="alice")
    await hivemind.call("restart", name="alice")
    await hivemind.call("set_model", name="alice", model="opus")
    await hivemind.call("kill", name="alice")
    with pytest.raises(ToolError, match="no agent named 'ghost'"):
        await hivemind.call("start", name="ghost")
    with pytest.raises(ToolError, match="force"):
        await hivemind.call("destroy", name="manager")
    with pytest.raises(ToolError):
        await hivemind.call("read_state_file", name="alice", path="../../secret")
    sha = await hivemind.propose("alice", 'model = "haiku"\n')
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha})

    log = (await hivemind.call("audit", limit=50))["entries"]
    assert log == sorted(log, key=lambda e: e["id"], reverse=True)  # newest first
    seen = [(e["action"], e["agent"], e["actor"], e["outcome"]) for e in reversed(log)]
    assert seen == [
        ("create_agent", "alice", "operator", "ok"),
        ("stop", "alice", "operator", "ok"),
        ("start", "alice", "operator", "ok"),
        ("restart", "alice", "operator", "ok"),
        ("set_model", "alice", "operator", "ok"),
        ("kill", "alice", "operator", "ok"),
        ("start", "ghost", "operator", "refused"),
        ("destroy", "manager", "operator", "refused"),
        ("read_state_file", "alice", "operator", "refused"),
        ("apply_commit", "alice", "service:approvals", "ok"),
    ]
    by_action = {e["action"]: e for e in log}
    assert by_action["set_model"]["detail"] == "model=opus"
    assert "force" in next(e for e in log if e["action"] == "destroy")["detail"]  # the reason
    assert by_action["apply_commit"]["detail"] == f"sha={sha}"
    assert all(e["at"].endswith("Z") for e in log)

    only_manager = (await hivemind.call("audit", agent="manager"))["entries"]
    assert [e["action"] for e in only_manager] == ["destroy"]
    assert len((await hivemind.call("audit", limit=2))["entries"]) == 2

    # `hive audit` prints it, newest first.
    printed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hyperhive.servers.cli", "audit", "--agent", "alice", "--limit", "3",
         "--home", str(hivemind.hive.home)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 3 and "service:approvals apply_commit alice ok" in lines[0], printed.stdout
    assert "refused" in lines[1] and "read_state_file" in lines[1]


async def test_agents_may_not_read_the_audit(hivemind: Hivemind) -> None:
    manager = hivemind.lifecycle.client("manager")
    with pytest.raises(ToolError, match=r"lifecycle\.audit"):
        await manager.call("audit", {})
