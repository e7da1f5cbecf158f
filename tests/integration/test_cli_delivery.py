"""The CLI's receiving verbs are at-least-once: they ack only what they have printed."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from click.testing import CliRunner
from hivetest import Hive, ServerProcess

from hyperhive.servers import cli
from hyperhive.servers.broker.client import BrokerClient
from hyperhive.servers.broker.models import AckResult, RecvBatchResult

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("verb", [["inbox"], ["debug", "recv"]])
def test_a_broker_that_dies_before_the_ack_redelivers(
    hive: Hive, verb: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hive.configure("[broker]\nlease_seconds = 1")
    broker = ServerProcess(hive, "broker")
    broker.start()
    try:
        runner = CliRunner()
        home = ["--home", str(hive.home)]
        sent = runner.invoke(cli.main, ["debug", "send", "operator", "the only copy", "--as", "manager", *home])
        assert sent.exit_code == 0, sent.output

        real_recv_batch, real_ack = BrokerClient.recv_batch, BrokerClient.ack
        tools: list[str] = []

        async def recv_batch(self: BrokerClient, **arguments: Any) -> RecvBatchResult:
            tools.append("recv_batch")
            return await real_recv_batch(self, **arguments)

        async def broker_dies_before_the_ack(self: BrokerClient, ids: list[int]) -> AckResult:
            tools.append("ack")
            broker.stop(signal.SIGKILL)  # after the reply reached us, before the ack reaches it
            return await real_ack(self, ids)

        monkeypatch.setattr(BrokerClient, "recv_batch", recv_batch)
        monkeypatch.setattr(BrokerClient, "ack", broker_dies_before_the_ack)
        shown = runner.invoke(cli.main, [*verb, *home])
        assert "the only copy" in shown.output  # printed first ...
        assert tools == ["recv_batch", "ack"]  # ... then acked
        assert shown.exit_code == 1 and "not acknowledged" in shown.output, shown.output
        monkeypatch.undo()

        broker.start()
        time.sleep(1.2)  # the lease runs out
        again = runner.invoke(cli.main, [*verb, *home])
        assert again.exit_code == 0, again.output
        assert "the only copy" in again.output  # delivered again, not lost
        assert "the only copy" not in runner.invoke(cli.main, [*verb, *home]).output  # now acked
    finally:
        broker.kill_if_running()
