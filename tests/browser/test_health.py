"""Staying truthful in a real browser: a stopped (SIGSTOP) broker is shown within 3 s and the banner
goes when it answers again; toasts sit bottom-right, successes fade, failures stay and repeats merge."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from conftest import shot
from hivetest import Servers
from playwright.async_api import Page, expect
from test_browser import open_logged_in, url_of

from hyperhive.ui.pages.widgets import TOAST_SECONDS

pytestmark = pytest.mark.slow

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


async def test_a_stopped_broker_is_shown_within_3_s_and_the_banner_goes_when_it_answers(
    page: Page, dashboard: Servers
) -> None:
    await page.set_viewport_size(DESKTOP)
    await open_logged_in(page, dashboard)
    broker_chip = page.locator("header .q-chip").filter(has=page.get_by_text("broker", exact=True))
    await expect(broker_chip).to_have_class(re.compile(r"\bhh-health-up\b"))
    await expect(page.get_by_text("updated just now")).to_be_visible()
    banner = page.get_by_text(re.compile(r"broker not answering for \d+s: retrying"))
    broker = dashboard.processes["broker"].process
    assert broker is not None
    os.kill(broker.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        await expect(banner).to_be_visible(timeout=3_000)
        assert time.monotonic() - stopped <= 3.0
        await expect(broker_chip).to_have_class(re.compile(r"\bhh-health-down\b"))
        await expect(page.locator(".hh-stale")).not_to_have_count(0)  # the swarm's rows, greyed out
        await shot(page, "broker-stopped-1440")
        await page.set_viewport_size(PHONE)
        await expect(banner).to_be_visible()
        await expect(page.locator("header").get_by_text("broker down")).to_be_visible()  # the chips, summed up
        await expect(broker_chip).to_be_hidden()  # they fold away on a phone
        await shot(page, "broker-stopped-390")
        for part in (
            "header",
            ".q-page-container .bg-negative",
        ):  # the header wraps; the swarm's own layout is its page's
            assert await page.locator(part).first.evaluate("e => e.scrollWidth") <= PHONE["width"], part
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    await expect(banner).to_be_hidden(timeout=15_000)
    await expect(broker_chip).to_have_class(re.compile(r"\bhh-health-up\b"))
    await expect(page.locator(".hh-stale")).to_have_count(0)


async def test_a_failure_toast_stays_merges_its_repeats_and_sits_bottom_right(page: Page, dashboard: Servers) -> None:
    await page.set_viewport_size(DESKTOP)
    await page.goto(url_of(dashboard, "/login"))
    secret = page.get_by_label("password or operator token")
    for _ in range(3):
        await secret.fill("not it")
        await page.keyboard.press("Enter")
        await expect(page.get_by_text("not the dashboard password or an operator token")).to_be_visible()
    failure = page.locator(".q-notification").filter(has_text="not the dashboard password")
    await expect(failure).to_have_count(1)  # three identical failures, one toast
    await expect(failure.locator(".q-notification__badge")).to_have_text("3")
    box = await failure.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] > DESKTOP["width"] - 40 and box["y"] > DESKTOP["height"] / 2, box
    await page.wait_for_timeout((TOAST_SECONDS + 1) * 1000)
    await expect(failure).to_be_visible()  # a failure stays until it is closed
    await shot(page, "toast-failure")
    await failure.get_by_role("button", name="close").click()
    await expect(failure).to_have_count(0)


async def test_a_success_toast_fades_and_never_covers_the_header(page: Page, dashboard: Servers) -> None:
    await page.set_viewport_size(DESKTOP)
    await open_logged_in(page, dashboard)
    await page.get_by_role("button", name="desktop notifications").click()
    note = page.locator(".q-notification").filter(has_text="desktop notifications")
    await expect(note).to_be_visible()
    header = await page.locator("header").bounding_box()
    box = await note.bounding_box()
    assert header is not None and box is not None
    assert box["y"] >= header["y"] + header["height"], (box, header)
    await expect(note).to_have_count(0, timeout=(TOAST_SECONDS + 3) * 1000)
