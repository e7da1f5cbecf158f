"""The hive's git forge from the shell: `hive repos` and `hive repo create|grant|revoke|log`.

Every verb calls the forge's tools as the operator, who reads and writes every repo and grants on
any; a repo `hive repo create` makes is the operator's (agents own the repos they create
themselves with create_repo).
"""

from __future__ import annotations

from pathlib import Path

import click

from hyperhive.servers.cli.base import call_hive, echo_json, home_option, json_option, main, print_table
from hyperhive.servers.common.formatting import grants_text, plural, when
from hyperhive.servers.forge.models import Access

MAX_LOG = 200  # the forge's repo_log cap


@main.command(name="repos")
@json_option
@home_option
def repos(as_json: bool, home: Path) -> None:
    """List the forge's repos: owner, who else holds what, last push, description.

    \b
    Agents clone them with plain git at the clone URL (their hive token is their password):
      git clone http://127.0.0.1:7806/git/app.git
    `hive repo log NAME` shows a repo's commits; the dashboard's repos page browses its files.
    """
    listing = call_hive(home, lambda hive: hive.forge.list_repos())
    if as_json:
        echo_json(listing.repos)
        return
    if not listing.repos:
        click.echo("◆ no repos yet: agents create them with create_repo, or run `hive repo create NAME`")
        return
    click.echo(f"◆ {plural(len(listing.repos), 'repo')}")
    rows = [("name", "owner", "grants", "last push", "description")]
    for repo in listing.repos:
        pushed = f"{when(repo.pushed_at)} by {repo.pushed_by}" if repo.pushed_at else "never"
        rows.append((repo.name, repo.owner, grants_text(repo.grants), pushed, repo.description or ""))
    print_table(rows)


@main.group(name="repo")
def repo() -> None:
    """One repo of the hive's git forge: create it, grant or revoke access, read its log.

    \b
      hive repo create runbooks --description "how we deploy"   the operator owns it
      hive repo grant runbooks '*' read                          every agent reads it
      hive repo grant runbooks alice write                       alice pushes to it
      hive repo revoke runbooks alice                            alice no longer does
      hive repo log runbooks --ref main --limit 5                its latest commits
    `hive repos` lists them all.
    """


@repo.command(name="create")
@click.argument("name")
@click.option("--description", default="", help="What it holds, in a line (500 characters at most).")
@home_option
def create(name: str, description: str, home: Path) -> None:
    """Create repo NAME, owned by the operator (you).

    NAME: 1-63 characters of a-z, 0-9, '.', '_' and '-'. Nobody but the operator and the manager
    (who reads every repo) sees it until you grant it: `hive repo grant NAME WHO read|write`.
    """
    made = call_hive(home, lambda hive: hive.forge.create_repo(name, description))
    click.echo(f"◆ created {made.name}, owned by {made.owner}; clone it at {made.clone_url}")
    click.echo(f"  agents see it once granted: hive repo grant {made.name} '*' read")


@repo.command(name="grant")
@click.argument("name")
@click.argument("who")
@click.argument("access", type=click.Choice(["read", "write"]))
@home_option
def grant(name: str, who: str, access: str, home: Path) -> None:
    """Give WHO read or write on repo NAME.

    WHO: an agent's name, 'manager', 'operator', or '*' for every agent (quote it in the shell).
    Write includes read; granting again replaces what WHO held.
    """
    level: Access = "write" if access == "write" else "read"
    result = call_hive(home, lambda hive: hive.forge.grant(name, who, level))
    click.echo(f"◆ {result.who} now holds {result.access} on {result.repo}" + ("" if result.changed else " (already)"))


@repo.command(name="revoke")
@click.argument("name")
@click.argument("who")
@home_option
def revoke(name: str, who: str, home: Path) -> None:
    """Take back what WHO was granted on repo NAME (its owner keeps write)."""
    result = call_hive(home, lambda hive: hive.forge.revoke(name, who))
    click.echo(
        f"◆ {result.who} no longer holds a grant on {result.repo}"
        if result.changed
        else f"◆ {result.who} held no grant on {result.repo}: nothing changed"
    )


@repo.command(name="log")
@click.argument("name")
@click.option("--ref", default="HEAD", show_default=True, help="A branch, tag, full ref or commit id.")
@click.option(
    "--limit", type=click.IntRange(1, MAX_LOG), default=20, show_default=True, help="How many commits, newest first."
)
@home_option
def log(name: str, ref: str, limit: int, home: Path) -> None:
    """The latest commits of repo NAME reachable from --ref, newest first."""
    result = call_hive(home, lambda hive: hive.forge.repo_log(name, ref, limit))
    if not result.commits:
        click.echo(f"◆ {name} has no commits at {ref}")
        return
    rows = [("commit", "date", "author", "subject")]
    rows += [(c.sha[:12], when(c.date), c.author, c.subject) for c in result.commits]
    print_table(rows)
