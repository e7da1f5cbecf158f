from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hivetest import SLEEPER, BrokerEndpoint, BrokerProcess, Hive, Hivemind, in_process, in_process_broker, toml_list


@pytest.fixture
def hive(tmp_path: Path) -> Hive:
    """A fresh hive home (hive init) with only the manager."""
    return Hive(tmp_path / "hive")


@pytest.fixture
async def broker(hive: Hive) -> AsyncIterator[BrokerEndpoint]:
    """The broker over real HTTP on loopback, in-process, with a ManualClock at `broker.clock`."""
    async with in_process_broker(hive) as endpoint:
        yield endpoint


@pytest.fixture
def broker_process(hive: Hive) -> Iterator[BrokerProcess]:
    """`hive serve broker` as a real process (not started; call .start())."""
    process = BrokerProcess(hive)
    yield process
    process.kill_if_running()


@pytest.fixture
async def hivemind(hive: Hive) -> AsyncIterator[Hivemind]:
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\nrestart_backoff_seconds = 0.2")
    async with (
        in_process(hive, "broker") as broker,
        in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle,
    ):
        yield Hivemind(hive, broker, lifecycle)
