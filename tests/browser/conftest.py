"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), against the four
servers and `hive serve dashboard` as processes.

This folder is its own pytest run (`pytest tests/browser`; scripts/test runs it after the rest):
a browser suite is slow, and it keeps Playwright's event loop away from NiceGUI's user simulation.
Screenshots land in test-artifacts/screenshots/ (HIVE_ARTIFACTS overrides the folder): one per
page the tests visit, and one of the page a failing test was on.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hivetest import Servers
from playwright.async_api import Browser, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("HIVE_ARTIFACTS") or ROOT / "test-artifacts") / "screenshots"


def chromium() -> str:
    """Debian's Chromium (scripts/setup.sh test installs it); Playwright downloads no browser here."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    raise RuntimeError("no Chromium found: `scripts/setup.sh test` installs Debian's chromium (or set CHROMIUM)")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """A hive home whose agents are sleepers, its four servers, and its dashboard, all as processes."""
    with Servers(tmp_path_factory.mktemp("browser") / "hive").serving(dashboard=True) as hive:
        yield hive


@pytest.fixture(scope="module")
def password(dashboard: Servers) -> str:
    return (dashboard.home / "dashboard.password").read_text().strip()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium(), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh browser tab (no session cookie yet); on failure its last view is saved."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    tab = await context.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            await shot(tab, f"FAILED-{re.sub(r'[^A-Za-z0-9_.-]', '_', request.node.name)}")
        await context.close()


async def shot(page: Page, name: str) -> Path:
    """Save the whole page as test-artifacts/screenshots/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]  # read by the page fixture's teardown
    return report
