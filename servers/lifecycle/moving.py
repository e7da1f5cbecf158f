"""Moving an agent to another host of the hive: `move_agent(name, host)`.

The agent's host (the source) stops it and hands the target host a one-time ticket (`adopt_agent`,
lifecycle server to lifecycle server, as the service principal lifecycle); the target pulls each of
the agent's places from the source over HTTP (`GET /lifecycle/move/<name>/<part>`, the same token
and the ticket), unpacks them, takes the agent into its store, moves the agent's row in the hive's
directory to itself, and starts it if it was meant to run. Only then does the source forget the
agent (its store row, uid, files). A failure before the target took it over leaves the agent where
it was (started again if it ran); the target removes what it had unpacked.

What moves: the state dir and the harness dir (the agent's own: its files, Claude Code's session,
so the conversation carries on), the proposed and the applied config repos, the model override.
What does not: the source's turn statistics and audit trail (they stay in its database), the
agent's uid (each host has its own block).

The agent's dirs are the agent's (hostile) and the proposed repo the manager's: each part is packed
by `tar` running as the uid that owns it, so a link an agent plants can lead tar only where that
uid could read anyway, and unpacked by `tar` running as its new owner on the target, into dirs made
for it. The applied repo is root's on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import httpx2
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.principals import Role
from hyperhive.servers.common.tokens import HiveTokenVerifier
from hyperhive.servers.lifecycle.paths import AgentPaths

log = logging.getLogger("hyperhive.lifecycle.moving")

MOVE_PATH: Final = "/lifecycle/move"  # beside /mcp: /lifecycle/move/<name>/<part>?ticket=...
Part = Literal["state", "harness", "config", "applied"]
PARTS: Final[tuple[Part, ...]] = ("applied", "config", "state", "harness")
TICKET_SECONDS: Final = 600.0  # a move's ticket lasts this long
CHUNK: Final = 256 * 1024


def part_dir(paths: AgentPaths, part: Part) -> Path:
    return {"state": paths.state, "harness": paths.harness, "config": paths.config, "applied": paths.applied}[part]


@dataclass(frozen=True)
class Ticket:
    name: str
    ticket: str
    owners: dict[Part, int | None]  # the uid each part is packed as (None: this server's own)
    expires: float


class MoveOut:
    """The source's side: tickets for moves under way, and the parts served to their targets."""

    def __init__(self, home: Path, verifier: HiveTokenVerifier) -> None:
        self.home = home
        self.verifier = verifier
        self._tickets: dict[str, Ticket] = {}

    def open(self, name: str, owners: dict[Part, int | None]) -> Ticket:
        ticket = Ticket(name, secrets.token_urlsafe(24), owners, time.monotonic() + TICKET_SECONDS)
        self._tickets[name] = ticket
        return ticket

    def close(self, name: str) -> None:
        self._tickets.pop(name, None)

    async def handle(self, request: Request) -> Response:
        """GET /lifecycle/move/<name>/<part>?ticket=…: the part as a tar stream, for the target host."""
        name, part = request.path_params.get("name", ""), request.path_params.get("part", "")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        access = await self.verifier.verify_token(token.strip()) if scheme.lower() == "bearer" else None
        if access is None or access.claims.get("role") != Role.SERVICE.value or access.client_id != "service:lifecycle":
            return PlainTextResponse("only another host's lifecycle server fetches a moving agent\n", status_code=401)
        ticket = self._tickets.get(name)
        given = request.query_params.get("ticket", "")
        if (
            ticket is None
            or ticket.expires < time.monotonic()
            or not secrets.compare_digest(ticket.ticket, given)
            or part not in PARTS
        ):
            return PlainTextResponse(f"no move of {name!r} under way with that ticket\n", status_code=404)
        part_name: Part = part  # checked against PARTS above
        directory = part_dir(AgentPaths(self.home, name), part_name)
        if directory.is_symlink() or not directory.is_dir():
            return PlainTextResponse(f"{name} has no {part} dir\n", status_code=404)
        return StreamingResponse(_tar_out(directory, ticket.owners[part_name]), media_type="application/x-tar")


async def _tar_out(directory: Path, uid: int | None) -> AsyncIterator[bytes]:
    """`directory`'s contents as a tar stream, read by `tar` running as `uid`."""
    # `cwd`: the child enters it before it drops to `uid` (whose way there may pass dirs it cannot
    # enter); the dir's parent is root's, so the agent cannot have swapped it for a link.
    process = await asyncio.create_subprocess_exec(
        "tar", "--numeric-owner", "-cf", "-", ".", cwd=directory,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, user=_as(uid), group=_as(uid), extra_groups=_groups(uid),
    )  # fmt: skip
    assert process.stdout is not None
    try:
        while chunk := await process.stdout.read(CHUNK):
            yield chunk
        if await process.wait() != 0:
            why = (await process.stderr.read()).decode(errors="replace").strip() if process.stderr else ""
            log.error("packing %s failed: %s", directory, why[-500:])
            raise RuntimeError(f"tar of {directory} failed")  # the stream breaks: the target sees it incomplete
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _as(uid: int | None) -> int | None:
    """Whom to run tar as: `uid` (with its own group and no others), or None for this server itself."""
    return None if uid is None or uid == os.geteuid() else uid


def _groups(uid: int | None) -> list[int] | None:
    return None if _as(uid) is None else []


async def fetch_part(
    client: httpx2.AsyncClient, url: str, token: str, ticket: str, directory: Path, uid: int | None, timeout: float
) -> None:
    """Unpack the part at `url` into `directory` (made and owned by `uid` already) with `tar` running as
    `uid`. Refused, saying why, if the source or tar fails."""
    process = await asyncio.create_subprocess_exec(
        "tar", "--no-same-owner", "--delay-directory-restore", "-xf", "-", cwd=directory,
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        user=_as(uid), group=_as(uid), extra_groups=_groups(uid),
    )  # fmt: skip
    assert process.stdin is not None
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "GET", url, params={"ticket": ticket}, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace").strip()
                    raise Refused(f"the agent's host refused its {directory.name} dir ({response.status_code}): {body}")
                async for chunk in response.aiter_bytes(CHUNK):
                    process.stdin.write(chunk)
                    await process.stdin.drain()
            process.stdin.close()
            if await process.wait() != 0:
                why = (await process.stderr.read()).decode(errors="replace").strip() if process.stderr else ""
                raise Refused(f"unpacking its {directory.name} dir failed: {why[-300:]}")
    except TimeoutError:
        raise Refused(f"fetching its {directory.name} dir took over {timeout:g} s") from None
    except (httpx2.HTTPError, ConnectionError, BrokenPipeError) as e:
        raise Refused(f"fetching its {directory.name} dir failed: {e}") from None
    finally:
        if process.returncode is None:
            process.kill()
            with contextlib.suppress(ProcessLookupError):
                await process.wait()


def remove_parts(paths: AgentPaths) -> None:
    """What an adoption that failed had unpacked."""
    for directory in (paths.root, paths.applied, paths.credentials):
        shutil.rmtree(directory, ignore_errors=True)
