"""The broker as a real `hive serve` process: restarts, crashes, unix sockets, Host checks, reconnects."""

from __future__ import annotations

import asyncio
import signal
import stat
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hivetest import BrokerEndpoint, BrokerProcess, Endpoint, Hive

from hyperhive.servers.broker.server import create as create_broker
from hyperhive.servers.broker.store_sqlite import SqliteBrokerStore
from hyperhive.servers.common.call_errors import ServerUnavailable
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.serving import http_app, serve

pytestmark = pytest.mark.slow


async def test_pending_messages_leases_and_reminders_survive_a_restart(
    hive: Hive, broker_process: BrokerProcess
) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    broker = broker_process.start().endpoint()
    ids = [(await broker.client(alice).call("send", {"to": bob, "body": f"m{i}"}))["id"] for i in range(3)]
    leased = (await broker.client(bob).call("recv", {"ack": False}))["message"]["id"]
    reminder = await broker.client(alice).call("remind", {"body": "later", "in_seconds": 3600})
    await broker.close_clients()

    assert broker_process.stop(signal.SIGTERM) == 0  # a clean stop
    broker = broker_process.start().endpoint()

    assert await broker.client(bob).call("pending_count", {}) == {"queued": 2, "leased": 1}
    batch = await broker.client(bob).call("recv_batch", {"max": 10})
    assert [m["id"] for m in batch["messages"]] == ids[1:]  # the leased one stays leased
    assert await broker.client(bob).call("ack", {"ids": [leased]}) == {"acked": 1, "already_acked": 0}
    assert (await broker.client(alice).call("list_my_reminders", {}))["reminders"] == [reminder]
    await broker.close_clients()


async def test_a_send_that_returned_survives_a_crash(hive: Hive, broker_process: BrokerProcess) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    broker = broker_process.start().endpoint()
    sent = await broker.client(alice).call("send", {"to": bob, "body": "committed before the reply"})
    await broker.close_clients()
    broker_process.stop(signal.SIGKILL)
    broker = broker_process.start().endpoint()
    got = (await broker.client(bob).call("recv", {}))["message"]
    assert got["id"] == sent["id"]
    await broker.close_clients()


async def test_sigterm_releases_waiting_long_polls_and_stops_promptly(
    hive: Hive, broker_process: BrokerProcess
) -> None:
    bob = hive.add_agent("bob")
    broker = broker_process.start().endpoint()
    client = broker.client(bob, timeout=200)
    waiting = asyncio.create_task(client.call("recv", {"wait_seconds": 170}))
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await asyncio.to_thread(broker_process.stop, signal.SIGTERM)
    assert code == 0
    assert loop.time() - started < 5
    result = await asyncio.wait_for(waiting, 5)
    assert result == {"message": None, "queued": 0}
    await broker.close_clients()


async def test_a_long_poll_released_slowly_at_shutdown_still_gets_its_answer(
    hive: Hive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loaded-machine case of the test above: the released recv is answered late (its claim
    slowed past serving.py's 2 s wait), so the server closes its connections right after the answer.
    The answer must be the whole call: the MCP client used to list the tools after it (to check the
    result's schema) and got "Connection closed" from a server that was gone."""
    bob = hive.add_agent("bob")
    claim, claims = SqliteBrokerStore.claim, 0

    async def slow_after_release(store: SqliteBrokerStore, *args: Any) -> Any:
        nonlocal claims
        claims += 1
        if claims > 1:  # the look after the release, not the first one
            await asyncio.sleep(3)
        return await claim(store, *args)

    monkeypatch.setattr(SqliteBrokerStore, "claim", slow_after_release)
    hive_server = create_broker(hive.config, hive.credentials("broker"))
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        serve(http_app(hive_server.mcp), hive.config.listen("broker"), before_shutdown=hive_server.before_shutdown,
              on_ready=ready.set_result, stop=stop, limits=hive.config.serving)
    )  # fmt: skip
    broker = Endpoint(hive, (await ready)[0])
    waiting = asyncio.create_task(broker.client(bob, timeout=200).call("recv", {"wait_seconds": 170}))
    await asyncio.sleep(0.5)
    stop.set()  # what SIGTERM does
    await asyncio.wait_for(serving, 15)
    assert claims == 2
    assert await asyncio.wait_for(waiting, 5) == {"message": None, "queued": 0}
    await broker.close_clients()


async def test_unix_socket_is_private_and_serves_mcp(hive: Hive, tmp_path: Path) -> None:
    hive.add_agent("alice")
    socket_path = tmp_path / "run" / "broker.sock"
    process = BrokerProcess(hive, "--socket", str(socket_path)).start()
    try:
        assert process.urls == [f"unix:{socket_path}"]
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
        client = HiveClient(ServerAddress("broker", "http://localhost/mcp", socket_path), hive.token("alice"))
        async with client:
            sent = await client.call("send", {"to": "manager", "body": "over a unix socket"})
        assert sent["recipients"] == 1
    finally:
        assert process.stop() == 0
    assert not socket_path.exists()  # removed on the way out


async def test_host_and_origin_protection(hive: Hive, broker_process: BrokerProcess) -> None:
    broker_process.start()
    token = hive.token("operator")
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    base = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient() as http:
        foreign_host = await http.post(broker_process.url, json=body, headers={**base, "Host": "evil.example"})
        foreign_origin = await http.post(
            broker_process.url, json=body, headers={**base, "Origin": "http://evil.example"}
        )
    assert foreign_host.status_code == 421
    assert foreign_origin.status_code == 403


async def test_the_client_rides_out_a_restart(hive: Hive, broker_process: BrokerProcess) -> None:
    bob = hive.add_agent("bob")
    broker_process.start()
    async with HiveClient(ServerAddress("broker", broker_process.url), hive.token(bob), retry_seconds=30) as client:
        assert await client.call("pending_count", {}) == {"queued": 0, "leased": 0}
        broker_process.stop()
        # Start the broker again while the next call is already knocking.
        restart = threading.Timer(1.0, broker_process.start)
        restart.start()
        try:
            assert await client.call("pending_count", {}) == {"queued": 0, "leased": 0}
        finally:
            restart.join()
        broker_process.stop()
        client.retry_seconds = 0
        unreachable = r"cannot reach broker at http://127\.0\.0\.1:\d+/mcp: All connection attempts failed"
        with pytest.raises(ServerUnavailable, match=unreachable):
            await client.call("pending_count", {})


async def test_port_in_use_is_a_clear_error(hive: Hive, broker_process: BrokerProcess) -> None:
    broker_process.start()
    second = BrokerProcess(hive, "--port", str(broker_process.port))
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:\d+ is in use; stop the other server or use another port"):
        second.start()
    assert "Traceback" not in str(second.process and second.stderr())


def test_endpoint_helper_is_usable(hive: Hive, broker_process: BrokerProcess) -> None:
    assert isinstance(broker_process.start().endpoint(), BrokerEndpoint)
