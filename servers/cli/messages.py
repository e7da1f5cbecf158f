"""Messages: `hive send`, `inbox` and `search` as the operator; the hidden `debug send|recv` as anyone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hyperhive.servers.cli.base import (
    call_hive,
    echo_json,
    fail,
    home_option,
    json_option,
    main,
)
from hyperhive.servers.common.formatting import plural, when
from hyperhive.servers.common.names import OPERATOR

if TYPE_CHECKING:
    from hyperhive.servers.broker.models import Message


@main.command()
@click.argument("to")
@click.argument("text", nargs=-1, required=True)
@click.option("--reply-to", type=int, help="Id of the message this answers.")
@home_option
def send(to: str, text: tuple[str, ...], reply_to: int | None, home: Path) -> None:
    """Send a message as the operator to TO: an agent, or '*' for every agent."""
    sent = call_hive(home, lambda hive: hive.broker.send(to, " ".join(text), reply_to))
    click.echo(f"◆ message #{sent.id} sent to {sent.recipients} inbox{'' if sent.recipients == 1 else 'es'}")


@main.command()
@click.option("--wait", type=click.FloatRange(0, 180), default=0, show_default=True, help="Seconds to wait.")
@click.option("--peek", is_flag=True, help="Only look: show what waits (up to 50) and leave it unread.")
@json_option
@home_option
def inbox(wait: float, peek: bool, as_json: bool, home: Path) -> None:
    """Take the operator's messages (up to 50), waiting up to --wait seconds for the first.

    \b
    Examples:
      hive inbox               take and show them; they are read now
      hive inbox --wait 60     wait up to a minute for the first
      hive inbox --peek        show what waits, oldest first, and leave it unread
      hive inbox --json        take them and print them as one JSON array
    """
    if peek:
        if wait:
            fail("--peek does not wait: it shows what waits now (drop --wait)")
        _peek(home, as_json)
        return

    def show(messages: list[Message], queued: int) -> None:
        if as_json:
            echo_json(messages)
            return
        for message in messages:
            reply = f" (re #{message.in_reply_to})" if message.in_reply_to else ""
            click.echo(f"#{message.id} {when(message.sent_at)} {message.sender}{reply}: {message.body}")
        if not messages:
            click.echo("◆ no messages")
        if queued:
            click.echo(f"◆ {queued} more waiting")

    _receive(home, 50, wait, OPERATOR, show)


def _peek(home: Path, as_json: bool) -> None:
    peeked = call_hive(home, lambda hive: hive.broker.peek_inbox(50))
    if as_json:
        echo_json(peeked.messages)
        return
    for message in peeked.messages:
        reply = f" (re #{message.in_reply_to})" if message.in_reply_to else ""
        taken = f" [taken, not acked; back at {when(message.lease_until)}]" if message.state == "leased" else ""
        click.echo(f"#{message.id} {when(message.sent_at)} {message.sender}{reply}{taken}: {message.body}")
    total = peeked.queued + peeked.leased
    if not total:
        click.echo("◆ no messages waiting")
    else:
        more = f", {total - len(peeked.messages)} not shown" if total > len(peeked.messages) else ""
        click.echo(f"◆ {plural(total, 'message')} waiting{more}; still unread (`hive inbox` takes them)")


@main.command()
@click.argument("query", nargs=-1, required=True)
@click.option("--agent", help="Only messages this agent (or operator, system) sent or received.")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="At most this many.")
@click.option("--relevance", is_flag=True, help="Best match first (default: newest first).")
@click.option("--json", "as_json", is_flag=True, help="The hits as one JSON array (full bodies, deliveries).")
@home_option
def search(query: tuple[str, ...], agent: str | None, limit: int, relevance: bool, as_json: bool, home: Path) -> None:
    """Search every message's body and sender: words all match, newest first.

    \b
    Examples:
      hive search deploy failed              both words, anywhere in a message
      hive search '"deploy-bot"'             punctuation: a phrase in double quotes
      hive search 'disk OR memory' --agent alice
      hive search sender:manager budget*     a field, and a prefix
    """
    words = " ".join(query)
    if not words.strip():
        fail("give the words to look for: hive search deploy failed")
    try:
        found = call_hive(
            home,
            lambda hive: hive.broker.search_messages(
                words, agent=agent, limit=limit, order="relevance" if relevance else "newest"
            ),
        )
    except click.ClickException as e:
        if "not a search query" in e.message:
            fail(f"{e.message}\nIn a shell, wrap such a query in single quotes: hive search '\"foo-bar\"'")
        raise
    if as_json:
        click.echo(json.dumps([hit.model_dump(mode="json") for hit in found.messages], indent=2))
        return
    for hit in found.messages:
        to = "*" if hit.broadcast else ",".join(d.to for d in hit.deliveries) or "?"
        snippet = " ".join(hit.snippet.split())  # one line per hit
        click.echo(f"#{hit.id} {when(hit.sent_at)} {hit.sender} → {to}: {snippet}")
    click.echo(
        f"◆ {plural(len(found.messages), 'message')} found" + (" (the limit)" if len(found.messages) == limit else "")
    )


@main.command()
@click.argument("message_id", metavar="ID", type=click.IntRange(1, 2**63 - 1))
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="The messages as one JSON array (deliveries too).")
@home_option
def thread(message_id: int, limit: int, as_json: bool, home: Path) -> None:
    """The conversation message ID belongs to (its first message and every reply), oldest first.

    \b
    Examples:
      hive thread 412            a question's `about`, a search hit's id
      hive thread 412 --json
    """
    listing = call_hive(home, lambda hive: hive.broker.list_messages(thread=message_id, limit=limit))
    messages = sorted(listing.messages, key=lambda message: message.id)
    if as_json:
        echo_json(messages)
        return
    for message in messages:
        to = "*" if message.broadcast else ",".join(d.to for d in message.deliveries) or "?"
        reply = f" (re #{message.in_reply_to})" if message.in_reply_to else ""
        click.echo(f"#{message.id} {when(message.sent_at)} {message.sender} → {to}{reply}: {message.body}")
    more = " (the limit: --limit shows more)" if len(messages) == limit else ""
    click.echo(f"◆ {plural(len(messages), 'message')} in the thread of #{message_id}{more}")


def _receive(home: Path, limit: int, wait: float, as_name: str, show: Callable[[list[Message], int], None]) -> None:
    """Lease messages, show them, then ack them: at-least-once, so a broker (or this process) that
    dies before the ack hands them out again when the lease ends, instead of losing them."""
    result = call_hive(
        home, lambda hive: hive.broker.recv_batch(max=limit, wait_seconds=wait, ack=False), as_name=as_name,
        timeout=wait + 30,
    )  # fmt: skip
    show(result.messages, result.queued)
    ids = [message.id for message in result.messages]
    if not ids:
        return
    try:
        call_hive(home, lambda hive: hive.broker.ack(ids), as_name=as_name)
    except click.ClickException as e:
        fail(f"{e.message}\nthe messages above were shown but not acknowledged: they will be delivered again")


# ------------------------------------------------------------------------------------------ debug


@main.group(hidden=True)
def debug() -> None:
    """Talk to the hive's servers by hand (for developers)."""


def _as_option(default: str = OPERATOR) -> Callable[[Any], Any]:
    return click.option(
        "--as",
        "as_name",
        default=default,
        show_default=True,
        help="Act as this principal (operator or an agent).",
    )


@debug.command(name="send")
@click.argument("to")
@click.argument("body")
@click.option("--reply-to", type=int, help="Id of the message this answers.")
@_as_option()
@home_option
def debug_send(to: str, body: str, reply_to: int | None, as_name: str, home: Path) -> None:
    """Send BODY to TO (an agent, 'operator' or '*')."""
    sent = call_hive(home, lambda hive: hive.broker.send(to, body, reply_to), as_name=as_name)
    click.echo(sent.model_dump_json())


@debug.command(name="recv")
@click.option("--wait", type=click.FloatRange(0, 180), default=0, show_default=True, help="Seconds to wait.")
@click.option("--max", "limit", type=click.IntRange(1, 50), default=10, show_default=True)
@_as_option()
@home_option
def debug_recv(wait: float, limit: int, as_name: str, home: Path) -> None:
    """Receive pending messages, one JSON object per line; ack them once printed."""

    def show(messages: list[Message], queued: int) -> None:
        for message in messages:
            click.echo(message.model_dump_json())
        click.echo(f"({queued} still queued)", err=True)

    _receive(home, limit, wait, as_name, show)
