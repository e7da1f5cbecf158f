"""[sandbox] network: what an agent's sandbox reaches, with real bubblewrap sandboxes and pasta.

Everything runs in a network namespace this test makes, so no real network is touched: its
loopback holds the hive's servers and another service the agents must not reach, and a veth pair
inside it holds the "outside world" (an address that is not loopback) and the default route.
The test talks to the servers over their unix sockets, which cross network namespaces.

A hive across hosts has servers beyond loopback, over TLS: the broker on an address of that veth
pair (as another host's would be), named by its address or by a name only DNS knows.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hivetest import Hive, ServerProcess, free_port, make_certificate, toml_list

from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and agents' own uids"),
    pytest.mark.skipif(not shutil.which("pasta"), reason="needs pasta (Debian: passt; scripts/setup.sh installs it)"),
]

OUTSIDE = "10.213.9.9"  # on an interface of the test's namespace: "the outside world"
GATEWAY = "10.213.0.1"  # the namespace's default route (pasta maps it to the host's loopback unless told not to)
ADDRESS = "10.213.0.2"  # the namespace's own address on that route: pasta gives the sandbox the same
SERVER = "10.213.7.1"  # on an interface of the test's namespace: a hive server "on another host"

# Serves "hello" on the host's loopback (a service agents must not reach) and on OUTSIDE, and is
# the host's DNS resolver on its loopback (as systemd-resolved is on 127.0.0.53): every name of
# type A is OUTSIDE.
LISTEN = r"""
import socket, struct, sys, threading
def serve(address):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(address); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(b"hello"); c.close()
def resolve():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 53))
    while True:
        query, peer = s.recvfrom(512)
        end = query.index(b"\0", 12) + 5
        is_a = query[end - 4:end] == b"\0\1\0\1"
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(sys.argv[2])
        header = query[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, int(is_a), 0, 0)
        s.sendto(header + query[12:end] + (answer if is_a else b""), peer)
threads = [threading.Thread(target=serve, args=(("127.0.0.1", int(sys.argv[1])),), daemon=True),
           threading.Thread(target=serve, args=((sys.argv[2], int(sys.argv[3])),), daemon=True),
           threading.Thread(target=resolve, daemon=True)]
for t in threads: t.start()
print("ready", flush=True)
sys.stdin.read()
"""

# Inside the sandbox: try each target, ask the broker over HTTP, open more connections to it than
# one peer may hold, read /proc/net/tcp, and write it all down.
PROBE = r"""
import json, os, socket, sys, time
targets, broker_port, other_port = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
result = {}
for name, host, port in targets:
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, port)); result[name] = "connected: " + s.recv(16).decode()
    except OSError as e:
        result[name] = f"failed: {e}"
    finally:
        s.close()
try:  # a name, through the sandbox's resolver (the search domain comes from the host's)
    address = socket.getaddrinfo("outside", targets[1][2], socket.AF_INET, socket.SOCK_STREAM)[0][4]
    s = socket.create_connection(address, timeout=2)
    result["outside_by_name"] = "connected: " + s.recv(16).decode()
    s.close()
except OSError as e:
    result["outside_by_name"] = f"failed: {e}"
s = socket.create_connection(("127.0.0.1", broker_port), timeout=5)
s.sendall(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
result["broker"] = s.recv(64).decode(errors="replace").split("\r\n")[0]
held = [socket.create_connection(("127.0.0.1", broker_port), timeout=5) for _ in range(80)]
time.sleep(1)
closed = 0
for s in held:
    s.setblocking(False)
    try:
        closed += s.recv(1) == b""
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
result["broker_connections_closed"] = closed
tcp = open("/proc/net/tcp").read().splitlines()[1:]
result["host_listener_seen"] = any(line.split()[1].endswith(":%04X" % other_port) for line in tcp)
path = os.path.join(os.environ["HIVE_STATE_DIR"], "probe.json")
open(path + ".tmp", "w").write(json.dumps(result)); os.rename(path + ".tmp", path)
time.sleep(3600)
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"hhnet{os.getpid()}"
    ip("netns", "add", name)
    # `ip netns exec` binds this over /etc/resolv.conf: the namespace's resolver is on its loopback.
    etc = Path("/etc/netns") / name
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\nsearch hive.test\noptions timeout:1 attempts:2\n")
    try:
        ip("-n", name, "link", "set", "lo", "up")
        # A veth pair with both ends inside (this kernel has no dummy interfaces): nothing leaves it.
        ip("-n", name, "link", "add", "hh0", "type", "veth", "peer", "name", "hh1")
        ip("-n", name, "addr", "add", f"{ADDRESS}/24", "dev", "hh0")
        ip("-n", name, "addr", "add", f"{OUTSIDE}/32", "dev", "hh1")
        ip("-n", name, "addr", "add", f"{SERVER}/32", "dev", "hh1")
        ip("-n", name, "link", "set", "hh0", "up")
        ip("-n", name, "link", "set", "hh1", "up")
        ip("-n", name, "route", "add", "default", "via", GATEWAY)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10)
        shutil.rmtree(etc, ignore_errors=True)


async def test_outbound_and_hive_only_sandboxes_reach_the_hive_but_not_the_hosts_loopback(netns: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="hhn-"))  # short: unix socket paths are limited to 107 bytes
    in_ns = ("ip", "netns", "exec", netns)
    other_port, outside_port = free_port(), free_port()
    listener = subprocess.Popen(  # noqa: ASYNC220 (a start; it is waited for in a thread below)
        [*in_ns, sys.executable, "-c", LISTEN, str(other_port), OUTSIDE, str(outside_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    servers: list[ServerProcess] = []
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        hive = Hive(base / "h")
        broker_port, lifecycle_port = hive.ports.pop("broker"), hive.ports.pop("lifecycle")
        hive.configure(
            f'[servers.broker]\nport = {broker_port}\nsocket = "run/broker.sock"\n'
            f'[servers.lifecycle]\nport = {lifecycle_port}\nsocket = "run/lifecycle.sock"\n'
        )
        for server in ("broker", "lifecycle"):
            extra = ("--stop-agents-on-exit",) if server == "lifecycle" else ()
            servers.append(ServerProcess(hive, server, *extra, prefix=in_ns).start())
        socket_path = hive.config.listen("lifecycle").socket
        address = ServerAddress("lifecycle", "http://localhost/mcp", socket_path)
        targets = [
            ["other_loopback", "127.0.0.1", other_port],
            ["outside", OUTSIDE, outside_port],
            ["gateway", GATEWAY, other_port],
        ]
        probe = [sys.executable, "-c", PROBE, json.dumps(targets), str(broker_port), str(other_port)]
        results: dict[str, dict[str, Any]] = {}
        async with HiveClient(address, hive.token("operator"), timeout=60, retry_seconds=0) as lifecycle:
            for name, mode in (("netout", "outbound"), ("netonly", "hive-only"), ("nethost", "host")):
                draft = await lifecycle.call("create_draft", {"name": name})
                paths = AgentPaths.of(hive.config, name)
                agent_toml = f'[sandbox]\nnetwork = "{mode}"\ncommand = {toml_list(probe)}\n'
                sha = await repos.commit_files(paths.config, {"agent.toml": agent_toml}, f"{mode} probe")
                assert draft["sha"] != sha
                await lifecycle.call("create_agent", {"name": name, "sha": sha})
            for name in ("netout", "netonly", "nethost"):
                results[name] = await _probe_result(AgentPaths.of(hive.config, name).state / "probe.json")
    finally:
        for process in reversed(servers):
            if process.process is not None and process.process.poll() is None:
                process.stop()
        assert listener.stdin is not None
        listener.stdin.close()
        await asyncio.to_thread(listener.wait, 10)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=1))
    outbound, hive_only, host = results["netout"], results["netonly"], results["nethost"]
    for agent in (outbound, hive_only):
        assert agent["broker"].startswith("HTTP/1.1 "), agent  # the hive's server answers (401: no token)
        assert agent["other_loopback"].startswith("failed"), agent
        assert agent["gateway"].startswith("failed"), agent  # not the host's loopback by the back door
        assert agent["host_listener_seen"] is False, agent
    assert outbound["outside"] == "connected: hello", outbound
    # DNS works although the host's resolver is on its loopback (pasta forwards 169.254.1.1 to it).
    assert outbound["outside_by_name"] == "connected: hello", outbound
    assert hive_only["outside"].startswith("failed"), hive_only
    assert hive_only["outside_by_name"].startswith("failed"), hive_only
    for agent in (outbound, hive_only, host):
        # The broker sees the agent's own uid, however it is connected, and caps it (64 per peer).
        assert agent["broker_connections_closed"] == 80 - 64, agent
    # "host": today's behaviour, the host's network and all its loopback services.
    assert host["broker"].startswith("HTTP/1.1 "), host
    assert host["other_loopback"] == "connected: hello", host
    assert host["outside"] == "connected: hello", host
    assert host["outside_by_name"] == "connected: hello", host
    assert host["host_listener_seen"] is True, host


async def _probe_result(path: Path, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name} from the sandbox within {timeout} s"
        await asyncio.sleep(0.1)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


# The namespace's DNS server, on its loopback: every name of type A is argv[1], no other type has any.
RESOLVE = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    query, peer = s.recvfrom(512)
    end = query.index(b"\0", 12) + 5
    is_a = query[end - 4:end] == b"\0\1\0\1"
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(sys.argv[1])
    header = query[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, int(is_a), 0, 0)
    s.sendto(header + query[12:end] + (answer if is_a else b""), peer)
"""

# Inside the sandbox, as its harness: hive.json's broker URL, connected to (and held open, for the
# test to find the keeper's side of it), then a message sent over it with the agent's token.
REACH = r"""
import asyncio, json, os, socket, time
from urllib.parse import urlsplit
from hyperhive.servers.broker.client import BrokerClient
info = json.load(open(os.path.join(os.environ["HIVE_HARNESS_DIR"], "credentials", "hive.json")))
url = info["servers"]["broker"]
result = {"url": url}
try:
    held = socket.create_connection((urlsplit(url).hostname, urlsplit(url).port), timeout=5)
    result["local"] = held.getsockname()[0]  # the server's own address: over lo, to the keeper
except OSError as e:
    result["local"] = f"failed: {e}"
async def send():
    token = open(info["token_file"]).read().strip()
    async with BrokerClient.at(url, token, tls_cert_pem=info["tls_certs"]["broker"], retry_seconds=0) as broker:
        return (await broker.send("manager", "hello from " + info["agent"])).id
try:
    result["sent"] = asyncio.run(send())
except Exception as e:
    result["sent"] = f"failed: {type(e).__name__}: {e}"
path = os.path.join(os.environ["HIVE_STATE_DIR"], "probe.json")
open(path + ".tmp", "w").write(json.dumps(result)); os.rename(path + ".tmp", path)
time.sleep(3600)
"""


@pytest.mark.parametrize(
    ("host", "address"),
    [(SERVER, SERVER), ("broker.hive.test", SERVER), (ADDRESS, ADDRESS)],
    ids=["address", "dns-name", "hosts-own-address"],
)
async def test_sandboxes_reach_a_server_beyond_loopback_through_their_keeper(
    netns: str, host: str, address: str
) -> None:
    """The broker on an address that is not loopback, over TLS, named in hive.toml by that address or
    by a name only DNS resolves (to it), or on the address of the host's default route, which pasta
    gives an outbound sandbox too: an outbound and a hive-only agent send it a message."""
    base = Path(tempfile.mkdtemp(prefix="hhr-"))
    in_ns = ("ip", "netns", "exec", netns)
    resolver = subprocess.Popen(  # noqa: ASYNC220 (a start; ended in the finally below)
        [*in_ns, sys.executable, "-c", RESOLVE, SERVER], stdout=subprocess.PIPE, text=True
    )
    servers: list[ServerProcess] = []
    agents = {"reachout": "outbound", "reachonly": "hive-only"}
    try:
        assert resolver.stdout is not None and resolver.stdout.readline().strip() == "ready"
        hive = Hive(base / "h")
        cert = make_certificate(base / "tls", ips=(SERVER, ADDRESS), dns=("broker.hive.test",))
        broker_port, lifecycle_port = hive.ports.pop("broker"), hive.ports.pop("lifecycle")
        hive.configure(
            f'[servers.broker]\nhost = "{host}"\nport = {broker_port}\nsocket = "run/broker.sock"\n'
            f'tls_cert = "{cert.cert}"\ntls_key = "{cert.key}"\n'
            f'[servers.lifecycle]\nport = {lifecycle_port}\nsocket = "run/lifecycle.sock"\n'
        )
        for server in ("broker", "lifecycle"):
            extra = ("--stop-agents-on-exit",) if server == "lifecycle" else ()
            servers.append(ServerProcess(hive, server, *extra, prefix=in_ns).start())
        lifecycle_address = ServerAddress("lifecycle", "http://localhost/mcp", hive.config.listen("lifecycle").socket)
        broker_address = ServerAddress("broker", "http://localhost/mcp", hive.config.listen("broker").socket)
        reach = [sys.executable, "-c", REACH]
        results: dict[str, dict[str, Any]] = {}
        uids: dict[str, int] = {}
        async with HiveClient(lifecycle_address, hive.token("operator"), timeout=60, retry_seconds=0) as lifecycle:
            for name, mode in agents.items():
                await lifecycle.call("create_draft", {"name": name})
                agent_toml = f'[sandbox]\nnetwork = "{mode}"\ncommand = {toml_list(reach)}\n'
                sha = await repos.commit_files(
                    AgentPaths.of(hive.config, name).config, {"agent.toml": agent_toml}, mode
                )
                await lifecycle.call("create_agent", {"name": name, "sha": sha})
            for name in agents:
                results[name] = await _probe_result(AgentPaths.of(hive.config, name).state / "probe.json")
                uids[name] = (await lifecycle.call("agent_status", {"name": name}))["uid"]
            # The keeper's side of each held connection, in the host's (here: the test's) namespace.
            assert servers[0].process is not None
            table = Path(f"/proc/{servers[0].process.pid}/net/tcp").read_text().splitlines()[1:]
            upstream = {int(line.split()[7]) for line in table if line.split()[2].endswith(f":{broker_port:04X}")}
        async with HiveClient(broker_address, hive.token("manager"), retry_seconds=0) as manager:
            got = []  # the agents' messages, among the helper events ("spawned") the manager gets
            while len(got) < len(agents) and (received := await manager.call("recv", {"wait_seconds": 5}))["message"]:
                got += [received["message"]] if received["message"]["sender"] in agents else []
    finally:
        for process in reversed(servers):
            if process.process is not None and process.process.poll() is None:
                process.stop()
        resolver.kill()
        await asyncio.to_thread(resolver.wait, 10)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=1))
    for name in agents:
        result = results[name]
        # hive.json's URL, as hive.toml has it (the certificate names it), works unchanged inside.
        assert result["url"] == f"https://{host}:{broker_port}/mcp", result
        # Over the sandbox's loopback to its keeper (out through pasta, it would be from ADDRESS)...
        assert result["local"] == address, result
        assert isinstance(result["sent"], int), result
        # ... which connects from the host's namespace as the agent's own uid, not as pasta or root.
        assert uids[name] in upstream, (uids, upstream)
    assert sorted((m["sender"], m["body"]) for m in got) == sorted((n, f"hello from {n}") for n in agents)


# Inside the sandbox: ask each broker port (the broker's own, its failover's) over HTTP.
PROBE_BROKERS = r"""
import json, os, socket, sys, time
result = {}
for port in json.loads(sys.argv[1]):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        result[str(port)] = s.recv(64).decode(errors="replace").split("\r\n")[0]
    except OSError as e:
        result[str(port)] = f"failed: {e}"
path = os.path.join(os.environ["HIVE_STATE_DIR"], "probe.json")
open(path + ".tmp", "w").write(json.dumps(result)); os.rename(path + ".tmp", path)
time.sleep(3600)
"""


async def test_a_sandbox_reaches_the_brokers_failover_process_too(netns: str, pg_url: str) -> None:
    """hive.json names the broker's failover process (PostgreSQL: a unix socket, which crosses network
    namespaces); the sandbox's network forwards its port as it does the broker's own."""
    base = Path(tempfile.mkdtemp(prefix="hhn-"))
    in_ns = ("ip", "netns", "exec", netns)
    servers: list[ServerProcess] = []
    try:
        hive = Hive(base / "h", storage_url=pg_url)
        broker_port, lifecycle_port, failover_port = hive.ports.pop("broker"), hive.ports.pop("lifecycle"), free_port()
        hive.configure(
            f"[servers.broker]\nport = {broker_port}\nfailover = [{{ port = {failover_port} }}]\n"
            f'[servers.lifecycle]\nport = {lifecycle_port}\nsocket = "run/lifecycle.sock"\n'
        )
        servers.append(ServerProcess(hive, "broker", prefix=in_ns).start())
        failover = ServerProcess(hive, "broker", "--port", str(failover_port), prefix=in_ns)
        failover.log = base / "broker-failover.log"
        servers.append(failover.start())
        servers.append(ServerProcess(hive, "lifecycle", "--stop-agents-on-exit", prefix=in_ns).start())
        address = ServerAddress("lifecycle", "http://localhost/mcp", hive.config.listen("lifecycle").socket)
        probe = [sys.executable, "-c", PROBE_BROKERS, json.dumps([broker_port, failover_port])]
        async with HiveClient(address, hive.token("operator"), timeout=60, retry_seconds=0) as lifecycle:
            await lifecycle.call("create_draft", {"name": "netfail"})
            paths = AgentPaths.of(hive.config, "netfail")
            agent_toml = f'[sandbox]\nnetwork = "hive-only"\ncommand = {toml_list(probe)}\n'
            sha = await repos.commit_files(paths.config, {"agent.toml": agent_toml}, "broker probe")
            await lifecycle.call("create_agent", {"name": "netfail", "sha": sha})
            result = await _probe_result(paths.state / "probe.json")
            hive_json = json.loads(paths.hive_json.read_text())
    finally:
        for process in reversed(servers):
            if process.process is not None and process.process.poll() is None:
                process.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert hive_json["failover"] == {"broker": [{"url": f"http://127.0.0.1:{failover_port}/mcp", "tls_cert": None}]}
    for port in (broker_port, failover_port):
        assert result[str(port)].startswith("HTTP/1.1 "), result  # a broker answers (401: no token)
