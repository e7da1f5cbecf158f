"""Messages: `hive send` and `inbox` as the operator; the hidden `debug send|recv` as anyone."""

from __future__ import annotations

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
from hyperhive.servers.common.formatting import when
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
@json_option
@home_option
def inbox(wait: float, as_json: bool, home: Path) -> None:
    """Take the operator's messages (up to 50), waiting up to --wait seconds for the first."""

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
