"""`hive up`: run every hyperhive server as its own process and keep them running.

Servers start in order and stop in reverse order. A server that dies, or fails while
starting (a port still held for a moment, a database still locked), is started again with
backoff; only one that keeps failing (more than MAX_RESTARTS times within RESTART_WINDOW)
stops the hive with an error. Children get SIGTERM if this process dies, so nothing outlives it.

One `hive up` per home: it holds an exclusive lock on run/up.lock while it runs (the kernel drops
it when the process ends, however it ends) and says where it runs in run/up.json, so a second
`hive up` on that home says "already running, pid N, dashboard URL" instead of "port in use".
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ValidationError

from hyperhive.servers.common.backoff import Backoff, sleep_or_wake
from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.files import write_atomic

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
MAX_RESTARTS = 5  # within RESTART_WINDOW seconds, then give up
RESTART_WINDOW = 60.0
MAX_BACKOFF = 8.0
RESTART_BACKOFF = Backoff(1.0, MAX_BACKOFF)  # after the nth failure in RESTART_WINDOW: 1, 2, 4, 8, 8 s

RENEW_EVERY = 3600.0  # seconds between checks of the servers' and the dashboard's tokens

Echo = Callable[[str], None]

UP_LOCK: Final = "up.lock"  # in the home's run dir (0700): held by the running `hive up`
UP_RECORD: Final = "up.json"


class UpRecord(BaseModel):
    """Where the running `hive up` of a home is: its pid, since when, each server's URLs."""

    pid: int
    started_at: str  # ISO 8601 UTC
    urls: dict[str, list[str]] = {}  # filled in once every server is up


class AlreadyUp(Exception):
    """Another `hive up` runs on this home; `record` says where (None: it has not written it yet)."""

    def __init__(self, record: UpRecord | None) -> None:
        super().__init__("already running")
        self.record = record


def read_up_record(config: HiveConfig) -> UpRecord | None:
    try:
        return UpRecord.model_validate_json((config.run_dir / UP_RECORD).read_bytes())
    except (OSError, ValidationError):
        return None


class UpLock:
    """The home's one `hive up`: an exclusive flock on run/up.lock, held until this process ends."""

    def __init__(self, config: HiveConfig) -> None:
        self.config = config
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise AlreadyUp with the running one's record."""
        path: Path = self.config.run_dir / UP_LOCK
        # run/ is the owner's 0700 dir; still never follow a link there.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyUp(read_up_record(self.config)) from None
        self.fd = fd
        self.write(UpRecord(pid=os.getpid(), started_at=iso(time.time())))

    def write(self, record: UpRecord) -> None:
        write_atomic(self.config.run_dir / UP_RECORD, record.model_dump_json() + "\n", mode=0o600, durable=False)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                (self.config.run_dir / UP_RECORD).unlink()
            os.close(self.fd)
            self.fd = None


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Child:
    name: str
    args: list[str] = field(default_factory=list)  # more arguments for `hive serve NAME`
    process: asyncio.subprocess.Process | None = None
    urls: list[str] = field(default_factory=list)
    login_link: str = ""  # the dashboard's one-time login link, shown once
    crashes: list[float] = field(default_factory=list)


class ServerSupervisor:
    def __init__(
        self,
        config: HiveConfig,
        servers: dict[str, list[str]],
        echo: Echo,
        renew_tokens: Callable[[], list[str]] | None = None,
        lock: UpLock | None = None,
    ) -> None:
        self.config = config
        self.lock = lock
        self.children = [_Child(name, args) for name, args in servers.items()]
        self.echo = echo
        self.renew_tokens = renew_tokens
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            for child in self.children:
                if not await self._start_until_up(child):
                    return 1
            self._announce()
            watchers = [asyncio.create_task(self._watch(child)) for child in self.children]
            renewer = asyncio.create_task(self._renew())
            stop = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait([stop, *watchers], return_when=asyncio.FIRST_COMPLETED)
            failed = stop not in done
            for task in [stop, renewer, *watchers]:
                task.cancel()
            return 1 if failed else 0
        finally:
            await self._stop_all()

    async def _start(self, child: _Child) -> bool:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hyperhive.servers.cli",
            "serve",
            child.name,
            "--home",
            str(self.config.home),
            *child.args,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # our signal handling decides when children stop
            preexec_fn=_die_with_parent,
        )
        child.urls = []
        assert child.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = await asyncio.wait_for(child.process.stdout.readline(), deadline - time.monotonic())
            except TimeoutError:
                self.echo(f"✗ {child.name} did not start within {START_TIMEOUT:.0f} s")
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
                return False
            if not line:
                code = await child.process.wait()
                self.echo(f"✗ {child.name} exited with code {code} while starting (its log is above)")
                return False
            text = line.decode().strip()
            if text == f"{child.name} ready":
                break
            if " listening on " in text:
                child.urls.append(text.split(" listening on ", 1)[1])
            elif text.startswith(f"{child.name} login link "):  # not echoed: it is shown once, below
                child.login_link = text.removeprefix(f"{child.name} login link ")
        return True

    async def _start_until_up(self, child: _Child) -> bool:
        """Start `child`, again with backoff while it fails; False once it failed too often (or we stop)."""
        while not await self._start(child):
            if self.stopping.is_set() or not await self._backoff(child, "retrying"):
                return False
        return True

    async def _backoff(self, child: _Child, doing: str) -> bool:
        """Count a failure of `child` and wait before the next try; False when it fails too often."""
        now = time.monotonic()
        child.crashes = [t for t in child.crashes if now - t < RESTART_WINDOW] + [now]
        if len(child.crashes) > MAX_RESTARTS:
            self.echo(f"✗ {child.name} failed {len(child.crashes)} times in a minute; stopping the hive")
            return False
        delay = RESTART_BACKOFF.delay(len(child.crashes))
        self.echo(f"  {child.name}: {doing} in {delay:g} s")
        await sleep_or_wake(delay, self.stopping)
        return not self.stopping.is_set()

    def _announce(self) -> None:
        if self.lock is not None and self.lock.fd is not None:
            record = read_up_record(self.config) or UpRecord(pid=os.getpid(), started_at=iso(time.time()))
            self.lock.write(record.model_copy(update={"urls": {c.name: c.urls for c in self.children}}))
        self.echo(f"◆ hive up · home {self.config.home}")
        for child in self.children:
            self.echo(f"  {child.name:<10} {'  '.join(child.urls)}")
            if child.login_link:
                self.echo(f"  {'log in':<10} {child.login_link}")
                self.echo(f"  {'':<10} (or the password in {self.config.home / 'dashboard.password'})")
                child.login_link = ""
        logs = self.config.logs_dir
        self.echo(f"  agents     the manager runs; agents' logs in {logs} (or `hive logs NAME`)")
        self.echo("  operator   `hive send manager TEXT` to talk to it, `hive approvals`, `hive questions`")
        self.echo("             a token for the MCP Inspector or scripts: `hive token operator`")
        self.echo("  stop       Ctrl-C (agents first, then the servers)")

    async def _watch(self, child: _Child) -> None:
        """Wait for `child` to exit; restart it with backoff. Returns when it keeps dying."""
        while True:
            assert child.process is not None and child.process.stdout is not None
            async for line in child.process.stdout:
                self.echo(f"  {child.name}: {line.decode().rstrip()}")
            code = await child.process.wait()
            if self.stopping.is_set():
                return
            self.echo(f"✗ {child.name} exited with code {code}")
            if not await self._backoff(child, "restarting") or not await self._start_until_up(child):
                return

    async def _renew(self) -> None:
        """The servers' and the dashboard's tokens are files this process (the issuer) keeps fresh;
        their holders read them again when they change."""
        while self.renew_tokens is not None:
            await asyncio.sleep(RENEW_EVERY)
            try:
                renewed = self.renew_tokens()
            except OSError as e:
                self.echo(f"✗ renewing the servers' tokens failed: {e}; trying again in an hour")
                continue
            if renewed:
                self.echo(f"◆ renewed tokens: {', '.join(renewed)}")

    async def _stop_all(self) -> None:
        for child in reversed(self.children):
            process = child.process
            if process is None or process.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            # The lifecycle server stops every agent first, each allowed its own stop timeout.
            timeout = STOP_TIMEOUT + (
                self.config.lifecycle.stop_timeout_seconds * 2 if child.name == "lifecycle" else 0
            )
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                self.echo(f"✗ {child.name} did not stop within {timeout:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self.echo("◆ hive stopped")


def run_hive(
    config: HiveConfig,
    servers: dict[str, list[str]],
    echo: Echo,
    renew_tokens: Callable[[], list[str]] | None = None,
    before_start: Callable[[], None] | None = None,
) -> int:
    """Run the hive until stopped; raises AlreadyUp if another `hive up` runs on this home.
    `before_start` runs once this process holds the home's lock (a check that may raise)."""
    lock = UpLock(config)
    lock.acquire()
    try:
        if before_start is not None:
            before_start()
        return asyncio.run(ServerSupervisor(config, servers, echo, renew_tokens, lock).run())
    finally:
        lock.release()
