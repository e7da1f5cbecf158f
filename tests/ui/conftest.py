"""Fixtures for the dashboard: the five real servers as processes, and NiceGUI's simulated user
driving the real dashboard app against them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from hivetest import Servers
from nicegui.testing import User
from nicegui.testing.user_simulation import user_simulation
from uitest import LOGIN_CODE

MAIN = Path(__file__).with_name("dashboard_main.py")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """broker, lifecycle, approvals and operator as `hive serve` processes on one hive home."""
    with Servers(tmp_path_factory.mktemp("ui") / "hive").serving() as hive:
        yield hive


PATIENCE: Final = 30  # looks, 0.1 s apart: what a page built after a server round trip may take on a busy CI


@pytest.fixture
async def user(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[User]:
    """A logged-out operator in a fresh dashboard process state.

    NiceGUI's should_see/should_not_see look 3 times in 0.3 s unless told otherwise: too short for
    a login or a navigation when the machine is busy. Here they look for up to 3 s by default; a
    check that passes passes at its first look, so only a failure takes longer.
    """
    for check in ("should_see", "should_not_see"):
        monkeypatch.setattr(User, check, _patient(getattr(User, check)))
    monkeypatch.setenv("HIVE_TEST_HOME", str(servers.home))
    monkeypatch.setenv("HIVE_TEST_LOGIN_CODE", LOGIN_CODE)
    async with user_simulation(main_file=MAIN) as simulated:
        yield simulated


def _patient(check: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    async def patient(self: User, *args: Any, retries: int = PATIENCE, **kwargs: Any) -> None:
        await check(self, *args, retries=retries, **kwargs)

    return patient


@pytest.fixture
def password(servers: Servers) -> str:
    return (servers.home / "dashboard.password").read_text().strip()
