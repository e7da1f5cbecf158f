"""Clients of a hive whose broker runs as two processes on one PostgreSQL database (hive.toml's
`[servers.broker] failover`): kill -9 of the process in use loses nothing, and calls and long-polls
move to the other. The brokers are real `hive serve broker` processes, killed for real.

Disable the failover (HiveClient keeping to its first address, or hive.json's `failover` ignored)
and each test here fails: the calls after the kill find no broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hivetest import BrokerProcess, Hive, free_port

from hyperhive.harness.loop import Harness
from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.call_errors import ServerUnavailable
from hyperhive.servers.common.client import HiveClient
from hyperhive.servers.common.harnessdir import (
    CREDENTIALS,
    HIVE_JSON,
    TURN_STATE,
    HarnessInfo,
    ServerEndpoint,
    TurnState,
)
from hyperhive.servers.lifecycle.harness_files import harness_info

pytestmark = pytest.mark.parametrize("storage", ["postgresql"], indirect=True)


@contextlib.contextmanager
def two_brokers(hive: Hive, settings: str = "") -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """The hive's broker on hive.toml's port and another process on the same database at the port
    hive.toml names as its failover, both real processes; `settings`: more of hive.toml."""
    hive.broker_failover = [free_port()]
    hive.configure(settings)
    first = BrokerProcess(hive, "--port", str(hive.ports["broker"]))
    second = BrokerProcess(hive, "--port", str(hive.broker_failover[0]))
    second.log = hive.home.parent / "broker-failover.log"
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.kill_if_running()
        second.kill_if_running()


def client(hive: Hive, name: str, **kwargs: Any) -> HiveClient:
    """A client of the broker as the CLI and the servers make one: from hive.toml, failover and all."""
    return HiveClient.for_server(hive.config, "broker", hive.token(name), **kwargs)


async def test_a_client_with_both_addresses_keeps_working_after_kill_9_of_the_first(hive: Hive) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    with two_brokers(hive) as (first, second):
        # retry_seconds=0: no waiting for the first to come back; what works after the kill is the failover.
        async with client(hive, alice, retry_seconds=0) as sender, client(hive, bob, retry_seconds=0) as receiver:
            assert [address.url for address in sender.addresses] == [first.url, second.url]
            await sender.call("send", {"to": bob, "body": "before"})
            assert (await receiver.call("recv", {"wait_seconds": 5}))["message"]["body"] == "before"
            assert sender.address.url == receiver.address.url == first.url  # the first, while it answers

            waiting = asyncio.create_task(receiver.call("recv", {"wait_seconds": 30}))
            await asyncio.sleep(0.5)
            assert not waiting.done()  # a long-poll waits in the first process
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL
            # It may have been delivered (a recv leases or takes): never repeated by the client itself...
            with pytest.raises(ServerUnavailable, match=r"call to broker\.recv failed"):
                await asyncio.wait_for(waiting, 5)
            # ...but the caller's next call (as the harness retries its long-poll) goes to the second.
            waiting = asyncio.create_task(receiver.call("recv", {"wait_seconds": 30}))
            await asyncio.sleep(0.5)
            assert not waiting.done()  # waiting in the second process now
            started = time.monotonic()
            sent = await sender.call("send", {"to": bob, "body": "after"})  # refused by the first: to the second
            got = (await asyncio.wait_for(waiting, 5))["message"]
            assert got is not None and (got["id"], got["body"]) == (sent["id"], "after")
            assert time.monotonic() - started < 2  # woken by the send, not by the 30 s bound
            assert sender.address.url == receiver.address.url == second.url
            # And they stay there: the next calls do not knock at the dead first again.
            sender._wires[0].last_refusal = None
            await sender.call("send", {"to": bob, "body": "stays"})
            assert sender._wires[0].last_refusal is None
            assert (await receiver.call("recv", {}))["message"]["body"] == "stays"


async def test_a_client_of_a_dead_broker_says_every_address_it_tried(hive: Hive) -> None:
    with two_brokers(hive) as (first, second):
        first.stop(signal.SIGKILL)
        second.stop(signal.SIGKILL)
        async with client(hive, "operator", retry_seconds=0) as operator:
            with pytest.raises(ServerUnavailable) as refused:
                await operator.call("pending_count", {})
    message = str(refused.value)
    assert message.startswith("cannot reach broker at any of its 2 addresses: "), message
    assert f"{first.url}: " in message and f"{second.url}: " in message, message


N = 300  # messages in the load test


async def test_kill_9_of_the_broker_in_use_under_load_loses_no_message(hive: Hive) -> None:
    """A sender sends N numbered messages and a receiver long-polls, leases and acks them, each
    through a failover client, while the process both use is killed (kill -9) mid-stream.

    None is lost. A message may be received twice only as at-least-once allows: when its lease
    (lease_seconds = 3 here) ran out before its ack was stored — the ack in flight at the kill is
    retried on the other process, so that takes a stall of seconds. A batch whose answer died with
    the process was leased but never seen: it comes back when the lease ends, once. No message is
    stored twice: a send that may have reached the dying process is looked for before it is repeated
    (what the docs ask of a caller whose call may have been stored), never blindly repeated.
    """
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    with two_brokers(hive, "[broker]\nlease_seconds = 3\n") as (first, second):
        sender, receiver, operator = client(hive, alice), client(hive, bob, timeout=60), client(hive, "operator")
        received: list[tuple[int, str]] = []  # (id, body) of every message handed to the receiver
        polls: list[tuple[float, str]] = []  # (when, the address that answered) of each long-poll
        sent: list[int] = []
        resent: list[str] = []
        killed_at: list[float] = []

        async def stored(body: str) -> bool:
            while True:  # a read: looked up again when its own connection broke with the dying process
                try:
                    newest = await operator.call("list_messages", {"agent": alice, "limit": 20})
                    return any(message["body"] == body for message in newest["messages"])
                except ServerUnavailable:
                    await asyncio.sleep(0.1)

        async def send(n: int) -> None:
            body = f"message {n}"
            while True:
                try:
                    await sender.call("send", {"to": bob, "body": body})
                    return
                except ServerUnavailable:  # it may have been stored before the process died: look first
                    if await stored(body):
                        return
                    resent.append(body)

        async def send_all() -> None:
            for n in range(N):
                await send(n)
                sent.append(n)

        async def kill_mid_stream() -> None:
            while len(sent) < N // 2:  # the sender has a send in flight nearly all the time, the receiver a call
                await asyncio.sleep(0.002)
            assert sender.address.url == receiver.address.url == first.url
            killed_at.append(time.monotonic())
            await asyncio.to_thread(first.stop, signal.SIGKILL)

        async def ack(ids: list[int]) -> None:
            while True:
                try:
                    await receiver.call("ack", {"ids": ids})  # idempotent: repeating one that went through is fine
                    return
                except ServerUnavailable:
                    await asyncio.sleep(0.1)

        async def receive_all() -> None:
            while len({body for _, body in received}) < N:
                try:
                    batch = await receiver.call("recv_batch", {"max": 10, "wait_seconds": 10, "ack": False})
                except ServerUnavailable:  # the long-poll broke with its process: try again, as the harness does
                    await asyncio.sleep(0.1)
                    continue
                polls.append((time.monotonic(), receiver.address.url))
                received.extend((message["id"], message["body"]) for message in batch["messages"])
                if batch["messages"]:
                    await ack([message["id"] for message in batch["messages"]])

        try:
            await asyncio.wait_for(asyncio.gather(send_all(), receive_all(), kill_mid_stream()), 120)
        finally:
            for each in (sender, receiver, operator):
                await each.close()
        bodies = [body for _, body in received]
        assert set(bodies) == {f"message {n}" for n in range(N)}  # none lost
        redelivered = len(received) - len(set(received))
        assert len(bodies) - len(set(bodies)) == redelivered  # a body twice only as the same message twice
        after_kill = [url for at, url in polls if at > killed_at[0]]
        assert after_kill and set(after_kill) == {second.url}, polls[-5:]  # the long-polls went on at the second
        async with client(hive, "operator") as check:
            everything = await check.call("list_messages", {"agent": alice, "limit": 1000})
        stored_bodies = [message["body"] for message in everything["messages"]]
        assert sorted(stored_bodies) == sorted(set(stored_bodies)), "a send was stored twice"
        assert len(stored_bodies) == N
        print(f"redelivered {redelivered}, looked-for-and-resent {len(resent)}, polls {len(polls)}")


# ---------------------------------------------------------------------------- the harness's clients


def _harness_info(hive: Hive, tmp_path: Path, agent: str) -> HarnessInfo:
    """hive.json as the lifecycle server writes it from this hive.toml, read back as the harness does,
    with its dirs and token file moved under tmp_path."""
    written = harness_info(hive.config, agent, AgentConfig(tools={"broker": ["recv"]}))
    info = HarnessInfo.model_validate_json(written.model_dump_json())
    token = tmp_path / "harness" / "credentials" / "token"
    token.parent.mkdir(parents=True)
    token.write_text(hive.token(agent))
    (tmp_path / "state").mkdir()
    paths = {"state_dir": str(tmp_path / "state"), "harness_dir": str(tmp_path / "harness"), "token_file": str(token)}
    return info.model_copy(update=paths)


async def test_hive_json_names_both_brokers_and_the_turn_loop_s_long_poll_moves_to_the_second(
    hive: Hive, tmp_path: Path
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    with two_brokers(hive) as (first, second):
        info = _harness_info(hive, tmp_path, bob)
        assert info.servers["broker"] == first.url
        assert info.failover == {"broker": [ServerEndpoint(url=second.url)]}
        harness = Harness(info)  # its broker client, as the turn loop makes it
        waking = asyncio.create_task(harness._wake())
        try:
            await asyncio.sleep(0.5)
            assert not waking.done()  # long-polling the first
            assert harness.broker.hive.address.url == first.url
            first.stop(signal.SIGKILL)
            await asyncio.sleep(0.5)  # the long-poll broke; the loop waits a moment and tries again
            async with client(hive, alice) as sender:
                sent = await sender.call("send", {"to": bob, "body": "while the first is gone"})
            batch = await asyncio.wait_for(waking, 10)
            assert batch is not None and [m.id for m in batch.messages] == [sent["id"]]
            assert harness.broker.hive.address.url == second.url
            await harness.broker.ack([sent["id"]])  # the ack goes there too
        finally:
            waking.cancel()
            await harness.broker.close()
            await harness.recorder.close()


def test_the_idle_harness_s_long_poll_moves_to_the_second_broker(hive: Hive, tmp_path: Path) -> None:
    """The harness as the lifecycle server starts it, in its idle form, hive.json in its credentials dir."""
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    with two_brokers(hive) as (first, _):
        # No Claude credentials: the turn loop the waiter execs can only hand the message back.
        info = _harness_info(hive, tmp_path, bob).model_copy(update={"env": {"CLAUDE_CONFIG_DIR": str(tmp_path)}})
        hive_json = Path(info.harness_dir) / CREDENTIALS / HIVE_JSON
        hive_json.write_text(info.model_dump_json())
        log = (tmp_path / "harness.log").open("ab")
        command = [sys.executable, "-m", "hyperhive.harness", "--agent", bob, "--harness-dir", info.harness_dir]
        process = subprocess.Popen([*command, "--idle"], stdout=log, stderr=log)
        try:
            _until(lambda: _turn_state(info) == "idle", "the idle waiter long-polling")
            time.sleep(0.5)
            first.stop(signal.SIGKILL)
            asyncio.run(_send(hive, alice, bob, "wake up"))
            # Its broken long-poll is tried again after a second's backoff, at the second broker: the
            # message arrives and it execs the turn loop, whose first call (handing the message back,
            # with no credentials to run a turn) goes there too.
            _until(lambda: "--idle" not in _cmdline(process.pid), "the turn loop, exec'd on the message")
            _until(lambda: _pending(hive, bob) == {"queued": 1, "leased": 0}, "the message handed back")
            assert process.poll() is None
        finally:
            process.kill()
            process.wait()
            log.close()


async def _send(hive: Hive, sender: str, to: str, body: str) -> None:
    async with client(hive, sender) as broker:
        await broker.call("send", {"to": to, "body": body})


def _pending(hive: Hive, name: str) -> Any:
    async def ask() -> Any:
        async with client(hive, name) as broker:
            return await broker.call("pending_count", {})

    return asyncio.run(ask())


def _until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.1)


def _turn_state(info: HarnessInfo) -> str | None:
    try:
        return TurnState.model_validate_json((Path(info.harness_dir) / TURN_STATE).read_bytes()).state
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    """Its arguments; [] while it is between two programs (an exec under way reads as empty)."""
    return [arg for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if arg]
