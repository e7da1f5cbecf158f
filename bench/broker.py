"""Broker benchmark over real MCP HTTP on loopback. Prints one JSON object.

    .venv/bin/python bench/broker.py [--quick]
    .venv/bin/python bench/broker.py --store postgresql [--brokers 1,2,4] [--quick]

Starts `hive serve broker` and an echo server built on the same stack (tokens, allow-list,
argument checks, serving) as separate processes in a temporary hive, then measures:
send latency, a bare echo call's latency (the stack's floor), a read-only broker tool's latency
(pending_count: the floor plus one sqlite job), wake latency (send -> a waiting recv returns),
and delivered messages per second with 1, 10 and 100 sender/receiver pairs; then search_messages
over 10,000 more stored messages (a rare word, a common one, as an agent) beside list_messages.

With --store postgresql it measures a hive across processes instead (issue 17): delivered
messages per second and wake latency with 1, 2 and 4 broker processes on one PostgreSQL (a
throw-away cluster it starts: Debian's postgresql, initdb in a temp dir, with PostgreSQL's default
durability: each commit flushed to disk, where sqlite's default, WAL with synchronous=NORMAL,
flushes at checkpoints), each pair's sender on
one broker and its receiver on another, side by side with one sqlite broker in the same run.

The load comes from one process speaking MCP's stateless HTTP protocol (2026-07-28) directly
with httpx2, so the client costs as little CPU as possible on a small machine; the servers do
all their normal work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2

from hyperhive.servers.common.agent_config import AGENT_TOML
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.instances import current_instance, new_instance
from hyperhive.servers.common.issuer import issue_token, server_credentials
from hyperhive.servers.home import init_home

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = "2026-07-28"
TARGETS = {"wake_p99_ms": 10.0, "send_p50_ms": 3.0, "send_vs_echo_p50": 1.3, "delivered_per_s_100": 2000.0}


class McpCaller:
    """tools/call over MCP's stateless HTTP protocol, one connection pool per caller."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=300))
        self.headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": PROTOCOL,
            "Mcp-Method": "tools/call",
            "Authorization": f"Bearer {token}",
        }
        self.meta = {
            "io.modelcontextprotocol/protocolVersion": PROTOCOL,
            "io.modelcontextprotocol/clientInfo": {"name": "hyperhive-bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        self.ids = iter(range(1, 1 << 62))

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        body = {
            "jsonrpc": "2.0",
            "id": next(self.ids),
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": self.meta},
        }
        response = await self.http.post(self.url, json=body, headers={**self.headers, "Mcp-Name": tool})
        response.raise_for_status()
        if response.headers["content-type"].startswith("text/event-stream"):
            data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
            reply = json.loads(data[-1])
        else:
            reply = response.json()
        result = reply["result"]
        if result.get("isError"):
            raise RuntimeError(f"{tool}: {result['content'][0]['text']}")
        return dict(result["structuredContent"])

    async def close(self) -> None:
        await self.http.aclose()


# ------------------------------------------------------------------------------------------ setup


@contextmanager
def hive_with_servers(
    agents: int, *, storage_url: str | None = None, brokers: int = 1, echo: bool = True
) -> Iterator[tuple[Path, list[str], str]]:
    """A temporary hive with `agents` agents, `brokers` broker processes (on PostgreSQL at
    `storage_url`, else one sqlite broker) and the echo server: (home, broker urls, echo url)."""
    with tempfile.TemporaryDirectory(prefix="hive-bench-") as tmp:
        home = Path(tmp)
        init_home(home)
        storage = f"[storage]\nurl = {json.dumps(storage_url)}\n" if storage_url else ""
        (home / "hive.toml").write_text(f"[broker]\ninbox_cap = 1000000\n{storage}")
        config = load_hive_config(home)
        for i in range(agents):
            (config.applied_dir / f"b{i}").mkdir()
            write_atomic(config.applied_dir / f"b{i}" / AGENT_TOML, 'role = "agent"\n')
        serve = [sys.executable, "-m", "hyperhive.servers.cli", "serve", "broker", "--home", tmp, "--port", "0"]
        processes = [_start(serve) for _ in range(brokers)]
        if echo:
            processes.append(_start([sys.executable, __file__, "--serve-echo", tmp]))
        try:
            urls = [url for _, url in processes]
            yield home, urls[:brokers], urls[brokers] if echo else ""
        finally:
            for process, _ in processes:
                process.terminate()
                process.wait(30)


def _start(command: list[str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    url = ""
    for line in process.stdout:
        if " listening on " in line and not url:
            url = line.split(" listening on ", 1)[1].strip()
        if line.strip().endswith(" ready"):
            return process, url
    raise RuntimeError(f"{command} did not start")


def serve_echo(home: str) -> None:
    """An echo server on exactly the broker's stack: same verifier, middleware and serving."""
    from hyperhive.servers.common.access import AGENT
    from hyperhive.servers.common.agents import AgentRegistry
    from hyperhive.servers.common.config import Listen
    from hyperhive.servers.common.serving import http_app, serve
    from hyperhive.servers.common.toolserver import create_mcp

    config = load_hive_config(Path(home))
    mcp = create_mcp(
        "broker",  # the tokens' audience: the echo stands where the broker does
        instructions="benchmark baseline",
        credentials=server_credentials(config, "broker"),
        agents=AgentRegistry(config.applied_dir, config.instances_dir),
        catalog={"echo": AGENT},
    )

    @mcp.tool
    async def echo(text: str) -> dict[str, str]:
        return {"text": text}

    def ready(urls: list[str]) -> None:
        print(f"echo listening on {urls[0]}\necho ready", flush=True)

    asyncio.run(serve(http_app(mcp), Listen(port=0), on_ready=ready))


# ---------------------------------------------------------------------------------------- measures


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "n": len(ordered),
    }


async def timed(call: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def latency(home: Path, broker_url: str, echo_url: str, n: int) -> dict[str, Any]:
    token = _tokens(home)
    sender = McpCaller(broker_url, token("b0"))
    operator = McpCaller(echo_url, token("operator"))
    for _ in range(50):  # warm up connections and caches
        await sender.call("send", {"to": "b1", "body": "warm"})
        await operator.call("echo", {"text": "warm"})
    send = await timed(lambda: sender.call("send", {"to": "b1", "body": "x" * 200}), n)
    echo = await timed(lambda: operator.call("echo", {"text": "x" * 200}), n)
    read = await timed(lambda: sender.call("pending_count", {}), n)  # a broker tool that only reads
    for caller in (sender, operator):
        await caller.close()
    return {
        "send_ms": percentiles(send),
        "echo_ms": percentiles(echo),
        "read_tool_ms": percentiles(read),
        "wake_ms": await wake(home, broker_url, broker_url, max(50, n // 5)),
    }


async def wake(home: Path, sender_url: str, receiver_url: str, n: int) -> dict[str, float]:
    """send -> a recv waiting (on `receiver_url`: another broker process, or the same) returns."""
    token = _tokens(home)
    sender, receiver = McpCaller(sender_url, token("b0")), McpCaller(receiver_url, token("b1"))
    for _ in range(20):
        await sender.call("send", {"to": "b1", "body": "warm"})
    samples = []
    for _ in range(n):
        await receiver.call("recv_batch", {"max": 50})  # empty the inbox
        waiting = asyncio.create_task(receiver.call("recv", {"wait_seconds": 30}))
        await asyncio.sleep(0.005)  # let the recv reach the server and wait
        started = time.perf_counter()
        await sender.call("send", {"to": "b1", "body": "wake"})
        await waiting
        samples.append(time.perf_counter() - started)
    for caller in (sender, receiver):
        await caller.close()
    return percentiles(samples)


async def throughput(home: Path, broker_urls: list[str], pairs: int, seconds: float) -> float:
    """Delivered messages per second with `pairs` senders each feeding one receiver; with several
    brokers, pair i sends through broker i and receives through the next one."""
    token = _tokens(home)
    count = len(broker_urls)
    senders = [McpCaller(broker_urls[i % count], token(f"b{2 * i}")) for i in range(pairs)]
    receivers = [McpCaller(broker_urls[(i + 1) % count], token(f"b{2 * i + 1}")) for i in range(pairs)]
    delivered = 0
    stop = time.monotonic() + seconds

    async def send(caller: McpCaller, to: str) -> None:
        while time.monotonic() < stop:
            await caller.call("send", {"to": to, "body": "payload " * 25})

    async def receive(caller: McpCaller) -> None:
        nonlocal delivered
        while time.monotonic() < stop:
            batch = await caller.call("recv_batch", {"max": 50, "wait_seconds": 1})
            delivered += len(batch["messages"])

    started = time.monotonic()
    await asyncio.gather(*(send(s, f"b{2 * i + 1}") for i, s in enumerate(senders)), *(receive(r) for r in receivers))
    rate = delivered / (time.monotonic() - started)
    for caller in senders + receivers:
        await caller.close()
    return round(rate, 1)


async def search(home: Path, broker_url: str, n: int, stored: int = 10_000) -> dict[str, Any]:
    """search_messages over `stored` more messages (written in one transaction, indexed by the
    broker's triggers as a send's are): a rare word, a word in every message, and an agent's search
    (the visibility check per hit), beside list_messages (limit 50) as the reference read."""
    config = load_hive_config(home)
    with sqlite3.connect(config.db_path("broker"), timeout=30) as db:
        first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()[0]
        now = time.time()
        db.executemany(
            "INSERT INTO messages (id, sender, body, created_at) VALUES (?, 'b0', ?, ?)",
            [
                (first + i, f"status report {i}: queue {i % 97} drained" + (" quokka" if i == stored // 2 else ""), now)
                for i in range(stored)
            ],
        )
        db.executemany(
            "INSERT INTO deliveries (message_id, recipient, state, delivered_at) VALUES (?, 'b1', 'delivered', ?)",
            [(first + i, now) for i in range(stored)],
        )
    token = _tokens(home)
    operator, agent = McpCaller(broker_url, token("operator")), McpCaller(broker_url, token("b1"))
    for _ in range(10):
        await operator.call("search_messages", {"query": "quokka"})
    found = await operator.call("search_messages", {"query": "quokka"})
    assert len(found["messages"]) == 1, found
    result = {
        "stored": stored,
        "rare_word_ms": percentiles(await timed(lambda: operator.call("search_messages", {"query": "quokka"}), n)),
        "common_word_ms": percentiles(
            await timed(lambda: operator.call("search_messages", {"query": "drained", "limit": 50}), n // 4)
        ),
        "agent_common_word_ms": percentiles(
            await timed(lambda: agent.call("search_messages", {"query": "drained", "limit": 50}), n // 4)
        ),
        "reference_list_messages_50_ms": percentiles(
            await timed(lambda: operator.call("list_messages", {"limit": 50}), n // 4)
        ),
    }
    for caller in (operator, agent):
        await caller.close()
    return result


def _tokens(home: Path) -> Any:
    config = load_hive_config(home)

    def token(name: str) -> str:
        if name != "operator" and current_instance(config.instances_dir, name) is None:
            new_instance(config.instances_dir, name)  # agents written straight into applied/ here
        return issue_token(config, name, 3600)

    return token


async def run(quick: bool) -> dict[str, Any]:
    n, seconds = (300, 3.0) if quick else (1000, 8.0)
    with hive_with_servers(agents=200) as (home, broker_urls, echo_url):
        [broker_url] = broker_urls
        result = await latency(home, broker_url, echo_url, n)
        result["delivered_per_s"] = {str(p): await throughput(home, broker_urls, p, seconds) for p in (1, 10, 100)}
        result["search"] = await search(home, broker_url, n // 5)
    result["send_vs_echo_p50"] = round(result["send_ms"]["p50"] / result["echo_ms"]["p50"], 2)
    observed = {
        "wake_p99_ms": result["wake_ms"]["p99"],
        "send_p50_ms": result["send_ms"]["p50"],
        "send_vs_echo_p50": result["send_vs_echo_p50"],
        "delivered_per_s_100": result["delivered_per_s"]["100"],
    }
    result["targets"] = {
        key: {
            "target": target,
            "observed": observed[key],
            "met": observed[key] >= target if key.startswith("delivered") else observed[key] <= target,
        }
        for key, target in TARGETS.items()
    }
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    return result


# ------------------------------------------------------------------------------- across processes
SCALING_TARGETS = {"pg_1_broker_vs_sqlite": 0.7, "cross_process_wake_p99_ms": 15.0}
SCALING_PAIRS = 50


async def run_postgresql(quick: bool, broker_counts: list[int]) -> dict[str, Any]:
    """Delivered messages/s and wake latency with each count of broker processes on one PostgreSQL,
    beside one sqlite broker in the same run."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the throw-away cluster lives with the tests (Debian's postgresql)
    from tests.pgtest import PgCluster

    n, seconds = (100, 3.0) if quick else (300, 8.0)
    result: dict[str, Any] = {"pairs": SCALING_PAIRS, "seconds": seconds}
    with hive_with_servers(agents=2 * SCALING_PAIRS, echo=False) as (home, urls, _):
        result["sqlite"] = {
            "delivered_per_s": await throughput(home, urls, SCALING_PAIRS, seconds),
            "wake_ms": await wake(home, urls[0], urls[0], n),
        }
    cluster = PgCluster(settings={"fsync": "on", "synchronous_commit": "on"}).start()  # PostgreSQL's defaults
    try:
        for count in broker_counts:
            database = cluster.create_database()
            storage = cluster.url(database)
            with hive_with_servers(agents=2 * SCALING_PAIRS, storage_url=storage, brokers=count, echo=False) as (
                home,
                urls,
                _,
            ):
                result[f"postgresql_{count}"] = {
                    "brokers": count,
                    "delivered_per_s": await throughput(home, urls, SCALING_PAIRS, seconds),
                    # the receiver on the last broker: across processes whenever there are two
                    "wake_ms": await wake(home, urls[0], urls[-1], n),
                }
            cluster.drop_database(database)
    finally:
        cluster.stop()
    sqlite_rate = result["sqlite"]["delivered_per_s"]
    for count in broker_counts:
        measured = result[f"postgresql_{count}"]
        measured["vs_sqlite"] = round(measured["delivered_per_s"] / sqlite_rate, 2) if sqlite_rate else None
    targets: dict[str, Any] = {}
    if 1 in broker_counts:
        ratio, goal = result["postgresql_1"]["vs_sqlite"], SCALING_TARGETS["pg_1_broker_vs_sqlite"]
        targets["pg_1_broker_vs_sqlite"] = {"target": goal, "observed": ratio, "met": ratio >= goal}
    across = [result[f"postgresql_{count}"]["wake_ms"]["p99"] for count in broker_counts if count > 1]
    if across:
        worst, goal = max(across), SCALING_TARGETS["cross_process_wake_p99_ms"]
        targets["cross_process_wake_p99_ms"] = {"target": goal, "observed": worst, "met": worst <= goal}
    result["targets"] = targets
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter runs")
    parser.add_argument(
        "--store", choices=["sqlite", "postgresql"], default="sqlite", help="postgresql: the hive across processes"
    )
    parser.add_argument("--brokers", default="1,2,4", help="with --store postgresql: broker process counts (1,2,4)")
    parser.add_argument("--serve-echo", metavar="HOME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    if args.store == "postgresql":
        try:
            counts = sorted({int(count) for count in args.brokers.split(",")})
        except ValueError:
            parser.error("--brokers: counts separated by commas, e.g. 1,2,4")
        if not counts or not all(1 <= count <= 16 for count in counts):
            parser.error("--brokers: each count from 1 to 16")
        print(json.dumps(asyncio.run(run_postgresql(args.quick, counts)), indent=2))
        return
    print(json.dumps(asyncio.run(run(args.quick)), indent=2))


if __name__ == "__main__":
    main()
