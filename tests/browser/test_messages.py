"""The messages page in Chromium: a 300-character word never scrolls the page sideways (1440×900 and
390×844), and search finds one message among 10,000."""

from __future__ import annotations

import sqlite3
import time

import pytest
from conftest import shot
from hivetest import Servers
from playwright.async_api import Page, expect
from test_browser import open_logged_in

pytestmark = pytest.mark.slow

SIZES = [(1440, 900), (390, 844)]
NO_SIDEWAYS_SCROLL = "document.scrollingElement.scrollWidth <= window.innerWidth"


def stored(dashboard: Servers, count: int, needle: str) -> None:
    """`count` read messages from the manager to the operator, one of them `needle`, written in one
    transaction into the running broker's database (its triggers index them, as a send would)."""
    now = time.time() - 3600
    with sqlite3.connect(dashboard.config.db_path("broker"), timeout=30) as db:
        db.execute("PRAGMA busy_timeout = 30000")
        first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()[0]
        bodies = [f"routine status report {n}: all {n % 7} queues drained" for n in range(count - 1)]
        bodies.insert(count // 3, needle)
        db.executemany(
            "INSERT INTO messages (id, sender, body, created_at) VALUES (?, 'manager', ?, ?)",
            [(first + i, body, now + i * 0.01) for i, body in enumerate(bodies)],
        )
        db.executemany(
            "INSERT INTO deliveries (message_id, recipient, state, delivered_at) "
            "VALUES (?, 'operator', 'delivered', ?)",
            [(first + i, now + 1) for i in range(count)],
        )


async def test_a_long_word_wraps_and_search_finds_one_message_among_10000(page: Page, dashboard: Servers) -> None:
    stored(dashboard, 10_000, "the quokka escaped from the greenhouse at dawn")
    word = "x" * 150 + "y" * 150  # one 300-character word
    await dashboard.call("broker", "send", as_name="manager", to="operator", body=f"look: {word} (end)")
    await open_logged_in(page, dashboard, "/messages")
    body = page.locator(".hh-msg-body").filter(has_text=word).first
    await expect(body).to_be_visible(timeout=30_000)  # 200 rows drawn on a machine shared by other tests
    for width, height in SIZES:
        await page.set_viewport_size({"width": width, "height": height})
        await page.wait_for_timeout(300)  # layout settles
        scroll = await page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert await page.evaluate(NO_SIDEWAYS_SCROLL), f"sideways scroll at {width}×{height}: {scroll}"
        box = await body.bounding_box()
        assert box is not None and box["x"] + box["width"] <= width, box
        await shot(page, f"messages-long-word-{width}x{height}")

    await page.set_viewport_size({"width": 1440, "height": 900})
    # A whole-page screenshot of 200 stacked rows can keep a busy browser from answering the
    # dashboard for seconds, which then reloads the page: search once it is drawn (again).
    await expect(page.get_by_text("1 unread")).to_be_visible(timeout=30_000)
    search = page.get_by_label("search messages")
    await search.fill("quokka")
    await search.press("Enter")
    await expect(page.get_by_text("1 found for 'quokka'")).to_be_visible(timeout=15_000)
    results = page.locator(".hh-hits .hh-msg")
    await expect(results).to_have_count(1)
    await expect(results.get_by_text("the quokka escaped from the greenhouse at dawn")).to_be_visible()
    await expect(results.get_by_text("manager → operator")).to_be_visible()
    await shot(page, "messages-search-1440x900")
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.wait_for_timeout(300)
    assert await page.evaluate(NO_SIDEWAYS_SCROLL)
    await shot(page, "messages-search-390x844")

    await search.fill("queues drained")
    await search.press("Enter")
    await expect(page.get_by_text("100 found for 'queues drained' (the newest 100")).to_be_visible(timeout=15_000)
    await expect(page.locator(".hh-hits .hh-msg")).to_have_count(100)
