"""A bubblewrap sandbox's network: agent.toml `[sandbox] network`.

- "outbound" (the default): a private network namespace. pasta (Debian's `passt`) gives it
  user-mode outbound networking — the model API, package mirrors — with the host's loopback out
  of reach (`--no-map-gw`, no port forwarding of its own), and the hive's server ports are
  forwarded onto its loopback, so its URLs stay http://127.0.0.1:PORT/mcp.
- "hive-only": a private namespace with only the hive's server ports on its loopback.
- "host": the host's network namespace, every loopback service in reach (tokens decide).

The hive's ports are forwarded by a keeper process per sandbox rather than by pasta: it listens
inside the sandbox's namespace and connects from the host's as the agent's uid, so the servers
tell agents apart by uid ([serving] caps each). The keeper also starts pasta; as root it forks,
and its root half only waits for the sandbox to end to end pasta (the forwarding half runs as the
agent). With a cgroup, all of them join the sandbox's, so the kill that ends it ends them too.
It is this module run as a program.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures.thread  # noqa: F401  (as idna: asyncio resolves a name in its default executor's)
import contextlib
import ctypes
import encodings.idna  # noqa: F401  (loaded while the keeper can still read Python's files)
import fcntl
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

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


class NetworkError(Exception):
    """The sandbox's network could not be set up; the message says why and what to do."""


# Where an outbound sandbox sends DNS: pasta forwards it to the host's first resolver, which may
# well be on the host's loopback (systemd-resolved's 127.0.0.53), out of the sandbox's reach.
# Link-local, so it is never a real host; Podman's pasta networks use the same address.
DNS_FORWARD: Final = "169.254.1.1"
HOST_RESOLV_CONF: Final = Path("/etc/resolv.conf")


def bwrap_args(mode: str, resolv_conf: Path | None = None) -> list[str]:
    """What bwrap needs for `mode`: its own network namespace unless the host's, and for "outbound"
    the resolv.conf that names pasta's DNS forward (`resolv_conf`, from `sandbox_resolv_conf`)."""
    if mode == "host":
        return []
    argv = ["--unshare-net"]
    target = HOST_RESOLV_CONF.resolve()
    if mode == "outbound" and resolv_conf is not None and target.is_file():
        # Over the host's file, or where its link points (systemd-resolved's /run/... file: /etc
        # is bound read-only and the link then resolves inside the sandbox to this file). A host
        # with none (or a dangling link) resolves nothing either: nothing to bind over.
        argv += ["--ro-bind", str(resolv_conf), str(target)]
    return argv


def sandbox_resolv_conf() -> str:
    """The sandbox's resolv.conf: one nameserver, pasta's DNS forward; the host's search and options."""
    try:
        host = HOST_RESOLV_CONF.read_text(errors="replace")
    except OSError:
        host = ""  # no resolver configured: pasta has none to forward to either
    kept = [line for line in host.splitlines() if line.split()[:1] in (["search"], ["domain"], ["options"])]
    return "\n".join([f"nameserver {DNS_FORWARD}", *kept]) + "\n"


def hive_ports(config: HiveConfig) -> list[tuple[str, int]]:
    """What a sandbox reaches on its loopback: the (address, port) of each hive server with a fixed
    TCP port, and [lifecycle] forward_ports."""
    ports = []
    for server in SERVER_NAMES:
        listen = config.listen(server)
        if listen.port:
            ports.append(("127.0.0.1" if listen.host == "localhost" else listen.host, listen.port))
    ports += [("127.0.0.1", port) for port in config.lifecycle.forward_ports if ("127.0.0.1", port) not in ports]
    return ports


def keeper_command(
    mode: str, init_pid: int, uid: int, ports: Sequence[tuple[str, int]], cgroup_procs: Sequence[Path] = ()
) -> list[str]:
    if mode == "outbound" and shutil.which("pasta") is None:
        raise NetworkError(
            'network = "outbound" needs pasta (the Debian package passt; scripts/setup.sh installs it); '
            'install it, or set [sandbox] network = "hive-only" or "host" in agent.toml'
        )
    argv = [sys.executable, "-m", __name__, "--mode", mode, "--pid", str(init_pid), "--uid", str(uid)]
    argv += [f"--cgroup-procs={path}" for path in cgroup_procs]
    return argv + [f"--forward={host},{port}" for host, port in ports]


async def attach(
    mode: str,
    init_pid: int,
    uid: int,
    ports: Sequence[tuple[str, int]],
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
    argv = keeper_command(mode, init_pid, uid, ports, cgroup_procs)
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


def _listen_inside(init_pid: int, forwards: Sequence[tuple[str, int]], join_userns: bool) -> list[socket.socket]:
    """Listening sockets on `forwards` inside the sandbox's network namespace.

    A forked child joins the namespace and hands the sockets back: a socket stays in the namespace
    it was made in, and this process stays in the host's."""
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
            made = []
            for host, port in forwards:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
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
    forwards: Sequence[tuple[str, int]],
    pasta: subprocess.Popen[bytes] | None,
) -> None:
    servers = [await _forward(sock, host, port) for sock, (host, port) in zip(listeners, forwards, strict=True)]
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
    parser.add_argument("--forward", action="append", default=[], help="HOST,PORT of a hive server")
    parser.add_argument("--cgroup-procs", action="append", default=[], help="the sandbox's cgroup.procs files")
    args = parser.parse_args(argv)
    forwards = [(host, int(port)) for host, port in (f.rsplit(",", 1) for f in args.forward)]
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
