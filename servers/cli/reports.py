"""What the hive did: `hive stats [NAME]` (the harnesses' turn stats) and `hive audit` (the
lifecycle, approvals and operator servers' audit trails, merged, newest first)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click
from pydantic import BaseModel

from hyperhive.servers.cli.base import (
    call_hive,
    cli_words,
    echo_json,
    fail,
    home_option,
    json_option,
    main,
    parse_duration,
    print_table,
)
from hyperhive.servers.common.clock import iso
from hyperhive.servers.common.formatting import duration, plural, when

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from hyperhive.servers.cli.base import HiveServers
    from hyperhive.servers.lifecycle.models import AgentStats, TurnSummary

TOP_TOOLS = 3  # tools shown per agent in the table (--json has them all)


def top_tools(summary: TurnSummary, count: int = TOP_TOOLS) -> str:
    """'Bash 12, send 4, Read 3' (the summary's tools come most-called first)."""
    return ", ".join(f"{name} {calls}" for name, calls in list(summary.tool_calls.items())[:count]) or "-"


def stats_row(name: str, summary: TurnSummary) -> tuple[str, ...]:
    average = duration(summary.duration_p50, 2) if summary.duration_p50 is not None else "-"
    tokens = f"{summary.tokens_in:,}/{summary.tokens_out:,}"
    return (name, str(summary.turns), str(summary.errors), average, f"{summary.cost_usd:.2f}",
            str(summary.messages), tokens, top_tools(summary))  # fmt: skip


STATS_HEADER = ("name", "turns", "errors", "median turn", "cost $", "messages", "tokens in/out", "top tools")


@main.command()
@click.argument("name", required=False)
@click.option("--since", default="24h", show_default=True, help="Turns that ended within: 90m, 24h, 7d or seconds.")
@json_option
@home_option
def stats(name: str | None, since: str, as_json: bool, home: Path) -> None:
    """Turn stats of agent NAME, or of every agent and the hive: turns, errors, median turn time,
    cost, messages handled, tokens, the tools most called.

    \b
      hive stats                    every agent over the last 24 hours, then the hive
      hive stats alice --since 7d   alice's week, and her latest turns
      hive stats --json | jq '.[] | {name, cost: .summary.cost_usd}'
    --json prints each agent's stats (summary and turns) as a JSON array.
    """
    from hyperhive.servers.lifecycle.turnstats import summarise

    start = iso(time.time() - parse_duration(since))

    async def one(hive: HiveServers) -> list[AgentStats]:
        assert name is not None
        return [await hive.lifecycle.agent_stats(name, start)]

    async def every(hive: HiveServers) -> list[AgentStats]:
        listing = await hive.lifecycle.list_agents()
        names = [agent.name for agent in listing.agents if agent.kind == "agent"]
        return list(await asyncio.gather(*(hive.lifecycle.agent_stats(each, start) for each in names)))

    found = call_hive(home, one if name else every)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("◆ no agents")
        return
    rows: list[tuple[str, ...]] = [STATS_HEADER, *(stats_row(each.name, each.summary) for each in found)]
    if name is None:
        rows.append(stats_row("(hive)", summarise([turn for each in found for turn in each.turns])))
    click.echo(f"◆ turns ended within {since}")
    print_table(rows)
    if name is not None:
        turns = found[0].turns
        if not turns:
            click.echo(f"◆ {name} ended no turn within {since}")
        for turn in turns[-10:]:
            took = duration(turn.ended_at - turn.started_at)
            outcome = "ok" if turn.ok else f"error: {turn.error or turn.terminal_reason or '?'}"
            click.echo(
                f"  {when(iso(turn.ended_at))}  {took:>7}  ${turn.cost_usd:.2f}  "
                f"{plural(turn.messages, 'message')}  {outcome}"
            )


# ------------------------------------------------------------------------------------------ audit

Source = Literal["lifecycle", "approvals", "operator"]


class AuditLine(BaseModel):
    """One entry of one server's audit trail, as `hive audit` merges them."""

    server: Source
    at: str  # ISO 8601 UTC
    actor: str  # a principal, or "system"
    action: str  # the tool (lifecycle), or what happened to the request or question
    subject: str  # an agent's name, '*', 'request #3' or 'question #7'
    outcome: str  # ok, refused, failed, interrupted (lifecycle); the request's or question's state
    detail: str | None = None


async def _lifecycle_lines(hive: HiveServers, limit: int, agent: str | None) -> list[AuditLine]:
    entries = (await hive.lifecycle.audit(limit, agent)).entries
    return [
        AuditLine(server="lifecycle", at=e.at, actor=e.actor, action=e.action, subject=e.agent,
                  outcome=e.outcome, detail=e.detail)
        for e in entries
    ]  # fmt: skip


async def _approvals_lines(hive: HiveServers, limit: int, agent: str | None) -> list[AuditLine]:
    pending = (await hive.approvals.pending_approvals()).requests
    resolved = (await hive.approvals.approval_history(min(limit, 500))).requests
    lines = []
    for request in [*pending, *resolved]:
        if agent is not None and agent not in (request.agent, request.requested_by):
            continue
        for entry in request.audit:
            lines.append(
                AuditLine(server="approvals", at=entry.at, actor=entry.actor, action=entry.action,
                          subject=f"request #{request.id} ({request.kind} {request.agent})",
                          outcome=request.state, detail=entry.detail)
            )  # fmt: skip
    return lines


async def _operator_lines(hive: HiveServers, limit: int, agent: str | None) -> list[AuditLine]:
    pending = (await hive.operator.pending_questions()).questions
    resolved = (await hive.operator.question_history(min(limit, 500))).questions
    lines = [
        AuditLine(server="operator", at=q.asked_at, actor=q.asker, action="asked", subject=f"question #{q.id}",
                  outcome="pending", detail="to operator")
        for q in pending
        if agent is None or agent == q.asker
    ]  # fmt: skip
    for question in resolved:
        if agent is not None and agent not in (question.asker, question.to):
            continue
        for entry in question.audit:
            lines.append(
                AuditLine(server="operator", at=entry.at, actor=entry.actor, action=entry.action,
                          subject=f"question #{question.id}", outcome=question.state, detail=entry.detail)
            )  # fmt: skip
    return lines


SOURCES: dict[Source, Callable[[HiveServers, int, str | None], Awaitable[list[AuditLine]]]] = {
    "lifecycle": _lifecycle_lines,
    "approvals": _approvals_lines,
    "operator": _operator_lines,
}


def merge(trails: list[list[AuditLine]], limit: int) -> list[AuditLine]:
    """The newest `limit` lines of all trails, newest first (ISO times of one format sort as text)."""
    return sorted((line for trail in trails for line in trail), key=lambda line: line.at, reverse=True)[:limit]


@main.command()
@click.option("--agent", help="Only what concerns this agent (acted on, asking, or asked for).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="How many, newest first.")
@click.option(
    "--server", "servers", type=click.Choice(list(SOURCES)), multiple=True,
    help="Only this server's trail (repeat for more); default: all three.",
)  # fmt: skip
@json_option
@home_option
def audit(agent: str | None, limit: int, servers: tuple[Source, ...], as_json: bool, home: Path) -> None:
    """Who did what, when, and how it ended: actions on agents (lifecycle, refusals and failures
    too), approval requests (approvals) and questions (operator), merged, newest first.

    \b
      hive audit                               the latest 50 of all three
      hive audit --agent alice --limit 200     what concerns alice
      hive audit --server lifecycle --json     one trail, as a JSON array
    A server that does not answer is named, and the others are still shown.
    """
    from fastmcp.exceptions import ToolError

    from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable

    chosen = servers or tuple(SOURCES)

    async def gather(hive: HiveServers) -> list[list[AuditLine] | BaseException]:
        return list(
            await asyncio.gather(*(SOURCES[source](hive, limit, agent) for source in chosen), return_exceptions=True)
        )

    results = call_hive(home, gather)
    trails: list[list[AuditLine]] = []
    for source, result in zip(chosen, results, strict=True):
        if isinstance(result, ServerUnavailable):
            click.echo(f"✗ {source}: {result} (its trail is left out)", err=True)
        elif isinstance(result, ToolError | AuthRefused):
            fail(f"{source}: {cli_words(str(result))}")
        elif isinstance(result, BaseException):
            raise result
        else:
            trails.append(result)
    lines = merge(trails, limit)
    if as_json:
        echo_json(lines)
        return
    if not lines:
        click.echo("◆ nothing recorded")
        return
    for line in lines:
        what = f"{line.actor} {line.action} {line.subject} {line.outcome}"
        click.echo(f"{when(line.at)} {line.server:<9} {what}" + (f" · {line.detail}" if line.detail else ""))
