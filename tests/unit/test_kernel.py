"""The rest of the shared kernel: sqlite, events, clock, the agent registry, sockets, packaging."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import socket
import sqlite3
import stat
import threading
import time
import tomllib
from pathlib import Path

import anyio
import pytest
from hivetest import make_certificate

from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.common.clock import DueLoop, ManualClock, iso, parse_iso
from hyperhive.servers.common.config import Listen
from hyperhive.servers.common.db import Database, DatabaseError, StoreUnavailable
from hyperhive.servers.common.events import HELPER_EVENT, ApprovalResolved, ContainerCrash, OperatorAnswered
from hyperhive.servers.common.files import FileMissing, UnsafeFile, read_agent_file, read_agent_file_async, write_atomic
from hyperhive.servers.common.serving import ListenError, bind_tcp, bind_unix, tls_context

ROOT = Path(__file__).parents[2]

# ----------------------------------------------------------------------------------------- sqlite

V1 = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
V2 = "ALTER TABLE t ADD COLUMN w TEXT;"


async def test_database_migrates_in_order_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.sqlite"
    async with Database(path, [V1]) as db:
        await db.write(lambda c: c.execute("INSERT INTO t (v) VALUES ('a')"))
    async with Database(path, [V1, V2]) as db:
        assert await db.fetch_value("PRAGMA user_version") == 2
        assert await db.fetch_value("PRAGMA journal_mode") == "wal"
        assert await db.fetch_value("SELECT v FROM t") == "a"
        assert [row[1] for row in await db.fetch_all("PRAGMA table_info(t)")] == ["id", "v", "w"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    async with Database(path, [V1, V2]):
        pass
    with pytest.raises(DatabaseError, match="schema version 2, newer than this hyperhive knows"):
        async with Database(path, [V1]):
            pass


async def test_a_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    with pytest.raises(DatabaseError, match="migration 2 failed"):
        async with Database(path, [V1, "CREATE TABLE u (a); SELECT * FROM nowhere;"]):
            pass
    async with Database(path, [V1]) as db:
        assert await db.fetch_value("PRAGMA user_version") == 1
        assert await db.fetch_value("SELECT count(*) FROM sqlite_master WHERE name = 'u'") == 0


async def test_a_write_that_raises_is_rolled_back_whole(tmp_path: Path) -> None:
    async with Database(tmp_path / "x.sqlite", [V1]) as db:

        def half(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t (v) VALUES ('first')")
            conn.execute("INSERT INTO t (v) VALUES (NULL)")  # violates NOT NULL

        with pytest.raises(sqlite3.IntegrityError):
            await db.write(half)
        assert await db.fetch_value("SELECT count(*) FROM t") == 0


async def test_a_cancelled_caller_does_not_interrupt_its_write(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    async with Database(path, [V1]) as db:
        started = threading.Event()

        def slow(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t (v) VALUES ('one')")
            started.set()
            time.sleep(0.2)
            conn.execute("INSERT INTO t (v) VALUES ('two')")

        task = asyncio.create_task(db.write(slow))
        await asyncio.to_thread(started.wait)
        task.cancel()  # a native cancel, as uvicorn does when its graceful timeout runs out
        with pytest.raises(asyncio.CancelledError):
            await task
    # Closing waited for the transaction, which ran to its end: both rows, never one.
    async with Database(path, [V1]) as db:
        assert await db.fetch_value("SELECT count(*) FROM t") == 2


# ----------------------------------------------------------------------------------------- events


def test_events_parse_by_type_and_summarise() -> None:
    event = HELPER_EVENT.validate_python(
        {"type": "approval_resolved", "request_id": 3, "request": "spawn", "agent": "bob",
         "outcome": "failed", "by": "operator", "error": "no such commit"}
    )  # fmt: skip
    assert isinstance(event, ApprovalResolved)
    assert event.summary() == "request #3 (spawn for bob) was approved by operator but failed: no such commit"
    crash = ContainerCrash(agent="bob", signal="SIGKILL", exit_code=137, restarts=1)
    assert crash.summary() == "agent bob crashed (signal SIGKILL; exit code 137; 1 restart so far)"
    answered = OperatorAnswered(question_id=9, question="Deploy?", answer="yes")
    assert answered.summary() == "question #9 ('Deploy?') was answered: yes"
    with pytest.raises(ValueError, match="agent"):
        HELPER_EVENT.validate_python({"type": "killed", "agent": "Not Valid", "by": "x"})


# ------------------------------------------------------------------------------------------ clock


def test_iso_round_trips_and_parse_requires_a_timezone() -> None:
    assert iso(1_800_000_000.5) == "2027-01-15T08:00:00.500Z"
    assert parse_iso("2027-01-15T08:00:00.500Z") == 1_800_000_000.5
    assert parse_iso("2027-01-15T09:00:00+01:00") == 1_800_000_000
    with pytest.raises(ValueError, match="has no timezone"):
        parse_iso("2027-01-15T08:00:00")
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_iso("next tuesday")


async def test_manual_clock_wakes_waiters_when_advanced() -> None:
    clock = ManualClock(start=100)
    wake = anyio.Event()
    waiter = asyncio.create_task(clock.wait_until(150, wake))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    clock.advance(60)
    await asyncio.wait_for(waiter, 1)
    await clock.wait_until(100, anyio.Event())  # already past: returns at once


async def test_a_due_loop_sleeps_until_the_next_due_time_or_a_poke_and_survives_a_failing_step() -> None:
    clock = ManualClock(start=100)
    steps: list[float] = []
    due_at = [150.0]

    async def step() -> float:
        steps.append(clock.now())
        if len(steps) == 2:
            raise RuntimeError("one bad row")
        return due_at[0]

    loop = DueLoop(clock, step, what="test step", retry_seconds=5)
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.sleep(0.01)
        assert steps == [100]  # ran once, now asleep until 150
        due_at[0] = 200.0
        clock.advance(50)  # due: runs, fails, is retried 5 s later (not at 150 again)
        await asyncio.sleep(0.01)
        assert steps == [100, 150]
        clock.advance(5)
        await asyncio.sleep(0.01)
        assert steps == [100, 150, 155]  # asleep until 200
        loop.poke()  # something may be due sooner: it looks again at once
        await asyncio.sleep(0.01)
        assert steps == [100, 150, 155, 155]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_due_loop_says_in_one_line_that_its_store_is_away(caplog: pytest.LogCaptureFixture) -> None:
    """A database that is down fails every step until it is back: a warning each time, not a traceback."""
    clock = ManualClock(start=100)
    calls = 0

    async def step() -> float:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("the broker server cannot reach its database right now (gone)")
        return math.inf

    loop = DueLoop(clock, step, what="the broker's scheduler step", retry_seconds=5)
    task = asyncio.create_task(loop.run())
    try:
        with caplog.at_level(logging.WARNING, logger="hyperhive.clock"):
            await asyncio.sleep(0.01)
            clock.advance(5)
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls == 2  # retried after retry_seconds
    [record] = [r for r in caplog.records if r.name == "hyperhive.clock"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "cannot reach its database right now (gone); retrying in 5 s" in record.getMessage()


async def test_backoff_grows_to_its_cap_resets_and_is_cut_short_by_a_wake() -> None:
    backoff = Backoff(0.01, 0.04)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 10_000)] == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert backoff.next_delay == 0.01
    assert await backoff.wait() is False
    assert backoff.next_delay == 0.02
    backoff.reset()
    assert backoff.next_delay == 0.01
    slow = Backoff(60, 60)
    wake = anyio.Event()
    wake.set()
    started = time.monotonic()
    assert await slow.wait(wake) is True  # woken: no minute waited
    assert time.monotonic() - started < 1
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(5, 1)


# --------------------------------------------------------------------------------------- registry


async def test_registry_sees_new_changed_invalid_and_removed_agents(tmp_path: Path) -> None:
    registry = AgentRegistry(tmp_path)
    await registry.refresh()
    assert registry.names() == []
    (tmp_path / "alice").mkdir()
    write_atomic(tmp_path / "alice" / "agent.toml", 'model = "opus"\n')
    assert (await registry.lookup("alice")) is not None  # found without waiting for a rescan
    assert registry.get("alice").model == "opus"  # type: ignore[union-attr]
    write_atomic(tmp_path / "alice" / "agent.toml", 'model = "haiku"\n')
    await registry.refresh()
    assert registry.get("alice").model == "haiku"  # type: ignore[union-attr]
    write_atomic(tmp_path / "alice" / "agent.toml", 'model = "no good"\n')
    await registry.refresh()
    assert registry.get("alice").model == "haiku"  # type: ignore[union-attr]  # the last good config stays
    assert "is not a model name" in registry.errors()["alice"]
    (tmp_path / "Bad Name").mkdir()
    write_atomic(tmp_path / "Bad Name" / "agent.toml", "")
    (tmp_path / "alice" / "agent.toml").unlink()
    await registry.refresh()
    assert registry.names() == [] and await registry.lookup("Bad Name") is None


# ---------------------------------------------------------------------------------------- sockets


def test_tcp_listeners_are_loopback_tcp_so_asyncio_sets_nodelay() -> None:
    sock = bind_tcp("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # without it every response waits for a delayed ACK
    finally:
        sock.close()


def test_a_port_in_use_is_a_clear_error() -> None:
    first = bind_tcp("127.0.0.1", 0)
    try:
        with pytest.raises(ListenError, match="is in use; stop the other server or use another port"):
            bind_tcp("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


def test_unix_sockets_are_0600_in_a_0700_directory_and_stale_ones_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run" / "broker.sock"
    first = bind_unix(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(ListenError, match="another server is listening"):
        bind_unix(path)
    first.close()  # the file stays behind, as after a crash
    bind_unix(path).close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(ListenError, match="exists and is not a socket"):
        bind_unix(path)


def test_an_existing_socket_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o755)
    bind_unix(directory / "s.sock").close()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_tls_is_served_only_with_its_key_and_only_a_key_its_owner_alone_may_read(tmp_path: Path) -> None:
    cert = make_certificate(tmp_path, "hive")
    other = make_certificate(tmp_path, "other")
    assert tls_context(Listen(port=0)) is None  # loopback, no certificate: plain HTTP
    assert tls_context(Listen(socket=tmp_path / "s.sock", tls_cert=cert.cert)) is None  # no TCP port to secure
    # The certificate alone says where the server is and what to trust; it cannot serve TLS with it.
    for host in ("127.0.0.1", "10.1.0.1"):
        with pytest.raises(ListenError, match=f"{host}:7801 has tls_cert {cert.cert} but no tls_key: a server cannot"):
            tls_context(Listen(host=host, port=7801, tls_cert=cert.cert))
    with_key = Listen(host="10.1.0.1", port=7801, tls_cert=cert.cert, tls_key=cert.key)
    assert tls_context(with_key) is not None
    for mode in (0o640, 0o604):
        cert.key.chmod(mode)
        with pytest.raises(ListenError) as refused:
            tls_context(with_key)
        assert (
            str(refused.value)
            == f"the TLS key {cert.key} may be read by others (mode 0{mode:o}); run `chmod 600 {cert.key}`"
        )
    cert.key.chmod(0o600)
    with pytest.raises(ListenError, match=r"cannot serve TLS with .*other\.crt and .*hive\.key: KEY_VALUES_MISMATCH"):
        tls_context(with_key.model_copy(update={"tls_cert": other.cert}))
    with pytest.raises(ListenError, match=r"cannot read the TLS key .*nowhere\.key: No such file or directory"):
        tls_context(with_key.model_copy(update={"tls_key": tmp_path / "nowhere.key"}))


# -------------------------------------------------------------------------------------- packaging


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """Editable installs find new folders anyway; a wheel would silently leave them out."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools["package-dir"]
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert set(setuptools["packages"]) == found


def test_pins_the_registry_can_serve() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "fastmcp==4.1.2" in dependencies and "mcp==2.3.0" in dependencies
    assert all(re.match(r"^[a-z0-9-]+(\[[a-z]+\])?(==|>=)", dep) for dep in dependencies)


# ------------------------------------------------------------------------------ agents' files


@pytest.mark.timeout(30)  # a fifo that is opened for reading blocks for good: fail, do not hang
async def test_an_agents_file_is_read_only_if_it_is_a_small_regular_file_reached_without_links(
    tmp_path: Path,
) -> None:
    trusted = tmp_path / "agents" / "alice"  # root's; state/ in it is the agent's
    state = trusted / "state"
    (state / "sub").mkdir(parents=True)
    (state / "sub" / "notes.md").write_text("mine")
    bob = tmp_path / "agents" / "bob" / "state"
    bob.mkdir(parents=True)
    (bob / "notes.md").write_text("bob's")
    (state / "to-bob.md").symlink_to(bob / "notes.md")
    (state / "shadow").symlink_to("/etc/shadow")
    (state / "linked").symlink_to(bob)  # a symlinked parent dir
    os.mkfifo(state / "pipe")
    with (state / "huge").open("wb") as f:
        f.truncate(50 * 1024 * 1024)

    assert read_agent_file(trusted, "state", "sub/notes.md", cap=100) == b"mine"
    assert await read_agent_file_async(trusted, "state", "./sub/notes.md", cap=100) == b"mine"
    refusals = {
        "to-bob.md": "to-bob.md is a symbolic link",
        "shadow": "shadow is a symbolic link",
        "linked/notes.md": "linked is a symbolic link; links are not followed",
        "pipe": "pipe is a fifo, not a regular file",
        "huge": "huge is 52,428,800 bytes; files up to 100 bytes",
        "sub": "sub is a directory",
        "sub/notes.md/x": "sub/notes.md is not a directory",
        "../bob/notes.md": "contains '..'",
        "/etc/shadow": "is absolute",
    }
    for relative, error in refusals.items():
        started = time.monotonic()
        with pytest.raises(UnsafeFile, match=re.escape(error)):
            await read_agent_file_async(trusted, "state", relative, cap=100)
        assert time.monotonic() - started < 2.5
    with pytest.raises(FileMissing, match=r"missing\.md does not exist"):
        read_agent_file(trusted, "state", "missing.md", cap=100)
    (trusted / "state").rename(trusted / "real-state")
    (trusted / "state").symlink_to(bob)  # the agent's dir itself swapped for a link
    with pytest.raises(UnsafeFile, match="the agent's state dir is a symbolic link"):
        read_agent_file(trusted, "state", "notes.md", cap=100)
