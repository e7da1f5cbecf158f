"""Which actions an agent's state allows: one definition for the agent page's header, the swarm's rows
and menus, and its bulk actions (which skip the agents an action does not apply to, and say why).

The states follow what the lifecycle server does with each call (servers/lifecycle/supervisor.py):
it refuses to start a running agent and to kill one that is not running; stop on a failed agent
keeps it stopped (no more restarts); restart and rebuild work from any state but stopping. A peer
runs outside the hive: none of them applies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, Literal

from hyperhive.servers.common.formatting import plural
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.models import AgentInfo, AgentState

AgentAction = Literal["start", "stop", "restart", "kill", "rebuild"]

# What each calls, in the order the agent page's header shows them.
AGENT_ACTIONS: Final[dict[AgentAction, Callable[[LifecycleClient, str], Awaitable[AgentInfo]]]] = {
    "start": LifecycleClient.start,
    "stop": LifecycleClient.stop,
    "restart": LifecycleClient.restart,
    "kill": LifecycleClient.kill,
    "rebuild": LifecycleClient.rebuild,
}
ACTION_STATES: Final[dict[AgentAction, frozenset[AgentState]]] = {
    "start": frozenset({"stopped", "failed"}),
    "stop": frozenset({"running", "starting", "restarting", "failed"}),
    "restart": frozenset({"running", "starting", "restarting", "failed"}),
    "kill": frozenset({"running", "starting"}),
    "rebuild": frozenset({"running", "starting", "restarting", "stopped", "failed"}),
}
ACTION_TIPS: Final[dict[AgentAction, str]] = {
    "start": "start its sandbox",
    "stop": "SIGTERM, then SIGKILL after the stop timeout (a failed agent stays stopped: no more restarts)",
    "restart": "stop it if it runs, then start it",
    "kill": "SIGKILL its sandbox now",
    "rebuild": "rebuild its sandbox from its applied config (restarts it if it runs)",
}
# All but start interrupt what the agent does: they ask first.
CONFIRMED: Final[frozenset[AgentAction]] = frozenset({"stop", "restart", "kill", "rebuild"})


def why_not(action: AgentAction, info: AgentInfo) -> str | None:
    """None if `action` applies to the agent as it is, else why not: "already stopped", "not running
    (failed)", "a peer"."""
    state = info.state
    if info.kind == "peer" or state == "peer":
        return "a peer, outside the hive"
    if state in ACTION_STATES[action]:
        return None
    if action == "start" and state in ("running", "starting", "restarting"):
        return f"already {state}"
    if action == "stop" and state in ("stopped", "stopping"):
        return f"already {state}"
    if action == "kill":
        return f"not running ({state})"
    return state


def can(action: AgentAction, info: AgentInfo) -> bool:
    """Whether `action` makes sense for the agent now: no start on a running agent, no stop on a stopped one."""
    return why_not(action, info) is None


def actions_for(info: AgentInfo) -> list[AgentAction]:
    """The actions the agent offers now, in the header's order."""
    return [action for action in AGENT_ACTIONS if can(action, info)]


def split(action: AgentAction, agents: Iterable[AgentInfo]) -> tuple[list[str], dict[str, str]]:
    """The names `action` applies to (sorted), and the others with why not."""
    applies: list[str] = []
    skipped: dict[str, str] = {}
    for info in sorted(agents, key=lambda info: info.name):
        reason = why_not(action, info)
        if reason is None:
            applies.append(info.name)
        else:
            skipped[info.name] = reason
    return applies, skipped


def skipped_text(skipped: dict[str, str]) -> str:
    """'sw-a, sw-b: already stopped; sw-c: not running (failed)': the skipped by reason."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    return "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())


def bulk_question(action: AgentAction, applies: Sequence[str], skipped: dict[str, str]) -> str:
    """The bulk confirmation: 'stop 2 agents: a, b? (skipped: c: already stopped)'."""
    text = f"{action} {plural(len(applies), 'agent')}: {', '.join(applies)}?"
    return text + (f" (skipped: {skipped_text(skipped)})" if skipped else "")
