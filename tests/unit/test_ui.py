"""The dashboard's small rules on their own."""

from __future__ import annotations

from hyperhive.ui.app import storage_secret
from hyperhive.ui.pages import _local, since


def test_a_login_only_redirects_within_the_dashboard() -> None:
    assert _local("/approvals") == "/approvals" and _local("/agent/alice") == "/agent/alice"
    for elsewhere in ("//evil.example", "https://evil.example", "/\\\\evil.example", "", "approvals"):
        assert _local(elsewhere) == "/"


def test_sessions_survive_a_restart_but_not_a_new_password() -> None:
    assert storage_secret("a") == storage_secret("a") != storage_secret("b")


def test_ages_read_short() -> None:
    import time

    now = time.time()
    assert since(now - 5) == "5 s" and since(now - 600) == "10 min" and since(now - 3 * 3600) == "3 h"
    assert since(None) == "-"
