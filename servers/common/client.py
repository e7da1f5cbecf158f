"""Call another hyperhive server's tools by name, with a bearer token.

    async with HiveClient.for_server(config, "broker", token) as broker:
        sent = await broker.call("send", {"to": "alice", "body": "hi"}, result=SendResult)

The client survives server restarts. A call that provably never reached the server (every
connection attempt was refused) is retried with backoff for `retry_seconds`; a call that may
have reached it fails with ServerUnavailable, so nothing is ever done twice. Either way the
next call starts a fresh session.

A server may have several addresses (the broker's other processes: `[servers.broker] failover`).
The client keeps to the one that last answered; a call that one refuses or cannot be connected to
goes to the next at once (nothing was sent, so nothing is done twice), and only when every address
refused does the client wait and try them again. A call that may have reached a process is never
repeated on another: it fails as above, and the caller's next call finds that process gone and
moves on.
"""

from __future__ import annotations

import functools
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx2
from fastmcp import Client
from fastmcp.client.client import CallToolResult
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.exceptions import ToolError
from pydantic import BaseModel

from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.registry import GIT_PATH, MCP_PATH

log = logging.getLogger("hyperhive.client")

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
TokenSource = str | Callable[[], str]


@dataclass(frozen=True, slots=True)
class ServerAddress:
    name: str
    url: str  # with a unix socket, the host part only sets the Host header
    socket: Path | None = None
    # An https URL's server is trusted by exactly this certificate (a self-signed one is its own CA),
    # as a file (hive.toml's tls_cert) or as its PEM text (hive.json's, in a sandbox without the file);
    # neither: the system's CAs. Either way the certificate must name the URL's host.
    tls_cert: Path | None = None
    tls_cert_pem: str | None = None

    def __str__(self) -> str:
        return f"{self.name} at {self.socket or self.url}"

    @property
    def trusted(self) -> str:
        """The certificate it trusts, in words."""
        if self.tls_cert is not None:
            return str(self.tls_cert)
        return "the certificate hive.json gives" if self.tls_cert_pem else "the system's certificate authorities"


def _tcp_base(host: str, port: int, tls: bool) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


def server_address(config: HiveConfig, server: str) -> ServerAddress:
    """Where to reach `server`: its TCP port if it has one (https with a tls_cert), else its unix socket."""
    listen = config.listen(server)
    if listen.port:
        base = _tcp_base(listen.host, listen.port, listen.tls_cert is not None)
        return ServerAddress(server, f"{base}{MCP_PATH}", tls_cert=listen.tls_cert)
    if listen.socket is not None:
        return ServerAddress(server, f"http://localhost{MCP_PATH}", listen.socket)
    raise ServerUnavailable(f"{server} has no fixed address in hive.toml (port 0 and no socket)")


def failover_addresses(config: HiveConfig, server: str) -> list[ServerAddress]:
    """`server`'s other processes ([servers.X] failover: the broker's), in the order clients try them."""
    return [
        ServerAddress(server, f"{_tcp_base(a.host, a.port, a.tls_cert is not None)}{MCP_PATH}", tls_cert=a.tls_cert)
        for a in config.listen(server).failover
    ]


def server_addresses(config: HiveConfig, server: str) -> list[ServerAddress]:
    """Every address of `server`: server_address first, then its failover addresses."""
    return [server_address(config, server), *failover_addresses(config, server)]


def forge_git_url(config: HiveConfig) -> str | None:
    """Where git reaches the forge's repos over TCP (http(s)://host:port/git), or None without a TCP
    port. Over https, git must trust the forge's tls_cert (`git -c http.sslCAInfo=CERT`)."""
    listen = config.listen("forge")
    if not listen.port:
        return None
    return f"{_tcp_base(listen.host, listen.port, listen.tls_cert is not None)}{GIT_PATH}"


class HiveClient:
    def __init__(
        self,
        address: ServerAddress | Sequence[ServerAddress],
        token: TokenSource,
        *,
        timeout: float = 30.0,
        retry_seconds: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        """`address`: where the server is, or several addresses of one server (its processes on one
        store, the preferred first): calls go to the one that answers (the module's docstring)."""
        self.addresses = (address,) if isinstance(address, ServerAddress) else tuple(address)
        if not self.addresses:
            raise ValueError("a HiveClient needs at least one address")
        self._headers = headers or {}
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._auth = _Bearer(token)
        # A pool (and certificate to trust) per address: a session and its connections are one process's.
        self._wires = [_CountingTransport(one) for one in self.addresses]
        self._current = 0  # the address calls go to: the one that last answered
        self._client: Client[Any] | None = None
        self._session = AsyncExitStack()
        self._refused = False

    @classmethod
    def for_server(cls, config: HiveConfig, server: str, token: TokenSource, **kwargs: Any) -> HiveClient:
        """A client of `server` where hive.toml says it is, with its failover addresses if it has any."""
        return cls(server_addresses(config, server), token, **kwargs)

    @property
    def address(self) -> ServerAddress:
        """The address calls go to now."""
        return self.addresses[self._current]

    @property
    def _wire(self) -> _CountingTransport:
        return self._wires[self._current]

    async def __aenter__(self) -> HiveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """End the session and close its connections. The client may be used again after."""
        await self._end_session()
        for wire in self._wires:
            await wire.close_pool()

    async def _end_session(self) -> None:
        session, self._session, self._client = self._session, AsyncExitStack(), None
        try:
            await session.aclose()
        except Exception as e:  # a session whose server died cannot close cleanly
            log.debug("closing a broken session to %s: %s", self.address, e)

    # ------------------------------------------------------------------------------------ calls
    @overload
    async def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        result: type[M],
        timeout: float | None = None,
    ) -> M: ...

    @overload
    async def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        result: None = None,
        timeout: float | None = None,
    ) -> Any: ...

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        result: type[M] | None = None,
        timeout: float | None = None,
    ) -> M | Any:
        """Call `tool`. Returns its structured result (validated into `result` if given).

        Raises ToolError with the server's message when the tool refuses, AuthRefused on 401,
        ServerUnavailable when the server stays unreachable or the connection breaks mid-call.
        """
        _refuse_non_finite(tool, arguments or {})

        async def call_tool(client: Client[Any]) -> CallToolResult:
            return await client.call_tool(tool, arguments or {}, timeout=timeout or self.timeout, raise_on_error=False)

        outcome = await self._reach(call_tool, f"call to {self.addresses[0].name}.{tool}", self.retry_seconds)
        if outcome.is_error:
            text = " ".join(getattr(block, "text", "") for block in outcome.content).strip()
            raise ToolError(text or f"{self.address.name}.{tool} failed")
        # Every hyperhive tool returns an object, so the structured content is the whole result.
        data = outcome.structured_content
        return result.model_validate(data) if result is not None else data

    async def list_tools(self) -> list[str]:
        async def names(client: Client[Any]) -> list[str]:
            return [tool.name for tool in await client.list_tools()]

        return await self._reach(names, f"listing tools of {self.addresses[0].name}", 0)

    async def _reach(self, action: Callable[[Client[Any]], Awaitable[R]], doing: str, retry_seconds: float) -> R:
        """`action` in a session with the server, at the address that answers.

        While nothing was sent (the connection was refused, or never made), the next address is
        tried at once; once every address refused, all are tried again with backoff for
        `retry_seconds`. AuthRefused on 401; ServerUnavailable when none answered in time, when a
        certificate is wrong everywhere (waiting does not change it), or when the connection broke
        after `action` may have reached the server: then it is not repeated, here or elsewhere."""
        deadline = time.monotonic() + retry_seconds
        backoff = Backoff(0.1, 2.0)
        unreached: dict[int, str] = {}  # this round: the addresses that took nothing, and why
        untrusted: set[int] = set()  # those of them whose certificate is not the one to trust
        while True:
            index, wire = self._current, self._wire
            sent_before = wire.maybe_delivered
            try:
                client = await self._connect()
                sent_before = wire.maybe_delivered  # what connecting sent is not the action
                return await action(client)
            except Exception as e:
                maybe_sent = wire.maybe_delivered != sent_before
                await self._end_session()
                if self._refused:
                    raise AuthRefused(f"{self.address.name} refused the token (401)") from None
                if maybe_sent:  # it may have taken effect: never repeat it
                    raise ServerUnavailable(f"{doing} failed: {_reason(e)}") from None
                unreached[index] = wire.untrusted or wire.last_refusal or _reason(e)
                if wire.untrusted is not None:
                    untrusted.add(index)
            # Nothing was sent: the next address that has not refused in this round, at once.
            following = [(index + step) % len(self.addresses) for step in range(1, len(self.addresses))]
            untried = [other for other in following if other not in unreached]
            if untried:
                self._move_to(untried[0], unreached[index])
                continue
            if untrusted == set(unreached) or time.monotonic() + backoff.next_delay > deadline:
                raise ServerUnavailable(f"cannot reach {self._where(unreached)}") from None
            await backoff.wait()
            unreached.clear()
            untrusted.clear()
            if following:  # a new round, from the address after the one tried last
                self._move_to(following[0], None)

    def _move_to(self, index: int, why: str | None) -> None:
        if why is not None:
            log.info("%s does not answer (%s); trying %s", self.address, why, self.addresses[index])
        self._current = index  # and it stays there while it answers

    def _where(self, unreached: dict[int, str]) -> str:
        """The addresses that refused, and why, in words."""
        if len(unreached) == 1:
            [(index, why)] = unreached.items()
            return f"{self.addresses[index]}: {why}"
        places = [(self.addresses[index].socket or self.addresses[index].url, why) for index, why in unreached.items()]
        each = "; ".join(f"{place}: {why}" for place, why in places)
        return f"{self.addresses[0].name} at any of its {len(unreached)} addresses: {each}"

    async def _connect(self) -> Client[Any]:
        if self._client is None:
            self._refused = False
            wire = self._wire  # the session's connections are all to this address

            def http_client(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
                **_: Any,  # what else the MCP client passes (follow_redirects): ours are fixed
            ) -> httpx2.AsyncClient:
                return self._http_client(wire, headers, timeout, auth)

            transport = StreamableHttpTransport(self.address.url, auth=self._auth, httpx_client_factory=http_client)
            client: Client[Any] = await self._session.enter_async_context(Client(transport, timeout=self.timeout))
            # The MCP client checks a result against its tool's output schema, and lists the tools
            # first if it has not yet: a call answered just before its server stopped (a released
            # long-poll) then failed as "Connection closed". Listed now, an answer is the whole call.
            await client.list_tools()
            self._client = client
        return self._client

    def _http_client(
        self,
        wire: _CountingTransport,
        headers: dict[str, str] | None,
        timeout: httpx2.Timeout | None,
        auth: httpx2.Auth | None,
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=wire,
            headers={**(headers or {}), **self._headers},
            auth=auth,
            # Long-polls hold a request for up to 180 s; the server pings SSE streams every 15 s.
            timeout=timeout or httpx2.Timeout(30.0, read=300.0),
            event_hooks={"response": [self._note_status]},
        )

    async def _note_status(self, response: httpx2.Response) -> None:
        if response.status_code == 401:
            self._refused = True


class _Bearer(httpx2.Auth):
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        token = self._token() if callable(self._token) else self._token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


class _CountingTransport(httpx2.AsyncBaseTransport):
    """Counts the requests that may have reached the server: all but those whose connect failed
    (refused, unreachable, timed out).

    The MCP client reports a dead connection as "Connection closed" whether or not the request
    went out; this count is what tells the two apart. It also says when the server's certificate
    is not the one to trust (`untrusted`): no retry fixes that.
    """

    def __init__(self, address: ServerAddress) -> None:
        self._address = address
        self._unloadable: str | None = None  # why the certificate to trust cannot be loaded
        self._inner = self._new_pool()
        self.maybe_delivered = 0
        self.last_refusal: str | None = None
        self.untrusted: str | None = None  # the last request failed on the server's certificate: why

    def _new_pool(self) -> httpx2.AsyncHTTPTransport:
        socket = self._address.socket
        return httpx2.AsyncHTTPTransport(uds=str(socket) if socket else None, verify=self._tls_context())

    def _tls_context(self) -> ssl.SSLContext:
        address = self._address
        self._unloadable = None
        if address.tls_cert is None and address.tls_cert_pem is None:
            return _default_tls_context()
        # Exactly this certificate, none of the system's CAs; host names are still checked against it.
        # Loaded with each new pool, so a renewed certificate file is read at the next reconnection.
        try:
            return ssl.create_default_context(cafile=address.tls_cert, cadata=address.tls_cert_pem)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self._unloadable = f"cannot load the certificate to trust, {address.trusted}: {why}"
            return _default_tls_context()  # never used: every request is refused with that

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.untrusted = self._unloadable
        if self._unloadable is not None:
            raise httpx2.ConnectError(self._unloadable, request=request)  # nothing was sent
        try:
            response = await self._inner.handle_async_request(request)
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as e:
            # A connect timeout is a host that went away (its packets dropped, not refused): the
            # connection was never made, so the request was not sent either, and another process
            # of the server may take it.
            self.last_refusal = str(e) or (
                "timed out connecting" if isinstance(e, httpx2.ConnectTimeout) else "connection refused"
            )
            self.untrusted = _verify_failure(e, self._address)
            raise  # refused or unreachable: nothing was sent
        except BaseException:
            self.maybe_delivered += 1
            raise
        self.maybe_delivered += 1
        return response

    async def aclose(self) -> None:
        # Called when a session ends; the pool is shared by the client's sessions and outlives them.
        pass

    async def close_pool(self) -> None:
        pool, self._inner = self._inner, self._new_pool()
        await pool.aclose()


@functools.cache
def _default_tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~50 ms; every client would otherwise do it again.
    return ssl.create_default_context()


def _verify_failure(error: BaseException, address: ServerAddress) -> str | None:
    """What is wrong with the server's certificate, when that is why the connection failed."""
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"its TLS certificate does not verify against {address.trusted} ({cause.verify_message}); "
                "tls_cert in hive.toml must be the server's certificate, and name the host clients connect to"
            )
    return None


def _causes(error: BaseException) -> Generator[BaseException, None, None]:
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _refuse_non_finite(tool: str, arguments: dict[str, Any], where: str = "") -> None:
    """The MCP client sends NaN and infinity as null, and null often means "back to the default"
    (set_budget's usd_per_day): refuse them here rather than let the server do something else."""
    for key, value in arguments.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError(f"{tool}: {where}{key} is {value}: not a finite number (JSON has no NaN or infinity)")
        if isinstance(value, dict):
            _refuse_non_finite(tool, value, f"{where}{key}.")


def _reason(error: BaseException) -> str:
    """The network-level cause ("All connection attempts failed"), not a wrapper's message."""
    for cause in _causes(error):
        if isinstance(cause, httpx2.HTTPError | OSError) and str(cause):
            return str(cause)
    return str(error) or type(error).__name__
