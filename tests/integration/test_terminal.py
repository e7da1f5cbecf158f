"""The operator's terminal into a real bubblewrap sandbox: a shell as the agent, in its namespaces
and cgroup, audited, bounded, for the operator only, ended with the sandbox."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from hivetest import Hivemind, sandbox_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the terminal needs a root lifecycle server"),
]


class Shell:
    """One terminal session, driven the way the dashboard drives it."""

    def __init__(self, hivemind: Hivemind, session: str) -> None:
        self.hivemind, self.session = hivemind, session
        self.seen = ""
        self.ended: dict[str, Any] | None = None

    @classmethod
    async def open(cls, hivemind: Hivemind, name: str) -> Shell:
        opened = await hivemind.call("terminal_open", name=name, cols=100, rows=30)
        return cls(hivemind, opened["session"])

    async def io(self, data: str = "", wait_ms: int = 500) -> dict[str, Any]:
        out: dict[str, Any] = await self.hivemind.call("terminal_io", session=self.session, input=data, wait_ms=wait_ms)
        self.seen += out["output"]
        if out["ended"]:
            self.ended = out
        return out

    async def until(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.seen, re.S)):
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s in {self.seen!r}"
            assert self.ended is None, f"it ended ({self.ended}) before {pattern!r}: {self.seen!r}"
            await self.io(wait_ms=1000)
        return found

    async def run(self, command: str, timeout: float = 15) -> str:
        """Run `command`; its output (between two markers, so the echo is not taken for it)."""
        mark = f"M{time.monotonic_ns()}"
        self.seen = ""
        await self.io(f"echo {mark[:3]}''{mark[3:]}; {command}; echo {mark[:3]}''{mark[3:]}END\r", wait_ms=0)
        found = await self.until(rf"{mark}\r?\n(.*?){mark}END", timeout)
        return found.group(1).replace("\r", "")


def controlled(cgroup_file: str) -> list[str]:
    """The lines of a /proc/PID/cgroup of the hierarchies with controllers, sorted."""
    return sorted(line for line in cgroup_file.splitlines() if line.split(":")[1])


async def test_a_shell_as_the_agent_inside_its_sandbox(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    status = await hivemind.status("alice")
    shell = await Shell.open(hivemind, "alice")
    await shell.until(r"alice:.*\$ ")  # its prompt

    assert (await shell.run("id -u")).strip() == str(status["uid"])
    assert (await shell.run("id -g")).strip() == str(status["uid"])
    assert (await shell.run("pwd")).strip() == status["state_dir"]
    agent_pid = sandbox_process(hivemind.hive, "alice")
    agent_cgroups = controlled(Path(f"/proc/{agent_pid}/cgroup").read_text())
    shell_cgroups = controlled(await shell.run("cat /proc/self/cgroup"))
    assert shell_cgroups == agent_cgroups  # the sandbox's limits apply to the shell
    # Its namespaces: the sandbox's hostname, its own pid namespace (the agent's program is in it) ...
    assert (await shell.run("cat /proc/sys/kernel/hostname")).strip() == "alice"
    processes = await shell.run("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert "sleep" in processes or "time.sleep" in processes, processes
    # ... and its mounts: the host's home of the hive is not there, only the agent's own dirs.
    assert "gone" in await shell.run(f"ls {hivemind.hive.home}/state >/dev/null 2>&1 || echo gone")
    assert "gone" in await shell.run("ls /var >/dev/null 2>&1 || echo gone")
    # No capabilities, no_new_privs, and a clean environment.
    caps = await shell.run("grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    assert re.search(r"CapEff:\s+0+\n", caps + "\n") and re.search(r"CapBnd:\s+0+\n", caps + "\n"), caps
    assert re.search(r"NoNewPrivs:\s+1", caps), caps
    env = await shell.run("env")
    assert "TERM=xterm-256color" in env and "HIVE_AGENT=alice" in env
    assert "HIVE_TOKEN" not in env and "SUDO" not in env

    # A resize reaches the shell.
    await hivemind.call("terminal_resize", session=shell.session, cols=133, rows=41)
    assert (await shell.run("stty size")).strip() == "41 133"

    closed = await hivemind.call("terminal_close", session=shell.session)
    assert closed["reason"] == "closed by operator" and closed["seconds"] > 0
    with pytest.raises(ToolError, match="no terminal session"):
        await hivemind.call("terminal_io", session=shell.session)

    # The audit: the open, and the session with who, when and how long.
    entries = (await hivemind.call("audit", agent="alice", limit=10))["entries"]
    session = next(e for e in entries if e["action"] == "terminal_session")
    assert session["actor"] == "operator" and session["outcome"] == "ok"
    assert re.search(rf"session {shell.session} opened \S+Z, open \d+\.\d s; closed by operator", session["detail"])
    opened = next(e for e in entries if e["action"] == "terminal_open")
    assert opened["actor"] == "operator" and opened["detail"] == "100x30"


async def test_stopping_the_agent_ends_its_terminal(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    shell = await Shell.open(hivemind, "alice")
    await shell.until(r"alice:.*\$ ")
    await hivemind.call("stop", name="alice")
    deadline = time.monotonic() + 10
    while shell.ended is None and time.monotonic() < deadline:
        await shell.io(wait_ms=1000)
    assert shell.ended is not None and shell.ended["reason"] == "the sandbox of alice was stopped"
    with pytest.raises(ToolError, match="alice is stopped"):
        await hivemind.call("terminal_open", name="alice")


async def test_a_sandbox_that_ends_on_its_own_ends_the_terminal(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    shell = await Shell.open(hivemind, "alice")
    await shell.until(r"alice:.*\$ ")
    os.kill(sandbox_process(hivemind.hive, "alice"), 9)  # its program dies: the sandbox ends, a crash
    deadline = time.monotonic() + 15
    while shell.ended is None and time.monotonic() < deadline:
        await shell.io(wait_ms=1000)
    assert shell.ended is not None and shell.ended["reason"] == "the sandbox of alice ended"


async def test_only_the_operator_and_only_within_bounds(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    for principal in ("manager", "alice"):
        client = hivemind.lifecycle.client(principal)
        with pytest.raises(ToolError, match=r"lifecycle\.terminal_open"):
            await client.call("terminal_open", {"name": "alice"})
    shells = [await Shell.open(hivemind, "alice") for _ in range(3)]
    with pytest.raises(ToolError, match="alice has 3 terminals open"):
        await hivemind.call("terminal_open", name="alice")
    for bad in ({"cols": 5}, {"rows": 1000}):
        with pytest.raises(ToolError):
            await hivemind.call("terminal_open", name="alice", **bad)
    with pytest.raises(ToolError):
        await hivemind.call("terminal_io", session=shells[0].session, wait_ms=60_000)
    with pytest.raises(ToolError, match="no agent named 'ghost'"):
        await hivemind.call("terminal_open", name="ghost")

    # A flood is bounded: what nobody read is dropped oldest first, and the next output says so.
    await shells[0].until(r"alice:.*\$ ")
    await shells[0].io("head -c 600000 /dev/zero | tr '\\0' x; echo; echo DONE\r", wait_ms=0)
    await asyncio.sleep(2)
    out = await shells[0].io()
    assert out["dropped"] > 0 and out["more"], {k: v for k, v in out.items() if k != "output"}
    assert len(out["output"]) <= 64 * 1024
    await shells[0].until("DONE")


async def test_a_terminal_nobody_reads_is_closed(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    shell = await Shell.open(hivemind, "alice")
    await shell.until(r"alice:.*\$ ")
    await asyncio.sleep(33)  # IDLE_SECONDS without a terminal_io call
    out = await shell.io()
    assert out["ended"] and "nobody read it for 30 s" in out["reason"], out
