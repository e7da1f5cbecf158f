"""The terminal on an agent's page in a real browser: open it, type `id`, see the agent's uid; leave
the page and the session is closed (and audited)."""

from __future__ import annotations

import os

import pytest
from conftest import shot
from hivetest import Servers
from playwright.async_api import Page, expect
from test_browser import eventually, open_logged_in, url_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the terminal needs a root lifecycle server"),
]


async def test_a_terminal_runs_id_as_the_agent(page: Page, dashboard: Servers) -> None:
    await dashboard.call("lifecycle", "create_agent", name="tess")
    uid = (await dashboard.call("lifecycle", "agent_status", name="tess"))["uid"]
    await open_logged_in(page, dashboard, "/agent/tess")
    await page.get_by_role("link", name="terminal").click()
    await expect(page).to_have_url(url_of(dashboard, "/agent/tess/terminal"))
    screen = page.locator(".xterm-rows")
    await expect(screen).to_contain_text("tess:", timeout=20_000)  # its prompt
    await page.locator(".xterm").click()
    await page.keyboard.type("id\n")
    await expect(screen).to_contain_text(f"uid={uid} gid={uid}", timeout=15_000)
    await shot(page, "terminal-1440")
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.keyboard.type("echo narrow\n")
    await expect(screen).to_contain_text("narrow", timeout=15_000)
    await shot(page, "terminal-390")
    await page.set_viewport_size({"width": 1440, "height": 900})

    # Leaving the page closes the session; the audit says who, when and how long.
    await page.get_by_role("link", name="← tess").click()
    await expect(page).to_have_url(url_of(dashboard, "/agent/tess"))

    async def session_ended() -> dict[str, str] | None:
        entries = (await dashboard.call("lifecycle", "audit", agent="tess", limit=20))["entries"]
        return next((e for e in entries if e["action"] == "terminal_session"), None)

    ended = await eventually(session_ended, timeout=20)
    assert ended["actor"] == "operator" and "open" in ended["detail"], ended


async def test_a_stopped_agent_says_so_in_the_terminal(page: Page, dashboard: Servers) -> None:
    await dashboard.call("lifecycle", "create_agent", name="ted")
    await open_logged_in(page, dashboard, "/agent/ted/terminal")
    screen = page.locator(".xterm-rows")
    await expect(screen).to_contain_text("ted:", timeout=20_000)
    await dashboard.call("lifecycle", "stop", name="ted")
    await expect(screen).to_contain_text("the sandbox of ted was stopped", timeout=15_000)
    await expect(page.get_by_text("Reload the page for a new shell")).to_be_visible()
