"""The operator's terminal into an agent's sandbox: a shell on a PTY the lifecycle server opens, as
the agent's uid, in its namespaces and cgroup, for the operator only.

Transport. The servers serve no websockets (serving.py, ws="none") and everything is an MCP tool,
so the terminal is four operator-only tools: terminal_open(name, cols, rows) -> a session id;
terminal_io(session, input, wait_ms) writes the keystrokes, then long-polls the shell's output for
at most wait_ms (bounded); terminal_resize; terminal_close. A long poll over the same streamable
HTTP as every other call costs one round trip per burst of output, which a human typing does not
notice, and needs no new listener, port or auth path: the allow-list (registry.py) refuses every
principal but the operator before a tool runs. Output carries a sequence number, so a client with
two calls in flight (one long-polling, one sending keys) writes the outputs in order.

Bounds. Output waits in a per-session buffer of OUTPUT_CAP bytes (the oldest dropped, and the next
output says how many bytes were); a call takes at most TAKE_MAX. Sessions are capped per agent
and in total; input per call is capped (the tool's argument). A session without a terminal_io
call for `idle` seconds (its page is gone) is closed by the server; a session ends when its shell
exits, when the operator closes it, when its agent is stopped (the supervisor's stop path calls
end_agent) or when the sandbox ends on its own (its cgroup, or its pid namespace, takes the shell
with it, which the session sees as its process ending). Background jobs the operator started with
nohup live on inside the sandbox, as the agent, until it ends: they are the agent's processes then.

Entering the sandbox is each backend's (SandboxBackend.shell_command): for bubblewrap,
backends/bwrap_shell.py, whose docstring says why it is safe against a hostile sandbox. The
shell is bash without profile or rc files (the agent writes its HOME: its .bashrc must not script
what the operator sees), with a clean environment.

Audit. terminal_open is audited like every action (refusals too); each session's end adds a
`terminal_session` record: who opened it, when, how long it was open, and how it ended.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import logging
import os
import secrets
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import anyio

from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.errors import LimitReached, NotFound, Refused
from hyperhive.servers.lifecycle.backends.base import BackendError, SandboxBackend, ShellSpec
from hyperhive.servers.lifecycle.models import TerminalClosed, TerminalOutput, TerminalSession

log = logging.getLogger("hyperhive.lifecycle.terminal")

OUTPUT_CAP: Final = 256 * 1024  # bytes of output kept per session until a terminal_io takes them
TAKE_MAX: Final = 64 * 1024  # bytes of output one terminal_io returns
INPUT_MAX: Final = 16 * 1024  # characters of input one terminal_io writes
WAIT_MAX_MS: Final = 25_000  # the longest long poll
WRITE_TIMEOUT: Final = 2.0  # a shell that does not read its input for this long: the call is refused
IDLE_SECONDS: Final = 30.0
PER_AGENT: Final = 3
TOTAL: Final = 16
KEEP_ENDED: Final = 60.0  # an ended session answers terminal_io (ended, why) this long, then it is forgotten
REAP_EVERY: Final = 1.0
TERM: Final = "xterm-256color"

Record = Callable[[str, str, str, str | None], Awaitable[None]]  # (agent, action, actor, detail)


@dataclass(eq=False)
class Session:
    id: str
    name: str
    actor: str
    cols: int
    rows: int
    opened_at: float  # the server's clock, for the record
    master: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    last_io: float = field(default_factory=time.monotonic)
    buffer: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    seq: int = 0
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    ended: str | None = None  # why, once it has
    ended_at: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        """Wake every call waiting for output (each then waits on the next event)."""
        self.changed.set()
        self.changed = asyncio.Event()


class Terminals:
    """Every open terminal session of this server (see the module's docstring)."""

    def __init__(
        self,
        backend: SandboxBackend,
        shell_of: Callable[[str], Awaitable[ShellSpec]],
        record: Record,
        clock: Callable[[], float],
        *,
        per_agent: int = PER_AGENT,
        total: int = TOTAL,
        idle: float = IDLE_SECONDS,
    ) -> None:
        self.backend = backend
        self.shell_of = shell_of
        self.record = record
        self.clock = clock
        self.per_agent, self.total, self.idle = per_agent, total, idle
        self._sessions: dict[str, Session] = {}
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _open(self, name: str | None = None) -> list[Session]:
        return [s for s in self._sessions.values() if s.ended is None and (name is None or s.name == name)]

    # ---------------------------------------------------------------------------------- open
    async def open(self, name: str, cols: int, rows: int, actor: str) -> TerminalSession:
        if self._closing:
            raise Refused("the lifecycle server is stopping; no terminal opens now")
        if len(mine := self._open(name)) >= self.per_agent:
            raise LimitReached(
                f"{name} has {len(mine)} terminals open, the most it may have; close one, or leave its "
                f"page: a terminal nobody reads closes after {self.idle:.0f} s"
            )
        if len(self._open()) >= self.total:
            raise LimitReached(f"{self.total} terminals are open in the hive, the most there may be; close one first")
        shell = await self.shell_of(name)
        try:
            argv = await self.backend.shell_command(shell)
        except BackendError as e:
            raise Refused(str(e)) from None
        master, slave = os.openpty()
        try:
            _set_size(master, cols, rows)
            os.set_blocking(master, False)
            process = await anyio.to_thread.run_sync(_spawn, argv, slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        session = Session(secrets.token_urlsafe(12), name, actor, cols, rows, self.clock(), master, process)
        self._sessions[session.id] = session
        self._follow(session)
        log.info("terminal %s into %s opened by %s", session.id, name, actor)
        return TerminalSession(
            session=session.id, name=name, cols=cols, rows=rows, opened_at=iso(session.opened_at),
            idle_seconds=self.idle,
        )  # fmt: skip

    def _follow(self, session: Session) -> None:
        """Read its output as it comes; end it when its process does."""
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(session.process.pid)

        def readable() -> None:
            while True:
                try:
                    data = os.read(session.master, 65536)
                except BlockingIOError:
                    return
                except OSError:  # EIO: nothing holds the terminal any more
                    data = b""
                if not data:
                    loop.remove_reader(session.master)
                    return
                self._keep(session, data)

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            code = session.process.wait()
            task = loop.create_task(self._end(session, self._why(session, code)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.add_reader(session.master, readable)
        loop.add_reader(pidfd, exited)

    @staticmethod
    def _keep(session: Session, data: bytes) -> None:
        session.buffer += data
        if len(session.buffer) > OUTPUT_CAP:
            over = len(session.buffer) - OUTPUT_CAP
            del session.buffer[:over]
            session.dropped += over
        session.wake()

    @staticmethod
    def _why(session: Session, code: int) -> str:
        if code in (-signal.SIGKILL, 128 + signal.SIGKILL):
            return f"the sandbox of {session.name} ended"  # its cgroup or pid namespace was killed
        return f"the shell exited (code {code})"

    # ------------------------------------------------------------------------------------ io
    def _session(self, session_id: str, actor: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None or session.actor != actor:
            raise NotFound(f"no terminal session {session_id[:40]!r}: it ended a while ago or never was; terminal_open")
        return session

    async def io(self, session_id: str, data: str, wait_ms: int, actor: str) -> TerminalOutput:
        session = self._session(session_id, actor)
        session.last_io = time.monotonic()
        if data and session.ended is None:
            await self._write(session, data.encode())
        if not session.buffer and session.ended is None and wait_ms > 0:
            with anyio.move_on_after(wait_ms / 1000):
                while not session.buffer and session.ended is None:
                    await session.changed.wait()
        session.last_io = time.monotonic()
        chunk = bytes(session.buffer[:TAKE_MAX])
        del session.buffer[:TAKE_MAX]
        final = session.ended is not None and not session.buffer
        text = session.decoder.decode(chunk, final=final)
        dropped, session.dropped = session.dropped, 0
        if text or dropped:
            session.seq += 1
        return TerminalOutput(
            session=session.id, output=text, seq=session.seq if text or dropped else 0, dropped=dropped,
            more=bool(session.buffer), ended=final, reason=session.ended if final else None,
        )  # fmt: skip

    async def _write(self, session: Session, data: bytes) -> None:
        deadline = time.monotonic() + WRITE_TIMEOUT
        while data:
            try:
                data = data[os.write(session.master, data) :]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Refused(
                        f"the shell has not read its input for {WRITE_TIMEOUT:.0f} s; {len(data)} bytes were not "
                        "written (Ctrl-C, or terminal_close)"
                    ) from None
                await asyncio.sleep(0.01)
            except OSError:  # it is ending: its end is reported by the next call
                return

    def resize(self, session_id: str, cols: int, rows: int, actor: str) -> TerminalSession:
        session = self._session(session_id, actor)
        session.last_io = time.monotonic()
        if session.ended is None:
            _set_size(session.master, cols, rows)  # the kernel sends the shell SIGWINCH
            session.cols, session.rows = cols, rows
        return TerminalSession(
            session=session.id, name=session.name, cols=session.cols, rows=session.rows,
            opened_at=iso(session.opened_at), idle_seconds=self.idle,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------ end
    async def close(self, session_id: str, actor: str) -> TerminalClosed:
        session = self._session(session_id, actor)
        await self._end(session, f"closed by {actor}")
        self._sessions.pop(session.id, None)
        return TerminalClosed(
            session=session.id, name=session.name, seconds=round(session.ended_at - session.started, 3),
            reason=session.ended or "",
        )  # fmt: skip

    async def end_agent(self, name: str, reason: str) -> None:
        """End every session into `name` (its sandbox is being stopped)."""
        for session in self._open(name):
            await self._end(session, reason)

    async def _end(self, session: Session, reason: str) -> None:
        if session.ended is not None:
            return
        session.ended, session.ended_at = reason, time.monotonic()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):  # what the shell wrote last is still shown
            while chunk := os.read(session.master, 65536):
                self._keep(session, chunk)
        loop.remove_reader(session.master)
        os.close(session.master)  # the shell's session gets SIGHUP
        if session.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                session.process.kill()  # its shell dies with it (PR_SET_PDEATHSIG); _follow reaps it
        session.wake()
        seconds = session.ended_at - session.started
        log.info("terminal %s into %s ended after %.1f s: %s", session.id, session.name, seconds, reason)
        detail = f"session {session.id} opened {iso(session.opened_at)}, open {seconds:.1f} s; {reason}"
        with anyio.CancelScope(shield=True):
            try:
                await self.record(session.name, "terminal_session", session.actor, detail)
            except Exception:
                log.exception("could not write the audit record of terminal %s", session.id)

    async def reap_forever(self) -> None:
        """Close sessions nobody reads; forget ended ones once their end was there to be seen."""
        while True:
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.ended is None and now - session.last_io > self.idle:
                    await self._end(session, f"nobody read it for {self.idle:.0f} s (its page was closed)")
                elif session.ended is not None and now - session.ended_at > KEEP_ENDED:
                    self._sessions.pop(session.id, None)
            await asyncio.sleep(REAP_EVERY)

    async def close_all(self, reason: str) -> None:
        self._closing = True
        for session in self._open():
            await self._end(session, reason)


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _spawn(argv: list[str], slave: int) -> subprocess.Popen[bytes]:
    """Start the backend's entry with the terminal as its stdin, stdout and stderr and nothing else
    of this server's (the standard library's Popen, as bwrap.spawn says why)."""
    return subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
