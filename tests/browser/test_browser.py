"""An operator's day in a real browser: log in, approve, answer, stop, look at every page."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import shot
from hivetest import Servers
from playwright.async_api import ConsoleMessage, Locator, Page, expect

pytestmark = pytest.mark.slow
RUNNING = re.compile(r"^running")  # a sleeper's health badge: "running · no harness"


def url_of(dashboard: Servers, path: str = "/") -> str:
    return dashboard.processes["dashboard"].url + path


async def open_logged_in(page: Page, dashboard: Servers, path: str = "/") -> None:
    """With an operator token pasted into the login form (a token never travels in a URL)."""
    await page.goto(url_of(dashboard, f"/login?redirect_to={path}"))
    await page.get_by_label("password or operator token").fill(dashboard.token("operator"))
    await page.get_by_role("button", name="log in").click()
    await expect(page.get_by_role("link", name="◆ hyperhive")).to_be_visible()  # the frame, at any width


def agent_row(page: Page, name: str) -> Locator:
    return page.locator(".hh-swarm").filter(has=page.get_by_role("link", name=name, exact=True))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15) -> Any:
    """Poll `check` until it returns something truthy (a server carries the click out after the toast)."""
    for _ in range(int(timeout / 0.1)):
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {timeout} s: {check}")


async def test_the_password_logs_in(page: Page, dashboard: Servers, password: str) -> None:
    await page.goto(url_of(dashboard))
    await expect(page).to_have_url(re.compile(r"/login\?redirect_to=/$"))
    await shot(page, "login")
    await page.get_by_label("password or operator token").fill("not it")
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("not the dashboard password or an operator token")).to_be_visible()
    await page.get_by_label("password or operator token").fill(password)
    await page.get_by_role("button", name="log in").click()
    await expect(page.get_by_text("◆ swarm")).to_be_visible()
    await expect(agent_row(page, "manager").get_by_text(RUNNING)).to_be_visible()


async def test_a_spawn_request_is_approved(page: Page, dashboard: Servers) -> None:
    request = await dashboard.call("approvals", "request_spawn", as_name="manager", name="bob", reason="more hands")
    rid = request["id"]
    await open_logged_in(page, dashboard, "/approvals")
    card = page.locator(".q-card").filter(has_text=f"#{rid} spawn · bob")
    await expect(card.get_by_text("more hands")).to_be_visible()  # why the manager asks
    await expect(card.locator(".hh-summary").get_by_text("everyone")).to_be_visible()  # bob's config, summarised
    await expect(page.get_by_role("link", name="approvals (1)")).to_be_visible()
    await shot(page, "approvals")
    await card.get_by_role("button", name="approve").click()
    # approving carries the spawn out (agent made and started): seconds on a busy machine
    await expect(page.get_by_text(f"#{rid} approved")).to_be_visible(timeout=30_000)
    await expect(page.get_by_text(f"#{rid} spawn bob · applied · by operator")).to_be_visible()
    await expect(page.get_by_role("link", name="approvals", exact=True)).to_be_visible()

    async def bob_runs() -> bool:
        return (await dashboard.call("lifecycle", "agent_status", name="bob"))["state"] == "running"

    await eventually(bob_runs)


async def test_a_question_is_answered_with_options(page: Page, dashboard: Servers) -> None:
    asked = await dashboard.call(
        "operator", "ask_operator", as_name="manager",
        question="which regions?", options=["eu", "us", "asia"], multi=True, ttl_seconds=600,
    )  # fmt: skip
    await open_logged_in(page, dashboard, "/messages")  # the badge and drawer of questions are on every page
    await page.get_by_role("button", name="questions").click()
    card = page.locator(".q-card").filter(has_text="which regions?")
    await expect(card.get_by_text(re.compile(r"^(9|10) m$"))).to_be_visible()  # the ttl counts down
    await card.get_by_label("answer").click()
    await page.get_by_role("option", name="eu").click()
    await page.get_by_role("option", name="asia").click()
    await page.keyboard.press("Escape")
    await shot(page, "question")
    await card.get_by_role("button", name="answer").click()
    await expect(page.get_by_text(f"#{asked['id']} answered")).to_be_visible()
    await expect(card).to_have_count(0)

    async def answered() -> dict[str, Any] | None:
        asks = await dashboard.call("operator", "list_my_asks", as_name="manager")
        return next((q for q in asks["questions"] if q["id"] == asked["id"] and q["state"] == "answered"), None)

    assert (await eventually(answered))["answer"] == "eu, asia"


async def test_an_agent_is_stopped_after_one_confirmation(page: Page, dashboard: Servers) -> None:
    await dashboard.call("lifecycle", "create_agent", name="dave")
    await open_logged_in(page, dashboard)
    row = agent_row(page, "dave")
    await expect(row.get_by_text(RUNNING)).to_be_visible()
    await row.get_by_role("button", name="stop", exact=True).click()
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_text("stop dave?")).to_be_visible()
    await dialog.get_by_role("button", name="stop").click()
    await expect(row.get_by_text("stopped", exact=True)).to_be_visible()
    assert (await dashboard.call("lifecycle", "agent_status", name="dave"))["state"] == "stopped"

    await row.get_by_role("button", name="start", exact=True).click()
    await expect(row.get_by_text(RUNNING)).to_be_visible()
    more = row.get_by_role("button", name="more actions for dave")  # the rarer actions' menu
    await more.focus()  # by keyboard: Enter opens it on its first item, Escape closes it
    await page.keyboard.press("Enter")
    await expect(row.get_by_role("menuitem", name="restart")).to_be_focused()
    await expect(row.get_by_role("menuitem", name="kill")).to_be_enabled()
    await page.keyboard.press("Escape")
    await expect(row.get_by_role("menu")).to_be_hidden()
    await expect(more).to_be_focused()
    await more.click()
    await page.mouse.click(5, 300)  # a click elsewhere closes it too
    await expect(row.get_by_role("menu")).to_be_hidden()
    await more.click()
    await row.get_by_role("menuitem", name="kill").click()
    await expect(page.get_by_role("dialog").get_by_text("kill dave?")).to_be_visible()  # not closed with the menu
    await page.get_by_role("dialog").get_by_role("button", name="kill").click()
    await expect(row.get_by_text("stopped", exact=True)).to_be_visible()
    await shot(page, "swarm")


async def test_every_page_renders_without_browser_errors(page: Page, dashboard: Servers) -> None:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    (dashboard.home / "agents" / "manager" / "state" / "notes.md").write_text("# notes\nremember the milk\n")
    await dashboard.call("broker", "send", as_name="manager", to="operator", body="status: all quiet")

    await open_logged_in(page, dashboard, "/messages")
    await expect(page.get_by_text("status: all quiet").first).to_be_visible()
    await shot(page, "messages")
    await page.get_by_role("link", name="questions").click()
    await expect(page.get_by_text("which regions? · answered: eu, asia")).to_be_visible()
    await shot(page, "questions")
    await page.get_by_role("link", name="swarm").click()
    await agent_row(page, "manager").get_by_role("link", name="manager").click()
    await expect(page.get_by_text("◆ manager")).to_be_visible()
    await shot(page, "agent-log")
    await page.get_by_role("tab", name="config").click()
    await expect(page.get_by_text('role = "manager"')).to_be_visible()
    await shot(page, "agent-config")
    await page.get_by_role("tab", name="files").click()
    await expect(page.get_by_text("remember the milk")).to_be_visible()  # notes.md opens by itself
    await shot(page, "agent-files")
    await page.get_by_role("tab", name="stats").click()
    await expect(page.get_by_text(re.compile(r"no turns recorded yet|\d+ turns? · \d+ errors?"))).to_be_visible()
    await page.wait_for_timeout(500)  # the charts' first frame
    await shot(page, "agent-stats")
    assert errors == []


def test_the_dashboard_runs_as_an_unprivileged_user(dashboard: Servers) -> None:
    """Started as root it drops to [dashboard] user ("nobody"), unless that user could not run it
    (the checkout unreachable for it, say), which its log names. Its sessions are that user's."""
    process = dashboard.processes["dashboard"]
    assert process.process is not None
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    if os.geteuid() != 0:
        assert uid == os.geteuid()
    elif uid == 0:
        assert "the dashboard stays root: " in process.stderr()
    else:
        assert uid == pwd.getpwnam("nobody").pw_uid and "the dashboard runs as nobody" in process.stderr()
    sessions = dashboard.home / "dashboard"
    assert sessions.stat().st_uid == uid and sessions.stat().st_mode & 0o777 == 0o700
    assert any(sessions.glob("storage-user-*.json"))  # the logins above kept their sessions here


async def test_the_approvals_page_and_the_questions_drawer_at_desktop_and_phone_sizes(
    page: Page, dashboard: Servers
) -> None:
    """A spawn's summary with its risky fields, a failed approval in red in the history, and the
    questions drawer with an urgent countdown: at 1440×900 and 390×844, nothing in a card overflowing."""
    failing = await dashboard.call(
        "approvals", "request_spawn", as_name="manager", name="ivan", reason="a second pair of eyes on the logs"
    )
    await dashboard.call("lifecycle", "create_draft", name="ivan")  # made meanwhile: approving ivan fails
    await dashboard.call("approvals", "request_spawn_draft", as_name="manager", name="judy")
    config = dashboard.home / "agents" / "judy" / "config"
    (config / "agent.toml").write_text('model = "opus"\nbash = ["git diff:*", "rm:*"]\n[budget]\nusd_per_day = 2\n')
    sha = await _commit(config, "judy: reviews diffs\n\nChecked: git diff and rm inside her own tree only.")
    judy = await dashboard.call(
        "approvals", "request_spawn_commit", as_name="manager", name="judy", commit_ref=sha,
        reason="alice asked for a reviewer " + "x" * 300,
    )  # fmt: skip
    await dashboard.call("operator", "ask_operator", as_name="manager", question="ship it today?", ttl_seconds=200)
    await open_logged_in(page, dashboard, "/approvals")
    failed = page.locator(".q-card").filter(has_text=f"#{failing['id']} spawn · ivan")
    await failed.get_by_role("button", name="approve").click()
    await expect(page.get_by_text(f"#{failing['id']} approved but failed")).to_be_visible(timeout=30_000)
    line = page.locator(".q-expansion-item").filter(has_text=f"#{failing['id']} spawn ivan · failed")
    await expect(line).to_have_class(re.compile("text-negative"))
    card = page.locator(".q-card").filter(has_text=f"#{judy['id']} spawn from draft · judy")
    await expect(card.get_by_text("Checked: git diff and rm")).to_be_visible()
    await expect(card.get_by_text("risky", exact=True)).to_be_visible()
    for width, height in ((1440, 900), (390, 844)):
        await page.set_viewport_size({"width": width, "height": height})
        await expect(card.get_by_text("risky: widens 1")).to_be_visible()
        # Nothing on the page's cards is wider than its box: long reasons and values wrap.
        overflowing = await card.evaluate(
            "c => [c, ...c.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1).length"
        )
        assert overflowing == 0
        await shot(page, f"approvals-{width}")
        await page.get_by_role("button", name="questions").click()
        drawer = page.locator(".q-drawer").filter(has_text="ship it today?")
        await expect(drawer.get_by_text(re.compile(r"^[23] m$"))).to_be_visible()
        await shot(page, f"questions-drawer-{width}")
        await drawer.get_by_role("button", name="close").click()
    assert await page.title() == "(1) hyperhive"


async def _commit(repo: Path, message: str) -> str:
    """Commit what is in the config repo, as the manager would."""
    for args in (["add", "-A"], ["commit", "-qm", message], ["rev-parse", "HEAD"]):
        process = await asyncio.create_subprocess_exec(
            "git", "-c", "user.name=manager", "-c", "user.email=m@hive", "-c", "safe.directory=*", "-C", str(repo),
            *args, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
    return out.decode().strip()
