"""The swarm of a hive across two hosts in a real Chromium: the host column lines up under its
header, and an agent whose host stops answering shows a red "unreachable" badge."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from conftest import shot
from hivetest import HOST_BEATS, ServerProcess, Servers, another_host
from pgtest import PgCluster
from playwright.async_api import Page, expect
from test_browser import agent_row, open_logged_in

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[Servers]:
    """Host alpha: its servers and dashboard as processes, the hive's directory in PostgreSQL."""
    database = pg_cluster.create_database()
    root = tmp_path_factory.mktemp("hosts-browser")
    try:
        url = pg_cluster.url(database)
        alpha = Servers(root / "alpha", storage_url=url, host="alpha", host_settings=HOST_BEATS, manager=True)
        with alpha.serving(dashboard=True) as hive:
            yield hive
    finally:
        pg_cluster.drop_database(database)


async def test_the_host_column_and_an_unreachable_agent(page: Page, dashboard: Servers) -> None:
    beta = another_host(dashboard, dashboard.home.parent / "beta", "beta", uid_base=400_000)
    lifecycle = ServerProcess(beta, "lifecycle", "--stop-agents-on-exit").start()
    try:
        await dashboard.call("lifecycle", "create_agent", name="bob", host="beta")
        await page.set_viewport_size({"width": 1440, "height": 900})  # as the one-host swarm: no wider
        await open_logged_in(page, dashboard)
        bob = agent_row(page, "bob")
        await expect(bob.locator(".hh-health")).to_have_text("running · no harness")
        header = page.locator(".hh-swarm-head").get_by_role("button", name="sort by host")
        cell = bob.locator("[data-label=host]")
        await expect(cell).to_have_text("beta")
        await expect(agent_row(page, "manager").locator("[data-label=host]")).to_have_text("alpha")
        header_box, cell_box = await header.bounding_box(), await cell.bounding_box()
        assert header_box is not None and cell_box is not None
        assert abs(header_box["x"] - cell_box["x"]) < 12, (header_box, cell_box)  # one grid column
        await expect(page.get_by_text("beta up · 1/100 agents")).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= 1440

        lifecycle.stop()
        badge = bob.locator(".hh-health")
        await expect(badge).to_have_text("unreachable: host beta does not answer", timeout=20_000)
        await expect(badge).to_have_class("hh-health bg-negative")
        await expect(page.get_by_text("host beta does not answer: bob is unreachable")).to_be_visible()
        await expect(page.get_by_text(re.compile(r"^beta down since "))).to_be_visible()
        await shot(page, "swarm-hosts-unreachable")
    finally:
        lifecycle.kill_if_running()
