"""Connection limits of every server: one client cannot exhaust a server for the others.

A peer is who opened the connection: its uid over the unix socket (SO_PEERCRED) and over loopback
TCP (the kernel's socket table says who owns the client end, so agents sharing 127.0.0.1 are still
told apart), else its address. Each peer may hold `max_connections_per_peer` connections (root and
the server's own uid are not capped) and the server `max_connections` in all; a connection over
either cap is closed at once, not queued, and logged once a minute per peer. A connection must
send its request line and headers within `header_timeout_seconds` (slowloris), and one idle
between requests is closed after `idle_timeout_seconds`. Over TLS (TlsAcceptor) a connection is
admitted before its handshake, which must end within `header_timeout_seconds` too.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import resource
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any, ClassVar, Final, Self

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hyperhive.servers.common.config import ServingSettings

log = logging.getLogger("hyperhive.serving")

LOG_EVERY: Final = 60.0  # seconds between two warnings about the same peer
FD_RESERVE: Final = 64  # descriptors kept for databases, logs and outgoing calls under a full load

# netlink sock_diag: look up one TCP socket by its addresses (linux/inet_diag.h)
_NETLINK_SOCK_DIAG: Final = 4
_SOCK_DIAG_BY_FAMILY: Final = 20
_NLM_F_REQUEST: Final = 1
_NLMSG_ERROR: Final = 2
_INET_DIAG_NOCOOKIE: Final = 0xFFFFFFFF
_NLMSG_HDR: Final = struct.Struct("=IHHII")
_DIAG_REQ: Final = struct.Struct("=BBBxI")  # family, protocol, ext, states
_DIAG_ID: Final = struct.Struct(">HH16s16s")  # sport, dport, src, dst (network order)
_DIAG_ID_TAIL: Final = struct.Struct("=III")  # if, cookie[2]
_DIAG_MSG_UID: Final = struct.Struct("=I")  # inet_diag_msg.idiag_uid, after 4 bytes + id (48) + 3 u32
_UID_OFFSET: Final = _NLMSG_HDR.size + 4 + 48 + 12


class PeerLimits:
    """Counts the open connections of each peer and of the server; decides who may connect."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.max_connections = min(settings.max_connections, max(16, raise_fd_limit() - FD_RESERVE))
        self.open: dict[str, int] = {}
        self.total = 0
        self._unreported: dict[tuple[str, str], int] = {}  # what happened to a peer since the last warning
        self._warned: dict[tuple[str, str], float] = {}
        self._diag: socket.socket | None = None
        self._diag_seq = 0
        # Root and our own uid could kill this server outright: a cap protects nothing against them,
        # and unprivileged, every agent and server shares our uid. They count towards the total only.
        self.uncapped = {"uid:0", f"uid:{os.geteuid()}"}

    def admit(self, peer: str) -> bool:
        """Count a new connection of `peer` in, or say it must be closed now (and maybe warn)."""
        held = self.open.get(peer, 0)
        per_peer_ok = held < self.settings.max_connections_per_peer or peer in self.uncapped
        if per_peer_ok and self.total < self.max_connections:
            self.open[peer] = held + 1
            self.total += 1
            return True
        if not per_peer_ok:
            self.note(peer, f"connections refused: it holds {held}, max_connections_per_peer")
        else:
            self.note(peer, f"connections refused: the server holds {self.total}, max_connections")
        return False

    def release(self, peer: str) -> None:
        held = self.open.get(peer, 0) - 1
        if held > 0:
            self.open[peer] = held
        else:
            self.open.pop(peer, None)
        self.total -= 1

    def note(self, peer: str, what: str) -> None:
        """Log that `what` happened to `peer`: at once the first time, then at most once a minute, counted."""
        key = (peer, what)
        count = self._unreported.get(key, 0) + 1
        now = time.monotonic()
        last = self._warned.get(key)
        if last is not None and now - last < LOG_EVERY:
            self._unreported[key] = count
            return
        self._warned[key] = now
        self._unreported.pop(key, None)
        if len(self._warned) > 10_000:  # peers (addresses) come and go: forget the quiet ones
            self._warned = {k: t for k, t in self._warned.items() if now - t < LOG_EVERY}
            self._unreported = {k: n for k, n in self._unreported.items() if k in self._warned}
        log.warning("peer %s: %s (%d time(s) since the last warning)", peer, what, count)

    def peer_of(self, sock: socket.socket | None) -> str:
        """'uid:N' for a local peer whose uid is known, else 'ip:ADDRESS'."""
        if sock is None:
            return "unknown"
        if sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            return f"uid:{uid}"
        try:
            remote = sock.getpeername()
            local = sock.getsockname()
        except OSError:
            return "unknown"
        address = ipaddress.ip_address(remote[0])
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if address.is_loopback or (mapped is not None and mapped.is_loopback):
            uid = self._loopback_uid(sock.family, remote, local)
            if uid is not None:
                return f"uid:{uid}"
        return f"ip:{remote[0]}"

    def _loopback_uid(self, family: int, remote: Any, local: Any) -> int | None:
        """The uid owning the client end of a loopback TCP connection, from the kernel (sock_diag)."""
        try:
            if self._diag is None:
                self._diag = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
                self._diag.settimeout(0.2)
            request = (
                _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF)
                + _DIAG_ID.pack(remote[1], local[1], _packed(family, remote[0]), _packed(family, local[0]))
                + _DIAG_ID_TAIL.pack(0, _INET_DIAG_NOCOOKIE, _INET_DIAG_NOCOOKIE)
            )
            self._diag_seq = seq = (self._diag_seq + 1) & 0xFFFFFFFF
            header = _NLMSG_HDR.pack(_NLMSG_HDR.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, seq, 0)
            self._diag.send(header + request)
            for _ in range(4):  # skip a late answer to an earlier question that timed out
                reply = self._diag.recv(8192)
                if len(reply) >= _NLMSG_HDR.size and _NLMSG_HDR.unpack_from(reply)[3] == seq:
                    break
            else:
                return None
        except OSError:
            return None  # no sock_diag here (or the client is gone already): fall back to its address
        if len(reply) < _UID_OFFSET + 4 or _NLMSG_HDR.unpack_from(reply)[1] == _NLMSG_ERROR:
            return None
        uid: int = _DIAG_MSG_UID.unpack_from(reply, _UID_OFFSET)[0]
        return uid

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()
            self._diag = None


def _packed(family: int, host: str) -> bytes:
    return socket.inet_pton(family, host).ljust(16, b"\0")


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else hard


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with the peer caps and the header timeout of `limits` (uvicorn's own
    keep-alive timeout is the idle one). `guarded_protocol` makes the class for one server's limits."""

    limits: ClassVar[PeerLimits]
    _peer: str | None = None
    connected = False  # connection_made ran: connection_lost gives the peer's place back
    _header_timer: asyncio.TimerHandle | None = None

    def admitted_as(self, peer: str) -> Self:
        """A connection whose peer TlsAcceptor admitted before its handshake: not counted again."""
        self._peer = peer
        return self

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._peer is None:
            peer = self.limits.peer_of(transport.get_extra_info("socket"))
            if not self.limits.admit(peer):
                transport.abort()  # closed now: a refused connection holds no descriptor
                return
            self._peer = peer
        self.connected = True
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is None:
            return  # refused in connection_made: uvicorn never saw it
        self._disarm_header_timer()
        self.limits.release(self._peer)
        self._peer = None
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The websocket protocol takes the connection over and is never told to give its place back.
        self._disarm_header_timer()
        if self._peer is not None:
            self.limits.release(self._peer)
            self._peer = None
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.settings.header_timeout_seconds, self._headers_too_slow
            )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._peer is not None and not self.transport.is_closing():
            seconds = self.limits.settings.header_timeout_seconds
            self.limits.note(self._peer, f"connections closed: no complete request headers within {seconds:g} s")
            self.transport.abort()


def guarded_protocol(limits: PeerLimits) -> type[GuardedProtocol]:
    """GuardedProtocol with `limits`: what uvicorn instantiates for each connection."""

    class Guarded(GuardedProtocol):
        pass

    Guarded.limits = limits
    return Guarded


class TlsAcceptor:
    """Accepts connections on a listening socket and serves them over TLS, the caps applied first.

    An asyncio server given an SSL context hands a connection to its protocol only after the TLS
    handshake: until then it would be nobody's, neither capped nor timed, and a peer opening
    connections that never shake hands would hold as many descriptors as it liked. So this accepts
    each connection itself, admits its peer as the plain protocol does (closing it at once over a
    cap), and only then starts TLS on it, the header timeout bounding the handshake."""

    def __init__(
        self,
        listener: socket.socket,
        context: ssl.SSLContext,
        limits: PeerLimits,
        protocol: Callable[[], GuardedProtocol],
    ) -> None:
        self.listener = listener
        self.context = context
        self.limits = limits
        self.protocol = protocol
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.listener.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def close(self) -> None:
        """Stop accepting, and drop the connections still shaking hands (those past it are uvicorn's)."""
        tasks = [task for task in (self._accepting, *self._handshakes) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, _ = await loop.sock_accept(self.listener)
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: wait as asyncio's own servers do, then accept again.
                    log.warning("cannot accept connections on %s: %s", self.listener.getsockname(), e.strerror)
                    await asyncio.sleep(1.0)
                continue  # anything else is one connection's (it died in the backlog)
            peer = self.limits.peer_of(connection)
            if not self.limits.admit(peer):
                connection.close()
                continue
            handshake = loop.create_task(self._handshake(connection, peer))
            self._handshakes.add(handshake)
            handshake.add_done_callback(self._handshakes.discard)

    async def _handshake(self, connection: socket.socket, peer: str) -> None:
        protocol = self.protocol().admitted_as(peer)
        timeout = self.limits.settings.header_timeout_seconds
        try:
            # The loop owns the connection from here, and closes it if the handshake fails.
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: protocol, connection, ssl=self.context, ssl_handshake_timeout=timeout
            )
        except Exception as e:  # a plain HTTP client, one that does not trust this certificate, ...
            # asyncio and uvloop both end a handshake past its timeout with ConnectionAbortedError.
            slow = isinstance(e, ConnectionAbortedError)
            what = f"no TLS handshake within {timeout:g} s" if slow else "a failed TLS handshake"
            self.limits.note(peer, f"connections closed: {what}")
        finally:
            if not protocol.connected:  # it never reached the protocol, which would give its place back
                self.limits.release(peer)
