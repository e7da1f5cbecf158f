"""The dashboard's pages: one NiceGUI single-page app (a frame with the navigation, the
"unreachable" banner and the pending questions, around sub-pages), plus /login.

One module a page (swarm, approvals, questions, messages, agent), the frame and the login page
in their own, what they share in `widgets`. Every page is given the dashboard's `HiveView`
(no module-global state): it reads the view's state when it is built and then follows its
events, changing its own elements in place (a badge's text, a row's buttons); nothing on a
page polls the hive.
"""

from __future__ import annotations

from collections.abc import Callable

from nicegui import ui

from hyperhive.ui.auth import Credentials
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.frame import frame
from hyperhive.ui.pages.login import register_login
from hyperhive.ui.pages.look import apply_look


def register(hive: HiveView, credentials: Credentials) -> Callable[[], None]:
    """Register /login; return the root page (the frame and its sub-pages) to give ui.run."""
    ui.button.default_props("no-caps")  # labels as written: lowercase, as everywhere in hyperhive
    apply_look()  # colours, sizes and the rest every page shares
    register_login(credentials)

    def root() -> None:
        frame(hive)

    return root
