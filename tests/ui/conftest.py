"""Fixtures for the dashboard: the four real servers as processes, and NiceGUI's simulated user
driving the real dashboard app against them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hivetest import Servers
from nicegui.testing import User
from nicegui.testing.user_simulation import user_simulation

MAIN = Path(__file__).with_name("dashboard_main.py")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """broker, lifecycle, approvals and operator as `hive serve` processes on one hive home."""
    with Servers(tmp_path_factory.mktemp("ui") / "hive").serving() as hive:
        yield hive


@pytest.fixture
async def user(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[User]:
    """A logged-out operator in a fresh dashboard process state."""
    monkeypatch.setenv("HIVE_TEST_HOME", str(servers.home))
    async with user_simulation(main_file=MAIN) as simulated:
        yield simulated


@pytest.fixture
def password(servers: Servers) -> str:
    return (servers.home / "dashboard.password").read_text().strip()
