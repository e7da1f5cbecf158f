"""The header at a phone's 390×844 and at 1440×900, in a real Chromium (issue 16 §5).

On a phone it is one row: the nav links, "updated N s ago", desktop notifications and log out fold
into a menu button; the health summary and the questions badge stay. Every page the menu leads to
fits the screen (no sideways scroll). At 1440 px the header is as before: its links, the health chips
and log out in view, no menu button. Screenshots: test-artifacts/screenshots/header-*.png."""

from __future__ import annotations

import asyncio
import re

import pytest
from conftest import shot
from hivetest import Servers
from playwright.async_api import Page, expect
from test_browser import open_logged_in, url_of

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
NAV = {  # each header link and a line its page shows
    "swarm": "◆ swarm",
    "approvals": "◆ approvals",
    "questions": "pending questions are in the drawer",
    "messages": "◆ messages",
    "repos": "◆ repos",
    "shared": "◆ shared workspace",
}
WIDTH = "() => document.scrollingElement.scrollWidth"
WIDE = (  # what sticks out, to say why when something does
    "() => [...document.querySelectorAll('body *')]"
    ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
    ".slice(0, 20).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"
)


@pytest.fixture(scope="module")
def hive(dashboard: Servers) -> Servers:
    """A question waiting, so the header's badge has a count to show."""
    asyncio.run(
        dashboard.call("operator", "ask_operator", as_name="manager", question="ship it today?", ttl_seconds=3600)
    )
    return dashboard


async def test_on_a_phone_the_links_fold_into_a_menu_and_no_page_scrolls_sideways(page: Page, hive: Servers) -> None:
    await page.set_viewport_size(PHONE)
    await open_logged_in(page, hive)
    header = page.locator("header")
    menu_button = header.get_by_role("button", name="menu")
    await expect(menu_button).to_be_visible()
    await expect(header.get_by_text("all up")).to_be_visible()  # the health summary
    await expect(header.get_by_role("button", name=re.compile(r"^questions, 1 waiting"))).to_be_visible()
    for text in NAV:
        await expect(header.get_by_role("link", name=text, exact=True)).to_be_hidden()
    await expect(header.get_by_role("button", name="log out")).to_be_hidden()
    box = await header.bounding_box()
    assert box is not None and box["height"] <= 56, f"the header is {box} on a phone: not one row"
    await shot(page, "header-390")

    for text, shows in NAV.items():
        await menu_button.click()
        menu = page.get_by_role("menu")
        for other in NAV:  # every link is in the menu (the questions link with its count)
            await expect(menu.get_by_role("menuitem", name=re.compile(rf"^{other}\b"))).to_be_visible()
        await expect(menu.get_by_text(re.compile(r"^updated|^waiting"))).to_be_visible()
        if text == "swarm":
            await page.wait_for_timeout(400)  # the menu's fade-in
            await shot(page, "header-menu-390")
        await menu.get_by_role("menuitem", name=re.compile(rf"^{text}\b")).click()
        await expect(menu).to_be_hidden()  # it closes once a link is followed
        await expect(page.get_by_text(shows).first).to_be_visible()
        assert page.url == url_of(hive, "/" if text == "swarm" else f"/{text}")
        width = await page.evaluate(WIDTH)
        assert width <= PHONE["width"], f"/{text} is {width} px wide on a 390 px phone: {await page.evaluate(WIDE)}"

    await menu_button.click()
    await page.get_by_role("menu").get_by_role("menuitem", name="log out").click()
    await expect(page).to_have_url(re.compile(r"/login"))


async def test_on_a_phone_the_menu_opens_and_leads_by_keyboard(page: Page, hive: Servers) -> None:
    await page.set_viewport_size(PHONE)
    await open_logged_in(page, hive)
    menu_button = page.locator("header").get_by_role("button", name="menu")
    await menu_button.focus()
    await page.keyboard.press("Enter")
    link = page.get_by_role("menu").get_by_role("menuitem", name="repos")
    await link.focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("◆ repos")).to_be_visible()
    await page.keyboard.press("Escape")


async def test_at_1440_the_header_is_as_it_was(page: Page, hive: Servers) -> None:
    await page.set_viewport_size(DESKTOP)
    await open_logged_in(page, hive)
    header = page.locator("header")
    for text in NAV:
        await expect(header.get_by_role("link", name=re.compile(rf"^{text}\b"))).to_be_visible()
    await expect(header.get_by_role("link", name="questions (1)")).to_be_visible()
    await expect(header.get_by_role("button", name="menu")).to_be_hidden()
    await expect(header.get_by_text("all up")).to_be_hidden()  # the summary is the phone's: here, every chip
    for server in ("broker", "lifecycle", "approvals", "operator", "forge"):
        await expect(header.locator(".q-chip").filter(has_text=server)).to_be_visible()
    await expect(header.get_by_text(re.compile(r"^updated"))).to_be_visible()
    await expect(header.get_by_role("button", name="desktop notifications")).to_be_visible()
    await expect(header.get_by_role("button", name="log out")).to_be_visible()
    box = await header.bounding_box()
    assert box is not None and box["height"] <= 56, f"the header is {box} at 1440 px: not one row"
    await header.get_by_role("link", name="messages").click()
    await expect(page.get_by_text("◆ messages")).to_be_visible()
    await shot(page, "header-1440")
