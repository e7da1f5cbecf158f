"""The operator's decisions: `hive approvals`, `approve`, `deny`; `questions`, `answer`,
`cancel-question`."""

from __future__ import annotations

from pathlib import Path

import click

from hyperhive.servers.approvals.models import Request
from hyperhive.servers.cli.base import (
    call_hive,
    echo_json,
    fail,
    home_option,
    json_option,
    main,
)
from hyperhive.servers.common.formatting import approval_outcome, duration, plural, request_title, summary_rows, when


def _echo_why(request: Request) -> None:
    """The requester's reason and the commit's message, indented under the request."""
    for label, text in (("why", request.reason), ("commit", request.message)):
        if text:
            lines = text.splitlines() or [""]
            click.echo(f"    {label}: {lines[0]}")
            for line in lines[1:]:
                click.echo(f"    {' ' * len(label)}  {line}")


def _echo_summary(request: Request) -> None:
    """A spawn's config, one field a line, the risky ones flagged."""
    if request.summary is None:
        return
    for row in summary_rows(request.summary):
        text = f"    {row.label:<12} {row.value}"
        if row.risky:
            click.secho(text + "  (risky)", fg="yellow", bold=True)
        else:
            click.echo(text)


def _echo_diff(diff: str) -> None:
    for line in diff.splitlines():
        colour = "green" if line.startswith("+") else "red" if line.startswith("-") else None
        click.secho("    " + line, fg=None if line.startswith(("+++", "---")) else colour)


@main.command()
@click.option("--history", "history", type=click.IntRange(1, 500), metavar="N", help="Show the N latest resolved.")
@click.option("--no-diff", is_flag=True, help="Leave out the diffs.")
@click.option(
    "--diff", "spawn_diff", is_flag=True, help="Show a new agent's config as a diff too, not only its summary."
)
@json_option
@home_option
def approvals(history: int | None, no_diff: bool, spawn_diff: bool, as_json: bool, home: Path) -> None:
    """List the requests waiting for your decision: why the manager asks, its commit message, and
    the diff each would apply (a new agent: a summary of its config; the diff with --diff).

    Each also lists its widenings: what the new config may do that the old could not (role,
    bash patterns, tools, recipients, extra MCP servers, sandbox settings, shared access, binds,
    a raised budget, agent.nix).
    Approve with `hive approve ID`, or deny with `hive deny ID --note TEXT`.

    \b
      hive approvals --no-diff        what waits, and what each widens
      hive approvals --history 20     the 20 latest decided, and how they ended
      hive approvals --json | jq '.[].id'
      hive approvals --diff           a new agent's whole config as a diff too
    """
    if history is not None:
        resolved = call_hive(home, lambda hive: hive.approvals.approval_history(history)).requests
        if as_json:
            echo_json(resolved)
            return
        click.echo(f"◆ {plural(len(resolved), 'resolved request')}, newest first")
        for request in resolved:
            reason = request.note or request.error
            click.secho(
                f"{request_title(request)} · {request.state} by {request.resolved_by} "
                f"at {when(request.resolved_at)}" + (f": {reason}" if reason else ""),
                fg="red" if request.state == "failed" else None,
            )
            _echo_why(request)
        return
    waiting = call_hive(home, lambda hive: hive.approvals.pending_approvals()).requests
    if as_json:
        echo_json(waiting)
        return
    click.echo(f"◆ {plural(len(waiting), 'request')} waiting" if waiting else "◆ no requests waiting")
    for request in waiting:
        line = f"{request_title(request)} · asked by {request.requested_by} at {when(request.requested_at)}"
        if request.state == "approving":  # approved; waiting for the lifecycle server to carry it out
            line += f" · approved by {request.resolved_by}, being carried out"
        click.echo(line)
        _echo_why(request)
        for widening in request.widenings:  # shown even without the diff: what it newly allows
            click.secho(f"    widens {widening}", fg="yellow", bold=True)
        _echo_summary(request)
        if request.diff and not no_diff and (request.summary is None or spawn_diff):
            _echo_diff(request.diff)


@main.command()
@click.argument("request_id", metavar="ID", type=int)
@home_option
def approve(request_id: int, home: Path) -> None:
    """Approve request ID: it is carried out now, and the manager told the outcome."""
    request = call_hive(home, lambda hive: hive.approvals.approve(request_id), timeout=300)
    outcome, how = approval_outcome(request)
    if how == "failed":
        fail(f"{request_title(request)}: {outcome}")
    click.echo(f"◆ {request_title(request)}: {outcome}")


@main.command()
@click.argument("request_id", metavar="ID", type=int)
@click.option("--note", required=True, help="Why: the manager reads it.")
@home_option
def deny(request_id: int, note: str, home: Path) -> None:
    """Deny request ID, saying why."""
    request = call_hive(home, lambda hive: hive.approvals.deny(request_id, note))
    click.echo(f"◆ {request_title(request)}: denied")


# -------------------------------------------------------------------------------------- questions


@main.command()
@json_option
@home_option
def questions(as_json: bool, home: Path) -> None:
    """List the questions waiting for your answer, oldest first.

    Answer with `hive answer ID TEXT…`, or cancel with `hive cancel-question ID`.

    \b
      hive questions
      hive answer 7 yes, ship it
      hive questions --json | jq -r '.[] | "\\(.id) \\(.asker)"'
    """
    waiting = call_hive(home, lambda hive: hive.operator.pending_questions()).questions
    if as_json:
        echo_json(waiting)
        return
    click.echo(f"◆ {plural(len(waiting), 'question')} waiting" if waiting else "◆ no questions waiting")
    for question in waiting:
        about = f" · about message #{question.about} (`hive thread {question.about}`)" if question.about else ""
        click.echo(f"#{question.id} from {question.asker} · {duration(question.seconds_left)} left{about}")
        for line in question.question.splitlines():
            click.echo(f"    {line}")
        if question.options:
            pick = "pick one or more" if question.multi else "pick one"
            click.echo(f"    {pick}: {' | '.join(question.options)}")


@main.command()
@click.argument("question_id", metavar="ID", type=int)
@click.argument("text", nargs=-1, required=True)
@home_option
def answer(question_id: int, text: tuple[str, ...], home: Path) -> None:
    """Answer question ID with TEXT; the asker gets it in its inbox.

    With options, TEXT is one of them; for a question that takes several, give each option as
    its own argument (quote options with spaces): hive answer 7 red "dark blue".
    """
    waiting = call_hive(home, lambda hive: hive.operator.pending_questions()).questions
    question = next((q for q in waiting if q.id == question_id), None)
    given: str | list[str] = " ".join(text)
    if question is not None and question.multi and len(text) > 1:
        given = list(text)
    resolved = call_hive(home, lambda hive: hive.operator.answer(question_id, given))
    click.echo(f"◆ question #{question_id}: answered {resolved.answer!r}")


@main.command(name="cancel-question")
@click.argument("question_id", metavar="ID", type=int)
@home_option
def cancel_question(question_id: int, home: Path) -> None:
    """Cancel question ID; its asker gets "[cancelled]"."""
    call_hive(home, lambda hive: hive.operator.cancel_question(question_id))
    click.echo(f"◆ question #{question_id}: cancelled")
