"""The swarm page in a real Chromium: a wide table at 1440×900, a card list at 390×844 (a phone) with
no sideways scroll, the strip's grouped error and the bulk confirmation. Screenshots of each."""

from __future__ import annotations

import re

import pytest
from conftest import shot
from hivetest import Servers
from playwright.async_api import Page, expect
from test_browser import open_logged_in

from hyperhive.harness.claude import NO_CREDENTIALS
from hyperhive.harness.stats import TurnRecorder
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = pytest.mark.slow

NAMES = ("pho-a", "pho-b", "pho-c")
# The innermost elements reaching past the viewport's right edge: what makes a page scroll sideways.
WIDEST = """[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth + 1
  && ![...e.children].some(c => c.getBoundingClientRect().right > innerWidth + 1))
  .slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)
  + ' ' + (e.textContent || '').slice(0, 40))"""


async def test_the_swarm_is_a_table_wide_and_a_card_list_on_a_phone(page: Page, dashboard: Servers) -> None:
    for name in NAMES:
        await dashboard.call("lifecycle", "create_agent", name=name)
    for name in NAMES[:2]:
        recorder = TurnRecorder(AgentPaths.of(dashboard.config, name).harness)
        await recorder.open()
        await recorder.set("error", reason=NO_CREDENTIALS + " " + "x" * 300)  # a long reason: no wide page
    try:
        await page.set_viewport_size({"width": 1440, "height": 900})
        await open_logged_in(page, dashboard)
        problem = page.get_by_text(re.compile(r"^2 agents: no Claude credentials → add ANTHROPIC_API_KEY"))
        await expect(problem).to_be_visible()
        await expect(page.get_by_role("button", name="2 erroring")).to_be_visible()
        await expect(page.get_by_role("link", name=re.compile(r"approvals?$")).last).to_be_visible()
        await shot(page, "swarm-1440x900")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 1440

        await page.get_by_role("checkbox", name="select pho-a").click()
        await page.get_by_role("checkbox", name="select pho-c").click()
        await page.get_by_role("button", name="restart", exact=True).first.click()
        dialog = page.get_by_role("dialog")
        await expect(dialog.get_by_text("restart 2 agents: pho-a, pho-c?")).to_be_visible()
        await shot(page, "swarm-bulk-confirm-1440x900")
        await dialog.get_by_role("button", name="cancel").click()

        await page.set_viewport_size({"width": 390, "height": 844})
        await page.reload()
        await expect(page.get_by_role("link", name="pho-c", exact=True)).to_be_visible()
        await expect(page.locator(".hh-swarm-head")).to_be_hidden()  # a card list: no column headers
        width = await page.evaluate("document.documentElement.scrollWidth")
        wide = await page.evaluate(WIDEST)
        assert width <= 390, f"the page is {width} px wide on a 390 px phone: {wide}"
        card = page.locator(".hh-rows > .hh-swarm").first
        box = await card.bounding_box()
        assert box is not None and box["width"] <= 390 and box["height"] > 40  # its cells wrap into a card
        await shot(page, "swarm-390x844")
    finally:
        for name in NAMES:
            await dashboard.call("lifecycle", "destroy", name=name, purge=True)
