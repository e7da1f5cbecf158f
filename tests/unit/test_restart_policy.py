"""The restart policy on its own: what an ended sandbox leads to, case by case, without sandboxes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hyperhive.servers.lifecycle.backends.base import Change
from hyperhive.servers.lifecycle.restart_policy import MAX_BACKOFF, STEADY_SECONDS, Decision, RestartSettings, decide
from hyperhive.servers.lifecycle.store import AgentRow

STARTED = 1000.0
SETTINGS = RestartSettings(max_restarts=3, backoff_seconds=2.0)
RUNNING = AgentRow(
    name="alice",
    state="running",
    desired="running",
    started_at=STARTED,
    stopped_at=None,
    last_exit_code=None,
    last_signal=None,
    crashes=0,
    restart_count=0,
    applied_sha="a" * 40,
    built_sha="a" * 40,
    built_version="1",
    created_at=0.0,
)
SOON = STARTED + 5  # it ended 5 s after it started: not a steady run
CRASH = Change("alice", at=SOON, exit_code=1)
OOM = Change("alice", at=SOON, signal=9, reason="out of memory")
SIGTERM = Change("alice", at=SOON, signal=15)


def _crash(state: str | None, crashes: int, will_restart: bool, after: float | None, reissue: bool = False) -> Decision:
    return Decision("crash", True, True, reissue, state, crashes, True, will_restart, after)  # type: ignore[arg-type]


NO_RESTARTS = RestartSettings(max_restarts=0, backoff_seconds=2.0)
EXPECTED = Decision("expected", True, False, False, None, 0, False, False, None)

CASES = [
    # (what happened, the row, the change, the stop was asked for, settings, the decision)
    ("a crash with restarts left: restarting after the backoff",
     RUNNING, CRASH, False, SETTINGS, _crash("restarting", 1, True, 2.0)),
    ("the third crash in a row: four times the backoff",
     replace(RUNNING, crashes=2), CRASH, False, SETTINGS, _crash("restarting", 3, True, 8.0)),
    ("a crash past the limit: failed, not restarted",
     replace(RUNNING, crashes=3), CRASH, False, SETTINGS, _crash("failed", 4, False, None)),
    ("a crash after a steady run starts counting again",
     replace(RUNNING, crashes=3), Change("alice", at=STARTED + STEADY_SECONDS + 1, exit_code=1), False, SETTINGS,
     _crash("restarting", 1, True, 2.0)),
    ("a clean exit it was not asked for is a crash too",
     RUNNING, Change("alice", at=SOON, exit_code=0), False, SETTINGS, _crash("restarting", 1, True, 2.0)),
    ("OOM: a crash like any other (the reason goes in the event)",
     RUNNING, OOM, False, SETTINGS, _crash("restarting", 1, True, 2.0)),
    ("a stop the supervisor asked for: the exit is recorded, nothing else",
     replace(RUNNING, state="stopping"), SIGTERM, True, SETTINGS, EXPECTED),
    ("a kill by the operator: the same",
     replace(RUNNING, state="stopping", desired="stopped"), Change("alice", at=SOON, signal=9), True, SETTINGS,
     EXPECTED),
    ("a crash of an agent asked to stay stopped: failed",
     replace(RUNNING, desired="stopped"), CRASH, False, SETTINGS, _crash("failed", 1, False, None)),
    ("no restarts allowed at all: failed at the first crash",
     RUNNING, CRASH, False, NO_RESTARTS, _crash("failed", 1, False, None)),
    ("the platform restarts it itself: restarting, a new token, no restart of ours",
     RUNNING, Change("alice", at=SOON, exit_code=1, auto_restarting=True, restarts=2), False, NO_RESTARTS,
     _crash("restarting", 1, True, None, reissue=True)),
    ("a run older than the recorded one, ended while no server watched: reported only",
     RUNNING, Change("alice", at=SOON, exit_code=1, started_at=STARTED - 100), False, SETTINGS,
     Decision("stale", False, False, False, None, 0, True, False, None)),
    # The run found ended at boot (startup.reconcile marked it stopped and ended its instance), its
    # change handled while it is started again: the instance now is the new run's, and stays.
    ("the recorded run, found ended at boot, reported while stopped: exit and report, its instance ended already",
     replace(RUNNING, state="stopped"), Change("alice", at=SOON, signal=9, started_at=STARTED), False, SETTINGS,
     Decision("accounted", True, False, False, None, 0, True, False, None)),
    ("the same, handled while the next run is being started: that run's instance is not touched",
     replace(RUNNING, state="starting"), Change("alice", at=SOON, signal=9, started_at=STARTED), False, SETTINGS,
     Decision("accounted", True, False, False, None, 0, True, False, None)),
    ("a run newer than the recorded one ended while starting: a crash of the new run",
     replace(RUNNING, state="starting"), Change("alice", at=SOON, exit_code=1, started_at=STARTED + 1), False,
     SETTINGS, _crash(None, 1, True, None)),
    ("the first run of a new agent ended before it was recorded started: a crash",
     replace(RUNNING, state="starting", started_at=None), Change("alice", at=SOON, exit_code=1, started_at=STARTED),
     False, SETTINGS, _crash(None, 1, True, None)),
]  # fmt: skip


@pytest.mark.parametrize("case, row, change, expected, settings, decision", CASES, ids=[c[0] for c in CASES])
def test_decide(
    case: str, row: AgentRow, change: Change, expected: bool, settings: RestartSettings, decision: Decision
) -> None:
    assert decide(row, change, settings, expected=expected) == decision, case


def test_the_backoff_doubles_up_to_its_cap() -> None:
    settings = RestartSettings(max_restarts=100, backoff_seconds=1.0)
    delays = [decide(replace(RUNNING, crashes=n), CRASH, settings, expected=False).restart_after for n in range(12)]
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays[-1] == MAX_BACKOFF and all(d is not None and d <= MAX_BACKOFF for d in delays)


def test_a_row_never_started_counts_every_crash() -> None:
    row = replace(RUNNING, started_at=None, crashes=1)
    late = Change("alice", at=STARTED + 10 * STEADY_SECONDS, exit_code=1)
    assert decide(row, late, SETTINGS, expected=False).crashes == 2
