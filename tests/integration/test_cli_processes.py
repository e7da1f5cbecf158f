"""`hive up` and the debug verbs as real processes against a real broker."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hivetest import SLEEPER as SLEEPER_ARGV
from hivetest import (
    BrokerProcess,
    Hive,
    Hivemind,
    bwrap_pids,
    children_of,
    cmdline,
    gone,
    in_process,
    start_hive_up,
    toml_list,
)

from hyperhive.servers.cli import SERVERS

pytestmark = pytest.mark.slow


def _hive(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperhive.servers.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _hive_beside(hivemind: Hivemind) -> Callable[..., Awaitable[subprocess.CompletedProcess[str]]]:
    """`hive` against servers running in this event loop: in a thread, never with a traceback."""

    async def hive(*args: str) -> subprocess.CompletedProcess[str]:
        result = await asyncio.to_thread(_hive, hivemind.hive.home, *args)
        assert "Traceback" not in result.stderr
        return result

    return hive


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hive_up_runs_the_servers_and_the_manager_and_stops_without_orphans(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    ports = {name: _free_port() for name in SERVERS}
    # No Claude credentials anywhere: the manager's harness runs and says so instead of crashing.
    dashboard = _free_port()
    (home / "hive.toml").write_text(
        "".join(f"[servers.{name}]\nport = {port}\n" for name, port in ports.items())
        + f"[dashboard]\nport = {dashboard}\n"
    )
    for attempt in range(2):  # a second `hive up` reuses the home and its state
        up, lines = start_hive_up(home, timeout=60)
        try:
            output = "".join(lines)
            for name, port in ports.items():
                assert f"{name:<10} http://127.0.0.1:{port}/mcp" in output, output
            assert f"dashboard  http://127.0.0.1:{dashboard}" in output, output
            # A one-time code in the link, never a token: it works once, then is spent.
            [link] = re.findall(r"log in     (http://\S+/login\?code=\S+)", output)
            assert "eyJ" not in output  # no token printed anywhere
            servers = children_of(up.pid)
            assert len(servers) == len(SERVERS) + 1  # and the dashboard
            with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/", timeout=10) as page:
                assert page.url.endswith("/login?redirect_to=/")  # not logged in: the login page
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
            with opener.open(link, timeout=10) as page:  # the one-click link logs in and lands on the swarm
                assert page.status == 200 and urllib.parse.urlparse(page.url).path == "/"
            stranger = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
            with stranger.open(link, timeout=10) as page:  # used once: a second browser gets the login page
                assert urllib.parse.urlparse(page.url).path == "/login"
            deadline = time.monotonic() + 30
            while "no Claude credentials" not in (agents := _hive(home, "agents")).stdout:
                assert time.monotonic() < deadline, agents.stdout + agents.stderr
                time.sleep(0.3)
            assert agents.returncode == 0, agents.stderr
            assert "manager  manager  running" in agents.stdout
            assert "error" in agents.stdout and "set ANTHROPIC_API_KEY or run `claude login`" in agents.stdout
            for verb in ("approvals", "questions"):  # the approvals and operator servers answer too
                assert _hive(home, verb).stdout == f"◆ no {'requests' if verb == 'approvals' else verb} waiting\n"
            sandboxes = bwrap_pids(containing=str(home))
            assert sandboxes  # the manager's sandbox: the outer bwrap and its init

            sent = _hive(home, "debug", "send", "manager", f"hello #{attempt}")
            assert sent.returncode == 0, sent.stderr
            if attempt == 1:
                received = _hive(home, "debug", "recv", "--as", "manager")
                bodies = [json.loads(line)["body"] for line in received.stdout.splitlines()]
                assert bodies == ["hello #0", "hello #1"]  # the first run's message survived

            up.send_signal(signal.SIGINT)  # what Ctrl-C sends
            assert up.wait(30) == 0
            deadline = time.monotonic() + 5  # the reader thread takes the last lines
            while not any("◆ hive stopped" in line for line in lines):
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.05)
            for pid in [*servers, *sandboxes]:
                assert gone(pid), f"{pid} outlived hive up: {cmdline(pid)[:200]}"
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()


def test_hive_up_exits_when_its_server_cannot_start(tmp_path: Path, broker_process: BrokerProcess) -> None:
    home = broker_process.hive.home
    broker_process.start()
    (home / "hive.toml").write_text(f"[servers.broker]\nport = {broker_process.port}\n")  # taken
    up = subprocess.run(
        [sys.executable, "-m", "hyperhive.servers.cli", "up", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=180,  # six starts (each seconds of imports on a loaded machine) and ~23 s of backoff
    )
    assert up.returncode == 1
    assert "is in use" in up.stderr and "✗ broker exited with code 1 while starting" in up.stdout


def test_debug_verbs_report_refusals_plainly(hive: Hive, broker_process: BrokerProcess) -> None:
    broker_process.start()
    (hive.home / "hive.toml").write_text(f"[servers.broker]\nport = {broker_process.port}\n")
    result = _hive(hive.home, "debug", "send", "ghost", "hi")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: unknown recipient 'ghost'") and "Traceback" not in result.stderr


async def test_agent_verbs(hivemind: Hivemind) -> None:
    hive = _hive_beside(hivemind)

    await hivemind.create("alice")
    listing = await hive("agents")
    assert listing.returncode == 0, listing.stderr
    assert "◆ 2 agents · bwrap" in listing.stdout
    assert any(line.split()[:3] == ["alice", "agent", "running"] for line in listing.stdout.splitlines())

    assert (await hive("stop", "alice")).stdout == "◆ alice: stopped\n"
    assert (await hive("start", "alice")).stdout == "◆ alice: running\n"
    assert (await hive("restart", "alice")).stdout == "◆ alice: running\n"
    logs = await hive("logs", "alice", "-n", "1")
    assert logs.returncode == 0 and "hyperhive: starting sandbox" in logs.stdout

    refused = await hive("destroy", "manager", "--yes")
    assert refused.returncode == 1 and "destroying it needs --force" in refused.stderr  # the CLI's words
    unknown = await hive("start", "ghost")
    assert unknown.returncode == 1 and unknown.stderr.startswith("Error: no agent named 'ghost'")
    unasked = await hive("destroy", "alice")  # nobody answers the question: nothing happens
    assert unasked.returncode == 1 and "Really destroy alice?" in unasked.stdout
    assert (await hivemind.status("alice"))["state"] == "running"
    destroyed = await hive("destroy", "alice", "--yes")
    assert destroyed.stdout == "◆ alice: destroyed (its repos and state are kept)\n"


@pytest.mark.stores  # the approvals and operator stores, on sqlite and on PostgreSQL
async def test_approval_and_question_verbs(hivemind: Hivemind) -> None:
    hive = _hive_beside(hivemind)

    async with in_process(hivemind.hive, "approvals") as approvals, in_process(hivemind.hive, "operator") as operator:
        assert (await hive("approvals")).stdout == "◆ no requests waiting\n"
        await hivemind.create("alice")
        sha = await hivemind.propose("alice", f'model = "opus"\n[sandbox]\ncommand = {toml_list(SLEEPER_ARGV)}\n')
        manager = approvals.client("manager", timeout=60)
        first = await manager.call(
            "request_apply_commit", {"agent": "alice", "commit_ref": sha, "reason": "opus for alice"}
        )
        second = await manager.call("request_spawn", {"name": "bob", "reason": "more hands"})

        listing = await hive("approvals")
        assert listing.returncode == 0, listing.stderr
        lines = listing.stdout.splitlines()
        assert lines[0] == "◆ 2 requests waiting"
        assert lines[1].startswith(f"#{first['id']} apply config alice @ {sha[:12]} · asked by manager at ")
        assert '    +model = "opus"' in lines and '    -model = "sonnet"' in lines
        assert any(line.startswith(f"#{second['id']} spawn bob · asked by manager") for line in lines)
        assert f"    widens sandbox.command: (default) → {shlex.join(SLEEPER_ARGV)}" in lines
        assert "    why: opus for alice" in lines and "    commit: propose for alice" in lines
        assert "    why: more hands" in lines  # a spawn: its reason and a summary in place of the diff
        assert "    role         agent" in lines and "    bash         none" in lines
        assert '    +role = "agent"' not in lines
        assert '    +role = "agent"' in (await hive("approvals", "--diff")).stdout.splitlines()
        brief = (await hive("approvals", "--no-diff")).stdout
        assert "+model" not in brief and "    widens sandbox.command: (default) → " in brief

        approved = await hive("approve", str(first["id"]))
        assert approved.stdout == f"◆ #{first['id']} apply config alice @ {sha[:12]}: approved and applied\n"
        again = await hive("approve", str(first["id"]))
        assert again.returncode == 1 and f"request #{first['id']} was already applied" in again.stderr
        noteless = await hive("deny", str(second["id"]))
        assert noteless.returncode == 2 and "Missing option '--note'" in noteless.stderr
        denied = await hive("deny", str(second["id"]), "--note", "not now")
        assert denied.stdout == f"◆ #{second['id']} spawn bob: denied\n"
        history = (await hive("approvals", "--history", "5")).stdout.splitlines()
        assert history[0] == "◆ 2 resolved requests, newest first" and "    why: more hands" in history
        assert history[1].startswith(f"#{second['id']} spawn bob · denied by operator at ") and history[1].endswith(
            ": not now"
        )

        asker = operator.client("manager")
        plain = await asker.call("ask_operator", {"question": "Ship it?\nThe tests pass.", "ttl_seconds": 3600})
        multi = await asker.call(
            "ask_operator", {"question": "Colours?", "options": ["red", "dark blue"], "multi": True}
        )
        waiting = (await hive("questions")).stdout.splitlines()
        assert waiting[0] == "◆ 2 questions waiting"
        assert re.fullmatch(rf"#{plain['id']} from manager · (59m \d+s|1h) left", waiting[1]), waiting[1]
        assert waiting[2:4] == ["    Ship it?", "    The tests pass."]
        assert waiting[5:] == ["    Colours?", "    pick one or more: red | dark blue"]

        answered = await hive("answer", str(plain["id"]), "yes,", "ship", "it")
        assert answered.stdout == f"◆ question #{plain['id']}: answered 'yes, ship it'\n"
        picked = await hive("answer", str(multi["id"]), "dark blue", "red")
        assert picked.stdout == f"◆ question #{multi['id']}: answered 'red, dark blue'\n"
        late = await hive("cancel-question", str(plain["id"]))
        assert late.returncode == 1 and f"question {plain['id']} was already answered by operator" in late.stderr
        third = await asker.call("ask_operator", {"question": "Still there?"})
        assert (await hive("cancel-question", str(third["id"]))).stdout == f"◆ question #{third['id']}: cancelled\n"
        assert (await hive("questions")).stdout == "◆ no questions waiting\n"
        unknown = await hive("answer", "999", "hi")
        assert unknown.returncode == 1 and unknown.stderr.startswith("Error: no question 999")

    down = await hive("questions")  # the operator server is not running: say so plainly
    assert down.returncode == 1 and "operator" in down.stderr


def test_hive_up_retries_a_server_that_fails_to_start(hive: Hive) -> None:
    """The operator server's port is held through its first two starts: the hive comes up anyway."""
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER_ARGV)}")
    holder = socket.socket()
    holder.bind(("127.0.0.1", hive.ports["operator"]))
    holder.listen()
    up = subprocess.Popen(
        [sys.executable, "-m", "hyperhive.servers.cli", "up", "--home", str(hive.home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            output.append(line)
            if not line or "Ctrl-C" in line:
                break
            if sum("✗ operator exited with code 1 while starting" in seen for seen in output) == 2:
                holder.close()  # the third start finds the port free
        text = "".join(output)
        assert "Ctrl-C" in text, text
        assert text.count("✗ operator exited with code 1 while starting") == 2, text
        assert "retrying in 1 s" in text and "retrying in 2 s" in text, text
        time.sleep(2)
        assert up.poll() is None, "".join(output)  # and it stays up
        assert _hive(hive.home, "questions").stdout == "◆ no questions waiting\n"
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    finally:
        holder.close()
        if up.poll() is None:
            up.kill()
            up.wait()


async def test_hive_approve_of_a_request_whose_apply_fails_prints_the_failure_and_exits_1(
    hivemind: Hivemind,
) -> None:
    hive = _hive_beside(hivemind)
    async with in_process(hivemind.hive, "approvals") as approvals:
        request = await approvals.client("manager", timeout=60).call(
            "request_spawn", {"name": "bob", "reason": "more hands"}
        )
        # Meanwhile the operator makes bob otherwise (from a draft): the template spawn cannot be carried out.
        await hivemind.call("create_draft", name="bob")
        await hivemind.call("create_agent", name="bob", sha=await hivemind.propose("bob", 'model = "opus"\n'))
        approved = await hive("approve", str(request["id"]))
        assert approved.returncode == 1, approved
        assert f"#{request['id']} spawn bob: approved but failed: " in approved.stderr
        assert "bob already exists" in approved.stderr and approved.stdout == ""
        history = (await hive("approvals", "--history", "1")).stdout.splitlines()
        assert history[1].startswith(f"#{request['id']} spawn bob · failed by operator at ")
