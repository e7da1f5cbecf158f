"""How the hive's state reads to a person: one wording for the `hive` CLI and the dashboard.

Pure functions on the tools' typed results (no click, no NiceGUI), so a request, a turn or a
time says the same thing in a terminal and in a browser. Times are the servers' ISO 8601 UTC
strings or epoch seconds; `now` is a parameter where the text depends on it, for tests.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

if TYPE_CHECKING:  # types only: this kernel module must not import the servers' packages
    from hyperhive.servers.approvals.models import Request, RequestKind
    from hyperhive.servers.common.diffs import ConfigSummary
    from hyperhive.servers.common.harnessdir import TurnState
    from hyperhive.servers.lifecycle.models import AgentInfo, HostInfo

_UNITS: Final = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))
REQUEST_KINDS: Final[dict[RequestKind, str]] = {
    "apply_commit": "apply config",
    "spawn": "spawn",
    "spawn_commit": "spawn from draft",
}
Outcome = Literal["done", "waiting", "failed"]  # how an approval ended, for its colour or exit code


def duration(seconds: float, parts: int = 2) -> str:
    """Seconds as their `parts` largest units: 59s, 4m 10s, 23h 59m, 2d 3h (parts=1: 4m, 23h)."""
    left = max(0, int(seconds))
    shown: list[str] = []
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if count or shown:
            shown.append(f"{count}{unit}")
        if len(shown) == parts:
            break
    return " ".join(part for part in shown if not part.startswith("0")) or "0s"


def countdown(seconds: float) -> str:
    """Time left, in hours and minutes: '1 h 12 m', '2 h', '4 m'; seconds in the last minute ('42 s');
    'expired' at zero."""
    left = int(seconds)
    if left <= 0:
        return "expired"
    if left < 60:
        return f"{left} s"
    hours, minutes = divmod(left // 60, 60)
    if not hours:
        return f"{minutes} m"
    return f"{hours} h {minutes} m" if minutes else f"{hours} h"


def epoch(timestamp: float | str) -> float:
    """Epoch seconds of an ISO 8601 time (a trailing Z is UTC) or of epoch seconds."""
    if isinstance(timestamp, str):
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    return timestamp


def age(timestamp: float | str | None, *, parts: int = 2, now: float | None = None) -> str:
    """How long ago: '12s', '3m 5s' (as duration()); '-' for never."""
    if timestamp is None:
        return "-"
    return duration((time.time() if now is None else now) - epoch(timestamp), parts)


def when(timestamp: str | None) -> str:
    """An ISO 8601 UTC time to the second, without the T: '2026-01-02 03:04:05'; '-' for none."""
    return (timestamp or "-")[:19].replace("T", " ")


def clock(timestamp: str) -> str:
    """Only the time of day of an ISO 8601 time: '03:04:05' (for a flow of today's messages)."""
    return timestamp[11:19]


def request_kind(kind: RequestKind) -> str:
    return REQUEST_KINDS[kind]


def request_title(request: Request) -> str:
    """'#3 apply config alice @ 0123456789ab': what approving it does, and to which commit."""
    commit = f" @ {request.commit_sha[:12]}" if request.commit_sha else ""
    return f"#{request.id} {request_kind(request.kind)} {request.agent}{commit}"


def approval_outcome(request: Request) -> tuple[str, Outcome]:
    """What approving did, after the request's id or title: carried out, recorded but waiting for
    the lifecycle server, or failed and why (never "approved" alone for a failure)."""
    if request.state == "failed":
        return f"approved but failed: {request.error or 'no reason given'}", "failed"
    if request.state == "approving":
        return "approved; it is carried out when the lifecycle server answers", "waiting"
    return f"approved and {request.state}", "done"


class SummaryRow(NamedTuple):
    label: str
    value: str
    risky: bool  # it allows more than a default agent


def summary_rows(summary: ConfigSummary) -> list[SummaryRow]:
    """A spawn's config as label/value rows, the risky ones marked: one reading for CLI and dashboard."""
    risky = set(summary.risky)

    def listed(values: list[str], empty: str) -> str:
        return ", ".join(values) if values else empty

    def usd(value: float | None) -> str:
        return "no limit" if value is None else f"${value:g}"

    tools = [f"{server}: {', '.join(names) or 'none'}" for server, names in summary.tools.items()]
    rows = [
        SummaryRow("role", summary.role, "role" in risky),
        SummaryRow("model", summary.model, False),
        SummaryRow(
            "recipients",
            listed(["everyone" if r == "*" else r for r in summary.recipients], "nobody"),
            "recipients" in risky,
        ),
        SummaryRow("bash", listed(summary.bash, "none"), "bash" in risky),
        SummaryRow(
            "tools", "; ".join(tools) + ("; " if tools else "") + "others: the role's defaults", "tools" in risky
        ),
        SummaryRow("mcp servers", listed(summary.mcp_servers, "none"), "mcp_servers" in risky),
        SummaryRow("binds", listed(summary.binds, "none"), "binds" in risky),
        SummaryRow("shared", summary.shared, "shared" in risky),
        SummaryRow(
            "sandbox",
            f"network {summary.network or 'default'}, runs "
            + (shlex.join(summary.command) if summary.command else "the harness"),
            "sandbox" in risky,
        ),
        SummaryRow(
            "budget", f"{usd(summary.usd_per_day)} a day, {usd(summary.usd_per_turn)} a turn", "budget" in risky
        ),
    ]
    if summary.nix:
        rows.append(SummaryRow("agent.nix", "present: read the diff", "nix" in risky))
    return rows


def turn_text(turn: TurnState | None, agent_running: bool, *, now: float | None = None) -> str:
    """What an agent's harness is doing, in a few words: 'idle 3m', 'running 12s · 2 msgs',
    'error 5s: why'; 'no harness' for a running agent that reports none, '-' for a stopped one."""
    if turn is None:
        return "no harness" if agent_running else "-"
    since = age(turn.since, now=now)
    if turn.state == "running":
        count = turn.messages
        text = f"running {since}" + (f" · {count} msg{'' if count == 1 else 's'}" if count else "")
        return text + (f" · {turn.tool}" if turn.tool else "")
    if turn.state in ("error", "paused"):
        return f"{turn.state} {since}: {turn.reason or '?'}"
    if turn.state == "unreadable":  # lifecycle could not read its turn.json (a link, a fifo, garbage)
        return f"unreadable: {turn.reason or '?'}"
    return f"{turn.state} {since}"


def last_turn_text(turn: TurnState | None, *, now: float | None = None) -> str:
    """When its last turn ended: 'now' while one runs, '3m ago', 'never'."""
    running = turn is not None and turn.state == "running"
    return last_turn_words(running, turn.last_turn_at if turn else None, now=now)


def last_turn_words(running: bool, last_turn_at: float | None, *, now: float | None = None) -> str:
    """last_turn_text from its parts (a swarm row carries them, not the TurnState)."""
    if running:
        return "now"
    return f"{age(last_turn_at, parts=1, now=now)} ago" if last_turn_at else "never"


def grants_text(grants: Mapping[str, str] | None) -> str:
    """A repo's grants, writers first: 'bob write, * read'; '-' for none."""
    if not grants:
        return "-"
    ordered = sorted(grants.items(), key=lambda item: (item[1] != "write", item[0]))
    return ", ".join(f"{who} {access}" for who, access in ordered)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 agent', '2 agents', '0 agents'; `nouns` where adding an s is wrong ('1 inbox', '2 inboxes')."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


# --------------------------------------------------------------------------------- tools and health
_TOOL_ARGUMENT: Final = {  # the argument that says what a built-in tool call is about
    "Bash": "command", "Read": "file_path", "Write": "file_path", "Edit": "file_path",
    "Glob": "pattern", "Grep": "pattern",
}  # fmt: skip


def tool_text(name: str, arguments: Mapping[str, object] | None, limit: int = 60) -> str:
    """A tool call in a few words: 'Bash: git diff --stat', 'send → manager', 'Read: notes.md',
    'recv_batch' (a hyperhive tool by its own name), cut to `limit` with '…'."""
    arguments = arguments or {}
    short = name.rsplit("__", 1)[-1] if name.startswith("mcp__") else name
    key = _TOOL_ARGUMENT.get(name)
    if short == "send" and isinstance(arguments.get("to"), str):
        text = f"send → {arguments['to']}"
    elif key is not None and isinstance(arguments.get(key), str):
        text = f"{name}: {' '.join(str(arguments[key]).split())}"
    else:
        text = short
    return text if len(text) <= limit else text[: limit - 1] + "…"


Health = Literal[
    "failed", "error", "unreachable", "paused", "restarting", "starting", "working", "idle", "stopped", "peer"
]  # fmt: skip
# The swarm's order: what needs the operator first; "needs update" sorts between paused and working.
HEALTH_ORDER: Final[dict[Health, int]] = {
    "failed": 0, "error": 1, "unreachable": 2, "paused": 3, "restarting": 5, "starting": 5, "working": 6,
    "idle": 7, "stopped": 8, "peer": 9,
}  # fmt: skip
NEEDS_UPDATE_RANK: Final = 4


class HealthText(NamedTuple):
    """A health badge's text in three parts: `prefix`, the time since `since` (None: no time), `suffix`.
    A page that ticks the time itself (the swarm table, in the browser) gets the parts, not the text."""

    kind: Health
    prefix: str
    since: float | None = None
    suffix: str = ""

    def text(self, now: float | None = None) -> str:
        return self.prefix + (age(self.since, parts=1, now=now) if self.since is not None else "") + self.suffix


def health_text(agent: AgentInfo) -> HealthText:
    """One honest state for an agent, its sandbox and its harness together, and its badge's text:
    ('failed', 'failed: exit 1 · 3 restarts'), ('error', 'error: no Claude credentials…'),
    ('paused', 'paused: …'), ('working', 'working 12s · Bash: git diff'), ('idle', 'idle 3m'),
    ('unreachable', 'unreachable: host beta does not answer')."""
    turn = agent.turn
    if agent.kind == "peer":
        return HealthText("peer", "peer")
    if agent.state == "unreachable":  # its host's lifecycle server is silent: nothing else is known
        return HealthText("unreachable", f"unreachable: host {agent.host or '?'} does not answer")
    if agent.state == "failed":
        how = f"signal {agent.last_signal}" if agent.last_signal else f"exit {agent.last_exit_code}"
        restarts = agent.restart_count
        return HealthText("failed", f"failed: {how} · {restarts} restart{'' if restarts == 1 else 's'}")
    if agent.state in ("restarting", "stopping", "starting"):
        return HealthText("starting" if agent.state == "starting" else "restarting", agent.state)
    if agent.state != "running":
        return HealthText("stopped", "stopped")  # as asked: its last exit matters for a failed agent only
    if agent.problem:
        return HealthText("error", f"error: {agent.problem}")
    if turn is None:
        return HealthText("idle", "running · no harness")
    if turn.state in ("error", "unreadable"):
        return HealthText("error", f"error: {turn.reason or 'no reason given'}")
    if turn.state == "paused":
        return HealthText("paused", f"paused: {turn.reason or 'budget'}")
    if turn.state == "running":
        count = f" · {turn.messages} msg{'' if turn.messages == 1 else 's'}" if turn.messages else ""
        return HealthText("working", "working ", turn.since, count + (f" · {turn.tool}" if turn.tool else ""))
    if turn.state == "starting":
        return HealthText("starting", "starting")
    return HealthText("idle", "idle ", turn.since)


def health(agent: AgentInfo, *, now: float | None = None) -> tuple[Health, str]:
    """The kind and the whole text of health_text(agent), its time as of `now`."""
    parts = health_text(agent)
    return parts.kind, parts.text(now)


def health_rank(agent: AgentInfo) -> int:
    kind, _ = health(agent)
    rank = HEALTH_ORDER[kind]
    return min(rank, NEEDS_UPDATE_RANK) if agent.needs_update else rank


# ------------------------------------------------------------------------------------------- hosts
def host_state(host: HostInfo, *, now: float | None = None) -> str:
    """Up or down, and since when: 'up · seen 2s ago' (its last heartbeat; one host: 'up'),
    'down since 2026-01-02 03:04:05 (4m ago)'."""
    if host.up:
        return f"up · seen {age(host.last_seen, parts=1, now=now)} ago" if host.last_seen else "up"
    since = host.down_since or host.last_seen
    return f"down since {when(since)} ({age(since, parts=1, now=now)} ago)" if since else "down"


def host_load(host: HostInfo) -> str:
    """The agents placed on a host of those it takes: '3/100'."""
    return f"{host.agents}/{host.capacity}"


def unreachable_lines(agents: Iterable[AgentInfo]) -> list[str]:
    """The unreachable agents, one line per host: 'host beta does not answer: bob, carol are unreachable'."""
    by_host: dict[str, list[str]] = {}
    for agent in agents:
        if agent.state == "unreachable":
            by_host.setdefault(agent.host or "?", []).append(agent.name)
    return [
        f"host {host} does not answer: {', '.join(sorted(names))} {'is' if len(names) == 1 else 'are'} unreachable"
        for host, names in sorted(by_host.items())
    ]
