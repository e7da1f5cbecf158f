"""One wording for the CLI and the dashboard: times, durations, requests, turns."""

from __future__ import annotations

import time

import pytest

from hyperhive.servers.approvals.models import Request
from hyperhive.servers.common import diffs
from hyperhive.servers.common.formatting import (
    age,
    approval_outcome,
    clock,
    countdown,
    duration,
    epoch,
    last_turn_text,
    request_title,
    summary_rows,
    turn_text,
    when,
)
from hyperhive.servers.common.harnessdir import TurnState

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("seconds", "parts", "text"),
    [
        (0, 2, "0s"), (59, 2, "59s"), (250, 2, "4m 10s"), (3600, 2, "1h"), (3661, 2, "1h 1m"),
        (86_399, 2, "23h 59m"), (183_600, 2, "2d 3h"), (-5, 2, "0s"), (59.9, 2, "59s"),
        (250, 1, "4m"), (7199, 1, "1h"), (5, 1, "5s"),
    ],
)  # fmt: skip
def test_durations_read_as_their_largest_units(seconds: float, parts: int, text: str) -> None:
    assert duration(seconds, parts) == text


def test_ages_read_short_from_epoch_or_iso_times() -> None:
    assert age(NOW - 5, now=NOW) == "5s" and age(NOW - 600, now=NOW) == "10m" and age(NOW - 3 * 3600, now=NOW) == "3h"
    assert age(NOW - 250, parts=1, now=NOW) == "4m"
    assert age(None) == "-"
    iso = "2027-01-15T08:00:00Z"
    assert epoch(iso) == NOW and age(iso, now=NOW + 61) == "1m 1s"
    assert age(time.time() + 30) == "0s"  # a clock a little ahead of ours: never a negative age


def test_times_to_the_second() -> None:
    assert when("2026-01-02T03:04:05.123456+00:00") == "2026-01-02 03:04:05"
    assert when(None) == "-"
    assert clock("2026-01-02T03:04:05Z") == "03:04:05"


def _request(**fields: object) -> Request:
    row: dict[str, object] = dict(
        id=3, kind="apply_commit", agent="alice", commit_sha="0123456789abcdef", base_sha=None, state="pending",
        requested_by="manager", requested_at="2026-01-02T03:04:05Z", resolved_by=None, resolved_at=None,
        note=None, error=None, widenings=[],
    )  # fmt: skip
    return Request.model_validate(row | fields)


def test_request_titles_say_what_approving_does() -> None:
    assert request_title(_request()) == "#3 apply config alice @ 0123456789ab"
    assert request_title(_request(kind="spawn", commit_sha=None)) == "#3 spawn alice"
    assert request_title(_request(kind="spawn_commit")) == "#3 spawn from draft alice @ 0123456789ab"


def test_an_approval_that_failed_never_reads_as_done() -> None:
    assert approval_outcome(_request(state="applied")) == ("approved and applied", "done")
    waiting = approval_outcome(_request(state="approving"))
    assert waiting == ("approved; it is carried out when the lifecycle server answers", "waiting")
    failed = approval_outcome(_request(state="failed", error="alice already exists"))
    assert failed == ("approved but failed: alice already exists", "failed")
    assert approval_outcome(_request(state="failed"))[0] == "approved but failed: no reason given"


def test_turn_states_in_a_few_words() -> None:
    running = TurnState(state="running", since=NOW - 12, messages=2)
    assert turn_text(running, True, now=NOW) == "running 12s · 2 msgs"
    assert turn_text(running.model_copy(update={"messages": 1}), True, now=NOW) == "running 12s · 1 msg"
    assert turn_text(running.model_copy(update={"messages": 0}), True, now=NOW) == "running 12s"
    error = TurnState(state="error", since=NOW - 5, reason="set ANTHROPIC_API_KEY")
    assert turn_text(error, True, now=NOW) == "error 5s: set ANTHROPIC_API_KEY"
    unreadable = TurnState(state="unreadable", since=1.0, reason="turn.json is a fifo, not a regular file")
    assert turn_text(unreadable, True) == "unreadable: turn.json is a fifo, not a regular file"
    assert turn_text(TurnState(state="idle", since=NOW - 180), True, now=NOW) == "idle 3m"
    assert turn_text(None, True) == "no harness" and turn_text(None, False) == "-"


def test_the_last_turn_is_now_an_age_or_never() -> None:
    assert last_turn_text(TurnState(state="running", since=NOW, last_turn_at=NOW - 60), now=NOW) == "now"
    assert last_turn_text(TurnState(state="idle", since=NOW, last_turn_at=NOW - 250), now=NOW) == "4m ago"
    assert last_turn_text(TurnState(state="idle", since=NOW), now=NOW) == "never"
    assert last_turn_text(None) == "never"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4352, "1 h 12 m"), (7200, "2 h"), (7259, "2 h"), (299, "4 m"), (60, "1 m"), (42.9, "42 s"), (0, "expired"),
     (-5, "expired"), (90_000, "25 h")],
)  # fmt: skip
def test_a_countdown_reads_in_hours_and_minutes(seconds: float, text: str) -> None:
    assert countdown(seconds) == text


def test_a_spawn_summary_reads_as_rows_with_the_risky_ones_marked() -> None:
    summary = diffs.summary({"agent.toml": 'bash = ["rm:*"]\nallowed_recipients = ["*"]\n[tools]\nforge = []\n'})
    assert summary is not None
    rows = {row.label: row for row in summary_rows(summary)}
    assert rows["bash"] == ("bash", "rm:*", True) and rows["recipients"] == ("recipients", "everyone", False)
    assert rows["tools"].value == "forge: none; others: the role's defaults"
    assert rows["budget"].value == "no limit a day, no limit a turn" and "agent.nix" not in rows
    assert rows["sandbox"].value == "network default, runs the harness"
