"""What to do when an agent's sandbox ends: the restart policy, as a pure function.

`decide` reads the agent's recorded row, what the backend reported and the restart settings, and
says what to record, whether to tell the manager and whether (and when) to start it again. No I/O:
crash handling carries the decision out (crash_handling.py), and tests/unit/test_restart_policy.py
walks the cases as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.lifecycle.backends.base import Change
from hyperhive.servers.lifecycle.store import AgentRow

STEADY_SECONDS: Final = 600.0  # running this long without a crash clears the crash count
MAX_BACKOFF: Final = 300.0


@dataclass(frozen=True, slots=True)
class RestartSettings:
    max_restarts: int  # agent.toml [sandbox] max_restarts; 0 for an agent with no applied config
    backoff_seconds: float  # hive.toml [lifecycle] restart_backoff_seconds: the first delay, doubled each crash
    steady_seconds: float = STEADY_SECONDS
    max_backoff: float = MAX_BACKOFF


@dataclass(frozen=True, slots=True)
class Decision:
    """What an ended sandbox leads to. `kind`: "expected" (a stop or kill we asked for), "stale" (a run
    older than the one recorded, ended while no server watched), "accounted" (the recorded run, already
    marked ended: found so at boot), "crash" (it ended unasked)."""

    kind: Literal["expected", "stale", "accounted", "crash"]
    record_exit: bool  # store its exit code and signal
    end_instance: bool  # every token of the run that ended stops working
    reissue_token: bool  # ... and the platform's own restart gets a token of a new instance
    state: Literal["restarting", "failed"] | None  # the state to record (with stopped_at and `crashes`); None: leave it
    crashes: int  # crashes in a row, counting this one (recorded only with `state`)
    report: bool  # tell the manager (a container_crash event)
    will_restart: bool  # what that event says
    restart_after: float | None  # seconds until we start it again ourselves; None: we do not


def decide(row: AgentRow, change: Change, settings: RestartSettings, *, expected: bool) -> Decision:
    """What to do about `change` (its sandbox ended) for the agent recorded as `row`.
    `expected`: the supervisor asked for this ending (stop, kill, restart, rebuild)."""
    if expected:
        return Decision("expected", True, False, False, None, row.crashes, False, False, None)
    if change.started_at is not None and row.started_at is not None and change.started_at < row.started_at:
        # A run that ended while no server watched; a newer one is already going. Report only.
        return Decision("stale", False, False, False, None, row.crashes, True, False, None)
    if row.state not in ("running", "restarting") and not change.auto_restarting and not _newer(change, row):
        # The recorded run, but already accounted for: found ended at boot (startup.reconcile) or
        # stopped, its instance ended then. The instance now current may be a new run's, being
        # started this very moment: ending it would pull that run's token from under it.
        return Decision("accounted", True, False, False, None, row.crashes, True, False, None)
    crashes = row.crashes + 1
    if row.started_at is not None and change.at - row.started_at > settings.steady_seconds:
        crashes = 1  # it had been running steadily: a new run of bad luck
    restart_ourselves = not change.auto_restarting and row.desired == "running" and crashes <= settings.max_restarts
    will_restart = restart_ourselves or change.auto_restarting
    state: Literal["restarting", "failed"] | None = None
    # "restarting" too: the platform restarted it before and has now given up (or it stopped from outside).
    if row.state in ("running", "restarting") or change.auto_restarting:
        state = "restarting" if will_restart else "failed"
    delay = None
    if restart_ourselves and row.state in ("running", "restarting"):
        delay = Backoff(settings.backoff_seconds, settings.max_backoff).delay(crashes)
    return Decision("crash", True, True, change.auto_restarting, state, crashes, True, will_restart, delay)


def _newer(change: Change, row: AgentRow) -> bool:
    """Whether the run that ended started after the recorded one (a start not yet recorded)."""
    return change.started_at is not None and (row.started_at is None or change.started_at > row.started_at)
