"""Serve a hyperhive FastMCP server over streamable HTTP on TCP and/or a unix socket.

TCP is loopback, or beyond it over TLS ([servers.X] tls_cert and tls_key; the key readable by its
owner only). The unix socket stays plain HTTP (it is local), created 0600 inside a 0700 directory.
Host/Origin protection is on; SIGTERM and SIGINT stop the server gracefully: `before_shutdown`
runs first (the broker uses it to release waiting long-polls), then open requests get a few
seconds to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import ssl
import stat
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path

import uvicorn
from fastmcp import FastMCP
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect

from hyperhive.servers.common.config import Listen, ServingSettings
from hyperhive.servers.common.connections import GuardedProtocol, PeerLimits, TlsAcceptor, guarded_protocol
from hyperhive.servers.common.registry import MCP_PATH

log = logging.getLogger("hyperhive.serving")


class _CalmDisconnects(logging.Filter):
    """A client that hangs up mid-request is the client's business: one line, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ClientDisconnect):
            record.msg, record.args = "a client hung up before sending its whole request; ignored", ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def _calm_disconnect_logs() -> None:
    sdk = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, _CalmDisconnects) for f in sdk.filters):
        sdk.addFilter(_CalmDisconnects())


class ListenError(Exception):
    """The server cannot listen where it was told to; the message says why."""


def http_app(mcp: FastMCP, host: str = "127.0.0.1") -> Starlette:
    """The ASGI app for one of our servers: streamable HTTP at /mcp, Host/Origin checks on.

    A request's Host must be loopback, the address it came in on, or `host`: hive.toml's [servers.X]
    host, which clients connect to (a name, beyond loopback: the one its certificate names)."""
    # The SDK validates Mcp-Param-* headers against the called tool's schema; without this lookup
    # it lists every tool through the whole middleware chain on each call (about half the cost of
    # a call). None of our tools declare header parameters, so there is nothing to validate.
    mcp._mcp_server.get_tool_input_schema = lambda name: None
    return mcp.http_app(path=MCP_PATH, host_origin_protection=True, allowed_hosts=[host])


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on accepted sockets that say so,
    # and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ListenError(f"{host}:{port} is in use; stop the other server or use another port") from None
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(1024)
    return sock


def bind_unix(path: Path) -> socket.socket:
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if st.st_uid != os.geteuid():
        raise ListenError(f"{directory} belongs to another user; the socket directory must be ours")
    if stat.S_IMODE(st.st_mode) != 0o700:
        directory.chmod(0o700)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ListenError(f"{path} exists and is not a socket; move it away")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of a server that is gone
        else:
            raise ListenError(f"another server is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o600)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {e.strerror}") from None
    sock.listen(1024)
    return sock


def tls_context(listen: Listen) -> ssl.SSLContext | None:
    """The server side of TLS on `listen`'s TCP port (None: plain HTTP, loopback). ListenError when
    it cannot serve it: no key, a key others may read, files that are not a certificate and its key."""
    cert, key = listen.tls_cert, listen.tls_key
    if cert is None or listen.port is None:  # TLS is the TCP port's; the unix socket stays plain
        return None
    if key is None:
        # Its clients speak https to it (they see tls_cert): served plain, it would answer none of them.
        raise ListenError(
            f"{listen.host}:{listen.port} has tls_cert {cert} but no tls_key: a server cannot serve TLS without "
            "its key; set tls_key in hive.toml on the host that runs it (tls_cert alone is for hosts that call it)"
        )
    try:
        mode = stat.S_IMODE(key.stat().st_mode)
    except OSError as e:
        raise ListenError(f"cannot read the TLS key {key}: {e.strerror}") from None
    if mode & 0o077:
        raise ListenError(f"the TLS key {key} may be read by others (mode {mode:04o}); run `chmod 600 {key}`")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        why = e.reason or str(e)
        raise ListenError(f"cannot serve TLS with {cert} and {key}: {why} (a PEM certificate and its key?)") from None
    except OSError as e:
        raise ListenError(f"cannot read {e.filename or cert}: {e.strerror}") from None
    return context


def endpoint_urls(sockets: list[socket.socket], *, tls: bool = False) -> list[str]:
    """Each socket's URL; `tls`: its TCP sockets serve https."""
    urls = []
    for sock in sockets:
        if sock.family == socket.AF_UNIX:
            urls.append(f"unix:{sock.getsockname()}")
        else:
            host, port = sock.getsockname()[:2]
            host = f"[{host}]" if ":" in host else host
            urls.append(f"{'https' if tls else 'http'}://{host}:{port}{MCP_PATH}")
    return urls


class _Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        before_shutdown: Callable[[], Awaitable[None]] | None,
        on_ready: Callable[[], None] | None,
        tls: tuple[list[socket.socket], ssl.SSLContext, PeerLimits] | None = None,
    ) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown
        self._on_ready = on_ready
        self._tls = tls  # listeners uvicorn is not given: TlsAcceptor serves them, with this context
        self._acceptors: list[TlsAcceptor] = []

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # serve() installs its own handlers; uvicorn's would re-raise the signal after shutdown.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._tls is not None:
            listeners, context, limits = self._tls
            # What uvicorn makes for each connection of its own listeners, for each of ours.
            protocol_class: type[GuardedProtocol] = self.config.http_protocol_class  # type: ignore[assignment]

            def protocol() -> GuardedProtocol:
                return protocol_class(config=self.config, server_state=self.server_state, app_state=self.lifespan.state)

            self._acceptors = [TlsAcceptor(listener, context, limits, protocol) for listener in listeners]
            for acceptor in self._acceptors:
                acceptor.start()
        # Everything built so far (FastMCP, pydantic schemas) lives as long as the server; moving it
        # out of the collector's view turns full collections from tens of ms into a few.
        gc.collect()
        gc.freeze()
        if self.started and self._on_ready is not None:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            await self._before_shutdown()
            # Let the requests it released finish on open connections first: uvicorn's shutdown
            # marks in-flight responses "Connection: close", which MCP clients take for a dead session.
            deadline = time.monotonic() + 2.0
            while self.server_state.tasks and time.monotonic() < deadline:  # noqa: ASYNC110 (no event to wait on)
                await asyncio.sleep(0.02)
        for acceptor in self._acceptors:  # as uvicorn stops accepting on its own listeners first
            await acceptor.close()
        await super().shutdown(sockets=sockets)


async def serve(
    app: Starlette,
    listen: Listen,
    *,
    before_shutdown: Callable[[], Awaitable[None]] | None = None,
    on_ready: Callable[[list[str]], None] | None = None,
    stop: asyncio.Event | None = None,
    graceful_seconds: int = 5,
    limits: ServingSettings | None = None,
) -> None:
    """Serve `app` until SIGTERM/SIGINT (or `stop` is set). `on_ready` gets the endpoint URLs.

    `limits` (hive.toml [serving]) caps connections per peer and in all, and times out idle
    connections and slow request headers (and TLS handshakes)."""
    settings = limits or ServingSettings()
    tls = tls_context(listen)  # before anything listens: a server that cannot serve TLS does not start
    peers = PeerLimits(settings)
    _calm_disconnect_logs()
    sockets: list[socket.socket] = []  # uvicorn's: plain HTTP
    tls_sockets: list[socket.socket] = []  # TlsAcceptor's
    unix_paths: list[Path] = []  # uvicorn closes the sockets, so remember where to clean up
    try:
        if listen.port is not None:
            (tls_sockets if tls else sockets).append(bind_tcp(listen.host, listen.port))
        if listen.socket is not None:
            sockets.append(bind_unix(listen.socket))
            unix_paths.append(listen.socket)
        urls = endpoint_urls(tls_sockets, tls=True) + endpoint_urls(sockets)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=graceful_seconds,
            http=guarded_protocol(peers),
            ws="none",  # MCP needs no websockets; an upgraded connection would leave the peer limits
            timeout_keep_alive=settings.idle_timeout_seconds,
        )
        server = _Server(
            config,
            before_shutdown,
            (lambda: on_ready(urls)) if on_ready else None,
            (tls_sockets, tls, peers) if tls else None,
        )

        def request_exit() -> None:
            server.should_exit = True

        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread: caller stops us
                loop.add_signal_handler(sig, request_exit)
                handled.append(sig)
        watcher = asyncio.create_task(_exit_when_set(stop, request_exit)) if stop else None
        try:
            await server.serve(sockets=sockets)
        finally:
            if watcher:
                watcher.cancel()
            for sig in handled:
                loop.remove_signal_handler(sig)
    finally:
        _close(sockets + tls_sockets, unix_paths)
        peers.close()


def _close(sockets: list[socket.socket], unix_paths: list[Path]) -> None:
    for sock in sockets:
        sock.close()
    for path in unix_paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _exit_when_set(stop: asyncio.Event, request_exit: Callable[[], None]) -> None:
    await stop.wait()
    request_exit()
