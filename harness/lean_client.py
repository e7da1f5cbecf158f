"""The idle harness's MCP client: tools/call over streamable HTTP, on the standard library alone.

While Claude Code is closed the harness only long-polls the broker (harness/idle.py). The real client
(servers/common/client.py: fastmcp, mcp, httpx) would be ~70 MB of an idle agent's ~30 MB; this one
speaks exactly what that wait needs, nothing more:

    initialize -> notifications/initialized -> tools/call ... (-> DELETE at close)

Each request opens its own connection (one long-poll every few minutes) and sends the agent's token
as read from its file at that moment, so a renewed token just works. The answer may be JSON or an
SSE stream; only the JSON-RPC response to our request id counts. A server that lost the session (it
restarted: 404) gets a new one and the call again: the 404 proves the call never ran. Failures are
the real client's: ServerUnavailable, AuthRefused, and ToolCallFailed for a tool's own error.

Like the real client it may be given a server's other processes (`failover`): a call whose
connection cannot be made (refused, unreachable, its TLS handshake failed: nothing was sent) goes to
the next of them at once, with a session there, and later calls stay where it answered. A request
that broke off after it was sent is not repeated elsewhere: ServerUnavailable, as ever.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable

PROTOCOL_VERSION: Final = "2025-06-18"
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024  # a full recv_batch is well under 2 MiB
CONNECT_SECONDS: Final = 10.0
CLOSE_SECONDS: Final = 2.0


class ToolCallFailed(Exception):
    """The server ran the call and answered with an error (invalid arguments, refused)."""


class _SessionGone(Exception):
    """404 for our session id: the server restarted and forgot it; the request never ran."""


class _Unreached(Exception):
    """The connection could not be made (refused, unreachable, TLS handshake): nothing was sent."""


@dataclass
class _Target:
    """One address of the server: where to connect, and over https what to trust."""

    https: bool
    host: str
    port: int
    path: str
    tls_cert_pem: str | None
    tls: ssl.SSLContext | None = None  # made at the first https connection

    @classmethod
    def of(cls, url: str, tls_cert_pem: str | None) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        https = parts.scheme == "https"
        return cls(https, parts.hostname, parts.port or (443 if https else 80), parts.path or "/", tls_cert_pem)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class LeanMcpClient:
    def __init__(
        self,
        url: str,
        token: Callable[[], str],
        *,
        client_name: str = "hive-harness-idle",
        tls_cert_pem: str | None = None,
        failover: Sequence[tuple[str, str | None]] = (),
    ) -> None:
        """`tls_cert_pem`: the one certificate an https server is trusted by (hive.json's); without
        it, the system's CAs. `failover`: the server's other processes, (url, tls_cert_pem) each, in
        the order they are tried when the one in use takes no connection."""
        self._targets = [_Target.of(url, tls_cert_pem), *(_Target.of(other, pem) for other, pem in failover)]
        self._current = 0  # the target in use: the one that last took a connection
        self._token = token
        self._client_name = client_name
        self._session: str | None = None  # the target in use's
        self._next_id = 0

    @property
    def _target(self) -> _Target:
        return self._targets[self._current]

    def call_tool(self, tool: str, arguments: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """The tool's structured result. `timeout`: the longest the server may take to answer."""
        unreached: dict[int, str] = {}
        while True:
            try:
                return self._call_here(tool, arguments, timeout)
            except _Unreached as e:
                unreached[self._current] = str(e)
            # Nothing was sent: the next target that has not refused this call, with a session there.
            count = len(self._targets)
            following = [(self._current + step) % count for step in range(1, count)]
            untried = [index for index in following if index not in unreached]
            self._session = None
            if not untried:
                raise ServerUnavailable(
                    "; ".join(f"{self._targets[index]}: {why}" for index, why in sorted(unreached.items()))
                )
            self._current = untried[0]

    def _call_here(self, tool: str, arguments: dict[str, Any], timeout: float) -> dict[str, Any]:
        for _ in range(2):
            if self._session is None:
                self._initialize()
            try:
                result = self._request("tools/call", {"name": tool, "arguments": arguments}, timeout)
            except _SessionGone:
                self._session = None
                continue
            if result.get("isError"):
                raise ToolCallFailed(_text(result) or f"{tool} failed")
            structured = result.get("structuredContent")
            if not isinstance(structured, dict):
                raise ServerUnavailable(f"{tool} answered without a structured result")
            return structured
        raise ServerUnavailable("the server forgot the MCP session twice in a row")

    def close(self) -> None:
        """End the session on the server (best effort: it expires there anyway)."""
        session, self._session = self._session, None
        if session is None:
            return
        try:
            connection = self._connect(CLOSE_SECONDS)  # on the way out (SIGTERM too): not for long
            connection.request("DELETE", self._target.path, headers=self._headers(session))
            connection.getresponse().read(65536)
            connection.close()
        except (OSError, http.client.HTTPException, AuthRefused, ServerUnavailable, _Unreached):
            pass

    # ------------------------------------------------------------------------------ protocol
    def _initialize(self) -> None:
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": self._client_name, "version": "1"},
        }
        self._request("initialize", params, CONNECT_SECONDS * 3)
        for _ in self._post({"jsonrpc": "2.0", "method": "notifications/initialized"}, CONNECT_SECONDS * 3):
            pass  # a notification has no answer (202)

    def _request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        for message in self._post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, timeout):
            if message.get("id") != request_id or "method" in message:
                continue  # a notification (progress, log) or another exchange's message
            if "error" in message:
                error = message["error"] if isinstance(message["error"], dict) else {}
                raise ToolCallFailed(f"{method}: {error.get('message', 'JSON-RPC error')}")
            result = message.get("result")
            if not isinstance(result, dict):
                raise ServerUnavailable(f"{method}: an answer without a result")
            return result
        raise ServerUnavailable(f"{method}: the connection ended before the answer")

    def _post(self, body: dict[str, Any], timeout: float) -> Iterator[dict[str, Any]]:
        """Send one JSON-RPC message; yields the JSON-RPC messages of the answer (none for a notification)."""
        connection = self._connect(timeout)
        target = self._target
        try:
            try:
                connection.request("POST", target.path, body=json.dumps(body), headers=self._headers(self._session))
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise ServerUnavailable(f"{target}: {_why(e)}") from None
            if response.status == 401:
                raise AuthRefused("the server refused this agent's token (401)")
            if response.status == 404 and self._session is not None:
                raise _SessionGone
            if response.status == 202:
                return
            if response.status != 200:
                raise ServerUnavailable(f"HTTP {response.status} {response.reason}")
            session = response.getheader("mcp-session-id")
            if session and self._session is None:
                self._session = session
            try:
                if (response.getheader("content-type") or "").startswith("text/event-stream"):
                    yield from _events(response)
                else:
                    yield _json(response.read(MAX_ANSWER_BYTES + 1))
            except (OSError, http.client.HTTPException) as e:
                raise ServerUnavailable(f"the answer broke off: {_why(e)}") from None
        finally:
            connection.close()

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        """A connection to the target in use, made now (so that a failure here is known to have sent
        nothing: _Unreached), whose requests may then take up to `timeout`."""
        target = self._target
        connect_within = min(timeout, CONNECT_SECONDS)  # a host that went away is not waited for a long-poll's time
        connection: http.client.HTTPConnection
        if target.https:
            context = self._tls_context(target)
            connection = http.client.HTTPSConnection(target.host, target.port, timeout=connect_within, context=context)
        else:
            connection = http.client.HTTPConnection(target.host, target.port, timeout=connect_within)
        try:
            connection.connect()
        except OSError as e:  # refused, unreachable, timed out, or the TLS handshake (ssl.SSLError)
            connection.close()
            raise _Unreached(_why(e)) from None
        assert connection.sock is not None
        connection.sock.settimeout(timeout)
        return connection

    def _tls_context(self, target: _Target) -> ssl.SSLContext:
        if target.tls is None:
            try:  # exactly hive.json's certificate if it gives one (host names still checked), else the system's CAs
                target.tls = ssl.create_default_context(cadata=target.tls_cert_pem)
            except (ssl.SSLError, ValueError) as e:
                raise _Unreached(f"cannot load the certificate hive.json gives for {target.host}: {e}") from None
        return target.tls

    def _headers(self, session: str | None) -> dict[str, str]:
        try:
            token = self._token()
        except OSError as e:
            raise AuthRefused(f"no token to send: {_why(e)}") from None
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        if session is not None:
            headers["mcp-session-id"] = session
            headers["mcp-protocol-version"] = PROTOCOL_VERSION
        return headers


def _events(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON-RPC messages of an SSE answer: each event's data lines, joined."""
    data: list[bytes] = []
    size = 0
    while True:
        line = response.readline(MAX_ANSWER_BYTES + 1)
        size += len(line)
        if size > MAX_ANSWER_BYTES:
            raise ServerUnavailable(f"an answer over {MAX_ANSWER_BYTES} bytes")
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if not line:  # an event ends
            if data:
                yield _json(b"\n".join(data))
            data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))


def _json(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_ANSWER_BYTES:
        raise ServerUnavailable(f"an answer over {MAX_ANSWER_BYTES} bytes")
    try:
        message = json.loads(raw)
    except ValueError:
        raise ServerUnavailable("an answer that is not JSON") from None
    if not isinstance(message, dict):
        raise ServerUnavailable("an answer that is not a JSON-RPC message")
    return message


def _text(result: dict[str, Any]) -> str:
    content = result.get("content")
    parts = content if isinstance(content, list) else []
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict)).strip()[:2000]


def _why(error: BaseException) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__
