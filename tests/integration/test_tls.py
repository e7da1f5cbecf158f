"""TLS on a server's TCP port ([servers.X] tls_cert and tls_key): tool calls over https, clients that
trust exactly the configured certificate (names checked), the unix socket still plain, the
connection limits applied before the handshake, and the refusals at start."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hivetest import BrokerProcess, Certificate, Hive, free_port, in_process, in_process_broker, make_certificate

from hyperhive.harness.lean_client import LeanMcpClient
from hyperhive.servers.broker.client import BrokerClient
from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.call_errors import ServerUnavailable
from hyperhive.servers.common.client import HiveClient, ServerAddress, server_address
from hyperhive.servers.common.clock import ManualClock
from hyperhive.servers.common.config import Listen
from hyperhive.servers.lifecycle.harness_files import harness_info

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the capped peers run as other uids")


@pytest.fixture
def cert(tmp_path: Path) -> Certificate:
    """Self-signed, for 127.0.0.1 and localhost."""
    return make_certificate(tmp_path / "tls")


def tls_hive(tmp_path: Path, cert: Certificate, settings: str = "", broker: str = "") -> Hive:
    """A hive whose broker serves TLS on its loopback port with `cert` (more [servers.broker] lines in `broker`)."""
    hive = Hive(tmp_path / "hive")
    port = hive.ports.pop("broker")
    hive.configure(
        f'[servers.broker]\nport = {port}\ntls_cert = "{cert.cert}"\ntls_key = "{cert.key}"\n{broker}\n{settings}'
    )
    return hive


def client_context(cert: Certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cert.cert)


async def test_tool_calls_go_over_https_to_a_server_with_a_certificate(tmp_path: Path, cert: Certificate) -> None:
    hive = tls_hive(tmp_path, cert)
    alice = hive.add_agent()
    address = server_address(hive.config, "broker")
    assert address.url.startswith("https://127.0.0.1:") and address.tls_cert == cert.cert
    async with in_process_broker(hive) as endpoint:
        assert endpoint.url == address.url  # what it says it serves is what clients are told
        async with (
            HiveClient.for_server(hive.config, "broker", hive.token(alice), retry_seconds=0) as sender,
            HiveClient.for_server(hive.config, "broker", hive.token("manager"), retry_seconds=0) as receiver,
        ):
            sent = await sender.call("send", {"to": "manager", "body": "over TLS"})
            got = await receiver.call("recv", {"wait_seconds": 5})
        assert got["message"]["id"] == sent["id"] and got["message"]["body"] == "over TLS"
        assert got["message"]["sender"] == alice


async def test_a_client_trusting_another_certificate_is_refused_at_once_with_the_reason(
    tmp_path: Path, cert: Certificate
) -> None:
    hive = tls_hive(tmp_path, cert)
    other = make_certificate(tmp_path / "other", "other")
    token = hive.token(hive.add_agent())
    async with in_process_broker(hive) as endpoint:
        started = time.monotonic()
        async with HiveClient(ServerAddress("broker", endpoint.url, tls_cert=other.cert), token) as client:
            with pytest.raises(ServerUnavailable) as refused:
                await client.call("pending_count", {})
        assert str(refused.value).startswith(f"cannot reach broker at {endpoint.url}: its TLS certificate does not ")
        assert f"verify against {other.cert} (self-signed certificate)" in str(refused.value)
        assert time.monotonic() - started < 5  # not retried for retry_seconds (10): waiting changes no certificate

        # hive.json's certificate (the harness's clients) the same.
        broker = BrokerClient.at(endpoint.url, token, tls_cert_pem=other.pem, retry_seconds=0)
        with pytest.raises(ServerUnavailable, match=r"does not verify against the certificate hive\.json gives"):
            await broker.hive.call("pending_count", {})
        await broker.close()

        # The one to trust, but not readable: said as such.
        missing = tmp_path / "nowhere.crt"
        async with HiveClient(ServerAddress("broker", endpoint.url, tls_cert=missing), token) as client:
            with pytest.raises(ServerUnavailable, match=f"cannot load the certificate to trust, {missing}: No such"):
                await client.call("pending_count", {})

        # Trusting a server's certificate is not enough: it must name the host the client connects to.
        elsewhere = make_certificate(tmp_path / "elsewhere", "elsewhere", ips=(), dns=("hive.example.com",))
        listen = Listen(port=free_port(), tls_cert=elsewhere.cert, tls_key=elsewhere.key)
        async with in_process(hive, "broker", listen=listen, clock=ManualClock(start=time.time())) as misnamed:
            address = ServerAddress("broker", misnamed.url, tls_cert=elsewhere.cert)
            async with HiveClient(address, token, retry_seconds=0) as client:
                mismatch = r"IP address mismatch, certificate is not valid for '127\.0\.0\.1'"
                with pytest.raises(ServerUnavailable, match=mismatch):
                    await client.call("pending_count", {})


async def test_plain_http_to_the_tls_port_fails_and_the_unix_socket_stays_plain(
    tmp_path: Path, cert: Certificate
) -> None:
    hive = tls_hive(tmp_path, cert, broker='socket = "run/broker.sock"')
    token = hive.token(hive.add_agent())
    async with in_process_broker(hive) as endpoint:
        plain_url = endpoint.url.replace("https://", "http://")
        async with HiveClient(ServerAddress("broker", plain_url), token, retry_seconds=0) as client:
            with pytest.raises(ServerUnavailable, match=r"call to broker\.pending_count failed"):
                await client.call("pending_count", {})
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(endpoint.url))
        writer.write(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not (await asyncio.wait_for(reader.read(64), 5)).startswith(b"HTTP")  # no answer in plain HTTP
        writer.close()

        socket_path = hive.config.listen("broker").socket
        assert socket_path is not None and socket_path.exists()
        local = ServerAddress("broker", "http://localhost/mcp", socket_path)
        async with HiveClient(local, token, retry_seconds=0) as client:
            assert await client.call("pending_count", {}) == {"queued": 0, "leased": 0}


async def test_a_handshake_and_then_the_headers_must_each_come_within_the_header_timeout(
    tmp_path: Path, cert: Certificate
) -> None:
    hive = tls_hive(tmp_path, cert, "[serving]\nheader_timeout_seconds = 1\nidle_timeout_seconds = 60\n")
    async with in_process_broker(hive) as endpoint:
        port = _port(endpoint.url)
        started = time.monotonic()
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)  # TCP, no TLS handshake
        slow_reader, slow = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(cert), server_hostname="127.0.0.1"
        )
        slow.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # over TLS, headers never finished
        assert await _closed_within(silent_reader, 3)
        assert await _closed_within(slow_reader, 3)
        assert time.monotonic() - started < 2.5
        # A well-behaved TLS client is answered, and kept alive.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(cert), server_hostname="127.0.0.1"
        )
        for _ in range(2):
            writer.write(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 ")
            lines = head.lower().split(b"\r\n")
            length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
            await asyncio.wait_for(reader.readexactly(length), 5)
        for w in (silent, slow, writer):
            w.close()


# Started as root, it becomes `uid` and opens `count` connections to the port: with TLS=1 each one
# shakes hands (trusting the PEM in $CERT), else it only connects. It says how many stayed open and
# how many the server closed at once, then holds the open ones until its stdin closes.
CONNECT = r"""
import encodings.idna, os, socket, ssl, sys, time  # idna: ssl encodes the host name with it, after setuid
port, count, uid, tls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
context = ssl.create_default_context(cadata=os.environ["CERT"])
os.setgroups([]); os.setgid(uid); os.setuid(uid)
held, closed = [], 0
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    if tls:
        try:
            s = context.wrap_socket(s, server_hostname="127.0.0.1")
        except OSError:
            closed += 1
            continue
    held.append(s)
time.sleep(0.5)
for s in held:
    s.setblocking(False)
    try:
        closed += s.recv(1) == b""
    except (BlockingIOError, ssl.SSLWantReadError):
        pass
    except OSError:
        closed += 1
print(f"{count - closed} {closed}", flush=True)
sys.stdin.read()
"""


def connect_as(
    port: int, count: int, uid: int, cert: Certificate, *, tls: bool
) -> tuple[subprocess.Popen[str], tuple[int, int]]:
    """(the process holding the connections, (connections still open, connections closed at once))."""
    process = subprocess.Popen(
        [sys.executable, "-c", CONNECT, str(port), str(count), str(uid), "1" if tls else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CERT": cert.pem},
    )
    assert process.stdout is not None
    still_open, closed = process.stdout.readline().split()
    return process, (int(still_open), int(closed))


@root_only
async def test_each_peer_is_capped_before_its_tls_handshake(tmp_path: Path, cert: Certificate) -> None:
    """asyncio would hand a TLS connection to the guarded protocol only after its handshake: connections
    that never shake hands would be nobody's. They count against their peer (its uid) from the start."""
    hive = tls_hive(tmp_path, cert, "[serving]\nmax_connections_per_peer = 4\nheader_timeout_seconds = 30\n")
    token = hive.token(hive.add_agent())
    holders: list[subprocess.Popen[str]] = []
    async with in_process_broker(hive) as endpoint:
        port = _port(endpoint.url)
        try:
            # Connections that never start TLS: the peer's cap closes the fifth and sixth at once.
            holder, counts = await asyncio.to_thread(connect_as, port, 6, 65534, cert, tls=False)
            holders.append(holder)
            assert counts == (4, 2)
            # The same uid shaking hands is the same peer: no place left.
            holder, counts = await asyncio.to_thread(connect_as, port, 2, 65534, cert, tls=True)
            holders.append(holder)
            assert counts == (0, 2)
            # Another uid is another peer, and its TLS connections are served.
            holder, counts = await asyncio.to_thread(connect_as, port, 3, 65533, cert, tls=True)
            holders.append(holder)
            assert counts == (3, 0)
            # Root is not capped, and is answered.
            async with HiveClient(server_address(hive.config, "broker"), token, retry_seconds=0) as client:
                assert await client.call("pending_count", {}) == {"queued": 0, "leased": 0}
            # The first holder's connections gone (they never shook hands), its uid has places again.
            assert holders[0].stdin is not None
            holders[0].stdin.close()
            holders[0].wait(5)
            await asyncio.sleep(0.3)
            holder, counts = await asyncio.to_thread(connect_as, port, 4, 65534, cert, tls=True)
            holders.append(holder)
            assert counts == (4, 0)
        finally:
            for holder in holders:
                if holder.stdin is not None and not holder.stdin.closed:
                    holder.stdin.close()
                holder.wait(5)


@pytest.mark.slow
def test_hive_serve_serves_tls_and_refuses_to_start_without_a_private_key(tmp_path: Path, cert: Certificate) -> None:
    """`hive serve` (uvloop, unlike the in-process tests' event loop): https works; a key others may
    read, or a certificate without its key, stops it at start with what to do, not a traceback."""
    hive = tls_hive(tmp_path, cert)
    token = hive.token(hive.add_agent())
    broker = BrokerProcess(hive)
    try:
        broker.start()
        assert broker.url.startswith("https://127.0.0.1:")

        async def calls() -> None:
            address = ServerAddress("broker", broker.url, tls_cert=cert.cert)
            async with HiveClient(address, token, retry_seconds=0) as client:
                assert await client.call("pending_count", {}) == {"queued": 0, "leased": 0}
            plain = ServerAddress("broker", broker.url.replace("https://", "http://"))
            async with HiveClient(plain, token, retry_seconds=0) as client:
                with pytest.raises(ServerUnavailable):
                    await client.call("pending_count", {})

        asyncio.run(calls())
    finally:
        broker.stop()

    cert.key.chmod(0o644)
    with pytest.raises(RuntimeError) as refused:
        broker.start()
    message = broker.stderr()
    assert f"the TLS key {cert.key} may be read by others (mode 0644); run `chmod 600 {cert.key}`" in message
    assert "Traceback" not in message and "exited: 1" in str(refused.value)

    cert.key.chmod(0o600)
    hive.configure(f'[servers.broker]\nport = {broker.port}\ntls_cert = "{cert.cert}"\n')
    with pytest.raises(RuntimeError):
        broker.start()
    assert f"has tls_cert {cert.cert} but no tls_key: a server cannot serve TLS without its key" in broker.stderr()


async def test_the_harness_trusts_the_certificate_hive_json_carries(tmp_path: Path, cert: Certificate) -> None:
    hive = tls_hive(tmp_path, cert)
    alice = hive.add_agent()
    token_file = tmp_path / "token"
    token_file.write_text(hive.token(alice))
    info = harness_info(hive.config, alice, AgentConfig(tools={"broker": ["pending_count"]}))
    assert info.servers["broker"].startswith("https://") and info.servers["lifecycle"].startswith("http://")
    assert info.tls_certs == {"broker": cert.pem}  # the text: the sandbox may not have the file
    async with in_process_broker(hive):
        # The turn loop's client (harness/loop.py) and the idle waiter's (harness/idle.py), as they are built.
        broker = BrokerClient.at(info.servers["broker"], token_file.read_text, tls_cert_pem=info.tls_certs["broker"])
        assert (await broker.hive.call("pending_count", {}))["queued"] == 0
        await broker.close()
        lean = LeanMcpClient(info.servers["broker"], token_file.read_text, tls_cert_pem=info.tls_certs["broker"])
        assert await asyncio.to_thread(lean.call_tool, "pending_count", {}, timeout=10) == {"queued": 0, "leased": 0}
        await asyncio.to_thread(lean.close)
        # Without it, the system's CAs are trusted, and they do not know this certificate.
        untrusting = LeanMcpClient(info.servers["broker"], token_file.read_text)
        with pytest.raises(ServerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(untrusting.call_tool, "pending_count", {}, timeout=10)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
