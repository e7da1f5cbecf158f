"""Harness benchmark: the real Claude Code CLI against the scripted Messages API. Prints one JSON object.

    .venv/bin/python bench/harness.py [--wakes 50] [--agents 10] [--seconds 15] [--idle-agents 50] [--cold-wakes 10]

Runs, in a temporary hive: `hive serve broker` and `hive serve lifecycle` as processes (the latter
only receives the harnesses' turn stats; its manager sandbox runs a sleeper); the scripted Anthropic
Messages API (tests/fakes/anthropic_api.py) on loopback in this process; and one
`python -m hyperhive.harness` process per agent, outside any sandbox, each driving the Claude Code
CLI bundled with claude-agent-sdk. Every agent's hive.json (built with the lifecycle server's
harness_info) names the broker and the lifecycle server, gives Claude Code only the broker's tools
and the scripted API's environment. Each scripted turn is one
MCP tool call (mcp__broker__send back to the operator), then end_turn; the operator sends the
wakes with the broker's `send` tool over MCP (HiveClient, operator token).

Measures:
- wake_to_turn_start_ms: from the operator's `send` returning to the scripted API receiving the
  agent's first /v1/messages request of that turn, one agent whose Claude Code session is already
  connected, one wake at a time (each after the previous turn was acknowledged). Split where the
  harness starts the turn (its turn row's started_at: it has the message and is about to mark the
  turn running and hand the prompt to Claude Code): broker wake + harness, then harness + Claude Code.
- turns_per_second with 1 and with N agents: each agent in a closed loop (the operator sends the
  next wake when the agent's reply of the previous turn arrives) for a fixed window; a turn counts
  once the harness reported it (lifecycle's store) and acknowledged its message.
- idle_rss_mb_per_agent: VmRSS summed over the harness process and its children (Claude Code),
  read from /proc once every session is connected and idle; PSS (shared pages split) alongside.
- idle_closed: `--idle-agents` more agents (idle_close_seconds 2), each after one turn, started in
  batches of 10: once each has closed Claude Code and exec'd its idle waiter, the same memory
  figures, the whole fleet's total, and how many such agents 24 GiB holds.
- cold_wake_ms: one agent with idle_close_seconds 2: each wake waits until it is in its idle form,
  then times the operator's send to the scripted API's first request of the turn (exec of the turn
  loop, its imports, Claude Code started and resuming the session); the conversation must be one
  Claude Code session throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes: the scripted API lives with the tests

import claude_agent_sdk  # noqa: E402

from hyperhive.servers.broker.models import RecvBatchResult  # noqa: E402
from hyperhive.servers.common.agent_config import AGENT_TOML, AgentConfig  # noqa: E402
from hyperhive.servers.common.client import HiveClient, ServerAddress  # noqa: E402
from hyperhive.servers.common.config import HiveConfig, load_hive_config  # noqa: E402
from hyperhive.servers.common.files import write_atomic  # noqa: E402
from hyperhive.servers.common.harnessdir import (  # noqa: E402
    CREDENTIALS,
    HIVE_JSON,
    INSTANCE_DIR,
    TOKEN_FILE,
    TURN_STATE,
    TurnState,
)
from hyperhive.servers.common.instances import current_instance, new_instance  # noqa: E402
from hyperhive.servers.common.issuer import issue_token  # noqa: E402
from hyperhive.servers.home import init_home  # noqa: E402
from hyperhive.servers.lifecycle.harness_files import harness_info  # noqa: E402
from hyperhive.servers.lifecycle.models import Turn  # noqa: E402
from hyperhive.servers.lifecycle.paths import AgentPaths  # noqa: E402
from hyperhive.servers.lifecycle.store import turn_from_row  # noqa: E402
from tests.fakes.anthropic_api import Request, Say, ScriptedAPI, ToolCall  # noqa: E402

TARGET_WAKE_MS = 100.0
TARGET_WARM_P50_MS = 30.0
TARGET_COLD_P50_MS = 3000.0
TARGET_IDLE_MB = 60.0
IDLE_CLOSE_SECONDS = 2.0  # for the agents measured idle and cold; the others never close
BATCH = 10  # idle agents started (and running a turn) at a time: 10 Claude Codes at once is enough
MARK = re.compile(r"<hb-[a-z0-9-]+>")
TURN_TIMEOUT = 120.0  # a turn (or a fleet's start) taking longer than this is a failure
REPLY_TIMEOUT = 60.0


def percentiles(samples: list[float], scale: float = 1000.0) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * scale, 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * scale, 1),
        "min": round(ordered[0] * scale, 1),
        "max": round(ordered[-1] * scale, 1),
        "n": len(ordered),
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    try:
        with path.open(errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})\n"


# ------------------------------------------------------------------------------------ processes


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Bench:
    """The temporary hive, the scripted API and every process this benchmark starts; all stopped on exit."""

    agents: int
    keep: bool = False
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hive-bench-harness-")))
    api: ScriptedAPI = field(default_factory=ScriptedAPI)
    broker: Child | None = None
    lifecycle: Child | None = None  # where the harnesses report their turns (record_turn)
    harnesses: dict[str, Child] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "hive"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def __enter__(self) -> Bench:
        try:
            self.setup()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if error is not None and not isinstance(error, KeyboardInterrupt):
            self.print_tails()
        self.stop_harnesses()
        for server in (self.lifecycle, self.broker):
            if server is not None:
                _stop(server.process, signal.SIGTERM, 30)
        self.api.close()
        if self.keep:
            print(f"kept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def setup(self) -> None:
        self.logs.mkdir()
        init_home(self.home)
        sleeper = json.dumps([sys.executable, "-c", "import time; time.sleep(86400)"])  # the manager's sandbox
        (self.home / "hive.toml").write_text(
            f"[servers.broker]\nport = {free_port()}\n[servers.lifecycle]\nport = {free_port()}\n"
            f"[broker]\ninbox_cap = 1000000\n[lifecycle]\ndefault_command = {sleeper}\n"
        )
        self.api.start()
        self.api.script(
            when=lambda wake: MARK.search(wake) is not None,
            steps=[ToolCall("mcp__broker__send", _reply), Say("done")],
        )
        self.names = [f"b{i}" for i in range(self.agents)]
        config = load_hive_config(self.home)
        for name in self.names:
            (config.applied_dir / name).mkdir()
            write_atomic(config.applied_dir / name / AGENT_TOML, 'role = "agent"\n')
        self.broker = self._start_server("broker")
        self.lifecycle = self._start_server("lifecycle")
        for name in self.names:
            self.harnesses[name] = self._start_harness(config, name)

    def _start_server(self, server: str) -> Child:
        log = self.logs / f"{server}.log"
        command = [sys.executable, "-m", "hyperhive.servers.cli", "serve", server, "--home", str(self.home)]
        if server == "lifecycle":
            command.append("--stop-agents-on-exit")
        with log.open("wb") as err:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, cwd=self.root)
        child = Child(server, process, log)
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == f"{server} ready".encode():
                return child
        raise RuntimeError(f"the {server} server did not start (exit {process.wait()}):\n{tail(log)}")

    def add_agents(self, names: list[str], idle_close_seconds: float) -> None:
        """More agents, started now (the servers are up): applied config, then a harness each."""
        config = load_hive_config(self.home)
        for name in names:
            (config.applied_dir / name).mkdir()
            write_atomic(config.applied_dir / name / AGENT_TOML, 'role = "agent"\n')
        for name in names:
            self.harnesses[name] = self._start_harness(config, name, idle_close_seconds)

    def _start_harness(self, config: HiveConfig, name: str, idle_close_seconds: float = 86400.0) -> Child:
        paths = AgentPaths.of(config, name)
        control = paths.harness / CREDENTIALS  # in a sandbox, a read-only bind of credentials/<name>
        for directory in (paths.state, paths.harness, control):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = harness_info(config, name, AgentConfig())
        # Claude Code gets only the broker; the harness reports its turns to the lifecycle server.
        info = info.model_copy(
            update={
                "servers": {server: info.servers[server] for server in ("broker", "lifecycle")},
                "tools": {"broker": info.tools["broker"]},
                "env": {**info.env, **self.api.env()},
                "idle_close_seconds": idle_close_seconds,
            }
        )
        write_atomic(control / HIVE_JSON, info.model_dump_json(indent=2))
        if current_instance(config.instances_dir, name) is None:
            new_instance(config.instances_dir, name)  # the lifecycle server is not running here
        (control / INSTANCE_DIR).mkdir(exist_ok=True)
        write_atomic(control / INSTANCE_DIR / TOKEN_FILE, issue_token(config, name, 3 * 3600))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
        log = self.logs / f"{name}.log"
        command = [sys.executable, "-m", "hyperhive.harness", "--agent", name, "--harness-dir", str(paths.harness)]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.root, start_new_session=True
            )
        return Child(name, process, log)

    def stop_harnesses(self) -> None:
        """SIGTERM each harness (it closes its Claude Code session), then SIGKILL what is left of its
        process group (the harness and the Claude Code it started)."""
        for child in self.harnesses.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.harnesses.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()

    def print_tails(self) -> None:
        for child in [*(s for s in (self.broker, self.lifecycle) if s), *self.harnesses.values()]:
            state = child.process.poll()
            how = "running" if state is None else f"exited {state}"
            print(f"--- {child.name} ({how}): {child.log}", file=sys.stderr)
            print(tail(child.log), file=sys.stderr, end="")

    # ---------------------------------------------------------------------------------- reading

    def paths(self, name: str) -> AgentPaths:
        return AgentPaths(self.home.resolve(), name)

    def check_alive(self) -> None:
        for child in [*(s for s in (self.broker, self.lifecycle) if s), *self.harnesses.values()]:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}")

    def turn_state(self, name: str) -> TurnState | None:
        try:
            return TurnState.model_validate_json((self.paths(name).harness / TURN_STATE).read_bytes())
        except (OSError, ValueError):
            return None

    def turns(self, name: str, since: float = 0.0) -> list[Turn]:
        """The agent's wake turns (not notes compactions) started at or after `since`, oldest first."""
        # Read from the lifecycle server's own store (the bench's files, not an agent's).
        db = load_hive_config(self.home).db_path("lifecycle")
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT * FROM turns WHERE agent = ? AND kind = 'wake' AND started_at >= ? ORDER BY started_at",
                (name, since),
            ).fetchall()
        return [turn_from_row(row) for row in rows]

    def done(self, name: str, expected: int) -> bool:
        """Whether `name` recorded `expected` turns in all and acknowledged the last (idle again)."""
        state = self.turn_state(name)
        return state is not None and state.state == "idle" and len(self.turns(name)) >= expected


def _stop(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _reply(request: Request) -> dict[str, Any]:
    """The scripted tool call's input: tell the operator which wake this turn handled."""
    found = MARK.search(request.wake)
    return {"to": "operator", "body": f"done {found.group(0) if found else '?'}"}


# ------------------------------------------------------------------------------------ the operator


class Operator:
    """Sends wakes as the operator, and routes the agents' replies (the operator's inbox) by sender."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        config = load_hive_config(bench.home)
        token = issue_token(config, "operator", 3 * 3600)
        address = ServerAddress("broker", f"http://127.0.0.1:{config.listen('broker').port}/mcp")
        self.sender = HiveClient(address, token, retry_seconds=0)
        self.receiver = HiveClient(address, token, timeout=60, retry_seconds=0)
        self.replies: defaultdict[str, asyncio.Queue[str]] = defaultdict(asyncio.Queue)  # by agent
        self.sent: defaultdict[str, int] = defaultdict(int)
        self._ids = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Operator:
        self._task = asyncio.create_task(self._route())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sender.close()
        await self.receiver.close()

    async def _route(self) -> None:
        while True:
            batch = await self.receiver.call(
                "recv_batch", {"max": 50, "wait_seconds": 20}, result=RecvBatchResult, timeout=60
            )
            for message in batch.messages:
                self.replies[message.sender].put_nowait(message.body)

    def mark(self) -> str:
        self._ids += 1
        return f"<hb-{self._ids}>"

    async def wake(self, name: str, mark: str) -> None:
        """Send `name` one message (a wake); returns when the broker has answered the send."""
        await self.sender.call("send", {"to": name, "body": f"hive-bench {mark}: reply to the operator"})
        self.sent[name] += 1

    async def reply(self, name: str, mark: str) -> None:
        """Wait for `name`'s reply to the wake `mark` (older replies are skipped)."""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            try:
                if mark in await asyncio.wait_for(self.replies[name].get(), 1.0):
                    return
            except TimeoutError:
                self.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply from {name} to {mark} within {REPLY_TIMEOUT} s") from None

    def check(self) -> None:
        """Raise what stopped the reply router, or say which process died."""
        if self._task is not None and self._task.done():
            self._task.result()
            raise RuntimeError("the operator's reply router stopped")
        self.bench.check_alive()

    async def until_done(self, names: list[str], timeout: float = TURN_TIMEOUT) -> float:
        """Wait until each agent has handled and acknowledged every wake sent to it; the time.monotonic() then."""
        deadline = time.monotonic() + timeout
        while True:
            finished = await asyncio.to_thread(lambda: all(self.bench.done(n, self.sent[n]) for n in names))
            now = time.monotonic()
            if finished:
                return now
            self.check()
            if now > deadline:
                states = {n: self.bench.turn_state(n) for n in names}
                raise TimeoutError(f"turns not finished within {timeout} s: sent {self.sent}, states {states}")
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------ measures


async def warm_up(operator: Operator, names: list[str], turns: int) -> float:
    """`turns` wakes per agent, all agents at once: starts and connects every Claude Code session."""
    started = time.monotonic()
    for _ in range(turns):
        for name in names:
            await operator.wake(name, operator.mark())
        await operator.until_done(names, timeout=TURN_TIMEOUT + 10 * len(names))
    return time.monotonic() - started


async def wake_latency(bench: Bench, operator: Operator, name: str, wakes: int, gap: float) -> dict[str, Any]:
    """One wake at a time to `name`, each once the previous turn was acknowledged and `gap` seconds passed."""
    api = bench.api
    total, to_harness, to_claude, send_call = [], [], [], []
    preceded, sessions, sizes = 0, set[str](), []
    since, started = time.time(), time.monotonic()
    for _ in range(wakes):
        await asyncio.sleep(gap)  # the harness is back in its long-poll, Claude Code idle
        mark = operator.mark()
        seen = len(api.snapshot())
        before = time.monotonic()
        await operator.wake(name, mark)
        returned, returned_wall = time.monotonic(), time.time()
        request = await asyncio.to_thread(api.wait_for, _first_of(name, mark), TURN_TIMEOUT)
        await operator.until_done([name])
        total.append(request.received - returned)
        send_call.append(returned - before)
        sessions.add(request.session)
        sizes.append(len(json.dumps(request.body)) / 1024)
        preceded += min(r.received for r in api.snapshot()[seen:]) < request.received
        # The harness's turn row starts when it has the message and is about to mark the turn running.
        turn_started = bench.turns(name, since)[-1].started_at - returned_wall
        to_harness.append(turn_started)
        to_claude.append(request.received - returned - turn_started)
    turns = bench.turns(name, since)
    requests = [r for r in api.snapshot() if r.agent == name and r.received >= started]
    observed = percentiles(total)
    failed = [t for t in turns if not t.ok or t.tool_calls != {"mcp__broker__send": 1}]
    return {
        **observed,
        "target_ms": TARGET_WAKE_MS,
        "met": observed["p99"] <= TARGET_WAKE_MS,
        "agent": name,
        "split_ms": {
            "send_returned_to_harness_turn_start": percentiles(to_harness),
            "harness_turn_start_to_api_request": percentiles(to_claude),
        },
        "operator_send_call_ms": percentiles(send_call),
        "whole_turn_ms": percentiles([t.ended_at - t.started_at for t in turns]),
        "turns_not_as_scripted": len(failed),
        "model_requests_per_turn": round(len(requests) / len(turns), 2),
        "claude_code_sessions": len(sessions),
        "first_request_kib": {"first_wake": round(sizes[0], 1), "last_wake": round(sizes[-1], 1)},
        "wakes_where_another_request_came_first": preceded,
    }


def _first_of(name: str, mark: str) -> Callable[[Request], bool]:
    """The first request of the turn on wake `mark`: the wake prompt and no assistant message after it."""
    return lambda r: r.agent == name and mark in r.wake and r.position == 0


async def turn_rate(bench: Bench, operator: Operator, names: list[str], seconds: float) -> dict[str, Any]:
    """Each agent in a closed loop for `seconds`: wake, wait for its reply, wake again."""
    since = time.time()
    sent_before = dict(operator.sent)
    started = time.monotonic()
    stop = started + seconds

    async def loop(name: str) -> None:
        while time.monotonic() < stop:
            mark = operator.mark()
            await operator.wake(name, mark)
            await operator.reply(name, mark)

    await asyncio.gather(*(loop(name) for name in names))
    finished = await operator.until_done(names)
    elapsed = finished - started
    rows = [row for name in names for row in bench.turns(name, since)]
    sent = sum(operator.sent[name] - sent_before[name] for name in names)
    ok = [row for row in rows if row.ok and row.tool_calls == {"mcp__broker__send": 1}]
    return {
        "agents": len(names),
        "turns": len(rows),
        "wakes_sent": sent,
        "turns_not_as_scripted": len(rows) - len(ok),
        "seconds": round(elapsed, 2),
        "per_second": round(len(rows) / elapsed, 2),
        "per_agent_per_second": round(len(rows) / elapsed / len(names), 2),
        "whole_turn_ms": percentiles([row.ended_at - row.started_at for row in rows]),
    }


# ------------------------------------------------------------------------------------ memory


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    return children


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _kb(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def idle_memory(bench: Bench, names: list[str]) -> dict[str, Any]:
    """Per agent: VmRSS (and PSS) of the harness process and of its descendants (Claude Code)."""
    children = _children()
    harness_mb, claude_mb, total_mb, pss_mb, processes = [], [], [], [], []
    for child in (bench.harnesses[name] for name in names):
        tree = _tree(child.process.pid, children)
        rss = {pid: _kb(Path(f"/proc/{pid}/status"), "VmRSS") for pid in tree}
        pss = sum(_kb(Path(f"/proc/{pid}/smaps_rollup"), "Pss") for pid in tree)
        harness_mb.append(rss[child.process.pid] / 1024)
        claude_mb.append((sum(rss.values()) - rss[child.process.pid]) / 1024)
        total_mb.append(sum(rss.values()) / 1024)
        pss_mb.append(pss / 1024)
        processes.append(len(tree))

    def mb(values: list[float]) -> float:
        return round(statistics.fmean(values), 1)

    return {
        "mean": mb(total_mb),
        "min": round(min(total_mb), 1),
        "max": round(max(total_mb), 1),
        "harness_python_mean": mb(harness_mb),
        "claude_code_tree_mean": mb(claude_mb),
        "pss_mean": mb(pss_mb) if any(pss_mb) else None,
        "processes_per_agent": max(processes),
        "agents": len(total_mb),
        "per_agent": {name: round(mb, 1) for name, mb in zip(names, total_mb, strict=True)},
        "total_mb": round(sum(total_mb), 1),
        "pss_total_mb": round(sum(pss_mb), 1) if any(pss_mb) else None,
    }


def in_idle_form(child: Child) -> bool:
    """Whether the harness has exec'd its idle waiter (`--idle` on its command line)."""
    try:
        return b"--idle" in Path(f"/proc/{child.process.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


async def until_idle_form(bench: Bench, names: list[str], timeout: float = TURN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not all(in_idle_form(bench.harnesses[name]) for name in names):
        bench.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"not in their idle form within {timeout} s: {names}")
        await asyncio.sleep(0.05)


async def idle_closed(bench: Bench, operator: Operator, count: int, settle: float) -> dict[str, Any]:
    """`count` agents that each ran a turn and then went idle: their memory once all are idle waiters."""
    names = [f"i{i}" for i in range(count)]
    started = time.monotonic()
    for first in range(0, count, BATCH):
        batch = names[first : first + BATCH]
        bench.add_agents(batch, IDLE_CLOSE_SECONDS)
        for name in batch:
            await operator.wake(name, operator.mark())
        await operator.until_done(batch, timeout=TURN_TIMEOUT + 10 * len(batch))
        await until_idle_form(bench, batch)
    await asyncio.sleep(settle)
    memory = await asyncio.to_thread(idle_memory, bench, names)
    memory.pop("per_agent")
    gib24 = 24 * 1024
    return {
        **memory,
        "when": f"each after one turn and {IDLE_CLOSE_SECONDS:.0f} s without a wake (its idle waiter)",
        "fit_in_24_gib": {
            "by_rss": int(gib24 / memory["mean"]),
            "by_pss": int(gib24 / memory["pss_mean"]) if memory["pss_mean"] else None,
        },
        "seconds_to_set_up": round(time.monotonic() - started, 1),
    }


async def cold_wake(bench: Bench, operator: Operator, wakes: int) -> dict[str, Any]:
    """Wakes of an agent in its idle form: send -> first model request (exec, imports, Claude Code resuming)."""
    name = "c0"
    bench.add_agents([name], IDLE_CLOSE_SECONDS)
    await operator.wake(name, operator.mark())  # its first turn starts the session every later wake resumes
    await operator.until_done([name])
    pid = bench.harnesses[name].process.pid
    total, to_harness, to_claude, sessions = [], [], [], set[str]()
    since = time.time()
    for _ in range(wakes):
        await until_idle_form(bench, [name])
        mark = operator.mark()
        await operator.wake(name, mark)
        returned, returned_wall = time.monotonic(), time.time()
        request = await asyncio.to_thread(bench.api.wait_for, _first_of(name, mark), TURN_TIMEOUT)
        await operator.until_done([name])
        total.append(request.received - returned)
        sessions.add(request.session)
        turn_started = bench.turns(name, since)[-1].started_at - returned_wall
        to_harness.append(turn_started)
        to_claude.append(request.received - returned - turn_started)
    observed = percentiles(total)
    return {
        **observed,
        "target_p50_ms": TARGET_COLD_P50_MS,
        "met": observed["p50"] <= TARGET_COLD_P50_MS,
        "split_ms": {
            "send_returned_to_harness_turn_start": percentiles(to_harness),
            "harness_turn_start_to_api_request": percentiles(to_claude),
        },
        "claude_code_sessions": len(sessions),  # 1: every cold wake resumed the same conversation
        "same_process": bench.harnesses[name].process.pid == pid and bench.harnesses[name].process.poll() is None,
    }


# ------------------------------------------------------------------------------------ the run


async def run(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    async with Operator(bench) as operator:
        names = bench.names
        result["warm_up_seconds"] = round(await warm_up(operator, names, args.warmup), 2)
        await asyncio.sleep(args.settle)
        memory = await asyncio.to_thread(idle_memory, bench, names)
        memory.pop("per_agent")
        result["idle_rss_mb_per_agent"] = {**memory, "when": f"idle after {args.warmup} turn(s) each"}
        result["wake_to_turn_start_ms"] = await wake_latency(bench, operator, names[0], args.wakes, args.gap)
        result["turns_per_second"] = {"1": await turn_rate(bench, operator, names[:1], args.seconds)}
        if len(names) > 1:
            result["turns_per_second"][str(len(names))] = await turn_rate(bench, operator, names, args.seconds)
        await asyncio.sleep(args.settle)
        after = await asyncio.to_thread(idle_memory, bench, names)
        turns = {name: len(bench.turns(name)) for name in names}
        busiest = max(names, key=lambda name: turns[name])
        result["idle_rss_mb_per_agent"]["after_all_turns"] = {
            "mean": after["mean"],
            "max": after["max"],
            "busiest_agent": {"name": busiest, "turns": turns[busiest], "mb": after["per_agent"][busiest]},
        }
        if args.cold_wakes:
            result["cold_wake_ms"] = await cold_wake(bench, operator, args.cold_wakes)
        if args.idle_agents:
            result["idle_closed"] = await idle_closed(bench, operator, args.idle_agents, args.settle)
    wake = result["wake_to_turn_start_ms"]
    result["targets"] = {
        "wake_to_turn_start_p99_ms": {"target": TARGET_WAKE_MS, "observed": wake["p99"], "met": wake["met"]},
        "warm_wake_p50_ms": {
            "target": TARGET_WARM_P50_MS,
            "observed": wake["p50"],
            "met": wake["p50"] <= TARGET_WARM_P50_MS,
        },
    }
    if "cold_wake_ms" in result:
        cold = result["cold_wake_ms"]
        result["targets"]["cold_wake_p50_ms"] = {
            "target": TARGET_COLD_P50_MS,
            "observed": cold["p50"],
            "met": cold["met"],
        }
    if "idle_closed" in result:
        idle = result["idle_closed"]["mean"]
        result["targets"]["idle_closed_rss_mb"] = {
            "target": TARGET_IDLE_MB,
            "observed": idle,
            "met": idle <= TARGET_IDLE_MB,
        }
    return result


def mode() -> dict[str, str]:
    version = (Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude.version").read_text().strip()
    return {
        "harness": "python -m hyperhive.harness processes outside sandboxes, one per agent",
        "claude_code": f"real CLI bundled with claude-agent-sdk {claude_agent_sdk.__version__}: {version}",
        "model": "scripted Messages API on loopback (tests/fakes/anthropic_api.py), in the benchmark process",
        "servers": "hive serve broker and lifecycle (turn stats); the operator speaks MCP through HiveClient",
        "turn": "wake -> tool_use mcp__broker__send to the operator -> end_turn -> ack",
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wakes", type=int, default=50, help="wakes timed for the latency (default 50)")
    parser.add_argument("--agents", type=int, default=10, help="agents for the fleet's turn rate (default 10)")
    parser.add_argument("--seconds", type=float, default=15.0, help="window of each turn-rate run (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="turns per agent before measuring (default 2)")
    parser.add_argument("--gap", type=float, default=0.2, help="idle seconds before each timed wake (default 0.2)")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before reading memory (default 2)")
    parser.add_argument("--idle-agents", type=int, default=50, help="agents measured idle-closed (default 50)")
    parser.add_argument("--cold-wakes", type=int, default=10, help="wakes of an idle-closed agent timed (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary hive and logs, and say where")
    args = parser.parse_args()
    if args.agents < 1 or args.wakes < 1 or args.warmup < 1:
        parser.error("--agents, --wakes and --warmup must be at least 1")
    if args.idle_agents < 0 or args.cold_wakes < 0:
        parser.error("--idle-agents and --cold-wakes must be at least 0")
    signal.signal(signal.SIGTERM, _interrupt)
    started, load_before = time.monotonic(), [round(x, 2) for x in os.getloadavg()]
    try:
        with Bench(args.agents, keep=args.keep) as bench:
            result = asyncio.run(run(bench, args))
    except KeyboardInterrupt:
        print("interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
    result["mode"] = mode()
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
