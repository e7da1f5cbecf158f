"""The dashboard by keyboard alone (issue 16 §5), in a real Chromium: what acts on a click without
being a button or a link (the agent page's state-dir tree, the repos page's file browser, its
breadcrumbs and its log, the shared workspace) is a button to a screen reader, reached with Tab,
shows a focus ring, and acts on Enter and on Space (which does not scroll the page); a directory
says whether it is open (aria-expanded). Screenshots in test-artifacts/screenshots/keys-*.png."""

from __future__ import annotations

import asyncio
import re

import pytest
from conftest import shot
from hivetest import Servers
from playwright.async_api import Locator, Page, expect
from test_browser import open_logged_in

pytestmark = pytest.mark.slow

# Space on it, as a keyboard sends it: False when the page's default (scrolling) was prevented.
SPACE_SCROLLS = (
    "e => e.dispatchEvent(new KeyboardEvent('keydown', {key: ' ', code: 'Space', bubbles: true, cancelable: true}))"
)
RING = "e => { const s = getComputedStyle(e); return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2; }"


@pytest.fixture(scope="module")
def hive(dashboard: Servers, tmp_path_factory: pytest.TempPathFactory) -> Servers:
    """kai, running, with notes.md and work/plan.md in its state dir; a repo `app` with a commit;
    a directory in the shared workspace."""

    async def spawn() -> None:
        await dashboard.call("lifecycle", "create_agent", name="kai")
        for _ in range(100):
            if (await dashboard.call("lifecycle", "agent_status", name="kai"))["state"] == "running":
                return
            await asyncio.sleep(0.1)

    asyncio.run(spawn())
    state = dashboard.home / "agents" / "kai" / "state"
    (state / "notes.md").write_text("# notes\n- the plan is in work/plan.md\n")
    (state / "work").mkdir(exist_ok=True)
    (state / "work" / "plan.md").write_text("1. read\n2. write\n")
    asyncio.run(dashboard.call("forge", "create_repo", name="app", description="the app"))
    dashboard.push_repo(tmp_path_factory.mktemp("app"), "app")
    shared = dashboard.home / "shared" / "designs"
    shared.mkdir(parents=True, exist_ok=True)
    (shared / "api.md").write_text("the API, drafted\n")
    return dashboard


async def press(page: Page, control: Locator, key: str) -> None:
    """Focus `control` as the keyboard would reach it and press `key` on it."""
    await control.focus()
    await expect(control).to_be_focused()
    await page.keyboard.press(key)


async def test_the_agent_pages_tree_opens_by_keyboard(page: Page, hive: Servers) -> None:
    await open_logged_in(page, hive, "/agent/kai")
    await page.get_by_role("tab", name="files").click()
    await expect(page.get_by_text("the plan is in work/plan.md")).to_be_visible()  # notes.md opens by itself
    work = page.get_by_role("button", name="work/", exact=True)
    await expect(work).to_have_attribute("aria-expanded", "false")

    # Tab from the tree's refresh button reaches the entries, each with a visible focus ring.
    await page.get_by_role("button", name="refresh the tree").focus()
    for _ in range(5):
        await page.keyboard.press("Tab")
        if await work.evaluate("e => e === document.activeElement"):
            break
    await expect(work).to_be_focused()
    assert await work.evaluate(RING), "no focus ring on a tree entry reached with Tab"

    await page.keyboard.press("Enter")
    await expect(work).to_have_attribute("aria-expanded", "true")
    plan = page.get_by_role("button", name=re.compile(r"^plan\.md "))
    await expect(plan).to_be_visible()
    await press(page, plan, " ")
    await expect(page.get_by_text("2. write")).to_be_visible()
    assert not await plan.evaluate(SPACE_SCROLLS), "Space on a tree entry also scrolls the page"
    await shot(page, "keys-agent-tree")

    await press(page, work, " ")  # Space closes it again
    await expect(work).to_have_attribute("aria-expanded", "false")
    await expect(plan).to_be_hidden()
    await press(page, page.get_by_role("button", name=re.compile(r"^notes\.md ")), "Enter")
    await expect(page.get_by_text("the plan is in work/plan.md")).to_be_visible()


async def test_the_repos_browser_breadcrumbs_and_log_work_by_keyboard(page: Page, hive: Servers) -> None:
    await open_logged_in(page, hive, "/repos/app")
    src = page.get_by_role("button", name="src/", exact=True)
    await press(page, src, "Enter")
    main = page.get_by_role("button", name=re.compile(r"^main\.py"))
    await expect(main).to_be_visible()
    assert await main.evaluate(RING) is False  # the ring is the keyboard's: not on what is not focused
    await press(page, main, " ")
    await expect(page.get_by_text("print(42)")).to_be_visible()
    assert not await main.evaluate(SPACE_SCROLLS), "Space on a file entry also scrolls the page"
    await page.keyboard.press("Shift+Tab")  # back to the crumbs: "app/ src/"
    await expect(page.get_by_role("button", name="src/", exact=True)).to_be_focused()
    await page.keyboard.press("Shift+Tab")
    top = page.get_by_role("button", name="app/", exact=True)
    await expect(top).to_be_focused()
    assert await top.evaluate(RING), "no focus ring on a breadcrumb reached with Shift+Tab"
    await shot(page, "keys-repo-files")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name=re.compile(r"^README\.md"))).to_be_visible()
    await expect(main).to_be_hidden()

    await page.get_by_role("tab", name="log").click()
    commit = page.get_by_role("button", name=re.compile(r"^[0-9a-f]{12} .*: first$"))
    await press(page, commit, "Enter")
    await expect(page.get_by_text("first", exact=True)).to_be_visible()  # the commit's subject
    await expect(page.get_by_text("+print(42)")).to_be_visible()  # and its diff


async def test_the_shared_workspace_works_by_keyboard(page: Page, hive: Servers) -> None:
    await open_logged_in(page, hive, "/shared")
    await press(page, page.get_by_role("button", name=re.compile(r"^designs\/ ")), "Enter")
    await press(page, page.get_by_role("button", name=re.compile(r"^api\.md ")), " ")
    await expect(page.get_by_text("the API, drafted")).to_be_visible()
    await press(page, page.get_by_role("button", name="shared/", exact=True), "Enter")
    await expect(page.get_by_role("button", name=re.compile(r"^designs\/ "))).to_be_visible()
