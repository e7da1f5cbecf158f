"""The hive's hosts: `hive hosts`."""

from __future__ import annotations

from pathlib import Path

import click

from hyperhive.servers.cli.base import call_hive, echo_json, home_option, json_option, main, print_table
from hyperhive.servers.common.formatting import host_load, host_state, plural, when


@main.command()
@json_option
@home_option
def hosts(as_json: bool, home: Path) -> None:
    """List the hive's hosts: up or down and since when, agents of capacity, labels, lifecycle url.

    \b
      hive hosts                           the table; "(here)" is the host whose lifecycle server answered
      hive hosts --json | jq -r '.[] | select(.up | not) | .name'
    A hive spans hosts with [storage] url in hive.toml and a [host] section on each; on one host
    this lists that host alone. A host is down once its heartbeat is [host] down_after_seconds late:
    its agents show as unreachable in `hive agents` until it is back.
    """
    listing = call_hive(home, lambda hive: hive.lifecycle.list_hosts()).hosts
    if as_json:
        echo_json(listing)
        return
    down = [host for host in listing if not host.up]
    click.echo(f"◆ {plural(len(listing), 'host')}" + (f" · {len(down)} down" if down else ""))
    rows = [("host", "state", "agents", "labels", "lifecycle")]
    for host in listing:
        rows.append(
            (host.name + (" (here)" if host.answering else ""), host_state(host), host_load(host),
             ", ".join(host.labels) or "-", host.lifecycle_url or "-")
        )  # fmt: skip
    print_table(rows)
    for host in down:
        click.echo(
            f"! {host.name}: no heartbeat since {when(host.last_seen)}; its {plural(host.agents, 'agent')} "
            f"{'is' if host.agents == 1 else 'are'} unreachable until its lifecycle server is back"
        )
