"""The dashboard's repos pages and shared-workspace page against the real servers (a real forge with
a repo pushed to by the real git CLI), through NiceGUI's simulated user."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hivetest import Servers
from nicegui import ui
from nicegui.testing import User
from uitest import log_in

pytestmark = pytest.mark.slow


async def click(user: User, marker: str) -> None:
    """Click what `marker` marks once it is there (a listing loads after a round trip)."""
    await user.should_see(marker=marker)
    user.find(marker=marker).click()


async def test_repos_list_a_repo_page_browses_files_log_diff_pushes_and_grants(
    user: User, servers: Servers, password: str, tmp_path: Path
) -> None:
    await servers.call("forge", "create_repo", name="app", description="the app")
    sha = await asyncio.to_thread(servers.push_repo, tmp_path / "work", "app")
    await log_in(user, password, "/repos")
    await user.open("/repos")
    await user.should_see("◆ repos")
    await user.should_see(marker="repo-docs")
    await user.should_see("the app", marker="repo-app")
    await user.should_see("last push", marker="repo-app")

    await user.open("/repos/app")
    await user.should_see("◆ repo app")
    await user.should_see("owner operator")
    await click(user, "entry-README.md")
    await user.should_see("hello from the forge", marker="file-text")
    user.find(marker="entry-logo.bin").click()
    await user.should_see("binary file: not shown", marker="binary")
    await click(user, "entry-src")
    await click(user, "entry-src/main.py")
    await user.should_see("print(42)", marker="file-text")
    user.find(marker="crumb-top").click()
    await user.should_see(marker="entry-README.md")
    user.find(marker="files-ref").clear().type("nobranch").trigger("keydown.enter")
    await user.should_see("'nobranch' is no commit in repo 'app'")  # the forge's refusal, as a toast

    user.find(marker="tab-log").click()
    await click(user, f"commit-{sha[:12]}")
    await user.should_see("first", marker="commit-subject")
    await user.should_see("+hello from the forge", marker="diff")
    user.find(marker="tab-pushes").click()
    await user.should_see(f"operator refs/heads/main (new)..{sha[:12]}", marker="push")

    user.find(marker="grant-who").type("*")
    user.find(marker="grant").click()
    await user.should_see("*: read on app")
    await user.should_see("* read", marker="grant-*")
    listed = {repo["name"]: repo for repo in (await servers.call("forge", "list_repos"))["repos"]}
    assert listed["app"]["grants"] == {"*": "read"}
    # A name the forge would refuse is said as it is typed, and grant waits for a valid one.
    [who] = user.find(marker="grant-who").elements
    [grant] = user.find(marker="grant").elements
    assert isinstance(who, ui.input) and isinstance(grant, ui.button)
    user.find(marker="grant-who").type("Not Valid")
    assert who.error is not None and "an agent's name, 'manager', 'operator' or '*'" in who.error
    assert not grant.enabled
    user.find(marker="grant-who").clear().type("operator")  # the repo's owner: it writes already
    assert who.error == "operator owns app and writes to it already" and not grant.enabled
    user.find(marker="grant-who").clear().type("manager")
    assert who.error is None and grant.enabled
    user.find(marker="grant-who").clear()
    user.find(marker="revoke-*").click()
    await user.should_see("revoke *'s read on app?")
    user.find(marker="confirm").click()
    await user.should_see("*: revoked")
    await user.should_not_see(marker="grant-*")

    await user.open("/repos/ghost")
    await user.should_see("no repo named 'ghost'", marker="repo-missing")


async def test_the_shared_workspace_is_browsed_read_only_and_links_are_not_followed(
    user: User, servers: Servers, password: str
) -> None:
    shared = servers.home / "shared"
    assert shared.is_dir(), "made at the manager's start"
    (shared / "notes").mkdir()
    (shared / "notes" / "plan.md").write_text("the plan\n")
    (shared / "secret").symlink_to("/etc/shadow")
    await log_in(user, password, "/shared")
    await user.open("/shared")
    await user.should_see("◆ shared workspace")
    await user.should_see("link, not followed", marker="shared-secret")
    await click(user, "shared-notes")
    await click(user, "shared-notes/plan.md")
    await user.should_see("the plan", marker="shared-text")
    await user.should_not_see(marker="shared-secret")  # inside notes/ now
    user.find(marker="crumb-top").click()
    await user.should_see(marker="shared-secret")


async def test_a_forge_that_is_down_shows_the_banner_and_says_so(user: User, servers: Servers, password: str) -> None:
    forge = servers.processes["forge"]
    forge.stop()
    try:
        await log_in(user, password, "/repos")
        await user.open("/repos")
        await user.should_see("forge unreachable", marker="banner", retries=100)
        await user.should_see("the forge has not answered yet", marker="repos-empty")
    finally:
        forge.start()
    await user.should_see(marker="repo-docs", retries=100)
