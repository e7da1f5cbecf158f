"""Every page at 1440×900 and at a phone's 390×844, checked in Chromium (issue 16 §5):

- axe-core (tests/tools/node_modules/axe-core, injected into the page): no serious or critical
  violation (color-contrast ≥ 4.5:1, every button named, …);
- what axe does not check: every control (button, input, select, chip, tab, checkbox, a clickable
  label, a header link) at least 32 px high, all text at least 13 px, every icon button named by an
  aria-label (not only a tooltip);
- no sideways scroll (the page is never wider than the window) and the header never over the page.

Each check collects what fails on every page first and then fails once, naming the page, the rule and
the elements, so a failure says what to fix. Screenshots of every page at both sizes are saved as
test-artifacts/screenshots/look-PAGE-WIDTH.png.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import ROOT, shot
from hivetest import Servers
from playwright.async_api import Browser, Page, expect
from test_browser import open_logged_in, url_of

pytestmark = pytest.mark.slow

AXE = ROOT / "tests" / "tools" / "node_modules" / "axe-core" / "axe.min.js"
SIZES = {"desktop": (1440, 900), "phone": (390, 844)}
MIN_CONTROL_PX = 32
MIN_TEXT_PX = 13

# axe's WCAG 2.x A/AA rules plus its best practices; only serious and critical violations fail.
AXE_RUN = """async () => {
  const result = await axe.run(document, {
    runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']},
    resultTypes: ['violations'],
  });
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 8).map(n => ({
                  target: n.target.join(' '), html: n.html.slice(0, 300), why: n.failureSummary}))}));
}"""

# What axe leaves out. An element is measured when it is shown (has a box, not hidden); the controls
# are Quasar's (buttons, fields, chips, tabs, checkboxes, menu items), labels acting as buttons
# (cursor-pointer) and the header's links. Material icons are glyphs, not text.
MEASURE = r"""([minControl, minText]) => {
  const shown = e => {
    const r = e.getBoundingClientRect(), s = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'
      && !e.closest('[aria-hidden="true"], .q-tooltip');
  };
  const name = e => {
    const said = e.tagName + (e.getAttribute('aria-label') ? `[aria-label="${e.getAttribute('aria-label')}"]` : '')
      + '.' + [...e.classList].slice(0, 4).join('.');
    return `${said} "${(e.innerText || e.value || '').trim().slice(0, 30)}"`;
  };
  const controls = '.q-btn, .q-field__control, .q-chip, .q-tab, .q-checkbox, .q-toggle, .q-radio, '
    + '.q-item--clickable, .cursor-pointer, .q-header a';
  const small = [...document.querySelectorAll(controls)].filter(shown)
    .filter(e => !e.parentElement.closest(controls))  // a part of a control (an expansion's arrow) is not one
    .filter(e => e.getBoundingClientRect().height < minControl - 0.5)
    .map(e => `${name(e)} ${Math.round(e.getBoundingClientRect().height * 10) / 10} px high`);
  const tiny = [];
  for (const e of document.querySelectorAll('body *')) {
    if (e.closest('.q-icon, .material-icons, .xterm-helpers, script, style') || !shown(e)) continue;
    const text = [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    const size = parseFloat(getComputedStyle(e).fontSize);
    if (text && size < minText) tiny.push(`${name(e)} ${size} px`);
  }
  const unnamed = [...document.querySelectorAll('.q-btn')].filter(shown).filter(b => {
    const text = [...b.querySelectorAll('.q-btn__content > :not(.q-icon), .q-btn__content')]
      .flatMap(e => [...e.childNodes]).filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    return !text && !b.getAttribute('aria-label') && !b.getAttribute('aria-labelledby');
  }).map(name);
  // Text on a solid colour of its own (a toast, a badge, a chip, a filled button): axe leaves a toast
  // "incomplete" (the notifications' layer overlaps it), so the contrast is computed here.
  const rgb = c => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(v => v / 255)
    .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const faint = [];
  const solid = '.q-notification, .q-badge, .q-chip, .q-btn:not(.q-btn--flat):not(.q-btn--outline)';
  for (const e of document.querySelectorAll(solid)) {
    if (!shown(e) || !e.innerText.trim()) continue;
    const s = getComputedStyle(e), fg = rgb(s.color), bg = rgb(s.backgroundColor);
    if (bg.length < 3 || (bg.length > 3 && bg[3] < 1)) continue;  // no solid colour of its own
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a), ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < 4.5) faint.push(`${name(e)} ${s.color} on ${s.backgroundColor}: ${ratio.toFixed(2)}:1`);
  }
  const header = document.querySelector('.q-header');
  const container = document.querySelector('.q-page-container');
  let covered = null;
  if (header && container && shown(header)) {
    // where the page starts when scrolled to its top (a click may have scrolled it; the header is fixed;
    // an open dialog fixes the body at top: -scrolled)
    const scrolled = window.scrollY - (parseFloat(document.body.style.top) || 0);
    const under = container.getBoundingClientRect().top + scrolled + parseFloat(getComputedStyle(container).paddingTop);
    const bottom = header.getBoundingClientRect().bottom;
    if (bottom > under + 1) covered = `the header ends at ${bottom} px, the page starts at ${under} px`;
  }
  return {
    small: [...new Set(small)], tiny: [...new Set(tiny)], faint: [...new Set(faint)], unnamed: [...new Set(unnamed)],
    covered,
    sideways: document.scrollingElement.scrollWidth - window.innerWidth,
    wide: [...document.querySelectorAll('body *')].filter(shown)
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 10)
      .map(e => `${name(e)} right edge ${Math.round(e.getBoundingClientRect().right)}`),
    header: header ? Math.round(header.getBoundingClientRect().height) : 0,
  };
}"""


class Findings:
    """What fails on each page, reported all at once at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, view: str, what: str, details: list[str]) -> None:
        if details:
            self.lines.append(f"{view}: {what}\n" + "".join(f"    {d}\n" for d in details))

    async def check(self, page: Page, view: str, width: int) -> None:
        """Let the page settle, save its screenshot, run axe and the measurements on it."""
        await page.wait_for_load_state("networkidle")
        await page.wait_for_timeout(400)  # the websocket's first updates (timers at 0.1 s, tables)
        await shot(page, f"look-{view}-{width}")
        if not await page.evaluate("typeof window.axe !== 'undefined'"):
            await page.add_script_tag(path=str(AXE))
        for violation in await page.evaluate(AXE_RUN):
            self.add(
                view,
                f"axe {violation['impact']} {violation['id']}: {violation['help']}",
                [f"{node['target']} {node['html']}  ({' '.join(node['why'].split())})" for node in violation["nodes"]],
            )
        measured: dict[str, Any] = await page.evaluate(MEASURE, [MIN_CONTROL_PX, MIN_TEXT_PX])
        self.add(view, f"controls under {MIN_CONTROL_PX} px high", measured["small"])
        self.add(view, f"text under {MIN_TEXT_PX} px", measured["tiny"])
        self.add(view, "icon buttons without an aria-label", measured["unnamed"])
        self.add(view, "text on its own colour under 4.5:1", measured["faint"])
        if measured["sideways"] > 0:
            self.add(view, f"scrolls sideways by {measured['sideways']} px", measured["wide"])
        if measured["covered"]:
            self.add(view, "the header covers the page", [measured["covered"]])
        if width < 600 and measured["header"] > 0.25 * SIZES["phone"][1]:
            self.add(view, "the header takes over a quarter of a phone's screen", [f"{measured['header']} px high"])


@pytest.fixture(scope="module")
def hive(dashboard: Servers) -> Servers:
    """Something on every page: a running agent with a log and notes, messages, a pending approval
    and a decided one, a pending question, a shared file."""

    async def fill() -> None:
        await dashboard.call("lifecycle", "create_agent", name="lee")
        for _ in range(100):
            if (await dashboard.call("lifecycle", "agent_status", name="lee"))["state"] == "running":
                break
            await asyncio.sleep(0.1)
        await dashboard.call("broker", "send", as_name="manager", to="operator", body="status: all quiet")
        await dashboard.call("broker", "send", as_name="manager", to="lee", body="please review " + "y" * 300)
        await dashboard.call("approvals", "request_spawn", as_name="manager", name="kim", reason="more hands")
        denied = await dashboard.call("approvals", "request_spawn", as_name="manager", name="max", reason="spare")
        await dashboard.call("approvals", "deny", id=denied["id"], note="not now")
        await dashboard.call(
            "operator", "ask_operator", as_name="manager", question="ship it today?", options=["yes", "no"],
            ttl_seconds=3600,
        )  # fmt: skip

    asyncio.run(fill())
    state = dashboard.home / "agents" / "lee" / "state"
    (state / "notes.md").write_text("# notes\n- the plan is in work/plan.md\n")
    (state / "work").mkdir(exist_ok=True)
    (state / "work" / "plan.md").write_text("1. read\n2. write\n")
    with (dashboard.home / "logs" / "lee.log").open("a") as log:
        stamp = "2026-11-21 15:30:00,123 lee hyperhive.harness"
        log.writelines(f"{stamp} {level} line {n}\n" for n, level in enumerate(["INFO", "WARNING", "ERROR"] * 10))
    shared = dashboard.home / "shared"
    shared.mkdir(exist_ok=True)
    (shared / "plan.md").write_text("the plan\n")
    return dashboard


async def visit(page: Page, findings: Findings, width: int, hive: Servers) -> None:
    """Every page of the dashboard, each checked once it shows what it is for."""

    async def at(view: str, path: str, ready: Callable[[], Awaitable[None]]) -> None:
        await page.goto(url_of(hive, path))
        await ready()
        await findings.check(page, view, width)

    def text(value: str) -> Callable[[], Awaitable[None]]:
        return lambda: expect(page.get_by_text(value).first).to_be_visible()

    await at("swarm", "/", lambda: expect(page.get_by_role("link", name="lee", exact=True).first).to_be_visible())
    if width < 600:  # on a phone the header's links and the rarer buttons are in its menu
        await page.get_by_role("button", name="menu").click()
        await expect(page.get_by_role("menu").get_by_role("menuitem", name="messages")).to_be_visible()
        await findings.check(page, "nav-menu", width)
        # by keyboard: a click would leave the mouse over a swarm button, whose hover tint axe measures
        await page.get_by_role("menu").get_by_role("menuitem", name="desktop notifications").press("Enter")
    else:
        await page.get_by_role("button", name="desktop notifications").click()  # an info toast (white on cyan once)
    await expect(page.locator(".q-notification").get_by_text("desktop notifications: allow")).to_be_visible()
    await findings.check(page, "toast", width)
    await page.get_by_role("button", name="more actions for lee").click()  # a menu
    await expect(page.get_by_role("menuitem", name="rebuild")).to_be_visible()
    await findings.check(page, "swarm-menu", width)
    await page.keyboard.press("Escape")
    await (
        page.locator(".hh-swarm")
        .filter(has=page.get_by_role("link", name="lee", exact=True))
        .get_by_role("button", name="stop", exact=True)
        .click()
    )  # a confirmation
    await expect(page.get_by_role("dialog").get_by_text("stop lee?")).to_be_visible()
    await findings.check(page, "confirm", width)
    await page.get_by_role("dialog").get_by_role("button", name="cancel").click()
    await at("approvals", "/approvals", text("more hands"))
    await page.get_by_role("button", name="questions").click()
    await expect(page.locator(".q-drawer").get_by_text("ship it today?")).to_be_visible()
    await findings.check(page, "questions-drawer", width)
    await at("questions", "/questions", text("pending questions are in the drawer"))
    await at("messages", "/messages", text("status: all quiet"))
    await at("agent-log", "/agent/lee", text("ERROR line 29"))
    for tab, shows in (
        ("messages", "please review"),
        ("files", "the plan is in work/plan.md"),
        ("stats", "no turns recorded yet"),
        ("config", 'role = "agent"'),
    ):
        await page.get_by_role("tab", name=tab).click()
        await expect(page.get_by_text(shows).first).to_be_visible()
        await findings.check(page, f"agent-{tab}", width)
    if os.geteuid() == 0:  # the terminal needs a root lifecycle server
        await at("terminal", "/agent/lee/terminal", lambda: expect(page.locator(".xterm-rows")).to_contain_text("lee:"))
    await at("repos", "/repos", lambda: expect(page.get_by_role("link", name="docs")).to_be_visible())
    await at("repo", "/repos/docs", text("owner "))
    await at("shared", "/shared", text("plan.md"))
    await at("404", "/agent/nobody", text("no agent named 'nobody'"))


@pytest.mark.parametrize("size", list(SIZES))
async def test_every_page_passes_axe_and_the_look_rules(browser: Browser, hive: Servers, size: str) -> None:
    assert AXE.is_file(), f"{AXE} is missing: `scripts/setup.sh test` installs tests/tools (npm ci)"
    width, height = SIZES[size]
    findings = Findings()
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(20_000)
    try:
        await page.goto(url_of(hive, "/login"))
        await expect(page.get_by_role("button", name="log in")).to_be_visible()
        await findings.check(page, "login", width)
        await open_logged_in(page, hive)
        await visit(page, findings, width, hive)
    finally:
        await context.close()
    assert not findings.lines, f"{len(findings.lines)} findings at {width}×{height}:\n" + "".join(findings.lines)


async def test_the_checks_find_what_they_are_for(page: Page, hive: Servers) -> None:
    """The checker itself, on the login page with a bad corner added: each rule reports it."""
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(url_of(hive, "/login"))
    await expect(page.get_by_role("button", name="log in")).to_be_visible()
    await page.evaluate(
        """() => document.body.insertAdjacentHTML('beforeend',
        '<div style="background:#222"><button class="q-btn" style="height:20px;min-height:0 !important">'
        + '<i class="q-icon material-icons" aria-hidden="true">close</i></button>'
        + '<span style="color:#444;font-size:11px">faint small</span>'
        + '<span class="q-badge" style="background:#31ccec;color:#fff">cyan</span>'
        + '<div style="width:2000px">wide</div></div>')"""
    )
    findings = Findings()
    await findings.check(page, "bad", 390)
    report = "".join(findings.lines)
    for rule in (
        "axe critical button-name",
        "axe serious color-contrast",
        "controls under 32 px high",
        "text under 13 px",
        "icon buttons without an aria-label",
        "text on its own colour under 4.5:1",
        "scrolls sideways by",
    ):
        assert rule in report, report
