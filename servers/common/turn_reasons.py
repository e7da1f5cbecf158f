"""Why an agent's harness is stuck, and what the operator does about it: one table for the
dashboard's "needs you" strip and the `hive` CLI.

A harness says why it is in "error" or "paused" in turn.json's `reason`, free text with numbers in
it ("waiting for messages: … trying again in 8 s"). `explain` maps a reason to a known problem
(a short summary and its fix) so that ten agents failing alike read as one line; an unknown
reason still groups, by its text without the numbers that change between agents and retries.
Pure functions, standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

MAX_SUMMARY: Final = 120  # an unknown reason's summary is cut here


@dataclass(frozen=True)
class KnownReason:
    key: str
    pattern: re.Pattern[str]
    summary: str
    fix: str  # NAME stands for the agent's name; with many agents the text keeps NAME


def _known(key: str, pattern: str, summary: str, fix: str) -> KnownReason:
    return KnownReason(key, re.compile(pattern, re.IGNORECASE), summary, fix)


# First match wins: the specific ones before the general ones.
KNOWN_REASONS: Final = (
    _known(
        "no-credentials",
        r"^no Claude credentials",
        "no Claude credentials",
        "add ANTHROPIC_API_KEY to hive.toml [harness.env] or run `hive claude NAME auth login`",
    ),
    _known(
        "credentials-refused",
        r"API error 401|invalid api key|authentication_error|OAuth token has expired",
        "Claude refused its credentials",
        "renew them: `hive claude NAME auth login`, or a new ANTHROPIC_API_KEY in hive.toml [harness.env]",
    ),
    _known(
        "agent-budget",
        r"^paused: budget",
        "its daily budget is reached",
        "raise it (`hive set-budget NAME USD`) or resume it for today (`hive resume NAME`)",
    ),
    _known(
        "hive-budget",
        r"^paused: hive budget",
        "the hive's daily budget is reached",
        "raise [budget] usd_per_day in hive.toml, or wait for 00:00 UTC",
    ),
    _known(
        "api-overloaded",
        r"API error (429|500|502|503|529)|overloaded|rate.?limit",
        "the Claude API is overloaded or rate-limited",
        "nothing to do: the harness tries again with backoff",
    ),
    _known(
        "broker-unreachable",
        r"^(waiting for messages|releasing messages|acknowledging messages): .*(unreachable|connect|refused|timed out)",
        "the broker is unreachable",
        "see the broker's output where `hive up` runs (it restarts a server that died); the harness retries",
    ),
    _known(
        "lifecycle-unreachable",
        r"^checking the budget: .*(unreachable|connect|refused|timed out)",
        "the lifecycle server is unreachable",
        "see the lifecycle server's output where `hive up` runs; the harness retries",
    ),
    _known(
        "unreadable",
        r"turn\.json",
        "its turn.json cannot be read",
        "restart it (`hive restart NAME`); if it comes back, see `hive logs NAME`",
    ),
)


@dataclass(frozen=True)
class Explained:
    key: str  # the known reason's key, or "other:<its text without numbers>"
    summary: str
    fix: str | None  # None: not a known problem; the reason is all there is to say

    def fix_for(self, names: list[str]) -> str | None:
        """The fix, with the agent's name when it is for one agent."""
        if self.fix is None:
            return None
        return self.fix.replace("NAME", names[0]) if len(names) == 1 else self.fix


_NUMBERS = re.compile(r"\d+(\.\d+)?")


def explain(reason: str | None) -> Explained:
    """The known problem behind a harness's reason, or the reason itself (numbers blanked for grouping)."""
    # The reason is the agent's to write (turn.json): no terminal escapes reach `hive agents`.
    text = "".join(c if c.isprintable() else " " for c in (reason or "no reason given")[:2000]).strip()
    for known in KNOWN_REASONS:
        if known.pattern.search(text):
            return Explained(known.key, known.summary, known.fix)
    summary = text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"
    return Explained(f"other:{_NUMBERS.sub('N', text)}", summary, None)


def problem_line(explained: Explained, names: list[str]) -> str:
    """'10 agents: no Claude credentials → add …' (one agent: its name, and the fix names it)."""
    who = names[0] if len(names) == 1 else f"{len(names)} agents"
    fix = explained.fix_for(names)
    return f"{who}: {explained.summary}" + (f" → {fix}" if fix else "")


def group_problems(stuck: Iterable[tuple[str, str | None]]) -> list[tuple[str, list[str]]]:
    """(agent, its reason) pairs as one line per problem with the agents it holds (sorted), the
    problem most agents share first: what the dashboard's strip and `hive agents` print."""
    grouped: dict[str, tuple[Explained, list[str]]] = {}
    for name, reason in stuck:
        explained = explain(reason)
        grouped.setdefault(explained.key, (explained, []))[1].append(name)
    ordered = sorted(grouped.values(), key=lambda group: (-len(group[1]), group[0].summary))
    return [(problem_line(explained, sorted(names)), sorted(names)) for explained, names in ordered]
