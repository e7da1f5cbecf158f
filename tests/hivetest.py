"""Test support: a hive home with agents, tokens, and servers served over real HTTP.

`in_process(hive, server)` serves a real server app on its loopback port inside the test's event
loop (the broker with a ManualClock the test moves). `BrokerProcess` runs `hive serve broker` as
a real process, for tests that stop and restart it.

Each Hive gets free ports for its servers in hive.toml, so servers find each other as in `hive up`.
`make_certificate` makes a self-signed certificate and key for a server over TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hyperhive.servers.cli import SERVERS
from hyperhive.servers.common.agent_config import AGENT_TOML
from hyperhive.servers.common.agents import PublishingAgentRegistry
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.clock import Clock, ManualClock
from hyperhive.servers.common.config import HiveConfig, Listen, load_hive_config
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.hivedb import HiveDirectory
from hyperhive.servers.common.instances import end_instances, new_instance
from hyperhive.servers.common.issuer import Issuer, server_credentials
from hyperhive.servers.common.keys import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, SigningKey, load_signing_key
from hyperhive.servers.common.registry import GIT_PATH
from hyperhive.servers.common.serving import http_app, serve
from hyperhive.servers.common.tokens import ServerCredentials
from hyperhive.servers.home import init_home
from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.paths import AgentPaths

_names = itertools.count(1)


def _run_aside(job: Coroutine[Any, Any, None]) -> None:
    """Run `job` to its end on an event loop of its own (a sync helper called from async tests)."""
    failed: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(job)
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _port_slice() -> range:
    """The ports this test process hands out: below the kernel's ephemeral range, so no outgoing
    connection and no bind to port 0 can take one between its allocation and its server's bind (two
    workers side by side made thousands of connections: a lifecycle server found its port taken),
    and each pytest-xdist worker its own slice of them."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = 10_000 if low > 20_000 else 1024
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    size = (low - first) // 8  # up to 8 workers
    start = first + (int(worker) % 8 if worker.isdigit() else 0) * size
    return range(start, start + size)


_PORTS: Final = _port_slice()
_next_port = 0


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, consecutive: bool = False) -> list[int]:
    """`count` different ports nothing listens on, the next ones of this process's slice
    (`_port_slice`); `consecutive`: a run of them (`hive init --port-base N` takes N..N+6)."""
    global _next_port
    ports: list[int] = []
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_port % len(_PORTS)]
        _next_port += 1
        if consecutive and ports and port != ports[-1] + 1:
            ports = []  # the slice wrapped around
        if _bindable(port):
            ports.append(port)
            if len(ports) == count:
                return ports
        elif consecutive:
            ports = []
    raise AssertionError(f"no {count} free ports in {_PORTS}")


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Hive:
    home: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(zip(SERVERS, free_ports(len(SERVERS)), strict=True)))
    # hive.toml's [storage] url (PostgreSQL), kept by configure(); None: sqlite.
    storage_url: str | None = None
    # [host] name, for a hive of several hosts (another home sharing the hive's database), and more
    # lines of [host]; such a host has no manager of its own unless `manager` (the hive's first host).
    host: str | None = None
    host_settings: str = ""
    manager: bool = False
    # [servers.broker] failover: ports of the broker's other processes on this machine (PostgreSQL only).
    broker_failover: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        init_home(self.home)
        self.configure("")
        if self.host is None or self.manager:
            new_instance(self.config.instances_dir, "manager")  # as if the lifecycle server had started it
            self.publish()
        else:  # nothing to publish: its lifecycle server registers it when it starts
            shutil.rmtree(self.home / "applied" / "manager", ignore_errors=True)

    @property
    def config(self) -> HiveConfig:
        return load_hive_config(self.home)

    @property
    def signing(self) -> SigningKey:
        return load_signing_key(self.home / PRIVATE_KEY_FILE)

    def credentials(self, server: str) -> ServerCredentials:
        """What `hive serve SERVER` would hold."""
        return server_credentials(self.config, server)

    def configure(self, toml: str) -> None:
        """Replace hive.toml with these settings (and the servers' ports); the rest takes its default."""
        ports = "".join(f"[servers.{server}]\nport = {port}\n" for server, port in self.ports.items())
        if self.broker_failover:
            failover = ", ".join(f"{{ port = {port} }}" for port in self.broker_failover)
            ports = ports.replace("[servers.broker]\n", f"[servers.broker]\nfailover = [{failover}]\n")
        storage = f"[storage]\nurl = {json.dumps(self.storage_url)}\n" if self.storage_url else ""
        host = f'[host]\nname = "{self.host}"\n{self.host_settings}\n' if self.host else ""
        (self.home / "hive.toml").write_text(ports + storage + host + toml + "\n")

    def add_agent(self, name: str | None = None, *, role: str = "agent", extra: str = "") -> str:
        """Write applied/<name>/agent.toml as the lifecycle server would; returns the name."""
        name = name or f"a{os.getpid() % 1000}-{next(_names)}"
        directory = self.home / "applied" / name
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / AGENT_TOML, f'role = "{role}"\n{extra}\n')
        new_instance(self.config.instances_dir, name)  # as if the lifecycle server had started it
        self.publish()
        return name

    def remove_agent(self, name: str) -> None:
        (self.home / "applied" / name / AGENT_TOML).unlink()
        (self.home / "applied" / name).rmdir()
        end_instances(self.config.instances_dir, name)
        self.publish()

    def publish(self) -> None:
        """On PostgreSQL, publish the home's agents to the hive's directory as the lifecycle server
        does (servers read agents there, not in applied/): run after writing agents' files."""
        if self.storage_url is None:
            return
        config = self.config

        async def run() -> None:
            directory = HiveDirectory(self.storage_url or "", pool_size=1)
            async with directory:
                await directory.db.write_one(  # this host, unless its lifecycle server registered it
                    "INSERT INTO hosts (name, lifecycle_url, capacity, backend, started_at, seen_at) "
                    "VALUES (%s, 'http://127.0.0.1/mcp', 100, 'none', now(), now()) "
                    "ON CONFLICT DO NOTHING RETURNING name",
                    (config.host.name,),
                )
                registry = PublishingAgentRegistry(config, directory)
                await registry.publish()

        _run_aside(run())

    def token(self, name: str, ttl: int = 3600) -> str:
        signing = self.signing
        return Issuer(self.config, lambda: signing).token_for(name, ttl)


@dataclass
class Endpoint:
    hive: Hive
    url: str
    clock: ManualClock | None = None
    server: str = "broker"
    _clients: list[HiveClient] = field(default_factory=list)

    def client(self, name: str, *, of: Hive | None = None, **kwargs: Any) -> HiveClient:
        """A HiveClient acting as `name` (an agent of this hive's home, or of the home `of`: another
        host's); closed when the fixture ends."""
        kwargs.setdefault("retry_seconds", 0)
        client = HiveClient(ServerAddress(self.server, self.url), (of or self.hive).token(name), **kwargs)
        self._clients.append(client)
        return client

    async def close_clients(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()


BrokerEndpoint = Endpoint


async def next_event(broker: BrokerEndpoint, name: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message in `name`'s inbox, which must be a helper event from the system."""
    message = (await broker.client(name).call("recv", {"wait_seconds": timeout}))["message"]
    assert message is not None, f"no event reached {name} within {timeout} s"
    assert (message["sender"], message["kind"]) == ("system", "event"), message
    event: dict[str, Any] = message["event"]
    return event


@contextlib.asynccontextmanager
async def in_process(
    hive: Hive, server: str, *, listen: Listen | None = None, **options: Any
) -> AsyncIterator[Endpoint]:
    """The real app of `server` on its port from hive.toml (or on `listen`: a second process of it),
    served in this event loop."""
    module = importlib.import_module(SERVERS[server])
    hive_server = module.create(hive.config, hive.credentials(server), **options)
    stop = asyncio.Event()
    ready: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    listen = listen or hive.config.listen(server)
    task = asyncio.create_task(
        serve(
            http_app(hive_server.mcp, listen.host),
            listen,
            before_shutdown=hive_server.before_shutdown,
            on_ready=ready.set_result,
            stop=stop,
            limits=hive.config.serving,
        )
    )
    done, _ = await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what stopped the server
    clock = options.get("clock")
    endpoint = Endpoint(hive, ready.result()[0], clock if isinstance(clock, ManualClock) else None, server)
    try:
        yield endpoint
    finally:
        await endpoint.close_clients()
        stop.set()
        await task


def in_process_broker(hive: Hive, clock: Clock | None = None) -> contextlib.AbstractAsyncContextManager[Endpoint]:
    """The broker, in-process; time is a ManualClock (`endpoint.clock`) unless another clock is given."""
    return in_process(hive, "broker", clock=clock or ManualClock(start=time.time()))


class ServerProcess:
    """`hive serve SERVER` as a child process, restartable, its log in a file under the home.

    The broker defaults to a free port of its own (kept across restarts); other servers use
    hive.toml's. `prefix` runs the command under another (e.g. `unshare --user ...`).
    """

    def __init__(self, hive: Hive, server: str, *extra_args: str, prefix: tuple[str, ...] = ()) -> None:
        self.hive = hive
        self.server = server
        self.extra_args = extra_args
        self.prefix = prefix
        self.process: subprocess.Popen[str] | None = None
        self.urls: list[str] = []
        self.port: int | None = None
        self.log = hive.home.parent / f"{server}.log"

    @property
    def url(self) -> str:
        return self.urls[0]

    def start(self, timeout: float = 30) -> ServerProcess:
        args = list(self.extra_args)
        if self.port and "--port" in args:  # a restart keeps the port it got the first time
            args[args.index("--port") + 1] = str(self.port)
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "hyperhive.servers.cli", "serve", self.server,
                 "--home", str(self.hive.home), *args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )  # fmt: skip
        self.urls = []
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.server} exited: {self.process.wait()}\n{self.stderr()}")
            if line.strip() == f"{self.server} ready":
                break
            if " listening on " in line:
                self.urls.append(line.split(" listening on ", 1)[1].strip())
        else:
            raise RuntimeError(f"{self.server} did not start in time")
        if self.port is None and self.urls and self.urls[0].startswith("http"):
            self.port = int(self.urls[0].rsplit(":", 1)[1].split("/")[0])  # keep it across restarts
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def stderr(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def endpoint(self) -> Endpoint:
        return Endpoint(self.hive, self.url, server=self.server)

    def kill_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Servers(Hive):
    """A hive whose servers run as processes (`hive serve`), by server name."""

    processes: dict[str, ServerProcess] = field(default_factory=dict)

    async def call(self, server: str, tool: str, as_name: str = "operator", **arguments: Any) -> Any:
        """One MCP tool call to a running server, as the operator or as the agent named."""
        async with HiveClient.for_server(self.config, server, self.token(as_name), retry_seconds=0) as client:
            return await client.call(tool, arguments)

    def push_repo(self, work: Path, name: str) -> str:
        """A commit of README.md, src/main.py and a binary file in `work`, pushed to the forge's repo
        `name` as the operator with the real git CLI; its sha."""
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(work),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        env |= {
            f"GIT_{who}_{what}": value
            for who in ("AUTHOR", "COMMITTER")
            for what, value in (("NAME", "t"), ("EMAIL", "t@t"))
        }
        (work / "src").mkdir(parents=True)
        (work / "README.md").write_text("hello from the forge\n")
        (work / "src" / "main.py").write_text("print(42)\n")
        (work / "logo.bin").write_bytes(b"\x89PNG\0\0\0")
        url = f"http://x:{self.token('operator')}@127.0.0.1:{self.ports['forge']}{GIT_PATH}/{name}.git"
        for args in (
            ["init", "-q", "-b", "main"],
            ["add", "-A"],
            ["commit", "-q", "-m", "first"],
            ["push", "-q", url, "main"],
        ):
            subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True, timeout=60)
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=work, env=env, capture_output=True, text=True, timeout=60
        ).stdout.strip()

    @contextlib.contextmanager
    def serving(self, *, dashboard: bool = False) -> Iterator[Servers]:
        """Run every server (agents: sleepers), and the dashboard if asked, until the block ends."""
        self.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n")
        for name in SERVERS:
            extra = ("--stop-agents-on-exit",) if name == "lifecycle" else ()
            self.processes[name] = ServerProcess(self, name, *extra)
        if dashboard:
            self.processes["dashboard"] = ServerProcess(self, "dashboard", "--port", str(free_port()))
        try:
            for process in self.processes.values():
                process.start()
            yield self
        finally:
            for process in reversed(self.processes.values()):
                if process.process is not None and process.process.poll() is None:
                    process.stop()


class BrokerProcess(ServerProcess):
    """`hive serve broker` on a port of its own (`--port 0` the first time)."""

    def __init__(self, hive: Hive, *extra_args: str) -> None:
        super().__init__(hive, "broker", *(extra_args or ("--port", "0")))


# ------------------------------------------------------------------------------- agents

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(3600)"]


def toml_list(argv: list[str]) -> str:
    return json.dumps(argv)  # a JSON array of strings is a TOML array


# A hive across hosts in a test: a silent host is marked down within a second or two.
HOST_BEATS: Final = "heartbeat_seconds = 0.2\ndown_after_seconds = 1.0\n"


def another_host(
    first: Hive,
    home: Path,
    name: str,
    *,
    uid_base: int,
    labels: tuple[str, ...] = (),
    tls: Certificate | None = None,
) -> Hive:
    """Host `name` of `first`'s hive (its public key, not its private one: the host signs with its own;
    its database and other servers; [host] beats as HOST_BEATS), at `home`, with a lifecycle server of
    its own: its port (over https with `tls`), its uid block, sleepers for agents. `first` is a hive
    across hosts too (storage_url and host set, HOST_BEATS)."""
    ports = {server: port for server, port in first.ports.items() if server != "lifecycle"}
    settings = f"{HOST_BEATS}labels = {json.dumps(list(labels))}\n"
    other = Hive(home, ports=ports, storage_url=first.storage_url, host=name, host_settings=settings)
    shutil.copy2(first.home / PUBLIC_KEY_FILE, other.home / PUBLIC_KEY_FILE)
    (other.home / PRIVATE_KEY_FILE).unlink()
    lifecycle = f"[servers.lifecycle]\nport = {free_port()}\n"
    if tls is not None:
        lifecycle += f'tls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n'
    other.configure(f"{lifecycle}[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\nuid_base = {uid_base}\n")
    return other


@contextlib.asynccontextmanager
async def two_hosts(
    storage_url: str, base: Path, *, labels: tuple[str, ...] = (), tls: Certificate | None = None
) -> AsyncIterator[tuple[Hivemind, Hive]]:
    """A hive across hosts alpha (its broker and lifecycle server, the manager) and beta (another_host:
    its lifecycle server), all in-process: alpha's Hivemind, and beta."""
    alpha = Hive(base / "alpha", storage_url=storage_url, host="alpha", host_settings=HOST_BEATS, manager=True)
    alpha.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n")
    beta = another_host(alpha, base / "beta", "beta", uid_base=400_000, labels=labels, tls=tls)
    async with (
        in_process(alpha, "broker") as broker,
        in_process(alpha, "lifecycle", stop_agents_on_exit=True) as lifecycle,
        in_process(beta, "lifecycle", stop_agents_on_exit=True),
    ):
        yield Hivemind(alpha, broker, lifecycle), beta


class Hivemind:
    """A broker and a lifecycle server, both in-process, and helpers to drive them."""

    def __init__(self, hive: Hive, broker: Endpoint, lifecycle: Endpoint) -> None:
        self.hive, self.broker, self.lifecycle = hive, broker, lifecycle
        self.operator = lifecycle.client("operator", timeout=60)
        self.approvals = lifecycle.client("service:approvals", timeout=60)
        self._manager_inbox = broker.client("manager")
        self._seen: list[dict[str, Any]] = []  # events received while looking for another kind

    async def call(self, tool: str, **arguments: Any) -> Any:
        return await self.operator.call(tool, arguments)

    async def status(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("agent_status", name=name)
        return result

    async def until_state(self, name: str, *states: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(name)
            if status["state"] in states or time.monotonic() > deadline:
                assert status["state"] in states, status
                return status
            await asyncio.sleep(0.05)

    async def event(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next helper event of type `kind` in the manager's inbox (others are kept for later)."""
        for event in self._seen:
            if event["type"] == kind:
                self._seen.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await self._manager_inbox.call("recv", {"wait_seconds": max(0.1, deadline - time.monotonic())})
            message = got["message"]
            if message and message.get("kind") == "event":
                event = message["event"]
                if event["type"] == kind:
                    return event
                self._seen.append(event)
        raise AssertionError(f"no {kind} event within {timeout} s; saw {self._seen}")

    async def propose(self, name: str, agent_toml: str) -> str:
        """Commit a new agent.toml into the agent's proposed repo, as the manager would."""
        paths = AgentPaths.of(self.hive.config, name)
        return await repos.commit_files(paths.config, {"agent.toml": agent_toml}, f"propose for {name}")

    async def create(self, name: str, command: list[str] | None = None) -> None:
        await self.call("create_agent", name=name)
        await self.event("spawned")
        if command is not None:
            sha = await self.propose(name, f"[sandbox]\ncommand = {toml_list(command)}\n")
            await self.approvals.call("apply_commit", {"name": name, "sha": sha})
            await self.event("rebuilt")
        await self.until_state(name, "running")


def sandbox_process(hive: Hive, name: str) -> int:
    """The pid of the agent's own program: the process in its sandbox that is not bwrap."""
    record = json.loads((hive.config.run_dir / "lifecycle" / "bwrap" / f"{name}.json").read_text())
    namespace = f"pid:[{record['pidns']}]"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != record["init_pid"]:
            try:
                if str((entry / "ns" / "pid").readlink()) == namespace:
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError(f"no process in {name}'s sandbox")


# ---------------------------------------------------------------------------------- processes


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children_of(pid: int) -> list[int]:
    found = []
    for child in _pids():
        try:
            if int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(child)
        except OSError:
            continue
    return found


def bwrap_pids(containing: str = "") -> list[int]:
    """bubblewrap processes (sandboxes' outer monitors and inits), those whose command line has `containing`."""
    return [pid for pid in _pids() if cmdline(pid).split(" ", 1)[0].endswith("bwrap") and containing in cmdline(pid)]


def gone(pid: int, within: float = 5.0) -> bool:
    """True once /proc has no such process (a zombie awaiting its parent counts as gone)."""
    deadline = time.monotonic() + within
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def start_hive_up(home: Path, timeout: float = 90) -> tuple[subprocess.Popen[str], list[str]]:
    """`hive up` on `home`, once it has announced itself; (the process, its output so far).

    The output list keeps growing from a reader thread, so the process never blocks on a full pipe.
    """
    up = subprocess.Popen(
        [sys.executable, "-m", "hyperhive.servers.cli", "up", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        output.append(line)
        if "Ctrl-C" in line or not line:
            break
    if not any("Ctrl-C" in line for line in output):
        up.kill()
        up.wait()
        raise AssertionError("hive up did not start:\n" + "".join(output))
    threading.Thread(target=lambda: output.extend(up.stdout or []), daemon=True).start()
    return up, output


def free_block() -> int:
    """A base N whose ports N..N+6 nothing listens on: `hive init --port-base N`."""
    return free_ports(7, consecutive=True)[0]


# ------------------------------------------------------------------------------------ TLS


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate (its own CA, as `openssl req -x509` makes one) and its key, 0600."""

    cert: Path
    key: Path

    @property
    def pem(self) -> str:
        return self.cert.read_text()


def make_certificate(
    directory: Path, name: str = "hive", *, ips: tuple[str, ...] = ("127.0.0.1",), dns: tuple[str, ...] = ("localhost",)
) -> Certificate:
    """<directory>/<name>.crt and .key for a server reached at `ips` and `dns` names (its SANs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hyperhive test {name}")])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    names += [x509.DNSName(host) for host in dns]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    made = Certificate(directory / f"{name}.crt", directory / f"{name}.key")
    made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    made.key.touch(mode=0o600)
    made.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return made
