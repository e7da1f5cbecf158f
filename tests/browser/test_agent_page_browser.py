"""An agent's page in a real Chromium at 1440×900 and at a phone's 390×844: the log fills the page,
wraps a 300-character word without sideways scroll, follows its end until the operator scrolls up;
the file tree opens; an unknown agent answers 404. Screenshots in test-artifacts/screenshots/."""

from __future__ import annotations

import asyncio

import pytest
from conftest import shot
from hivetest import Servers
from playwright.async_api import Browser, Page, expect
from test_browser import open_logged_in, url_of

pytestmark = pytest.mark.slow

HARNESS = "2026-11-21 15:30:00,123 ada hyperhive.harness"
LONG_WORD = "x" * 300
SIZES = {"desktop": (1440, 900), "phone": (390, 844)}

AT_END = (
    "() => { const s = document.querySelector('.hh-log .q-scrollarea__container');"
    " return s.scrollTop + s.clientHeight >= s.scrollHeight - 4; }"
)
WIDE = (  # what sticks out, to say why when it does
    "() => [...document.querySelectorAll('body *')]"
    ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
    ".slice(0, 40).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"
)
SIDEWAYS = "() => document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture(scope="module")
def ada(dashboard: Servers) -> Servers:
    """ada, running, with notes, a directory and a log of 80 lines, a 300-character word and an error."""

    async def spawn() -> None:
        await dashboard.call("lifecycle", "create_agent", name="ada")
        for _ in range(100):
            if (await dashboard.call("lifecycle", "agent_status", name="ada"))["state"] == "running":
                return
            await asyncio.sleep(0.1)

    asyncio.run(spawn())
    asyncio.run(dashboard.call("broker", "send", to="ada", body=f"please read this: {LONG_WORD}"))
    state = dashboard.home / "agents" / "ada" / "state"
    (state / "notes.md").write_text("# notes\n- the plan is in work/plan.md\n")
    (state / "work").mkdir(exist_ok=True)
    (state / "work" / "plan.md").write_text("1. read\n2. write\n")
    with (dashboard.home / "logs" / "ada.log").open("a") as log:
        for n in range(80):
            log.write(f"{HARNESS} INFO line {n}\n")
        log.write(f"{HARNESS} WARNING a long word follows: {LONG_WORD}\n")
        log.write(f"{HARNESS} ERROR the turn failed\n")
    return dashboard


async def _open(browser: Browser, dashboard: Servers, size: str, path: str) -> Page:
    width, height = SIZES[size]
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    await open_logged_in(page, dashboard, path)
    return page


@pytest.mark.parametrize("size", list(SIZES))
async def test_the_log_fills_the_page_wraps_and_never_scrolls_sideways(
    browser: Browser, ada: Servers, size: str
) -> None:
    page = await _open(browser, ada, size, "/agent/ada")
    try:
        await expect(page.get_by_text(f"{HARNESS} ERROR the turn failed")).to_be_visible()
        await expect(page.get_by_text("model sonnet")).to_be_visible()
        box = await page.locator(".hh-log").bounding_box()
        assert box is not None and box["height"] >= 0.5 * SIZES[size][1], box  # the page's height, not 300 px
        assert await page.evaluate(SIDEWAYS) <= 0, await page.evaluate(WIDE)  # the 300-character word wraps
        await shot(page, f"agent-log-{size}")
        await page.get_by_role("tab", name="messages").click()
        await expect(page.get_by_text(f"please read this: {LONG_WORD}")).to_be_visible()
        await expect(page.get_by_text("pending", exact=True)).to_be_visible()  # the messages page's words
        assert await page.evaluate(SIDEWAYS) <= 0, await page.evaluate(WIDE)
        await shot(page, f"agent-messages-{size}")
        await page.get_by_role("tab", name="files").click()
        await expect(page.get_by_text("the plan is in work/plan.md")).to_be_visible()
        await page.get_by_text("work/", exact=True).click()
        await page.get_by_text("plan.md", exact=True).click()
        await expect(page.get_by_text("2. write")).to_be_visible()
        assert await page.evaluate(SIDEWAYS) <= 0, await page.evaluate(WIDE)
        await shot(page, f"agent-files-{size}")
        await page.get_by_role("tab", name="stats").click()
        await expect(page.get_by_text("no turns recorded yet")).to_be_visible()
        await shot(page, f"agent-stats-{size}")
    finally:
        await page.context.close()


async def test_the_log_follows_its_end_until_scrolled_up(browser: Browser, ada: Servers) -> None:
    page = await _open(browser, ada, "desktop", "/agent/ada")
    log_file = ada.home / "logs" / "ada.log"
    try:
        await expect(page.get_by_text(f"{HARNESS} ERROR the turn failed")).to_be_visible()
        with log_file.open("a") as log:
            log.write(f"{HARNESS} INFO followed 1\n")
        await expect(page.get_by_text(f"{HARNESS} INFO followed 1")).to_be_in_viewport()
        assert await page.evaluate(AT_END)
        await page.locator(".hh-log .q-scrollarea__container").evaluate("s => s.scrollTo(0, 0)")
        await page.mouse.move(700, 500)
        await page.mouse.wheel(0, -3000)  # the operator scrolls up
        await page.wait_for_timeout(300)
        with log_file.open("a") as log:
            log.write(f"{HARNESS} INFO not followed\n")
        await expect(page.get_by_text(f"{HARNESS} INFO not followed")).to_be_attached()
        await page.wait_for_timeout(500)
        assert not await page.evaluate(AT_END)  # it stays where the operator is reading
        await page.get_by_role("button", name="end").click()
        await expect(page.get_by_text(f"{HARNESS} INFO not followed")).to_be_in_viewport()
    finally:
        await page.context.close()


@pytest.mark.parametrize("size", list(SIZES))
async def test_an_unknown_agent_answers_404(browser: Browser, ada: Servers, size: str) -> None:
    page = await _open(browser, ada, size, "/")
    try:
        response = await page.goto(url_of(ada, "/agent/nobody"))
        assert response is not None and response.status == 404
        await expect(page.get_by_text("no agent named 'nobody'")).to_be_visible()
        await shot(page, f"agent-404-{size}")
        await page.get_by_role("link", name="← back to the swarm").click()
        await expect(page.get_by_text("◆ swarm")).to_be_visible()
    finally:
        await page.context.close()
