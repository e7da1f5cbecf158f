"""Lifecycle benchmark with real bubblewrap sandboxes. Prints one JSON object. Run as root.

    .venv/bin/python bench/lifecycle.py [--quick]

Measures, in a temporary hive:
- sandbox_up_ms: the bwrap backend's start() until bwrap reports the sandbox up (the sandbox
  itself: namespaces, binds, the uid drop; the command is /bin/sleep);
- stop_ms: stop() of a sandbox whose program exits on SIGTERM, until it is gone;
- create_agent_ms: the lifecycle server's create_agent over MCP, from the call to its answer
  (config repos with git, dirs, token, sandbox up);
- fifty_agents: 50 create_agent calls at once through the server, until all run, then stopping
  them all (`hive up` stopping the hive).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hyperhive.servers.common.client import HiveClient, server_address
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.issuer import issue_token, server_credentials
from hyperhive.servers.common.serving import http_app, serve
from hyperhive.servers.home import init_home
from hyperhive.servers.lifecycle.backends.base import SandboxSpec
from hyperhive.servers.lifecycle.backends.bwrap import BwrapBackend
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.server import create as create_lifecycle

TARGETS = {"sandbox_up_p99_ms": 20.0}
SLEEP = ["/bin/sleep", "3600"]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "n": len(ordered),
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_home(root: Path) -> Path:
    home = root / "hive"
    init_home(home)
    (home / "hive.toml").write_text(
        f"[servers.broker]\nport = {free_port()}\n[servers.lifecycle]\nport = {free_port()}\n"
        f"[lifecycle]\nuid_base = 300000\ndefault_command = {json.dumps(SLEEP)}\nrebuild_stale_on_start = false\n"
    )
    return home


async def backend_latency(home: Path, runs: int) -> dict[str, Any]:
    config = load_hive_config(home)
    backend = BwrapBackend(config)
    paths = AgentPaths.of(config, "bench")
    for directory in (paths.state, paths.harness, paths.credentials):
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, 300_999, 300_999)
    spec = SandboxSpec(
        "bench", "agent", SLEEP, {"PATH": "/usr/bin:/bin"}, 300_999, paths.state, paths.harness,
        paths.credentials, paths.applied, paths.log,
    )  # fmt: skip
    changes = backend.changes()
    for _ in range(3):  # warm up: the first start pays for cold caches (about 20 ms here)
        await backend.start(spec)
        await backend.stop("bench", 10)
        await anext(changes)
    up, down = [], []
    for _ in range(runs):
        started = time.perf_counter()
        await backend.start(spec)
        up.append(time.perf_counter() - started)
        started = time.perf_counter()
        await backend.stop("bench", 10)
        down.append(time.perf_counter() - started)
        await anext(changes)
    await backend.close()
    return {"sandbox_up_ms": percentiles(up), "stop_ms": percentiles(down)}


async def server_latency(home: Path, creates: int, fleet: int) -> dict[str, Any]:
    config = load_hive_config(home)
    server = create_lifecycle(config, server_credentials(config, "lifecycle"), stop_agents_on_exit=True)
    stop = asyncio.Event()
    ready: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(http_app(server.mcp), config.listen("lifecycle"), on_ready=ready.set_result, stop=stop)
    )
    await ready
    operator = issue_token(config, "operator", 3600)
    address = server_address(config, "lifecycle")
    result: dict[str, Any] = {}
    async with HiveClient(address, operator, timeout=300) as client:
        samples = []
        for i in range(creates):
            started = time.perf_counter()
            await client.call("create_agent", {"name": f"c{i}"})
            samples.append(time.perf_counter() - started)
        result["create_agent_ms"] = percentiles(samples)

        clients = [HiveClient(address, operator, timeout=300) for _ in range(fleet)]
        started = time.perf_counter()
        await asyncio.gather(*(c.call("create_agent", {"name": f"f{i}"}) for i, c in enumerate(clients)))
        up = time.perf_counter() - started
        listing = await client.call("list_agents", {})
        running = sum(agent["state"] == "running" for agent in listing["agents"] if agent["name"].startswith("f"))
        for c in clients:
            await c.close()
    started = time.perf_counter()
    stop.set()
    await task  # stop_agents_on_exit: every sandbox is stopped before the server ends
    result["fifty_agents" if fleet == 50 else f"{fleet}_agents"] = {
        "agents": fleet,
        "all_up_seconds": round(up, 2),
        "running": running,
        "stop_all_seconds": round(time.perf_counter() - started, 2),
    }
    return result


async def run(quick: bool) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise SystemExit("run as root: agents get their own uids")
    with tempfile.TemporaryDirectory(prefix="hive-bench-") as tmp:
        home = make_home(Path(tmp))
        result = await backend_latency(home, 30 if quick else 100)
        result |= await server_latency(home, 5 if quick else 20, 50)
    observed = result["sandbox_up_ms"]["p99"]
    target = TARGETS["sandbox_up_p99_ms"]
    result["targets"] = {"sandbox_up_p99_ms": {"target": target, "observed": observed, "met": observed <= target}}
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.quick)), indent=2))


if __name__ == "__main__":
    main()
