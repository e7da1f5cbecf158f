"""The agents: `hive agents`, `spawn`, `start`, `stop`, `restart`, `kill`, `rebuild`, `update-all`,
`destroy`, `logs`, `config`, `set-model`, `set-budget`, `resume`, `cancel-turn`, `reset-session`;
and being one by hand: `mcp-config`, `claude`."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hyperhive.servers.cli.base import (
    applied_agent_config,
    call_hive,
    echo_json,
    fail,
    hive_config,
    home_option,
    json_option,
    main,
    mint,
    parse_duration,
    print_table,
)
from hyperhive.servers.common.agent_config import AGENT_TOML, load_agent_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.formatting import health, plural, turn_text, unreachable_lines, when
from hyperhive.servers.common.privileges import drop_to
from hyperhive.servers.common.turn_reasons import group_problems
from hyperhive.servers.lifecycle.models import AgentInfo, Spend

if TYPE_CHECKING:
    from hyperhive.servers.lifecycle.client import LifecycleClient
    from hyperhive.servers.lifecycle.models import AgentInfo


@main.command(name="mcp-config")
@click.argument("name")
@click.option("--ttl", help="Lifetime of the token in it: seconds, or 90s, 15m, 12h, 30d. Default: 12h.")
@home_option
def mcp_config(name: str, ttl: str | None, home: Path) -> None:
    """Print the --mcp-config JSON the harness gives agent NAME, with a fresh token.

    \b
    Run Claude Code by hand as that agent, with the same servers and tools:
      claude --mcp-config "$(hive mcp-config alice)" --strict-mcp-config
    The tools it may call are printed on stderr, ready for --allowedTools.
    """
    from hyperhive.servers.lifecycle.harness_files import harness_info

    config = hive_config(home)
    agent = applied_agent_config(config, name)
    try:
        info = harness_info(config, name, agent)
    except ConfigError as e:
        fail(str(e))
    token = mint(config, name, parse_duration(ttl) if ttl else 12 * 3600)
    click.echo(json.dumps({"mcpServers": info.mcp_config(token)}, indent=2))
    click.echo(f"allowed tools: {' '.join(info.tool_names())}", err=True)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@home_option
def claude(name: str, args: tuple[str, ...], home: Path) -> None:
    """Run Claude Code as agent NAME sees it: its config dir, env and (as root) its uid.

    \b
    Log an agent in with a Claude account instead of an API key:
      hive claude manager auth login
    Its harness picks the credentials up within seconds. ARGS go to Claude Code as they are.
    """
    from hyperhive.harness.claude import bundled_cli, claude_dirs, claude_env
    from hyperhive.servers.lifecycle.harness_files import harness_info
    from hyperhive.servers.lifecycle.paths import AgentPaths

    config = hive_config(home)
    applied_agent_config(config, name)
    paths = AgentPaths.of(config, name)
    if not paths.harness.is_dir():
        fail(f"{name} has no harness dir yet ({paths.harness}); start it once first")
    owner = paths.harness.stat().st_uid
    cli = Path(bundled_cli())
    if os.geteuid() == 0 and owner != 0:
        # It runs as the agent's uid on the host (no sandbox binds paths in): that uid must be able
        # to walk to the agent's dirs and to Claude Code itself.
        for what, path in ((f"{name}'s dir", config.home), ("Claude Code", cli.resolve().parent)):
            blocked = [p for p in (path, *path.parents) if not p.stat().st_mode & 0o001]
            if blocked:
                fail(f"{name}'s uid {owner} cannot reach {what} through {blocked[0]}: `chmod o+x {blocked[0]}`")
    for directory in claude_dirs(paths.harness):
        if not directory.exists():
            directory.mkdir(mode=0o700)
            # The agent owns the harness dir and may swap the new dir for a link: never chown through one.
            os.chown(directory, owner, owner, follow_symlinks=False)
    try:
        info = harness_info(config, name, load_agent_config(config.applied_dir / name / AGENT_TOML))
    except ConfigError as e:
        fail(str(e))
    env = claude_env(info, paths.harness)

    def become_agent() -> None:
        if os.geteuid() == 0 and owner != 0:
            drop_to(owner, owner)

    import subprocess

    try:
        done = subprocess.run([str(cli), *args], env=env, cwd=paths.state, preexec_fn=become_agent, check=False)
    except OSError as e:
        fail(f"cannot run {cli} as {name}'s uid {owner}: {e.strerror}")
    sys.exit(done.returncode)


def spend_cells(spend: Spend | None) -> tuple[str, str]:
    """Cost today (of its daily budget, and PAUSED past it) and this week, in dollars."""
    if spend is None:
        return "", ""
    today = f"{spend.today_usd:.2f}" + (f"/{spend.usd_per_day:.2f}" if spend.usd_per_day is not None else "")
    return today + (" PAUSED" if spend.paused else ""), f"{spend.week_usd:.2f}"


@main.command()
@json_option
@home_option
def agents(as_json: bool, home: Path) -> None:
    """List the agents: state, role, model, restarts, whether they need an update, cost, turn.

    \b
      hive agents                          the table
      hive agents --json | jq -r '.[] | select(.needs_update) | .name'
    `hive update-all` rebuilds the ones that need an update; `hive stats` shows their turns.
    In a hive across hosts a HOST column says where each lives, and an agent whose host does not
    answer is "unreachable" (`hive hosts` shows the hosts).
    """
    listing = call_hive(home, lambda hive: hive.lifecycle.list_agents())
    if as_json:
        echo_json(listing.agents)
        return
    click.echo(f"◆ {plural(len(listing.agents), 'agent')} · {listing.backend} · {listing.isolation}")
    rows: list[tuple[str, ...]] = [
        ("name", "host", "role", "state", "model", "started", "restarts", "update", "today $", "week $", "turn")
    ]
    for agent in listing.agents:
        state: str = agent.state
        if agent.last_signal or agent.last_exit_code not in (None, 0):
            state += f" (last: {agent.last_signal or 'exit ' + str(agent.last_exit_code)})"
        started = when(agent.started_at)
        rows.append(
            (agent.name, agent.host or "-", agent.role, state, agent.model, started, str(agent.restart_count),
             "needed" if agent.needs_update else "", *spend_cells(agent.spend),
             turn_text(agent.turn, agent.state == "running"))
        )  # fmt: skip
    if listing.hive_spend is not None:
        hive = listing.hive_spend
        rows.append(("(hive)", "", "", "", "", "", "", "", *spend_cells(hive), hive.paused or ""))
    if not any(agent.host is not None for agent in listing.agents):  # one host: no host column
        rows = [(row[0], *row[2:]) for row in rows]
    print_table(rows)
    stuck = [(a.name, a.problem or (a.turn.reason if a.turn else None)) for a in listing.agents if _stuck(a)]
    for line, _ in group_problems(stuck):  # what the dashboard's "needs you" strip says, with the fix
        click.echo(f"! {line}")
    for line in unreachable_lines(listing.agents):
        click.echo(f"! {line} (`hive hosts` shows the hive's hosts)")


def _stuck(agent: AgentInfo) -> bool:
    return health(agent)[0] in ("error", "paused")


@main.command()
@click.argument("name")
@click.option("--commit", "sha", metavar="SHA", help="Make it from this commit of its draft's proposed repo.")
@click.option(
    "--host",
    metavar="HOST",
    help="The host it lives on, in a hive across hosts (`hive hosts`). Default: the least loaded one with room.",
)
@home_option
def spawn(name: str, sha: str | None, host: str | None, home: Path) -> None:
    """Create agent NAME and start it (no approval: you are the operator).

    \b
      hive spawn alice                   from the template: role agent, its model and tools
      hive spawn bob --commit 3f2a9c1    from a commit of bob's draft (its proposed repo)
      hive spawn gpu1 --host beta        on host beta, in a hive across hosts
      hive config alice                  what it was made with
    NAME: 1-11 characters of a-z, 0-9 and '-', starting with a letter.
    """
    created = call_hive(home, lambda hive: hive.lifecycle.create_agent(name, sha, host=host), timeout=120)
    applied = f" (config {created.applied_sha[:12]})" if created.applied_sha else ""
    done = "already there" if created.already_applied else "created"
    where = f" · on {created.host}" if created.host else ""
    click.echo(f"◆ {created.name}: {done}{applied} · {created.state} · {created.model}{where}")


@main.command()
@click.argument("name")
@click.argument("host")
@home_option
def move(name: str, host: str, home: Path) -> None:
    """Move agent NAME to HOST, in a hive across hosts: stopped, its state, Claude Code session,
    config repos and model copied, started there if it ran.

    \b
      hive move alice beta      alice lives on beta from now on
      hive hosts                the hosts, their labels and room
    Its turn stats and audit trail stay on the host it leaves.
    """
    moved = call_hive(home, lambda hive: hive.lifecycle.move_agent(name, host), timeout=1800)
    click.echo(f"◆ {moved.name}: on {moved.host or host} now · {moved.state} · {moved.model}")


@main.command(name="set-model")
@click.argument("name")
@click.argument("model")
@home_option
def set_model(name: str, model: str, home: Path) -> None:
    """Make agent NAME's next turns use MODEL (e.g. opus, sonnet, claude-opus-4-1), no rebuild.

    \b
      hive set-model alice opus        from its next turn on
      hive set-model alice default     back to its agent.toml's model
    """
    chosen = None if model.strip().lower() in ("default", "none") else model.strip()
    result = call_hive(home, lambda hive: hive.lifecycle.set_model(name, chosen))
    click.echo(f"◆ {result.name}: next turns use {result.model}" + (" (agent.toml's)" if chosen is None else ""))


@main.command(name="update-all")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@home_option
def update_all(yes: bool, home: Path) -> None:
    """Rebuild every agent that needs an update (another hyperhive version, a newer applied config).

    Lists the agents it will rebuild (a running one restarts, its turn cut short) and asks first;
    the manager goes first. `hive agents` shows "needed" in the update column for each.
    """
    listing = call_hive(home, lambda hive: hive.lifecycle.list_agents())
    stale = [agent for agent in listing.agents if agent.needs_update and agent.kind == "agent"]
    if not stale:
        click.echo("◆ every agent is up to date")
        return
    click.echo(f"◆ {plural(len(stale), 'agent')} to rebuild:")
    for agent in stale:
        click.echo(f"  {agent.name}  {agent.state}" + ("  (restarts)" if agent.state == "running" else ""))
    if not yes:
        click.confirm(f"Rebuild {'it' if len(stale) == 1 else 'them'}?", abort=True)
    result = call_hive(home, lambda hive: hive.lifecycle.rebuild_stale(), timeout=600)
    click.echo(
        f"◆ rebuilt {plural(len(result.rebuilt), 'agent')}"
        + (f": {', '.join(result.rebuilt)}" if result.rebuilt else "")
    )


@main.command(name="config")
@click.argument("name")
@home_option
def config_command(name: str, home: Path) -> None:
    """Print agent NAME's applied agent.toml (and agent.nix), and the commit it came from.

    \b
      hive config alice                          what alice runs with now
      hive config alice | grep model
    A change is a commit in its proposed repo that you approve (`hive approvals`).
    """
    applied = call_hive(home, lambda hive: hive.lifecycle.agent_config(name))
    source = f" (from proposed {applied.proposed_sha[:12]})" if applied.proposed_sha else ""
    click.echo(f"# {applied.name}: applied config {applied.sha[:12] if applied.sha else '(no commit)'}{source}")
    click.echo("# agent.toml")
    click.echo(applied.agent_toml.rstrip("\n"))
    if applied.agent_nix is not None:
        click.echo("# agent.nix")
        click.echo(applied.agent_nix.rstrip("\n"))


@main.command(name="cancel-turn")
@click.argument("name")
@home_option
def cancel_turn(name: str, home: Path) -> None:
    """Stop the Claude Code turn agent NAME is running (its messages are not handled again)."""
    result = call_hive(home, lambda hive: hive.lifecycle.cancel_turn(name))
    ended = result.turn.state != "running"
    click.echo(f"◆ {name}: turn {result.cancelled} " + ("cancelled" if ended else "asked to stop (still ending)"))


@main.command(name="reset-session")
@click.argument("name")
@home_option
def reset_session(name: str, home: Path) -> None:
    """Give agent NAME a fresh Claude Code session at its next turn (its notes.md stays)."""
    call_hive(home, lambda hive: hive.lifecycle.reset_session(name))
    click.echo(f"◆ {name}: its next turn starts a fresh session (notes.md carries what it kept)")


@main.command(name="set-budget")
@click.argument("name")
@click.argument("usd_per_day", metavar="USD_PER_DAY")
@home_option
def set_budget(name: str, usd_per_day: str, home: Path) -> None:
    """Set agent NAME's daily budget in US dollars (e.g. 5 or 2.50), or `none` to go back to agent.toml's.

    \b
    An agent past its budget takes no turns (its messages wait) until the budget is raised or the
    day (UTC) ends; raising it here resumes it at once.
    """
    budget: float | None = None
    if usd_per_day.strip().lower() != "none":
        try:
            budget = float(usd_per_day.strip().lstrip("$"))
        except ValueError:
            budget = math.nan
        if not math.isfinite(budget):  # float() takes "nan" and "inf"
            fail(f"{usd_per_day!r} is not an amount: give dollars like 5 or 2.50, or none")
    result = call_hive(home, lambda hive: hive.lifecycle.set_budget(name, budget))
    spend = result.spend
    limit = "no daily budget" if spend.usd_per_day is None else f"${spend.usd_per_day:.2f}/day"
    state = f" · {spend.paused}" if spend.paused else ""
    click.echo(f"◆ {result.name}: {limit} · spent ${spend.today_usd:.2f} today{state}")


@main.command(name="resume")
@click.argument("name")
@home_option
def resume(name: str, home: Path) -> None:
    """Resume agent NAME, paused for its own daily budget: its day starts afresh now.

    \b
    Its cost so far stops counting against its budget until the day (UTC) ends; it takes turns
    again within seconds. Refused if it is not paused, or if the hive's budget pauses it (raise
    hive.toml [budget] usd_per_day then).
    """
    result = call_hive(home, lambda hive: hive.lifecycle.resume_agent(name))
    spend = result.spend
    limit = "no daily budget" if spend.usd_per_day is None else f"${spend.usd_per_day:.2f}/day"
    click.echo(f"◆ {result.name}: resumed · {limit} counts from now · spent ${spend.today_usd:.2f} today in all")


def _agent_action(
    command_name: str, action: Callable[[LifecycleClient, str], Awaitable[AgentInfo]], summary: str
) -> None:
    @main.command(name=command_name, help=summary)
    @click.argument("name")
    @home_option
    def command(name: str, home: Path) -> None:
        agent = call_hive(home, lambda hive: action(hive.lifecycle, name), timeout=120)
        click.echo(f"◆ {agent.name}: {agent.state}")


_agent_action("start", lambda lifecycle, name: lifecycle.start(name), "Start agent NAME.")
_agent_action(
    "stop",
    lambda lifecycle, name: lifecycle.stop(name),
    "Stop agent NAME: SIGTERM, then SIGKILL after the stop timeout.",
)
_agent_action("restart", lambda lifecycle, name: lifecycle.restart(name), "Stop agent NAME if it runs, then start it.")
_agent_action("kill", lambda lifecycle, name: lifecycle.kill(name), "SIGKILL agent NAME's sandbox now.")
_agent_action("rebuild", lambda lifecycle, name: lifecycle.rebuild(name), "Rebuild agent NAME from its applied config.")


@main.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete its config repos, state, token and logs.")
@click.option("--force", is_flag=True, help="Needed to destroy the manager.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@home_option
def destroy(name: str, purge: bool, force: bool, yes: bool, home: Path) -> None:
    """Destroy agent NAME. Its repos and state are kept unless --purge."""
    if not yes:
        what = f"destroy {name} and delete its repos, state and logs" if purge else f"destroy {name}"
        click.confirm(f"Really {what}?", abort=True)
    call_hive(home, lambda hive: hive.lifecycle.destroy(name, purge=purge, force=force), timeout=120)
    click.echo(f"◆ {name}: destroyed" + (" and purged" if purge else " (its repos and state are kept)"))


@main.command()
@click.argument("name")
@click.option("-n", "--lines", type=click.IntRange(1, 5000), default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@home_option
def logs(name: str, lines: int, follow: bool, home: Path) -> None:
    """Print the end of agent NAME's log."""
    printed = call_hive(home, lambda hive: hive.lifecycle.logs(name, lines)).lines
    for line in printed:
        click.echo(line)
    last = printed[-1] if printed else None
    try:
        while follow:
            time.sleep(1)
            fresh = call_hive(home, lambda hive: hive.lifecycle.logs(name, 500)).lines
            start = len(fresh) - fresh[::-1].index(last) if last in fresh else 0
            for line in fresh[start:]:
                click.echo(line)
            if fresh:
                last = fresh[-1]
    except KeyboardInterrupt:
        pass
