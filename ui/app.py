"""The operator dashboard: a NiceGUI app that is an unprivileged MCP client of the hive.

`setup()` registers everything (login, pages, the hive view's poll loop) and `run()` serves it;
`hive serve dashboard` and `hive up` call them. Pages live in `pages/`, the live state they
show in `hive_view.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from nicegui import app, ui
from nicegui.storage import Storage

from hyperhive.servers.common.client import TokenSource
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.connections import PeerLimits, guarded_protocol
from hyperhive.ui import auth, pages
from hyperhive.ui.hive_view import HiveView

TITLE = "hyperhive"


def setup(
    config: HiveConfig,
    token: TokenSource,
    password: str,
    *,
    interval: float = 1.0,
    login_code: auth.LoginCode | None = None,
) -> Callable[[], None]:
    """Register the dashboard on NiceGUI's app; returns the root page to give ui.run."""
    Storage.path = config.dashboard_dir  # login sessions in the hive home, not in the working directory
    hive = HiveView(config, token, interval=interval)
    credentials = auth.Credentials(config, password, login_code)
    app.on_startup(hive.start)
    app.on_shutdown(hive.stop)
    app.add_middleware(auth.LoginRequired)
    return pages.register(hive, credentials)


def storage_secret(password: str) -> str:
    """Sessions signed with a key derived from the password: they survive restarts, not a new password."""
    return hashlib.sha256(b"hyperhive dashboard sessions\0" + password.encode()).hexdigest()


def run(
    config: HiveConfig, token: TokenSource, password: str, host: str, port: int, login_code: auth.LoginCode | None
) -> None:
    root = setup(config, token, password, login_code=login_code)
    ui.run(
        root,
        host=host,
        port=port,
        title=TITLE,
        language="en-US",  # the page's <html lang> (screen readers, axe's html-has-lang)
        dark=True,
        reload=False,
        tailwind=False,  # our own utility classes (pages/look.py): Tailwind's runtime compiler cost ~50 ms per page
        show=False,
        favicon="◆",
        storage_secret=storage_secret(password),
        uvicorn_logging_level="warning",
        # The servers' connection limits ([serving]); the socket.io websocket gives its place back.
        http=guarded_protocol(PeerLimits(config.serving)),
        timeout_keep_alive=config.serving.idle_timeout_seconds,
    )


def read_password(path: Path) -> str:
    return path.read_text().strip()
