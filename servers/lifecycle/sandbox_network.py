"""A bubblewrap sandbox's network: agent.toml `[sandbox] network`.

- "outbound" (the default): a private network namespace. pasta (Debian's `passt`) gives it
  user-mode outbound networking — the model API, package mirrors — with the host's loopback out
  of reach (`--no-map-gw`, no port forwarding of its own), and the hive's server ports are
  forwarded into it at the servers' own addresses, so hive.json's URLs work unchanged inside.
- "hive-only": a private namespace with only the hive's server ports in it.
- "host": the host's network namespace, every loopback service in reach (tokens decide).

The hive's ports are forwarded by a keeper process per sandbox rather than by pasta: it listens
inside the sandbox's namespace on each server's (address, port) and connects from the host's to
it as the agent's uid, so the servers tell agents apart by uid ([serving] caps each). The keeper
also starts pasta; as root it forks, and its root half only waits for the sandbox to end to end
pasta (the forwarding half runs as the agent). With a cgroup, all of them join the sandbox's, so
the kill that ends it ends them too. It is this module run as a program.

A server beyond loopback (a hive across hosts: hive.toml's `host = "10.1.0.1"`, over TLS) is
forwarded the same way. Before it listens, the keeper adds the server's address to the sandbox's
lo (a /32 or /128, scope host), as the helper it forks into the namespace, which holds
CAP_NET_ADMIN there (root; unprivileged, as the owner of bwrap's user namespace that owns it);
the agent holds none. So https://10.1.0.1:7801/mcp and the certificate that names 10.1.0.1
work inside as outside, and the address's local route, looked up before any other, keeps its
connections on lo, away from pasta's default route: the sandbox reaches only the hive's ports at
that address. The server then sees the host's address as the peer, not the agent's uid: every
agent of a host is one peer there (`max_connections_per_peer`). A server named by a host name
is resolved on the host when the sandbox starts; the sandbox gets an /etc/hosts of its own that
maps the name to the address its keeper listens on (sandbox_hosts: a "hive-only" sandbox has no
DNS, and DNS could answer another address), and the keeper connects to the name itself.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures.thread  # noqa: F401  (as idna: asyncio resolves a name in its default executor's)
import contextlib
import ctypes
import encodings.idna  # noqa: F401  (loaded while the keeper can still read Python's files)
import errno
import fcntl
import ipaddress
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from hyperhive.servers.common.privileges import drop_to
from hyperhive.servers.common.registry import SERVER_NAMES
from hyperhive.servers.lifecycle.pipes import read_to_end

if TYPE_CHECKING:
    from hyperhive.servers.common.config import HiveConfig

NetworkMode = Literal["outbound", "hive-only", "host"]
READY_TIMEOUT: Final = 10.0
_CLONE_NEWNET: Final = 0x40000000
_CLONE_NEWUSER: Final = 0x10000000
_NS_GET_USERNS: Final = 0xB701  # ioctl: the user namespace that owns a namespace
_PR_SET_PDEATHSIG: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38
# rtnetlink: add an address to an interface (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
_NLMSG_HDR: Final = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_IFADDRMSG: Final = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTATTR: Final = struct.Struct("=HH")  # length, type
_RTM_NEWADDR: Final = 20
_NLMSG_ERROR: Final = 2
_NLM_F_REQUEST: Final = 0x1
_NLM_F_ACK: Final = 0x4
_NLM_F_CREATE: Final = 0x400
_IFA_ADDRESS: Final = 1
_IFA_LOCAL: Final = 2
_IFA_F_NODAD: Final = 0x02
_RT_SCOPE_HOST: Final = 254


class NetworkError(Exception):
    """The sandbox's network could not be set up; the message says why and what to do."""


# Where an outbound sandbox sends DNS: pasta forwards it to the host's first resolver, which may
# well be on the host's loopback (systemd-resolved's 127.0.0.53), out of the sandbox's reach.
# Link-local, so it is never a real host; Podman's pasta networks use the same address.
DNS_FORWARD: Final = "169.254.1.1"
HOST_RESOLV_CONF: Final = Path("/etc/resolv.conf")
HOST_HOSTS: Final = Path("/etc/hosts")


def bwrap_args(mode: str, resolv_conf: Path | None = None, hosts: Path | None = None) -> list[str]:
    """What bwrap needs for `mode`: its own network namespace unless the host's, for "outbound"
    the resolv.conf that names pasta's DNS forward (`resolv_conf`, from `sandbox_resolv_conf`), and
    the /etc/hosts that maps servers named by host name (`hosts`, from `sandbox_hosts`)."""
    if mode == "host":
        return []
    argv = ["--unshare-net"]
    target = HOST_RESOLV_CONF.resolve()
    if mode == "outbound" and resolv_conf is not None and target.is_file():
        # Over the host's file, or where its link points (systemd-resolved's /run/... file: /etc
        # is bound read-only and the link then resolves inside the sandbox to this file). A host
        # with none (or a dangling link) resolves nothing either: nothing to bind over.
        argv += ["--ro-bind", str(resolv_conf), str(target)]
    if hosts is not None:
        # Over the host's file, or where its link points, as resolv.conf (sandbox_hosts read it).
        argv += ["--ro-bind", str(hosts), str(HOST_HOSTS.resolve())]
    return argv


def sandbox_resolv_conf() -> str:
    """The sandbox's resolv.conf: one nameserver, pasta's DNS forward; the host's search and options."""
    try:
        host = HOST_RESOLV_CONF.read_text(errors="replace")
    except OSError:
        host = ""  # no resolver configured: pasta has none to forward to either
    kept = [line for line in host.splitlines() if line.split()[:1] in (["search"], ["domain"], ["options"])]
    return "\n".join([f"nameserver {DNS_FORWARD}", *kept]) + "\n"


class Forward(NamedTuple):
    """A hive port as a sandbox reaches it: the keeper listens on (`address`, `port`) inside the
    sandbox's network namespace and connects to (`host`, `port`) from the host's, as the agent."""

    address: str  # an IP address: hive.toml's, or the one its host name resolved to when the sandbox started
    port: int
    host: str  # hive.toml's host: the address, or a name (then resolved again at each connection)

    @property
    def named(self) -> bool:
        """Whether hive.toml names this server by a host name, which the sandbox's /etc/hosts then maps."""
        return self.host != self.address


def hive_ports(config: HiveConfig) -> list[tuple[str, int]]:
    """What a sandbox reaches on its loopback: the (address, port) of each hive server with a fixed
    TCP port, of the broker's failover processes (hive.json names them too), and [lifecycle] forward_ports."""
    ports = []
    for server in SERVER_NAMES:
        listen = config.listen(server)
        if listen.port:
            ports.append(("127.0.0.1" if listen.host == "localhost" else listen.host, listen.port))
        ports += [("127.0.0.1" if other.host == "localhost" else other.host, other.port) for other in listen.failover]
    ports += [("127.0.0.1", port) for port in config.lifecycle.forward_ports if ("127.0.0.1", port) not in ports]
    return ports


def resolve_forwards(ports: Sequence[tuple[str, int]]) -> list[Forward]:
    """`ports` (hive_ports) as a sandbox starting now reaches them: an address as it is; a host name
    resolved here, on the host, to the address its keeper listens on inside (and the sandbox's
    /etc/hosts maps the name to: sandbox_hosts). Blocking (DNS); NetworkError for a name that does
    not resolve."""
    forwards = []
    for host, port in ports:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            forwards.append(Forward(_resolve(host, port), port, host))
        else:
            forwards.append(Forward(host, port, host))
    return forwards


def _resolve(host: str, port: int) -> str:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise NetworkError(
            f"hive.toml names a server's host {host!r}, which does not resolve on this host ({why}); a sandbox "
            "reaches the server at the address it resolves to when the sandbox starts: fix its DNS record or "
            "/etc/hosts entry, or set the server's host to its IP address (one its certificate names)"
        ) from None
    addresses = [str(info[4][0]) for info in found if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise NetworkError(f"hive.toml names a server's host {host!r}, which resolves to no IP address on this host")
    # IPv4 first: the address is only where the keeper listens inside the sandbox (it connects to the
    # name itself), and an IPv4 one can be added to any sandbox's loopback, IPv6 or not.
    return next((address for address in addresses if ":" not in address), addresses[0])


def sandbox_hosts(forwards: Sequence[Forward]) -> str | None:
    """The sandbox's /etc/hosts when hive.toml names a server by a host name: each such name mapped to
    the address its keeper listens on, then the host's own lines without those names; None when
    every server is an address (the host's file then stays, untouched). NetworkError if the host
    has no /etc/hosts to bind it over.

    Pinned rather than left to DNS: a "hive-only" sandbox has no DNS at all, and DNS answering
    another address than the keeper's (a second record, an AAAA one first, a record changed since
    the start) would send the agent past its keeper, out through pasta or nowhere. A changed
    record reaches a sandbox at its next start; the keeper resolves the name at each connection."""
    pinned = {forward.host.lower(): forward.address for forward in forwards if forward.named}
    if not pinned:
        return None
    try:
        host_lines = HOST_HOSTS.read_text(errors="replace").splitlines()
    except OSError as e:
        raise NetworkError(
            f"a sandbox reaches a server named by host name ({', '.join(pinned)}) through its own /etc/hosts, "
            f"bound over the host's, and {HOST_HOSTS} cannot be read here ({e.strerror}): create it (empty will do), "
            "or set the server's host in hive.toml to its IP address"
        ) from None
    lines = ["# The hive's servers, as this sandbox's keeper forwards them (resolved when it started):"]
    lines += [f"{address} {name}" for name, address in pinned.items()]
    lines.append(f"# {HOST_HOSTS} of the host, less those names:")
    for line in host_lines:
        fields = line.split("#", 1)[0].split()
        kept = [name for name in fields[1:] if name.lower() not in pinned]
        if len(kept) == len(fields[1:]):
            lines.append(line)
        elif kept:  # the line's other names stay; a line of only pinned names goes
            lines.append(" ".join([fields[0], *kept]))
    return "\n".join(lines) + "\n"


def keeper_command(
    mode: str, init_pid: int, uid: int, forwards: Sequence[Forward], cgroup_procs: Sequence[Path] = ()
) -> list[str]:
    if mode == "outbound" and shutil.which("pasta") is None:
        raise NetworkError(
            'network = "outbound" needs pasta (the Debian package passt; scripts/setup.sh installs it); '
            'install it, or set [sandbox] network = "hive-only" or "host" in agent.toml'
        )
    argv = [sys.executable, "-m", __name__, "--mode", mode, "--pid", str(init_pid), "--uid", str(uid)]
    argv += [f"--cgroup-procs={path}" for path in cgroup_procs]
    return argv + [f"--forward={_forward_arg(forward)}" for forward in forwards]


def _forward_arg(forward: Forward) -> str:
    """ADDRESS,PORT, or ADDRESS,PORT,HOST for a server named by host name (_parse_forward reads it)."""
    return f"{forward.address},{forward.port}" + (f",{forward.host}" if forward.named else "")


def _parse_forward(text: str) -> Forward:
    address, port, *host = text.split(",", 2)
    return Forward(address, int(port), host[0] if host else address)


async def attach(
    mode: str,
    init_pid: int,
    uid: int,
    forwards: Sequence[Forward],
    log_fd: int,
    cgroup_procs: Sequence[Path] = (),
) -> None:
    """Give the sandbox whose pid 1 is `init_pid` its network; returns once it is up.

    Call it after bwrap made the namespaces and before the sandbox's command runs (bwrap
    --block-fd). The keeper's own messages go to `log_fd`, the sandbox's log. With the sandbox's
    `cgroup_procs` the keeper, and the pasta it starts, join the sandbox's cgroup: the kill that
    ends the sandbox ends them too (pasta escapes a parent-death signal, and the keeper drops the
    privileges it would need to end a root pasta itself)."""
    if mode == "host":
        return
    argv = keeper_command(mode, init_pid, uid, forwards, cgroup_procs)
    read_end, write_end = os.pipe()
    try:
        # The standard library's Popen, like the sandbox's: nothing of the server's is inherited.
        keeper = subprocess.Popen(  # noqa: ASYNC220 (fork and exec only: it does not wait)
            argv, stdin=subprocess.DEVNULL, stdout=write_end, stderr=log_fd, close_fds=True,
            start_new_session=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )  # fmt: skip
    finally:
        os.close(write_end)
    try:
        answer = await asyncio.wait_for(read_to_end(read_end), READY_TIMEOUT)
    except TimeoutError:
        answer = f"not ready within {READY_TIMEOUT:.0f} s".encode()
    finally:
        os.close(read_end)
    if answer.strip() != b"ready":
        with contextlib.suppress(ProcessLookupError):
            keeper.kill()
        await asyncio.to_thread(keeper.wait)
        why = answer.decode(errors="replace").strip() or f"it exited with code {keeper.returncode}"
        raise NetworkError(f'the sandbox\'s network ("{mode}") could not be set up: {why}')


# ------------------------------------------------------------------------------------- the keeper


def _libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _setns(fd: int, kind: int, name: str) -> None:
    try:
        _libc_call("setns", fd, kind)
    except OSError as e:
        raise OSError(e.errno, f"cannot enter the sandbox's {name} namespace: {e.strerror}") from None


def _listen_inside(init_pid: int, forwards: Sequence[Forward], join_userns: bool) -> list[socket.socket]:
    """Listening sockets on `forwards` inside the sandbox's network namespace, each address that is
    not loopback added to its lo first.

    A forked child joins the namespace and hands the sockets back: a socket stays in the namespace
    it was made in, and this process stays in the host's. The child may change the namespace's
    addresses: as root it holds every capability over it; unprivileged, entering the user namespace
    that owns it (bwrap's, made by our uid) gives it every capability there. The agent has none."""
    netns = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    # Unprivileged, the namespace belongs to a user namespace of bwrap's (not always the one its
    # pid 1 is in: bwrap may nest another); we may enter it as its owner.
    userns = fcntl.ioctl(netns, _NS_GET_USERNS) if join_userns else -1
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = os.fork()
    if child == 0:  # pragma: no cover (a forked child; its result is checked by the parent)
        try:
            ours.close()
            if userns >= 0:
                _setns(userns, _CLONE_NEWUSER, "user")
            _setns(netns, _CLONE_NEWNET, "network")
            for address in dict.fromkeys(forward.address for forward in forwards):
                if not ipaddress.ip_address(address).is_loopback:  # 127.0.0.0/8 and ::1 are lo's already
                    _add_to_loopback(address)
            made = []
            for forward in forwards:
                family = socket.AF_INET6 if ":" in forward.address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((forward.address, forward.port))
                sock.listen(128)
                made.append(sock)
            socket.send_fds(theirs, [b"ok"], [s.fileno() for s in made])
            os._exit(0)
        except BaseException as e:
            with contextlib.suppress(OSError):
                theirs.sendall(f"cannot listen inside the sandbox: {e}".encode())
            os._exit(1)
    theirs.close()
    try:
        message, fds, _, _ = socket.recv_fds(ours, 4096, max(1, len(forwards)))
    finally:
        ours.close()
        os.waitpid(child, 0)
        os.close(netns)
        if userns >= 0:
            os.close(userns)
    if message != b"ok":
        for fd in fds:
            os.close(fd)
        raise OSError(message.decode(errors="replace") or "the namespace helper died")
    return [socket.socket(fileno=fd) for fd in fds]


def _add_to_loopback(address: str) -> None:
    """Give this network namespace's lo `address` alone (/32, /128), scope host: what `ip address add
    ADDRESS dev lo scope host` does, without needing `ip`.

    A server beyond loopback (another host's 10.1.0.1) is then reached inside the sandbox at the
    address its URL and its certificate name, and the kernel's local route for the address, in the
    local table that is looked up before any other, takes a connection there to lo, to the keeper:
    never out through pasta's default route. Scope host: never a source address for anything that
    does leave. The sandbox's namespace ends with it, and its addresses with it."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    # IPv6: no duplicate address detection (nobody on lo to ask), for a tentative address cannot be bound.
    flags = _IFA_F_NODAD if ip.version == 6 else 0
    body = _IFADDRMSG.pack(family, ip.max_prefixlen, flags, _RT_SCOPE_HOST, socket.if_nametoindex("lo"))
    for attribute in (_IFA_LOCAL, _IFA_ADDRESS):
        body += _RTATTR.pack(_RTATTR.size + len(ip.packed), attribute) + ip.packed  # 4 or 16 bytes: aligned
    request = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as netlink:
        netlink.settimeout(READY_TIMEOUT)
        netlink.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _RTM_NEWADDR, request, 1, 0) + body)
        reply = netlink.recv(4096)
    kind = _NLMSG_HDR.unpack_from(reply)[1] if len(reply) >= _NLMSG_HDR.size + 4 else None
    code = -struct.unpack_from("=i", reply, _NLMSG_HDR.size)[0] if kind == _NLMSG_ERROR else errno.EPROTO
    if code not in (0, errno.EEXIST):
        raise OSError(
            code,
            f"cannot add the address {address} of a hive server to the sandbox's loopback ({os.strerror(code)}); "
            'name that server by an IPv4 address or host name in hive.toml, or set [sandbox] network = "host" in '
            "the agent's agent.toml",
        )


def _start_pasta(init_pid: int, privileged: bool) -> subprocess.Popen[bytes]:
    """pasta, outbound only: no ports forwarded either way, the gateway not mapped to the host."""
    pasta = shutil.which("pasta") or "pasta"
    netns = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY)  # passed on: pasta opens it as /proc/self/fd/N
    fds = [netns]
    argv = [pasta, "-f", "-q", "--config-net", "--no-map-gw", "-t", "none", "-u", "none", "-T", "none", "-U", "none"]
    argv += ["--dns-forward", DNS_FORWARD]
    # --no-netns-quit: the keeper ends pasta (it would watch the namespace's file with inotify, and
    # write to the agent's log when the host has no inotify instance left).
    argv += ["--netns", f"/proc/self/fd/{netns}", "--no-netns-quit"]
    if privileged:
        # This pasta (Debian 12's) drops to --runas before it opens /dev/net/tun and enters the
        # namespace, which then fails for any uid but root's (checked); it keeps no capability it
        # does not need, and no port of the host's is forwarded either way.
        argv += ["--runas", "0"]
    else:
        fds.append(fcntl.ioctl(netns, _NS_GET_USERNS))  # the namespace's owner, as in _listen_inside
        argv += ["--userns", f"/proc/self/fd/{fds[-1]}"]

    def die_with_keeper() -> None:
        _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGTERM)

    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=fds, preexec_fn=die_with_keeper
        )
    finally:
        for fd in fds:
            os.close(fd)
    # pasta configures the namespace before it serves; it is up once the interface has a route.
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OSError(f"pasta exited with code {process.returncode} (its messages are in the agent's log)")
        if _has_default_route(init_pid):
            return process
        time.sleep(0.02)
    process.kill()
    raise OSError("pasta did not configure the sandbox's network in time")


def _has_default_route(init_pid: int) -> bool:
    try:
        lines = Path(f"/proc/{init_pid}/net/route").read_text().splitlines()[1:]
        return any(line.split()[1] == "00000000" for line in lines)
    except (OSError, IndexError):
        return False


def _drop_privileges(uid: int) -> None:
    drop_to(uid, uid)
    _libc_call("prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()


async def _forward(listener: socket.socket, host: str, port: int) -> asyncio.Server:
    """Connect each connection `listener` accepts to (`host`, `port`) from the host's namespace: a name
    is resolved at each connection, with the host's resolver (no DNS change waits for a restart)."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()  # the server is down: the client sees a refused connection
            return
        try:
            await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
        finally:
            writer.close()
            upstream.close()

    return await asyncio.start_server(connection, sock=listener)


async def _keep(
    pidfd: int,
    listeners: list[socket.socket],
    forwards: Sequence[Forward],
    pasta: subprocess.Popen[bytes] | None,
) -> None:
    servers = [await _forward(sock, f.host, f.port) for sock, f in zip(listeners, forwards, strict=True)]
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    loop.add_reader(pidfd, ended.set)  # a pidfd turns readable when its process ends
    if pasta is not None:

        def pasta_ended() -> None:
            if pasta.poll() is not None:  # the hive's ports stay forwarded: the harness can still say so
                print(f"pasta exited with code {pasta.returncode}: no outbound network", file=sys.stderr, flush=True)
                loop.remove_signal_handler(signal.SIGCHLD)

        loop.add_signal_handler(signal.SIGCHLD, pasta_ended)
    await ended.wait()
    for server in servers:
        server.close()
    if pasta is not None and pasta.poll() is None:
        with contextlib.suppress(PermissionError, ProcessLookupError):
            pasta.terminate()  # ours only when not root: then it runs as our uid


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox_network", description="keep one sandbox's network")
    parser.add_argument("--mode", choices=("outbound", "hive-only"), required=True)
    parser.add_argument("--pid", type=int, required=True, help="the sandbox's pid 1, as the host sees it")
    parser.add_argument("--uid", type=int, required=True, help="the agent's uid: forwarded connections are its")
    parser.add_argument(
        "--forward", action="append", default=[],
        help="ADDRESS,PORT of a hive server, or ADDRESS,PORT,HOST for one named HOST that resolved to ADDRESS",
    )  # fmt: skip
    parser.add_argument("--cgroup-procs", action="append", default=[], help="the sandbox's cgroup.procs files")
    args = parser.parse_args(argv)
    forwards = [_parse_forward(forward) for forward in args.forward]
    privileged = os.geteuid() == 0
    try:
        for procs in args.cgroup_procs:  # first: whatever it starts is the sandbox's to end
            Path(procs).write_text(str(os.getpid()))
        pidfd = os.pidfd_open(args.pid)
        listeners = _listen_inside(args.pid, forwards, join_userns=not privileged)
        pasta = _start_pasta(args.pid, privileged) if args.mode == "outbound" else None
    except OSError as e:
        print(e, flush=True)
        return 1
    if privileged and pasta is not None and os.fork() != 0:
        # This process stays root only to end the root pasta when the sandbox ends (pasta does not
        # reliably get a parent-death signal, and the forwarding child below cannot signal it).
        for sock in listeners:
            sock.close()
        _reap(pidfd, pasta)
        return 0
    try:
        if privileged:
            _drop_privileges(args.uid)
    except OSError as e:
        print(e, flush=True)
        return 1
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # closes the pipe: the lifecycle server stops waiting
    os.close(devnull)
    asyncio.run(_keep(pidfd, listeners, forwards, None if privileged else pasta))
    return 0


def _reap(pidfd: int, pasta: subprocess.Popen[bytes]) -> None:
    """Wait for the sandbox's pid 1 to end, then end pasta; say once if pasta ends before it."""
    os.close(1)  # the pipe's end is the forwarding child's to close, once it is ready
    said = False
    while not select.select([pidfd], [], [], 1.0)[0]:
        if pasta.poll() is not None and not said:
            print(f"pasta exited with code {pasta.returncode}: no outbound network", file=sys.stderr, flush=True)
            said = True
    if pasta.poll() is None:
        pasta.terminate()
        try:
            pasta.wait(5)
        except subprocess.TimeoutExpired:
            pasta.kill()
            pasta.wait()


if __name__ == "__main__":
    sys.exit(main())
