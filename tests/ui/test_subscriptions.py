"""Pages follow the hive view's events only while they are shown: navigating inside the dashboard
deletes a sub-page (not the browser tab), and its handlers must go with it, or every visit to a page
adds its handlers again for as long as the tab stays open."""

from __future__ import annotations

import pytest
from hivetest import Servers
from nicegui import Event
from nicegui.testing import User
from uitest import log_in, swarm_see, the_hive

from hyperhive.ui.hive_view import HiveView

pytestmark = pytest.mark.slow

# Each page, and what shows it is built (its own subscriptions are made by then).
PAGES = (
    ("/messages", "◆ compose"),
    ("/approvals", "◆ history"),
    ("/questions", "◆ history"),
    ("/repos", "◆ repos"),
    ("/shared", "◆ shared workspace"),
    ("/agent/manager", "reset session"),
)
VISITS = 3


def subscribers(hive: HiveView) -> dict[str, int]:
    """How many handlers each of the view's events has."""
    return {name: len(event.callbacks) for name, event in vars(hive).items() if isinstance(event, Event)}


async def test_navigating_between_pages_leaves_no_handlers_behind(user: User, servers: Servers, password: str) -> None:
    await log_in(user, password)  # the swarm page, in the frame
    hive = the_hive()
    before = subscribers(hive)
    for _ in range(VISITS):
        for path, shown in PAGES:
            user.navigate.to(path)
            await user.should_see(shown, retries=50)
            user.navigate.to("/")
            await user.should_see("◆ swarm", retries=50)
    after = subscribers(hive)
    grew = {name: (before[name], count) for name, count in after.items() if count != before[name]}
    assert not grew, f"handlers (before, after {VISITS} visits of every page) that piled up: {grew}"


async def test_a_page_shown_follows_the_events(user: User, servers: Servers, password: str) -> None:
    """The handlers of the page on screen stay subscribed however often it was left and shown again."""
    await log_in(user, password)
    hive = the_hive()
    for _ in range(VISITS):
        user.navigate.to("/messages")
        await user.should_see("◆ compose", retries=50)
        user.navigate.to("/")
        await user.should_see("◆ swarm", retries=50)
    await servers.call("lifecycle", "set_model", name="manager", model="haiku")  # an agent_changed event
    try:
        await swarm_see(user, "model-manager", "haiku", retries=50)
        assert len([c for c in hive.agent_changed.callbacks if "SwarmPage" in c.func.__qualname__]) == 1
    finally:
        await servers.call("lifecycle", "set_model", name="manager", model=None)
