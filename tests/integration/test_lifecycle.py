"""The lifecycle server over real HTTP with real bubblewrap sandboxes, real git repos and a real
broker receiving its events. Agents run small programs (agent.toml [sandbox] command, or
hive.toml's default_command) until the harness exists."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from hivetest import PY, SLEEPER, Hive, Hivemind, in_process, sandbox_process, toml_list

from hyperhive.servers.common.clock import iso
from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = pytest.mark.slow

# ------------------------------------------------------------------------------------ basics


async def test_the_manager_is_created_and_started_first(hivemind: Hivemind) -> None:
    listing = await hivemind.call("list_agents")
    assert listing["backend"] == "bwrap" and "own host uid" in listing["isolation"]
    [manager] = listing["agents"]
    assert (manager["name"], manager["role"], manager["state"]) == ("manager", "manager", "running")
    assert manager["applied_sha"] and not manager["needs_update"]
    status = await hivemind.status("manager")
    assert status["uid"] >= 200_000 and status["busy"] is None


async def test_create_run_stop_start(hivemind: Hivemind) -> None:
    await hivemind.call("create_agent", name="alice")
    spawned = await hivemind.event("spawned")
    assert spawned["agent"] == "alice"
    alice = await hivemind.until_state("alice", "running")
    assert alice["role"] == "agent" and alice["model"] == "sonnet" and alice["started_at"].endswith("Z")
    paths = AgentPaths.of(hivemind.hive.config, "alice")
    assert paths.config.joinpath(".git").is_dir() and paths.applied.joinpath("agent.toml").exists()
    assert stat.S_IMODE(paths.state.stat().st_mode) == 0o700 and paths.state.stat().st_uid == alice["uid"]
    info = json.loads(paths.hive_json.read_text())
    assert info["agent"] == "alice" and info["servers"]["broker"] == hivemind.broker.url

    stopped = await hivemind.call("stop", name="alice")
    assert stopped["state"] == "stopped" and stopped["desired"] == "stopped"
    assert (await hivemind.status("alice"))["last_signal"] == "SIGTERM"
    started = await hivemind.call("start", name="alice")
    assert started["state"] == "running"
    with pytest.raises(ToolError, match="alice is already running"):
        await hivemind.call("start", name="alice")
    with pytest.raises(ToolError, match="alice already exists"):
        await hivemind.call("create_agent", name="alice")


async def test_an_env_file_reaches_the_harness_and_a_broken_one_refuses_the_start(hive: Hive) -> None:
    """[harness] env_file: secrets kept out of hive.toml (the NixOS module's environmentFile)."""
    hive.configure(f'[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n\n[harness]\nenv_file = "secrets.env"')
    secrets = hive.home / "secrets.env"
    secrets.write_text("# kept out of the Nix store\nANTHROPIC_API_KEY='sk-from-file'\n\nexport EXTRA=1\n")
    async with (
        in_process(hive, "broker") as broker,
        in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle,
    ):
        hivemind = Hivemind(hive, broker, lifecycle)
        await hivemind.until_state("manager", "running")
        info = json.loads(AgentPaths.of(hive.config, "manager").hive_json.read_text())
        assert {key: info["env"].get(key) for key in ("ANTHROPIC_API_KEY", "EXTRA")} == {
            "ANTHROPIC_API_KEY": "sk-from-file",
            "EXTRA": "1",
        }
        assert info["start"] == {"reason": "boot", "detail": ""}  # started as the lifecycle server came up

        secrets.write_text("ANTHROPIC_API_KEY=ok\nno equals sign here\n")
        await hivemind.call("stop", name="manager")
        with pytest.raises(ToolError, match=r"secrets\.env: line 2: expected NAME=value"):
            await hivemind.call("start", name="manager")
        assert (await hivemind.status("manager"))["state"] == "failed"  # not left "starting"
        secrets.unlink()
        with pytest.raises(ToolError, match=r"secrets\.env: cannot read it: No such file or directory"):
            await hivemind.call("start", name="manager")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("Alice", "invalid agent name"),
        ("../etc", "invalid agent name"),
        ("operator", "reserved"),
        ("ghost", "no agent"),
    ],
)
async def test_names_are_checked_at_every_tool(hivemind: Hivemind, name: str, error: str) -> None:
    for tool in ("agent_status", "start", "stop", "logs", "agent_config", "read_state_file", "list_state_dir"):
        arguments: dict[str, Any] = {"name": name}
        if tool == "read_state_file":
            arguments["path"] = "notes.md"
        with pytest.raises(ToolError, match=error):
            await hivemind.call(tool, **arguments)


# ------------------------------------------------------------------------------------ crashes


async def test_a_crash_is_reported_with_its_exit_code_and_the_last_lines(hivemind: Hivemind) -> None:
    await hivemind.create("alice", [PY, "-c", "import time; time.sleep(0.5); print('giving up', flush=True); exit(42)"])
    crash = await hivemind.event("container_crash", timeout=10)
    assert crash["agent"] == "alice" and crash["exit_code"] == 42 and crash["signal"] is None
    assert crash["will_restart"] is True and "giving up" in crash["last_lines"]


async def test_a_killed_sandbox_is_a_crash_with_a_signal(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    started = time.monotonic()
    os.kill(sandbox_process(hivemind.hive, "alice"), 9)  # from outside, like the OOM killer
    crash = await hivemind.event("container_crash", timeout=5)
    assert time.monotonic() - started < 1.0, "the crash took longer than a second to reach the manager"
    assert (crash["signal"], crash["exit_code"]) == ("SIGKILL", 137)


async def test_hive_json_says_why_each_run_of_the_sandbox_started(hivemind: Hivemind) -> None:
    """The harness tells the agent what happened (harness/wake.py restart_note) from hive.json's start."""

    def start() -> dict[str, Any]:
        started: dict[str, Any] = json.loads(AgentPaths.of(hivemind.hive.config, "alice").hive_json.read_text())[
            "start"
        ]
        return started

    await hivemind.call("create_agent", name="alice")
    await hivemind.until_state("alice", "running")
    assert start() == {"reason": "created", "detail": ""}
    sha = await hivemind.propose("alice", f"[sandbox]\ncommand = {toml_list(SLEEPER)}\n")
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha})
    assert start() == {"reason": "rebuilt", "detail": f"config {sha[:12]} was applied"}
    await hivemind.call("stop", name="alice")
    await hivemind.call("start", name="alice")
    assert start() == {"reason": "started", "detail": "by operator"}
    await hivemind.call("restart", name="alice")
    assert start() == {"reason": "restarted", "detail": "by operator"}
    await hivemind.call("rebuild", name="alice")
    assert start() == {"reason": "rebuilt", "detail": "by operator"}
    before = (await hivemind.status("alice"))["started_at"]
    os.kill(sandbox_process(hivemind.hive, "alice"), 9)
    deadline = time.monotonic() + 10
    while (status := await hivemind.status("alice"))["started_at"] == before or status["state"] != "running":
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)
    assert start() == {"reason": "crashed", "detail": "killed by SIGKILL"}


async def test_restart_policy_then_failed(hivemind: Hivemind) -> None:
    await hivemind.call("create_agent", name="alice")
    sha = await hivemind.propose(
        "alice", f"[sandbox]\nmax_restarts = 2\ncommand = {toml_list([PY, '-c', 'exit(3)'])}\n"
    )
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha})
    crashes = [await hivemind.event("container_crash", timeout=10) for _ in range(3)]
    assert [c["will_restart"] for c in crashes] == [True, True, False]
    assert [c["restarts"] for c in crashes] == [0, 1, 2]
    failed = await hivemind.until_state("alice", "failed")
    assert failed["restart_count"] == 2 and failed["last_exit_code"] == 3
    # An operator's start gives it a fresh count.
    await hivemind.call("start", name="alice")
    assert (await hivemind.event("container_crash"))["will_restart"] is True


async def test_kill_is_not_a_crash(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    killed = await hivemind.call("kill", name="alice")
    assert killed["state"] == "stopped"
    event = await hivemind.event("killed")
    assert event == {"type": "killed", "agent": "alice", "by": "operator"}
    await asyncio.sleep(0.5)
    assert (await hivemind.status("alice"))["state"] == "stopped"  # no restart: it was asked for
    inbox = await hivemind.broker.client("manager").call("recv_batch", {"max": 50})
    assert not any(m.get("event", {}).get("type") == "container_crash" for m in inbox["messages"])


# ---------------------------------------------------------------------------------- isolation


ESCAPE = r"""
import os, json, sys
results = {"uid": os.getuid()}
for target in sys.argv[1:]:
    try:
        with open(target, "w") as f:
            f.write("x")
        results[target] = "wrote"
    except OSError as e:
        results[target] = e.strerror
other = os.environ["OTHER_STATE"]
try:
    results["read other"] = os.listdir(other)
except OSError as e:
    results["read other"] = e.strerror
try:
    token = os.environ["HIVE_HARNESS_DIR"] + "/credentials/instance/token"
    results["token"] = len(open(token).read())
    results["token_mode"] = oct(os.stat(token).st_mode & 0o777)
except OSError as e:
    results["token"] = e.strerror
with open("result.json", "w") as f:
    json.dump(results, f)
"""


async def test_the_sandbox_cannot_write_outside_its_binds_or_read_another_agent(hivemind: Hivemind) -> None:
    config = hivemind.hive.config
    await hivemind.create("bob", SLEEPER)
    (AgentPaths.of(config, "bob").state / "secret.md").write_text("bob's")
    escape_paths = ["/etc/hive-test", "/usr/hive-test", str(config.home / "signing.key"), str(Path(PY).parent / "x")]
    await hivemind.call("create_agent", name="alice")
    alice = AgentPaths.of(config, "alice")
    script = alice.state / "escape.py"
    script.write_text(ESCAPE)
    sha = await hivemind.propose(
        "alice",
        f"[sandbox]\ncommand = {toml_list([PY, str(script), *escape_paths])}\n"
        f'[env]\nOTHER_STATE = "{AgentPaths.of(config, "bob").state}"\n',
    )
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha})
    result_file = alice.state / "result.json"
    deadline = time.monotonic() + 10
    while not result_file.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    results = json.loads(result_file.read_text())
    assert results["uid"] == (await hivemind.status("alice"))["uid"]  # not root, outside or in
    for path in escape_paths:
        assert results[path] != "wrote", path
    assert not Path("/etc/hive-test").exists() and (config.home / "signing.key").read_text() != "x"
    assert results["read other"] == "No such file or directory"  # not even mounted
    assert results["token"] > 100  # its own token, read-only
    assert results["token_mode"] == "0o600", results  # seen from inside (the run may have ended since)


async def test_the_manager_sees_proposed_repos_but_not_other_agents_state(hivemind: Hivemind) -> None:
    config = hivemind.hive.config
    await hivemind.create("bob", SLEEPER)
    bob = AgentPaths.of(config, "bob")
    manager_uid = (await hivemind.status("manager"))["uid"]
    assert bob.config.stat().st_uid == manager_uid  # the manager edits bob's proposed config
    assert bob.state.stat().st_uid != manager_uid and stat.S_IMODE(bob.state.stat().st_mode) == 0o700


# ---------------------------------------------------------------------------------- config repos


async def test_apply_commit_validates_then_applies_and_rebuilds(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    before = await hivemind.status("alice")

    bad = await hivemind.propose("alice", 'model = "not a model"\n')
    with pytest.raises(ToolError, match=r"(?s)model: 'not a model' is not a model name.*Nothing was applied"):
        await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": bad})
    assert (await hivemind.status("alice"))["applied_sha"] == before["applied_sha"]
    with pytest.raises(ToolError, match="there is no commit deadbeef"):
        await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": "deadbeef"})
    with pytest.raises(ToolError, match="is not a commit sha"):
        await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": "--upload-pack=x"})

    good = await hivemind.propose("alice", 'model = "opus"\n[sandbox]\ncommand = ' + toml_list(SLEEPER) + "\n")
    applied = await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": good[:12]})
    assert applied["proposed_sha"] == good
    rebuilt = await hivemind.event("rebuilt")
    assert rebuilt == {"type": "rebuilt", "agent": "alice", "sha": good}
    after = await hivemind.until_state("alice", "running")
    assert after["model"] == "opus" and after["applied_sha"] == applied["applied_sha"] != before["applied_sha"]
    assert after["started_at"] != before["started_at"]  # rebuilt means restarted
    config = await hivemind.call("agent_config", name="alice")
    assert config["agent_toml"].startswith('model = "opus"') and config["agent_nix"] is None
    log = await repos.git(AgentPaths.of(hivemind.hive.config, "alice").applied, "log", "-1", "--format=%B")
    assert good in log


async def _events(hivemind: Hivemind, kind: str) -> list[dict[str, Any]]:
    """Every helper event of type `kind` sent to the manager so far (read or not)."""
    await asyncio.sleep(0.5)  # the outbox delivers at once; leave it a moment
    listing = await hivemind.broker.client("operator").call("list_messages", {"agent": "manager"})
    return [m["event"] for m in listing["messages"] if (m.get("event") or {}).get("type") == kind]


async def test_apply_commit_sent_again_is_already_applied_and_done_once(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    paths = AgentPaths.of(hivemind.hive.config, "alice")
    base = (await hivemind.call("agent_config", name="alice"))["sha"]
    sha = await hivemind.propose("alice", 'model = "opus"\n')
    call = {"name": "alice", "sha": sha, "expected_base": base}
    first = await hivemind.approvals.call("apply_commit", call)
    assert first["already_applied"] is False and first["proposed_sha"] == sha
    started = (await hivemind.status("alice"))["started_at"]
    commits = await repos.git(paths.applied, "rev-list", "--count", "HEAD")
    again = await hivemind.approvals.call("apply_commit", call)  # a retry after a crash, say
    assert again == {**first, "already_applied": True}
    assert await repos.git(paths.applied, "rev-list", "--count", "HEAD") == commits  # nothing committed
    assert (await hivemind.status("alice"))["started_at"] == started  # nor rebuilt
    assert [e["sha"] for e in await _events(hivemind, "rebuilt")] == [sha]  # told once
    # Without expected_base (the operator's own apply) it is the same call again too.
    assert (await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha[:12]}))["already_applied"]

    # Once something else was applied, the old call is stale: refused, not "already applied".
    haiku = await hivemind.propose("alice", 'model = "haiku"\n')
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": haiku})
    with pytest.raises(ToolError, match="changed since the diff was made"):
        await hivemind.approvals.call("apply_commit", call)
    # The same commit on another base is applied anew (its request was against what is applied now).
    now = (await hivemind.call("agent_config", name="alice"))["sha"]
    reapplied = await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": sha, "expected_base": now})
    assert reapplied["already_applied"] is False and (await hivemind.status("alice"))["model"] == "opus"


async def test_create_agent_sent_again_is_already_applied_and_done_once(hivemind: Hivemind) -> None:
    await hivemind.call("create_draft", name="bob")
    sha = await hivemind.propose("bob", f"[sandbox]\ncommand = {toml_list(SLEEPER)}\n")
    call = {"name": "bob", "sha": sha, "expected_base": "none"}
    first = await hivemind.approvals.call("create_agent", call)
    assert first["already_applied"] is False and first["state"] == "running"
    again = await hivemind.approvals.call("create_agent", call)
    assert again["already_applied"] is True and again["started_at"] == first["started_at"]
    assert [e["agent"] for e in await _events(hivemind, "spawned")] == ["bob"]
    # The template, as a one-step spawn asks for it: sent again, already applied too.
    template = {"name": "carol", "expected_base": "none"}
    assert (await hivemind.approvals.call("create_agent", template))["already_applied"] is False
    assert (await hivemind.approvals.call("create_agent", template))["already_applied"] is True
    # What was not created by that call is no "already applied": bob is not the template, nor carol sha.
    with pytest.raises(ToolError, match="bob already exists"):
        await hivemind.approvals.call("create_agent", {"name": "bob", "expected_base": "none"})
    with pytest.raises(ToolError, match="carol already exists"):
        await hivemind.approvals.call("create_agent", {"name": "carol", "sha": sha, "expected_base": "none"})


async def test_apply_commit_is_for_the_approvals_server_only(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    sha = await hivemind.propose("alice", 'model = "opus"\n')
    with pytest.raises(ToolError, match=r"lifecycle\.apply_commit is a service tool"):
        await hivemind.call("apply_commit", name="alice", sha=sha)


async def test_the_manager_must_stay_a_manager(hivemind: Hivemind) -> None:
    sha = await hivemind.propose("manager", 'role = "agent"\n')
    with pytest.raises(ToolError, match='must keep role = "manager"'):
        await hivemind.approvals.call("apply_commit", {"name": "manager", "sha": sha})


# ---------------------------------------------------------------------------------- destroying


async def test_destroy_keeps_or_purges(hivemind: Hivemind) -> None:
    config = hivemind.hive.config
    await hivemind.create("alice", SLEEPER)
    paths = AgentPaths.of(config, "alice")
    (paths.state / "notes.md").write_text("remember this")
    uid = (await hivemind.status("alice"))["uid"]

    await hivemind.call("destroy", name="alice")
    assert (await hivemind.event("destroyed")) == {"type": "destroyed", "agent": "alice", "purged": False}
    assert "alice" not in [a["name"] for a in (await hivemind.call("list_agents"))["agents"]]
    assert (paths.state / "notes.md").read_text() == "remember this" and paths.config.is_dir()
    # Created again, it takes up what was kept: same notes, same uid.
    await hivemind.call("create_agent", name="alice")
    again = await hivemind.until_state("alice", "running")
    assert again["uid"] == uid and (paths.state / "notes.md").exists()

    await hivemind.call("destroy", name="alice", purge=True)
    assert (await hivemind.event("destroyed", timeout=10))["purged"] is True
    assert not paths.root.exists() and not paths.applied.exists() and not paths.credentials.exists()


async def test_destroying_the_manager_needs_force(hivemind: Hivemind) -> None:
    with pytest.raises(ToolError, match="destroying it needs force=true"):
        await hivemind.call("destroy", name="manager")
    assert (await hivemind.status("manager"))["state"] == "running"


# ---------------------------------------------------------------------------------- the rest


async def test_busy_agents_refuse_a_second_operation(hivemind: Hivemind) -> None:
    # A program that ignores SIGTERM makes the stop wait for the full stop timeout.
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open('ready', 'w'); time.sleep(3600)"
    await hivemind.create("alice", [PY, "-c", ignore])
    ready = AgentPaths.of(hivemind.hive.config, "alice").state / "ready"
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:  # its handler is in place
        await asyncio.sleep(0.02)
    stopping = asyncio.create_task(hivemind.call("stop", name="alice"))
    await asyncio.sleep(0.3)
    with pytest.raises(ToolError, match="busy: alice is stopping; try again when that is done"):
        await hivemind.call("restart", name="alice")
    assert (await hivemind.status("alice"))["busy"] == "stopping"
    stopped = await stopping
    assert stopped["state"] == "stopped"
    assert (await hivemind.status("alice"))["last_signal"] == "SIGKILL"  # after the timeout


async def test_logs_set_model_and_stats(hivemind: Hivemind) -> None:
    talker = [PY, "-c", "import time\nfor i in range(5): print('line', i, flush=True)\ntime.sleep(3600)"]
    await hivemind.create("alice", talker)
    await asyncio.sleep(0.5)
    lines = (await hivemind.call("logs", name="alice", lines=3))["lines"]
    assert lines == ["line 2", "line 3", "line 4"]
    marker = [line for line in (await hivemind.call("logs", name="alice", lines=50))["lines"] if "starting" in line]
    since = marker[-1][1:25]
    after = (await hivemind.call("logs", name="alice", since=since))["lines"]
    assert after[0].endswith("starting sandbox: " + shlex.join(talker).replace("\n", "\\n"))
    assert after[-1] == "line 4"
    with pytest.raises(ToolError, match="not an ISO 8601 time"):
        await hivemind.call("logs", name="alice", since="yesterday")

    assert (await hivemind.call("set_model", name="alice", model="haiku"))["model"] == "haiku"
    assert (await hivemind.status("alice"))["model"] == "haiku"
    assert AgentPaths.of(hivemind.hive.config, "alice").model_override.read_text() == "haiku\n"
    with pytest.raises(ToolError, match="is not a model name"):
        await hivemind.call("set_model", name="alice", model="rm -rf")
    assert (await hivemind.call("set_model", name="alice", model=None))["model"] == "sonnet"
    reset = await hivemind.call("reset_session", name="alice")  # its harness carries out each request once
    assert reset["name"] == "alice" and reset["request"].isdigit()
    assert AgentPaths.of(hivemind.hive.config, "alice").reset_request.read_text() == reset["request"] + "\n"
    with pytest.raises(ToolError, match="nobody"):
        await hivemind.call("reset_session", name="nobody")

    alice = hivemind.lifecycle.client("alice")  # as alice's harness reports its turns
    base = time.time() - 1000
    for i, ok in enumerate([True, True, False]):
        turn = {
            "key": f"turn-{i}", "started_at": base + i * 100, "ended_at": base + i * 100 + 10 + i, "ok": ok,
            "terminal_reason": None, "model": "sonnet", "model_turns": 1, "tool_calls": {"mcp__broker__send": i + 1},
            "tokens_in": 100, "tokens_out": 20, "cost_usd": 0.01, "messages": 1, "inbox_depth": 1, "error": None,
        }  # fmt: skip
        await alice.call("record_turn", {"turn": turn})
    stats = await hivemind.call("agent_stats", name="alice")
    assert stats["summary"]["turns"] == 3 and stats["summary"]["errors"] == 1
    assert stats["summary"]["tool_calls"] == {"mcp__broker__send": 6} and stats["summary"]["duration_p50"] == 11
    later = await hivemind.call("agent_stats", name="alice", since=iso(base + 100))
    assert [t["started_at"] for t in later["turns"]] == [base + 100, base + 200]


async def test_read_state_file_refuses_what_is_not_a_plain_file_inside(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    state = AgentPaths.of(hivemind.hive.config, "alice").state
    (state / "notes.md").write_text("# notes\nall good")
    (state / "sub").mkdir()
    (state / "sub" / "deep.md").write_text("deep")
    (state / "link.md").symlink_to("/etc/passwd")
    (state / "linkdir").symlink_to(state / "sub")
    os.mkfifo(state / "pipe")
    os.mknod(state / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    (state / "big.md").write_text("x" * (1024 * 1024 + 1))
    (state / "binary").write_bytes(b"\xff\xfe\x00")

    read = await hivemind.call("read_state_file", name="alice", path="notes.md")
    assert read == {"name": "alice", "path": "notes.md", "size": 16, "text": "# notes\nall good", "binary": False}
    assert (await hivemind.call("read_state_file", name="alice", path="sub/deep.md"))["text"] == "deep"
    refusals = {
        "../../secret": "contains '..'",
        "sub/../notes.md": "contains '..'",
        "/etc/passwd": "is absolute",
        "link.md": "is a symbolic link",
        "linkdir/deep.md": "linkdir is a symbolic link",
        "pipe": "is a fifo, not a regular file",
        "device": "is a device, not a regular file",
        "sub": "is a directory",
        "missing.md": "does not exist",
        "big.md": "1,048,577 bytes; files up to 1,048,576 bytes",
        "": "give a path relative",
    }
    for path, error in refusals.items():
        with pytest.raises(ToolError, match=error):
            await hivemind.call("read_state_file", name="alice", path=path)
    # Binary is said, without its bytes: NUL bytes, or bytes that are not UTF-8.
    (state / "nul.txt").write_bytes(b"text\0more")
    for path, size in (("binary", 3), ("nul.txt", 9)):
        read = await hivemind.call("read_state_file", name="alice", path=path)
        assert (read["binary"], read["size"], read["text"]) == (True, size, "")


async def test_list_state_dir_lists_one_level_without_following_links(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    state = AgentPaths.of(hivemind.hive.config, "alice").state
    (state / "notes.md").write_text("# notes\n")
    (state / "sub").mkdir()
    (state / "sub" / "deep.md").write_text("deep")
    (state / "link").symlink_to("/etc")
    os.mkfifo(state / "pipe")

    top = await hivemind.call("list_state_dir", name="alice")
    kinds = {e["name"]: (e["kind"], e["size"]) for e in top["entries"]}
    assert top["path"] == "" and not top["truncated"]
    assert kinds["notes.md"] == ("file", 8) and kinds["sub"][0] == "dir"
    assert kinds["link"][0] == "link" and kinds["pipe"][0] == "other"
    assert top["entries"][0]["name"] == "sub"  # directories first
    sub = await hivemind.call("list_state_dir", name="alice", path="sub/")
    assert sub["path"] == "sub" and [e["name"] for e in sub["entries"]] == ["deep.md"]
    refusals = {
        "link": "is a symbolic link",
        "../..": "contains '..'",
        "/etc": "no directory 'etc'",  # relative to the state dir, never the host's /etc
        "notes.md": "is not a directory",
        "missing": "has no directory 'missing'",
        "x" * 5000: "at most 4096 characters",
    }
    for path, error in refusals.items():
        with pytest.raises(ToolError, match=error):
            await hivemind.call("list_state_dir", name="alice", path=path)
    for many in range(1001):
        (state / "sub" / f"f{many:04d}").touch()
    crowded = await hivemind.call("list_state_dir", name="alice", path="sub")
    assert len(crowded["entries"]) == 1000 and crowded["truncated"]


async def test_needs_update_and_rebuild_stale(hivemind: Hivemind) -> None:
    await hivemind.create("alice", SLEEPER)
    # The version an agent was built with is recorded; pretend it is old.
    with sqlite3.connect(hivemind.hive.config.db_path("lifecycle")) as db:
        db.execute("UPDATE agents SET built_version = '0.0.1' WHERE name = 'alice'")
    listing = {a["name"]: a for a in (await hivemind.call("list_agents"))["agents"]}
    assert listing["alice"]["needs_update"] and not listing["manager"]["needs_update"]
    assert (await hivemind.call("rebuild_stale")) == {"rebuilt": ["alice"]}
    assert not (await hivemind.status("alice"))["needs_update"]
    assert (await hivemind.event("rebuilt"))["agent"] == "alice"
    info = json.loads(AgentPaths.of(hivemind.hive.config, "alice").hive_json.read_text())
    assert info["start"] == {"reason": "rebuilt", "detail": "hyperhive was updated"}


async def test_two_hives_on_one_host_give_their_agents_different_uids(hivemind: Hivemind, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("agents get host uids of their own only when the lifecycle server runs as root")
    other = Hive(tmp_path / "other")
    other.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}")
    async with in_process(other, "broker"), in_process(other, "lifecycle", stop_agents_on_exit=True) as lifecycle:
        theirs = await lifecycle.client("operator", timeout=60).call("agent_status", {"name": "manager"})
    ours = await hivemind.status("manager")
    assert ours["uid"] != theirs["uid"], (ours["uid"], theirs["uid"])
