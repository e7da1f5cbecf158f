"""Setting a hive up and its credentials: `hive init`, `token`, `rotate-key`."""

from __future__ import annotations

from pathlib import Path

import click

from hyperhive.servers.cli.base import (
    hive_config,
    home_option,
    main,
    mint,
    parse_duration,
    set_up_home,
    signing_key,
)
from hyperhive.servers.common.issuer import Issuer
from hyperhive.servers.common.keys import SigningKey, write_key_pair


@main.command()
@click.option(
    "--port-base", type=int, metavar="N",
    help="A new home's ports from N: servers on N+1.., the dashboard on N+5 (default 7800). "
    "For a second hive on this host.",
)  # fmt: skip
@home_option
def init(port_base: int | None, home: Path) -> None:
    """Create the hive home: settings, the token-signing key pair, the manager's config.

    Safe to run again: it only adds what is missing (and renews the servers' tokens past half
    their life); it never overwrites a setting or a key.

    \b
      hive init                                   ./.hive, servers on 7801-7806
      hive init --home ~/hive2 --port-base 7900   a second hive beside it: 7901-7906
      HIVE_HOME=~/hive2 hive up                   run that one
    """
    created = set_up_home(home, port_base)
    where = home.resolve()
    if created:
        click.echo(f"◆ hive home {where}")
        for path in created:
            if path != ".":
                click.echo(f"  created {path}")
    else:
        click.echo(f"◆ hive home {where} is already set up; nothing changed")
    click.echo("  next: `hive up` runs the hive here")


@main.command()
@click.argument("name")
@click.option("--ttl", help="Lifetime: seconds, or 90s, 15m, 12h, 30d. Default: [tokens] ttl_seconds.")
@click.option("--aud", "audience", help="Only for these servers, comma-separated (default: all NAME may use).")
@home_option
def token(name: str, ttl: str | None, audience: str | None, home: Path) -> None:
    """Print a bearer token for NAME: 'operator', an agent, or 'service:<server>'.

    \b
    The token proves who the caller is to the servers it names, for example:
      npx @modelcontextprotocol/inspector --cli http://127.0.0.1:7801/mcp \\
          --header "Authorization: Bearer $(hive token operator)" --method tools/list
    Only the hive's owner can issue (it reads signing.key). An agent's token is for its running
    instance: it stops working when the agent stops, restarts or is destroyed.
    `hive rotate-key` voids every token issued before it.
    """
    config = hive_config(home)
    seconds = parse_duration(ttl) if ttl else config.tokens.ttl_seconds
    servers = tuple(part.strip() for part in audience.split(",") if part.strip()) if audience else None
    click.echo(mint(config, name, seconds, servers))


@main.command(name="rotate-key")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@home_option
def rotate_key(yes: bool, home: Path) -> None:
    """Make a new token-signing key pair and re-issue what the hive hands out.

    Every running server verifies with the new key within a second; every token signed by the old
    one is refused from then on (tokens made with `hive token` included: make new ones). The
    lifecycle server gives running agents new tokens at once; the servers' and the dashboard's
    token files are re-issued here (a NixOS host restarts those units).
    """
    config = hive_config(home)
    signing_key(config)  # only the owner of the old key may replace it
    if not yes:
        click.confirm("Every token issued so far will stop working. Rotate the key?", abort=True)
    signing = SigningKey.generate()
    write_key_pair(config.home, signing)
    issued = Issuer(config, lambda: signing).issue_handed_tokens(force=True)
    click.echo(f"◆ new signing key {signing.kid[:12]}…; re-issued tokens: {', '.join(issued)}")
    click.echo("  running agents get new tokens from the lifecycle server within seconds")
