"""Connection limits ([serving]): a flood of idle or slow connections from one peer does not stop a
server answering the others; keep-alive still works for well-behaved clients."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import pytest
import uvicorn
from hivetest import BrokerProcess, Hive, in_process_broker

from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.config import ServingSettings
from hyperhive.servers.common.connections import PeerLimits, guarded_protocol

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the flooding peers run as other uids")

# Started as root (so it may raise its open-files limit), it becomes `uid` and opens `idle`
# connections that send nothing and `slow` ones that send a request line and trickle headers.
PEER = r"""
import os, resource, select, socket, sys, time
host, port, idle, slow, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
want = idle + slow + 16
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
except (ValueError, OSError):
    pass
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
idle = max(0, min(idle, limit - slow - 12))  # what the limit allows, less what Python holds
os.setgroups([]); os.setgid(uid); os.setuid(uid)
held = []
deadline = time.monotonic() + 60
for _ in range(idle):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))  # no waiting: a server that stops accepting must not stall the flood
    held.append(s)
    if time.monotonic() > deadline:
        break
slow_held = []
for _ in range(slow):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))
    slow_held.append(s)
time.sleep(0.5)
for s in slow_held:
    try:
        s.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    except OSError:
        pass
print(f"opened {len(held)} idle and {len(slow_held)} slow connections (open-files limit {limit})", flush=True)
while not select.select([sys.stdin], [], [], 1.0)[0]:  # until the test closes our stdin
    for s in slow_held:
        try:
            s.send(b"X")
        except OSError:
            pass
"""


def start_peer(port: int, idle: int, slow: int, uid: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", PEER, "127.0.0.1", str(port), str(idle), str(slow), str(uid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # the peer bounds its own flood to 60 s
    assert line.startswith("opened"), f"flooding peer failed: {line!r} rc={process.poll()}"
    return process, line.strip()


def stop_peer(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def median_call_ms(address: ServerAddress, token: str, calls: int = 20) -> float:
    """The median time of `calls` pending_count calls on a new client, as the harness holds one (its
    first call opens a connection and a session, and must be answered within a few seconds too)."""
    async with HiveClient(address, token, timeout=5, retry_seconds=0) as client:
        with anyio.fail_after(5):
            await client.call("pending_count", {})
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await client.call("pending_count", {})
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@root_only
@pytest.mark.slow
async def test_a_flood_of_idle_and_slow_connections_does_not_stop_the_broker_answering_others(tmp_path: Path) -> None:
    hive = Hive(tmp_path / "hive")
    hive.configure("[serving]\nheader_timeout_seconds = 3\n")
    alice = hive.add_agent()
    # 1024 open files: the soft limit systemd gives a service (LimitNOFILE=1024:524288).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    broker = BrokerProcess(hive)
    broker.prefix = ("prlimit", f"--nofile=1024:{hard}", "--")
    broker.start()
    peers: list[subprocess.Popen[str]] = []
    try:
        address = ServerAddress("broker", broker.url)
        token = hive.token(alice)
        baseline = await median_call_ms(address, token)
        flood, opened = start_peer(broker.port or 0, 20_000, 0, 65534)
        peers.append(flood)
        slowloris, opened_slow = start_peer(broker.port or 0, 0, 300, 65533)
        peers.append(slowloris)
        print(opened, "/", opened_slow)
        await asyncio.sleep(1)
        loaded = await median_call_ms(address, token)
        print(f"pending_count median: {baseline:.1f} ms unloaded, {loaded:.1f} ms under the flood")
        assert loaded < 50
        assert loaded < max(10 * baseline, 20), (baseline, loaded)
        await asyncio.sleep(4)  # past the header timeout: the slow connections are gone, still answering
        assert await median_call_ms(address, token, calls=5) < 50
    finally:
        for peer in peers:
            stop_peer(peer)
        broker.stop()
    log = broker.stderr()
    # Logged once per peer and kind a minute, not once per connection.
    assert log.count("peer uid:65534: connections refused") == 1, log[-2000:]
    assert log.count("peer uid:65533: connections refused") <= 1, log[-2000:]


# ------------------------------------------------------------------ the same limits, one at a time


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    await asyncio.wait_for(reader.readexactly(length), 5)
    return head.split(b"\r\n")[0]


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def test_keep_alive_works_and_idle_connections_are_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    hive = Hive(tmp_path / "hive")
    hive.configure("[serving]\nidle_timeout_seconds = 1\n")
    async with in_process_broker(hive) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(endpoint.url))
        assert b"HTTP/1.1" in await _http_get(reader, writer)
        await asyncio.sleep(0.5)
        assert b"HTTP/1.1" in await _http_get(reader, writer)  # the same connection, kept alive
        started = time.monotonic()
        assert await _closed_within(reader, 3)
        assert 0.8 < time.monotonic() - started < 2.5
        writer.close()


async def test_a_connection_without_complete_headers_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    hive = Hive(tmp_path / "hive")
    hive.configure("[serving]\nheader_timeout_seconds = 1\nidle_timeout_seconds = 60\n")
    async with in_process_broker(hive) as endpoint:
        port = _port(endpoint.url)
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        for _ in range(3):  # trickling header bytes does not extend the deadline
            await asyncio.sleep(0.3)
            slow.write(b"X")
        assert await _closed_within(slow_reader, 3)
        assert await _closed_within(silent_reader, 3)
        assert time.monotonic() - started < 2.5
        # A second request on a kept-alive connection gets the same deadline.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert b"HTTP/1.1" in await _http_get(reader, writer)
        writer.write(b"GET /mcp HTTP/1.1\r\n")
        assert await _closed_within(reader, 3)
        for w in (silent, slow, writer):
            w.close()


# Started as root, it becomes `uid`, opens `count` connections to `target` (a port or a socket
# path), and says how many of them the server closed at once.
CONNECT = r"""
import os, socket, sys, time
target, count, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.setgroups([]); os.setgid(uid); os.setuid(uid)
held = []
for _ in range(count):
    if target.isdigit():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.connect(("127.0.0.1", int(target)))
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(target)
    held.append(s)
time.sleep(0.5)
closed = 0
for s in held:
    s.setblocking(False)
    try:
        closed += s.recv(1) == b""
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"{len(held) - closed} {closed}", flush=True)
sys.stdin.read()
"""


def connect_as(target: int | Path, count: int, uid: int) -> tuple[subprocess.Popen[str], tuple[int, int]]:
    """(the process holding the connections, (connections still open, connections closed at once))."""
    process = subprocess.Popen(
        [sys.executable, "-c", CONNECT, str(target), str(count), str(uid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    still_open, closed = process.stdout.readline().split()
    return process, (int(still_open), int(closed))


@root_only
async def test_connections_over_the_per_peer_cap_are_closed_at_once_and_other_peers_still_connect(
    tmp_path: Path,
) -> None:
    hive = Hive(tmp_path / "hive")
    port = hive.ports.pop("broker")
    run = Path(tempfile.mkdtemp(prefix="hh-"))  # reachable by other uids (pytest's tmp_path is not)
    hive.configure(
        f'[servers.broker]\nport = {port}\nsocket = "{run}/run/broker.sock"\n'
        "[serving]\nmax_connections_per_peer = 4\nheader_timeout_seconds = 30\n"
    )
    async with in_process_broker(hive):
        sock_path = hive.config.listen("broker").socket
        assert sock_path is not None
        run.chmod(0o755)  # let the other uids reach the socket, as a bind into a sandbox would
        sock_path.parent.chmod(0o755)
        sock_path.chmod(0o666)
        holders = []
        try:
            holder, counts = await asyncio.to_thread(connect_as, port, 6, 65534)
            holders.append(holder)
            assert counts == (4, 2)
            # The same uid over the unix socket (SO_PEERCRED) is the same peer.
            holder, counts = await asyncio.to_thread(connect_as, sock_path, 2, 65534)
            holders.append(holder)
            assert counts == (0, 2)
            # Another uid on the same loopback address is another peer, over either transport.
            holder, counts = await asyncio.to_thread(connect_as, port, 3, 65533)
            holders.append(holder)
            assert counts == (3, 0)
            holder, counts = await asyncio.to_thread(connect_as, sock_path, 2, 65533)
            holders.append(holder)
            assert counts == (1, 1)
            # Root (like the server's own uid) is not capped, and is answered.
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
            for reader, _ in held:
                assert not await _closed_within(reader, 0.1)
            assert b"HTTP/1.1" in await _http_get(*held[-1])
            # The first holder gone, its uid has places again.
            holders[0].stdin.close()  # type: ignore[union-attr]
            holders[0].wait(5)
            await asyncio.sleep(0.2)
            holder, counts = await asyncio.to_thread(connect_as, port, 2, 65534)
            holders.append(holder)
            assert counts == (2, 0)
            for _, writer in held:
                writer.close()
        finally:
            for holder in holders:
                if holder.stdin and not holder.stdin.closed:
                    holder.stdin.close()
                holder.wait(5)
    shutil.rmtree(run, ignore_errors=True)


def test_refusals_are_logged_once_a_minute_per_peer(caplog: pytest.LogCaptureFixture) -> None:
    limits = PeerLimits(ServingSettings(max_connections_per_peer=2, max_connections=16))
    assert limits.admit("uid:1") and limits.admit("uid:1")
    with caplog.at_level("WARNING", logger="hyperhive.serving"):
        assert not any(limits.admit("uid:1") for _ in range(1000))
        assert limits.admit("uid:2")
    assert len(caplog.records) == 1
    assert "uid:1" in caplog.records[0].getMessage()
    limits.release("uid:1")
    assert limits.admit("uid:1")
    for _ in range(13):
        limits.admit(f"ip:10.0.0.{_}")
    assert limits.total == 16
    assert not limits.admit("uid:9")  # the server's cap


def test_the_peer_of_a_loopback_connection_is_the_uid_that_opened_it() -> None:
    limits = PeerLimits(ServingSettings())
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()):
        accepted, _ = server.accept()
        with accepted:
            assert limits.peer_of(accepted) == f"uid:{os.geteuid()}"
    a, b = socket.socketpair()
    with a, b:
        assert limits.peer_of(a) == f"uid:{os.geteuid()}"
    limits.close()


async def test_upgrade_requests_do_not_use_up_connection_places(tmp_path: Path) -> None:
    """A websocket upgrade would hand the connection to another protocol, which never gave its place back."""
    hive = Hive(tmp_path / "hive")
    hive.configure("[serving]\nmax_connections = 16\n")
    async with in_process_broker(hive) as endpoint:
        port = _port(endpoint.url)
        upgrade = (
            b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(upgrade)
            await asyncio.wait_for(reader.read(12), 5)
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert b"HTTP/1.1" in await _http_get(reader, writer)
        writer.close()


async def test_an_upgraded_connection_gives_its_place_back() -> None:
    """Where websockets are served (uvicorn ws="auto", as the dashboard), the upgrade frees the place."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    limits = PeerLimits(ServingSettings())
    config = uvicorn.Config(Starlette(routes=[WebSocketRoute("/ws", echo)]), http=guarded_protocol(limits), ws="auto")
    server = uvicorn.Server(config)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert b"101" in await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        writer.close()
        await asyncio.sleep(0.2)
        assert limits.total == 0 and limits.open == {}
        server.should_exit = True
        await task
