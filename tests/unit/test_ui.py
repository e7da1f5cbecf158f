"""The dashboard's small rules on their own."""

from __future__ import annotations

from hyperhive.ui.app import storage_secret
from hyperhive.ui.pages.login import _local


def test_a_login_only_redirects_within_the_dashboard() -> None:
    assert _local("/approvals") == "/approvals" and _local("/agent/alice") == "/agent/alice"
    for elsewhere in ("//evil.example", "https://evil.example", "/\\\\evil.example", "", "approvals"):
        assert _local(elsewhere) == "/"


def test_sessions_survive_a_restart_but_not_a_new_password() -> None:
    assert storage_secret("a") == storage_secret("a") != storage_secret("b")
