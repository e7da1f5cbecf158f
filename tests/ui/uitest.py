"""What the dashboard tests share besides fixtures."""

from __future__ import annotations

import gc
from typing import Final

from nicegui.testing import User

from hyperhive.ui.hive_view import HiveView

LOGIN_CODE: Final = "one-time-code-of-this-test"  # the dashboard's one-time login code in these tests


async def log_in(user: User, password: str, path: str = "/") -> None:
    await user.open(f"/login?redirect_to={path}")
    user.find(marker="secret").type(password)
    user.find(marker="login").click()
    await user.should_see("log out", retries=100)  # the frame's: only a logged-in page has it
    if path == "/":
        await user.should_see("◆ swarm", retries=100)


def the_hive() -> HiveView:
    """The dashboard's HiveView of this test (call it once logged in): an earlier test's, still in
    memory, has no page following it any more."""
    [hive] = [o for o in gc.get_objects() if isinstance(o, HiveView) and o.health_changed.callbacks]
    return hive
