"""Git's smart HTTP protocol at /git/<repo>.git/…, beside /mcp: git's own `git http-backend` as CGI.

Auth is the hive's bearer token, verified exactly as the MCP endpoint verifies it (HiveTokenVerifier,
the forge as audience), sent as `Authorization: Bearer …` or — git's credential helpers speak only
Basic — as the password of `Authorization: Basic …` (the user name is ignored). No credentials, or
a forged, expired or ended token: 401 with a Basic challenge, so git asks its credential helper. A
repo that does not exist: 404; one the caller may not read: 403; a push (git-receive-pack) needs
write: 403 otherwise.

Only the smart protocol's three requests are served (info/refs?service=…, git-upload-pack,
git-receive-pack); the CGI gets a fixed environment — the request's method, path, query, content
type and length, gzip encoding and Git-Protocol, each checked — never a header it did not ask for.
Bodies stream both ways (a push may be large); a request is cut off after [forge]
request_timeout_seconds. After a push the refs are compared with those before it, and each change
is a repo_pushed event (forge.Forge.pushed). Pushes to one repo are taken one at a time, so the
comparison is that push's alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from hyperhive.servers.common.errors import NotFound, Refused
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.tokens import HiveTokenVerifier
from hyperhive.servers.forge.forge import Forge
from hyperhive.servers.forge.gitrepo import REPO_NAME_RE, git_env
from hyperhive.servers.forge.hook import LIMIT_ENV, REPO_ENV
from hyperhive.servers.forge.push_reservations import reservation_env

log = logging.getLogger("hyperhive.forge.http")

REALM: Final = 'Basic realm="hyperhive forge"'
UPLOAD: Final = "git-upload-pack"
RECEIVE: Final = "git-receive-pack"
_PATH_RE: Final = re.compile(r"^/git/([^/]+)\.git(/info/refs|/git-upload-pack|/git-receive-pack)$")
_PROTOCOL_RE: Final = re.compile(r"^[A-Za-z0-9=:._-]{1,100}$")  # Git-Protocol: version=2
_CONTENT_TYPE_RE: Final = re.compile(r"^application/x-git-(upload|receive)-pack-request$")
_HEADER_MAX: Final = 64 * 1024  # the CGI's own response headers


class GitHttp:
    def __init__(self, forge: Forge, verifier: HiveTokenVerifier) -> None:
        self.forge = forge
        self.verifier = verifier
        self.timeout = forge.settings.request_timeout_seconds
        self._push_locks: dict[str, asyncio.Lock] = {}

    async def handle(self, request: Request) -> Response:
        match = _PATH_RE.match(request.url.path)
        if match is None:
            return _text(404, "not a git smart HTTP URL: clone http://<forge>/git/<repo>.git")
        name, action = match[1], match[2]
        service = request.query_params.get("service") if action == "/info/refs" else action[1:]
        if service not in (UPLOAD, RECEIVE) or (action == "/info/refs") != (request.method == "GET"):
            return _text(403, "only git's smart HTTP protocol is served here (git clone/fetch/push)")
        principal = await self._principal(request)
        if principal is None:
            return _text(401, "a hive token is needed: Bearer, or Basic with the token as password", challenge=True)
        if not REPO_NAME_RE.match(name):
            return _text(404, f"no repo named {name!r}")
        try:
            repo = (
                await self.forge.writable(principal, name)
                if service == RECEIVE
                else await self.forge.readable(principal, name)
            )
        except NotFound as e:
            return _text(404, str(e))
        except Refused as e:
            log.info("git %s of %s refused for %s: %s", service, name, principal.name, e)
            return _text(403, str(e))
        if service == RECEIVE and request.method == "POST":
            lock = self._push_locks.setdefault(repo.name, asyncio.Lock())
            async with lock:
                before = await self.forge.repos.refs(repo.name)
                response = await self._cgi(request, principal, repo.name, buffered=True)
                after = await self.forge.repos.refs(repo.name)
            await self.forge.pushed(repo, principal.name, before, after)
            return response
        return await self._cgi(request, principal, repo.name, buffered=False)

    async def _principal(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        token = ""
        if scheme.lower() == "bearer":
            token = value.strip()
        elif scheme.lower() == "basic":
            try:
                token = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return None
        if not token:
            return None
        access = await self.verifier.verify_token(token)
        if access is None:
            return None
        return Principal(access.client_id, Role(access.claims["role"]))

    def _environment(self, request: Request, principal: Principal, name: str) -> dict[str, str]:
        env = git_env(self.forge.repos.root)
        env.update(
            {
                "GIT_PROJECT_ROOT": str(self.forge.repos.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": principal.name,
                "REQUEST_METHOD": request.method,
                "PATH_INFO": request.url.path.removeprefix("/git"),
                "QUERY_STRING": request.url.query if request.method == "GET" else "",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                # What the hooks of a push read (hook.py), and what bounds one push.
                REPO_ENV: name,
                LIMIT_ENV: str(self.forge.settings.max_repo_size),
                "GIT_CONFIG_COUNT": "2",
                "GIT_CONFIG_KEY_0": "receive.maxInputSize",
                "GIT_CONFIG_VALUE_0": str(self.forge.settings.max_repo_size),
                "GIT_CONFIG_KEY_1": "core.hooksPath",
                "GIT_CONFIG_VALUE_1": str(self.forge.repos.hooks_dir),
            }
        )
        env.update(reservation_env(self.forge.kit.config.db_path("forge"), self.forge.kit.config.instances_dir,
                                   self.forge.clock.now()))  # fmt: skip
        content_type = request.headers.get("content-type", "")
        if _CONTENT_TYPE_RE.match(content_type):
            env["CONTENT_TYPE"] = content_type
        length = request.headers.get("content-length")
        if length is not None and length.isdigit():
            env["CONTENT_LENGTH"] = length
        if request.headers.get("content-encoding", "") in ("gzip", "x-gzip"):
            env["HTTP_CONTENT_ENCODING"] = request.headers["content-encoding"]
        protocol = request.headers.get("git-protocol", "")
        if _PROTOCOL_RE.match(protocol):
            env["GIT_PROTOCOL"] = protocol
        return env

    async def _cgi(self, request: Request, principal: Principal, name: str, *, buffered: bool) -> Response:
        """Run git http-backend for this request. `buffered`: run it to the end before answering (a push,
        whose refs are compared after it; its answer is receive-pack's short report)."""
        process = await asyncio.create_subprocess_exec(
            self.forge.repos.http_backend,
            env=self._environment(request, principal, name),
            cwd=self.forge.repos.root,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        deadline = asyncio.get_running_loop().time() + self.timeout
        feeding = asyncio.ensure_future(_feed(request, process.stdin))
        errors = asyncio.ensure_future(process.stderr.read())
        try:
            async with asyncio.timeout_at(deadline):
                status, headers = await _read_headers(process.stdout)
        except (TimeoutError, ValueError) as e:
            await _end(process, feeding, errors)
            log.warning("git http-backend for %s gave no headers: %s", name, e or "timed out")
            return _text(504 if isinstance(e, TimeoutError) else 502, "git http-backend failed; try again")
        try:
            # The whole request body goes in before the response streams out: Starlette's streaming
            # response listens for a disconnect on the same receive channel, and would take body chunks.
            # upload-pack reads its whole request before it answers, so this cannot deadlock.
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(feeding)
        except TimeoutError:
            await _end(process, feeding, errors)
            return _text(504, f"the request took more than {self.timeout:g} s and was cut off")
        if buffered:
            body = await _collect(process, deadline, errors, feeding)
            if body is None:
                return _text(504, f"the push took more than {self.timeout:g} s and was cut off")
            return Response(body, status_code=status, headers=headers)
        return StreamingResponse(_stream(process, deadline, errors, feeding, name), status_code=status, headers=headers)


async def _feed(request: Request, stdin: asyncio.StreamWriter) -> None:
    """The request's body into the CGI's stdin, as it comes; a client that hangs up ends it."""
    try:
        async for chunk in request.stream():
            if chunk:
                stdin.write(chunk)
                await stdin.drain()
    except (ConnectionError, OSError) as e:
        log.info("git http-backend stopped reading the request: %s", e)
    except Exception as e:  # ClientDisconnect and friends
        log.info("the git client hung up: %s", e)
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            stdin.close()


async def _read_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status, total = 200, 0
    headers: dict[str, str] = {}
    while True:
        line = await stdout.readline()
        total += len(line)
        if not line or total > _HEADER_MAX:
            raise ValueError("the CGI's headers ended early or were too long")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return status, headers
        key, _, value = text.partition(":")
        if key.strip().lower() == "status":
            status = int(value.strip().split(" ", 1)[0])
        else:
            headers[key.strip()] = value.strip()


async def _collect(
    process: asyncio.subprocess.Process, deadline: float, errors: asyncio.Future[bytes], feeding: asyncio.Future[None]
) -> bytes | None:
    """The rest of a push's response (receive-pack's report: small) once the CGI ends; None on a timeout."""
    assert process.stdout is not None
    try:
        async with asyncio.timeout_at(deadline):
            body = await process.stdout.read()
            await process.wait()
            await feeding
    except TimeoutError:
        await _end(process, feeding, errors)
        return None
    _log_errors(await errors)
    return body


async def _stream(
    process: asyncio.subprocess.Process,
    deadline: float,
    errors: asyncio.Future[bytes],
    feeding: asyncio.Future[None],
    name: str,
) -> AsyncIterator[bytes]:
    assert process.stdout is not None
    try:
        async with asyncio.timeout_at(deadline):
            while chunk := await process.stdout.read(64 * 1024):
                yield chunk
            await process.wait()
    except TimeoutError:
        log.warning("a git request on %s passed its time limit and was cut off", name)
    finally:
        await _end(process, feeding, errors)
        if errors.done() and not errors.cancelled():
            _log_errors(errors.result())


async def _end(
    process: asyncio.subprocess.Process, feeding: asyncio.Future[None], errors: asyncio.Future[bytes]
) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    feeding.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await feeding
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(errors, 5)


def _log_errors(stderr: bytes) -> None:
    text = stderr.decode(errors="replace").strip()
    if text:
        log.info("git http-backend: %s", text[:1000])


def _text(status: int, message: str, *, challenge: bool = False) -> Response:
    headers = {"WWW-Authenticate": REALM} if challenge else None
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)
