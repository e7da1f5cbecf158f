"""One hive across two hosts, on one machine: each host a network namespace of its own, a veth pair
between them, private addresses that exist only inside them (issue 17's proof).

alpha (10.213.9.1) runs PostgreSQL, two broker processes, the approvals and operator servers and a
lifecycle server; beta (10.213.9.2) runs only a lifecycle server, which reaches everything on alpha
over TLS (PostgreSQL over TCP) and holds the hive's public key, not its private one. Every server is
a real `hive serve` process; the agents are real sandboxes whose program talks to the brokers
hive.json names with the token it was given — alpha's agents through one broker process, beta's
through the other, each with the other as its failover; the first is killed under load.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hivetest import PY, Hive, ServerProcess, free_ports, make_certificate, toml_list
from pgtest import PgCluster, PgUnavailable

from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.keys import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, sandboxes as agents' uids"),
    pytest.mark.skipif(shutil.which("nsenter") is None or shutil.which("ip") is None, reason="needs ip and nsenter"),
]

ALPHA, BETA = "10.213.9.1", "10.213.9.2"
BEATS = "heartbeat_seconds = 0.5\ndown_after_seconds = 2.0\n"

# Each agent's program, in its sandbox, with the token and the brokers hive.json gives it (the one it
# names first, then its failover): alice greets bob and, once he answers, sends him LOAD numbered
# messages (a send whose answer was lost is sent again: bob counts each number once); bob answers a
# greeting and says when he has every number. What each heard goes to talk.json in its state dir.
LOAD = 150
AGENT = r"""
import asyncio, json, os, time
from hyperhive.servers.broker.client import BrokerClient
from hyperhive.servers.common.harnessdir import HarnessInfo
LOAD = @LOAD@
hive_json = os.path.join(os.environ["HIVE_HARNESS_DIR"], "credentials", "hive.json")
info = HarnessInfo.model_validate_json(open(hive_json).read())
me = info.agent
out = os.path.join(os.environ["HIVE_STATE_DIR"], "talk.json")
talk = {"heard": [], "numbers": [], "sent": 0}
def token():
    return open(info.token_file).read().strip()
def client():
    return BrokerClient.at_any(info.endpoints("broker"), token, retry_seconds=60)
def save(broker):
    talk["broker"] = broker.hive.address.url  # where its client is now (after a failover: the next)
    open(out + ".tmp", "w").write(json.dumps(talk))
    os.rename(out + ".tmp", out)
async def load():
    async with client() as sender:
        for n in range(LOAD):
            while True:
                try:
                    await sender.send("bob", "n=" + str(n))
                    break
                except Exception:  # its broker died mid-call: maybe stored, maybe not; bob counts once
                    await asyncio.sleep(0.2)
            talk["sent"] = n + 1
            await asyncio.sleep(0.02)
async def main():
    numbers, tasks = set(), []
    async with client() as broker:
        if me == "alice":
            await broker.send("bob", "hello bob, from alpha")
        while True:
            try:
                message = (await broker.recv(wait_seconds=20, ack=True)).message
            except Exception:  # its broker died under a long-poll: the next one goes elsewhere
                await asyncio.sleep(0.2)
                continue
            if message is None or message.sender == "system":
                continue
            if message.body.startswith("n="):
                numbers.add(int(message.body[2:]))
                talk["numbers"] = sorted(numbers)
                if len(numbers) == LOAD:
                    await broker.send("alice", "got all " + str(LOAD))
            else:
                talk["heard"].append({"from": message.sender, "body": message.body})
                if me == "bob" and message.body.startswith("hello"):
                    await broker.send(message.sender, "hello " + message.sender + ", from beta")
                if me == "alice" and message.body.startswith("hello"):
                    tasks.append(asyncio.create_task(load()))
            save(broker)
if me in ("alice", "bob"):
    asyncio.run(main())
else:
    time.sleep(3600)
""".replace("@LOAD@", str(LOAD))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def in_netns(name: str) -> tuple[str, ...]:
    # nsenter joins the network namespace alone (`ip netns exec` would also remount /sys, hiding
    # the cgroup hierarchy the lifecycle server puts sandboxes in).
    return ("nsenter", f"--net=/run/netns/{name}")


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Network namespaces alpha and beta, joined by a veth pair, each the other's default route."""
    tag = os.getpid() % 100_000
    alpha, beta = f"hha{tag}", f"hhb{tag}"
    ip("netns", "add", alpha)
    ip("netns", "add", beta)
    try:
        ip("-n", alpha, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", beta)
        for name, device, address, gateway in ((alpha, "veth0", ALPHA, BETA), (beta, "veth1", BETA, ALPHA)):
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "addr", "add", f"{address}/24", "dev", device)
            ip("-n", name, "link", "set", device, "up")
            ip("-n", name, "route", "add", "default", "via", gateway)
        yield alpha, beta
    finally:
        for name in (alpha, beta):
            subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10)


def _listen(server: str, host: str, port: int, cert: Any, *, serve: bool, failover: int | None = None) -> str:
    """hive.toml's [servers.SERVER]: on `host` over TLS (`serve`: with its key, and a unix socket
    for the test, which sits in neither namespace); a broker's `failover`: its other process's port."""
    lines = f'[servers.{server}]\nhost = "{host}"\nport = {port}\ntls_cert = "{cert.cert}"\n'
    if serve:
        lines += f'tls_key = "{cert.key}"\nsocket = "run/{server}.sock"\n'
    if failover is not None:
        lines += f"failover = [{{ port = {failover} }}]\n"
    return lines


async def _until(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {within:g} s")


def _talk(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


async def test_one_hive_across_two_hosts(two_hosts: tuple[str, str]) -> None:
    alpha_ns, beta_ns = two_hosts
    base = Path(tempfile.mkdtemp(prefix="hhp-"))  # short: unix socket paths
    processes: list[ServerProcess] = []
    try:
        pg = PgCluster(prefix=in_netns(alpha_ns), tcp=ALPHA).start()
    except PgUnavailable as e:
        pytest.skip(str(e))
    try:
        database = pg.create_database()
        cert = make_certificate(base / "tls", ips=(ALPHA, BETA))
        names = ("broker", "broker2", "lifecycle", "approvals", "operator", "forge", "beta")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        agent = toml_list([PY, "-c", AGENT])

        # alpha: every server; the database on its own socket (the same host).
        alpha = Hive(
            base / "a", ports={}, storage_url=pg.url(database), host="alpha", host_settings=BEATS, manager=True
        )
        served = "".join(
            _listen(server, ALPHA, ports[server], cert, serve=server != "forge")
            for server in ("lifecycle", "approvals", "operator", "forge")
        ) + _listen("broker", ALPHA, ports["broker"], cert, serve=True, failover=ports["broker2"])
        alpha.configure(f"{served}[lifecycle]\ndefault_command = {agent}\n")
        # beta: its lifecycle server alone; the database over TCP, the second broker process, the
        # hive's public key only (it signs with a key of its own).
        beta = Hive(base / "b", ports={}, storage_url=pg.tcp_url(database), host="beta", host_settings=BEATS)
        shutil.copy2(alpha.home / PUBLIC_KEY_FILE, beta.home / PUBLIC_KEY_FILE)
        (beta.home / PRIVATE_KEY_FILE).unlink()
        elsewhere = "".join(
            _listen(server, ALPHA, ports[server], cert, serve=False) for server in ("approvals", "operator", "forge")
        ) + _listen("broker", ALPHA, ports["broker2"], cert, serve=False, failover=ports["broker"])
        beta.configure(
            f"{elsewhere}{_listen('lifecycle', BETA, ports['beta'], cert, serve=True)}"
            f"[lifecycle]\ndefault_command = {agent}\nuid_base = 400000\n"
        )

        on_alpha, on_beta = in_netns(alpha_ns), in_netns(beta_ns)
        broker2_socket = alpha.home / "run" / "broker2.sock"
        broker2 = ServerProcess(
            alpha, "broker", "--port", str(ports["broker2"]), "--socket", str(broker2_socket), prefix=on_alpha
        )
        broker2.log = alpha.home.parent / "broker2.log"
        for process in (
            ServerProcess(alpha, "broker", prefix=on_alpha),
            broker2,
            ServerProcess(alpha, "approvals", prefix=on_alpha),
            ServerProcess(alpha, "operator", prefix=on_alpha),
        ):
            processes.append(process.start(timeout=60))
        processes.append(ServerProcess(alpha, "lifecycle", "--stop-agents-on-exit", prefix=on_alpha).start(timeout=60))
        beta_lifecycle = ServerProcess(beta, "lifecycle", "--stop-agents-on-exit", prefix=on_beta)
        processes.append(beta_lifecycle.start(timeout=60))

        def local(home: Hive, server: str) -> ServerAddress:
            socket = home.config.listen(server).socket
            assert socket is not None
            return ServerAddress(server, "http://localhost/mcp", socket)

        async with (
            HiveClient(local(alpha, "lifecycle"), alpha.token("operator"), timeout=120, retry_seconds=0) as lifecycle,
            HiveClient(local(alpha, "approvals"), alpha.token("operator"), timeout=120, retry_seconds=0) as approvals,
        ):
            hosts = {h["name"]: h for h in (await lifecycle.call("list_hosts"))["hosts"]}
            assert {name: h["up"] for name, h in hosts.items()} == {"alpha": True, "beta": True}, hosts
            assert hosts["beta"]["lifecycle_url"] == f"https://{BETA}:{ports['beta']}/mcp"

            # An agent on each host; they talk through different broker processes.
            assert (await lifecycle.call("create_agent", {"name": "alice", "host": "alpha"}))["host"] == "alpha"
            assert (await lifecycle.call("create_agent", {"name": "bob", "host": "beta"}))["host"] == "beta"
            alice_talk = AgentPaths.of(alpha.config, "alice").state / "talk.json"
            bob_talk = AgentPaths.of(beta.config, "bob").state / "talk.json"

            async def conversation() -> tuple[dict[str, Any], dict[str, Any]] | None:
                heard = _talk(alice_talk), _talk(bob_talk)
                return heard if heard[0] and heard[1] else None  # type: ignore[return-value]

            alice_heard, bob_heard = await _until(conversation, 60, "alice and bob talk")
            assert alice_heard["heard"][0] == {"from": "bob", "body": "hello alice, from beta"}
            assert bob_heard["heard"] == [{"from": "alice", "body": "hello bob, from alpha"}]
            first, second = (f"https://{ALPHA}:{ports[broker]}/mcp" for broker in ("broker", "broker2"))
            assert (alice_heard["broker"], bob_heard["broker"]) == (first, second)  # different processes

            # Under alice's load, kill -9 the broker process she uses (alpha's first): nothing is lost,
            # and her client — her long-poll with it — moves to the other process.
            async def under_way() -> dict[str, Any] | None:
                bob = _talk(bob_talk)
                return bob if bob and len(bob["numbers"]) >= 20 else None

            await _until(under_way, 60, "alice's load under way")
            processes[0].stop(signal.SIGKILL)

            async def all_through() -> tuple[dict[str, Any], dict[str, Any]] | None:
                alice, bob = _talk(alice_talk), _talk(bob_talk)
                done = alice and bob and any(h["body"] == f"got all {LOAD}" for h in alice["heard"])
                return (alice, bob) if done else None  # type: ignore[return-value]

            alice_heard, bob_heard = await _until(all_through, 120, "every message through after the kill")
            assert bob_heard["numbers"] == list(range(LOAD)) and alice_heard["sent"] == LOAD  # none lost
            assert alice_heard["broker"] == second, alice_heard  # her long-polls went on there

            # The operator approves a spawn: placed on the least loaded host, beta.
            request = await approvals.call("request_spawn", {"name": "carol", "reason": "the proof needs a third"})
            approved = await approvals.call("approve", {"id": request["id"]})
            assert approved["state"] == "applied", approved
            status = await lifecycle.call("agent_status", {"name": "carol"})
            assert (status["host"], status["state"]) == ("beta", "running"), status
            assert (beta.home / "applied" / "carol").is_dir() and not (alpha.home / "applied" / "carol").exists()

            # beta's lifecycle server dies: the hive marks beta down, its agents unreachable.
            beta_lifecycle.stop(signal.SIGKILL)

            async def unreachable() -> dict[str, str] | None:
                agents = {a["name"]: a["state"] for a in (await lifecycle.call("list_agents"))["agents"]}
                return agents if agents["bob"] == agents["carol"] == "unreachable" else None

            agents = await _until(unreachable, 20, "beta's agents unreachable")
            assert agents["alice"] == "running" and agents["manager"] == "running", agents

            async def beta_down() -> dict[str, Any] | None:
                hosts = {h["name"]: h for h in (await lifecycle.call("list_hosts"))["hosts"]}
                return hosts if not hosts["beta"]["up"] else None

            hosts = await _until(beta_down, 20, "beta marked down")  # its heartbeat 2 s late
            assert hosts["beta"]["down_since"] and hosts["alpha"]["up"], hosts

        inbox = ServerAddress("broker", "http://localhost/mcp", broker2_socket)  # the first broker is dead
        async with HiveClient(inbox, alpha.token("manager"), retry_seconds=0) as manager:

            async def host_down() -> dict[str, Any] | None:
                got = (await manager.call("recv", {"wait_seconds": 1}))["message"]
                event = got.get("event") if got else None
                return event if event and event["type"] == "host_down" else None

            event = await _until(host_down, 30, "the manager hears host_down")
            assert event["host"] == "beta" and set(event["agents"]) == {"bob", "carol"}, event

        # beta comes back (its sandboxes kept running): its lifecycle server takes them over, and stops them.
        processes.append(beta_lifecycle.start(timeout=60))
    finally:
        for process in reversed(processes):
            if process.process is not None and process.process.poll() is None:
                process.stop(timeout=60)
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
