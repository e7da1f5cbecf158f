"""The `hive` command: set up a hive home, run its servers, mint tokens, poke the broker."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import uvloop

from .common.config import (
    AGENT_TOML,
    HIVE_TOML,
    HIVE_TOML_TEMPLATE,
    AgentConfig,
    ConfigError,
    HiveConfig,
    Listen,
    agent_toml_template,
    load_agent_config,
    load_hive_config,
)
from .common.errors import Refused
from .common.files import write_atomic
from .common.issuer import DASHBOARD_TOKEN, IssueError, Issuer, handed_token, server_credentials
from .common.keys import (
    PRIVATE_KEY_FILE,
    KeyFileError,
    ReloadingSigningKey,
    SigningKey,
    create_key_pair,
    load_signing_key,
    migrate_legacy_secret,
    write_key_pair,
)
from .common.names import MANAGER, OPERATOR
from .common.registry import REGISTRY
from .common.serving import ListenError, http_app, serve
from .common.systemd import credential, notify
from .common.tokens import TokenFile
from .lifecycle.backends.base import BackendError
from .lifecycle.uidrange import UidRangeError

if TYPE_CHECKING:  # the clients are imported when a command calls a server: `hive token` needs none
    from .approvals.client import ApprovalsClient
    from .approvals.models import Request
    from .broker.client import BrokerClient
    from .broker.models import Message
    from .common.harnessdir import TurnState
    from .common.server_client import ServerClient
    from .lifecycle.client import LifecycleClient
    from .lifecycle.models import AgentInfo
    from .operator.client import OperatorClient

R = TypeVar("R")
C = TypeVar("C", bound="ServerClient")

DEFAULT_HOME = ".hive"
DASHBOARD_PASSWORD = "dashboard.password"  # hyperhive.ui.auth.PASSWORD_FILE
DASHBOARD = "dashboard"  # `hive serve dashboard`: the NiceGUI app, not an MCP server
LOGIN_CODE_MINUTES = 10
# Each server's module (with create(config, credentials, ...)), in start-up order: the registry's.
SERVERS: dict[str, str] = {spec.name: spec.module for spec in REGISTRY}

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HIVE_HOME",
    default=DEFAULT_HOME,
    show_default=True,
    help="The hive home: settings, keys, databases and agent configs ($HIVE_HOME).",
)


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _config(home: Path) -> HiveConfig:
    try:
        return load_hive_config(home)
    except ConfigError as e:
        _fail(str(e))


def _signing_key(config: HiveConfig) -> SigningKey:
    """The hive's private key: only its owner (root, or who ran `hive init`) issues tokens."""
    try:
        return load_signing_key(config.home / PRIVATE_KEY_FILE)
    except KeyFileError as e:
        _fail(str(e))


def _issuer(config: HiveConfig) -> Issuer:
    signing = _signing_key(config)
    return Issuer(config, lambda: signing)


def _mint(config: HiveConfig, name: str, ttl_seconds: int, audience: tuple[str, ...] | None = None) -> str:
    try:
        return _issuer(config).token_for(name, ttl_seconds, audience)
    except IssueError as e:
        _fail(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="hyperhive", prog_name="hive")
def main() -> None:
    """hyperhive: a swarm of Claude Code agents on one host, every capability an MCP tool server.

    \b
    Start here:
      hive up                   set up ./.hive if needed and run the whole hive
      hive approvals            requests from the manager waiting for your decision
      hive questions            questions from agents waiting for your answer
      hive token operator       a bearer token for the MCP Inspector or scripts
    """


# ------------------------------------------------------------------------------------------- init


def init_home(home: Path) -> list[str]:
    """Create what is missing in the hive home; return what was created (relative paths)."""
    created = []
    if not home.exists():
        created.append(".")
    # 0711: agents' uids may pass through to their own dirs (`hive claude`); nothing here is listable.
    home.mkdir(mode=0o711, parents=True, exist_ok=True)
    hive_toml = home / HIVE_TOML
    if not hive_toml.exists():
        write_atomic(hive_toml, HIVE_TOML_TEMPLATE, mode=0o600)  # it may hold an API key ([harness.env])
        created.append(HIVE_TOML)
    config = _config(home)
    if create_key_pair(config.home):
        created.append(PRIVATE_KEY_FILE)
    if migrate_legacy_secret(config.home):
        created.append(f"{PRIVATE_KEY_FILE} (it replaces the old shared secret, now deleted)")
    password = config.home / DASHBOARD_PASSWORD
    if not password.exists():
        write_atomic(password, secrets.token_urlsafe(18) + "\n", mode=0o600)
        created.append(DASHBOARD_PASSWORD)
    for directory in (config.home / "state", config.run_dir, config.applied_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.instances_dir.mkdir(mode=0o755, exist_ok=True)  # ids only; the servers read them
    created += [f"tokens/{name}.token" for name in _issuer(config).issue_handed_tokens()]
    # Agents' own uids pass through it to their dirs (the manager to every proposed repo).
    config.agents_dir.mkdir(mode=0o711, exist_ok=True)
    manager_toml = config.applied_dir / MANAGER / AGENT_TOML
    if not manager_toml.exists():
        # Like every applied repo: readable inside applied/, which alone guards them (0700; the
        # NixOS module opens it to the unprivileged servers' group, which enforce the allow-lists).
        manager_toml.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(manager_toml, agent_toml_template("manager"))
        created.append(str(manager_toml.relative_to(config.home)))
    return created


@main.command()
@home_option
def init(home: Path) -> None:
    """Create the hive home: settings, the token-signing key pair, the manager's config.

    Safe to run again: it only adds what is missing (and renews the servers' tokens past half
    their life); it never overwrites a setting or a key.
    """
    created = init_home(home)
    where = home.resolve()
    if created:
        click.echo(f"◆ hive home {where}")
        for path in created:
            if path != ".":
                click.echo(f"  created {path}")
    else:
        click.echo(f"◆ hive home {where} is already set up; nothing changed")
    click.echo("  next: `hive up` runs the hive here")


# ------------------------------------------------------------------------------------------ token


_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def _agent_config(config: HiveConfig, name: str) -> AgentConfig:
    """The applied config of agent `name`, or a clear failure."""
    try:
        _, agent = _issuer(config).principal_named(name)
    except IssueError as e:
        _fail(str(e))
    if agent is None:
        _fail(f"{name} is not an agent")
    return agent


def parse_duration(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 3600, 90s, 15m, 12h or 30d")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[match[2]]


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
    config = _config(home)
    seconds = parse_duration(ttl) if ttl else config.tokens.ttl_seconds
    servers = tuple(part.strip() for part in audience.split(",") if part.strip()) if audience else None
    click.echo(_mint(config, name, seconds, servers))


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
    config = _config(home)
    _signing_key(config)  # only the owner of the old key may replace it
    if not yes:
        click.confirm("Every token issued so far will stop working. Rotate the key?", abort=True)
    signing = SigningKey.generate()
    write_key_pair(config.home, signing)
    issued = Issuer(config, lambda: signing).issue_handed_tokens(force=True)
    click.echo(f"◆ new signing key {signing.kid[:12]}…; re-issued tokens: {', '.join(issued)}")
    click.echo("  running agents get new tokens from the lifecycle server within seconds")


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
    from .lifecycle.harness_files import harness_info

    config = _config(home)
    agent = _agent_config(config, name)
    try:
        info = harness_info(config, name, agent)
    except ConfigError as e:
        _fail(str(e))
    token = _mint(config, name, parse_duration(ttl) if ttl else 12 * 3600)
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

    from .lifecycle.harness_files import harness_info
    from .lifecycle.paths import AgentPaths

    config = _config(home)
    _agent_config(config, name)
    paths = AgentPaths.of(config, name)
    if not paths.harness.is_dir():
        _fail(f"{name} has no harness dir yet ({paths.harness}); start it once first")
    owner = paths.harness.stat().st_uid
    cli = Path(bundled_cli())
    if os.geteuid() == 0 and owner != 0:
        # It runs as the agent's uid on the host (no sandbox binds paths in): that uid must be able
        # to walk to the agent's dirs and to Claude Code itself.
        for what, path in ((f"{name}'s dir", config.home), ("Claude Code", cli.resolve().parent)):
            blocked = [p for p in (path, *path.parents) if not p.stat().st_mode & 0o001]
            if blocked:
                _fail(f"{name}'s uid {owner} cannot reach {what} through {blocked[0]}: `chmod o+x {blocked[0]}`")
    for directory in claude_dirs(paths.harness):
        if not directory.exists():
            directory.mkdir(mode=0o700)
            # The agent owns the harness dir and may swap the new dir for a link: never chown through one.
            os.chown(directory, owner, owner, follow_symlinks=False)
    try:
        info = harness_info(config, name, load_agent_config(config.applied_dir / name / AGENT_TOML))
    except ConfigError as e:
        _fail(str(e))
    env = claude_env(info, paths.harness)

    def become_agent() -> None:
        if os.geteuid() == 0 and owner != 0:
            os.setgroups([])
            os.setgid(owner)
            os.setuid(owner)

    import subprocess

    try:
        done = subprocess.run([str(cli), *args], env=env, cwd=paths.state, preexec_fn=become_agent, check=False)
    except OSError as e:
        _fail(f"cannot run {cli} as {name}'s uid {owner}: {e.strerror}")
    sys.exit(done.returncode)


# ------------------------------------------------------------------------------------------ serve


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("HIVE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpx2", "mcp", "fastmcp", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve_dashboard(config: HiveConfig, port: int | None, login_code: bool) -> None:
    """The dashboard holds an operator token (a file the issuer renews), never key material."""
    os.environ.pop("PYTEST_CURRENT_TEST", None)  # NiceGUI would think it runs under pytest (hive up in a test)
    from nicegui import app as nicegui_app

    from hyperhive.ui.app import read_password, run
    from hyperhive.ui.auth import LoginCode

    _setup_logging()
    token = TokenFile(credential(f"{DASHBOARD_TOKEN}.token", handed_token(config, DASHBOARD_TOKEN)))
    try:
        token.check()
    except Refused as e:
        _fail(str(e))
    password_file = credential(DASHBOARD_PASSWORD, config.home / DASHBOARD_PASSWORD)
    try:
        password = read_password(password_file)
    except OSError as e:
        _fail(f"cannot read {password_file}: {e.strerror}; `hive init` creates it")
    if not password:
        _fail(f"{password_file} is empty; write the dashboard password in it")
    host, port = config.dashboard.host, port or config.dashboard.port
    url = f"http://{host}:{port}"
    code = LoginCode.new(LOGIN_CODE_MINUTES * 60) if login_code else None
    _become_dashboard_user(config)

    async def ready() -> None:
        # Start-up hooks run before uvicorn binds its socket: say "ready" once it accepts connections.
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            click.echo(f"{DASHBOARD} listening on {url}")
            if code is not None:
                link = f"{url}/login?code={code.code}"
                click.echo(f"{DASHBOARD} login link {link} (one use, within {LOGIN_CODE_MINUTES} minutes)")
            click.echo(f"{DASHBOARD} ready")
            sys.stdout.flush()
            notify("READY=1")
            return

    nicegui_app.on_startup(ready)
    run(config, token, password, host, port, login_code=code)


def _become_dashboard_user(config: HiveConfig) -> None:
    """Started as root, the dashboard drops to [dashboard] user once it holds its token and password:
    it needs no more than a browser does. It stays root, and says why, where that user could not work."""
    import pwd

    import nicegui

    import hyperhive.ui

    log = logging.getLogger("hyperhive.dashboard")
    user = config.dashboard.user
    storage = config.dashboard_dir
    storage.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() != 0 or not user:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        _fail(f'[dashboard] user = "{user}": no such user; name an existing one, or "" to keep root')
    why_not = ""
    for name in SERVERS:
        if config.listen(name).port is None:
            why_not = f"{name} listens only on a unix socket (0600, root's)"
    # Python imports lazily: that user must reach the standard library and every package, not just
    # start; and the hive home, for its sessions.
    code = (Path(os.__file__), Path(nicegui.__file__), Path(hyperhive.ui.__file__), Path(sys.executable))
    for path in [p.resolve().parent for p in code] + [storage.parent]:
        blocked = [p for p in (path, *path.parents) if not p.stat().st_mode & 0o001]
        if blocked:
            why_not = f"{user} cannot reach {path} through {blocked[0]} (`chmod o+x {blocked[0]}`)"
            break
    if why_not:
        log.warning("the dashboard stays root: %s", why_not)
        return
    for path in (storage, *storage.iterdir()):  # sessions a root dashboard kept before
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    log.info("the dashboard runs as %s (uid %d)", user, entry.pw_uid)


@main.command(name="serve")
@click.argument("server", type=click.Choice([*sorted(SERVERS), DASHBOARD]), metavar="SERVER")
@home_option
@click.option("--port", type=click.IntRange(0, 65535), help="Listen on this loopback port (0: any free one).")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Listen on this unix socket (created 0600).",
)
@click.option(
    "--stop-agents-on-exit",
    is_flag=True,
    help="lifecycle: stop every agent when the server stops (hive up does; a service lets them run).",
)
@click.option(
    "--login-code",
    is_flag=True,
    help=f"dashboard: print a one-time login link (valid {LOGIN_CODE_MINUTES} minutes) once it is ready.",
)
def serve_command(
    server: str, home: Path, port: int | None, socket_path: Path | None, stop_agents_on_exit: bool, login_code: bool
) -> None:
    """Run one hyperhive server (or the dashboard) in the foreground until SIGTERM or Ctrl-C.

    It listens where hive.toml says ([servers.SERVER]); --port and --socket replace that.
    Once it is ready it prints `SERVER listening on URL` for each endpoint, then `SERVER ready`.
    """
    config = _config(home)
    if server == DASHBOARD:
        _serve_dashboard(config, port, login_code)
        return
    if login_code:
        _fail("--login-code is for the dashboard")
    listen = config.listen(server)
    if port is not None or socket_path is not None:
        try:
            listen = Listen(host=listen.host, port=port, socket=socket_path)
        except ValueError as e:
            _fail(str(e))
    options: dict[str, Any] = {}
    if stop_agents_on_exit:
        if server != "lifecycle":
            _fail("--stop-agents-on-exit is for the lifecycle server")
        options["stop_agents_on_exit"] = True
    _setup_logging()
    module = __import__(SERVERS[server], fromlist=["create"])
    try:
        hive_server = module.create(config, server_credentials(config, server), **options)
    except (BackendError, KeyFileError, Refused, UidRangeError) as e:
        _fail(str(e))

    def ready(urls: list[str]) -> None:
        for url in urls:
            click.echo(f"{server} listening on {url}")
        click.echo(f"{server} ready")
        sys.stdout.flush()
        notify("READY=1")  # a Type=notify unit is started now: units ordered after it may call it

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(
                serve(
                    http_app(hive_server.mcp),
                    listen,
                    before_shutdown=hive_server.before_shutdown,
                    on_ready=ready,
                    limits=config.serving,
                )
            )
    except ListenError as e:
        _fail(str(e))


@main.command(name="sandbox-exec", hidden=True)
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--base-env",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A JSON object of variables the spec's own environment adds to and overrides.",
)
def sandbox_exec(spec_file: Path, base_env: Path | None) -> None:
    """Become what an agent's sandbox spec file says: its command, in its cwd, with its environment.

    The harness unit in an agent's nixos-container runs this on the sandbox.json the lifecycle
    server wrote for the start (nix/agent-base.nix).
    """
    from .lifecycle.backends.nixos_spec import SpecError, exec_spec

    try:
        exec_spec(spec_file, base_env)
    except SpecError as e:
        _fail(str(e))


# ---------------------------------------------------------------------------------------- calling


class _Servers:
    """The hive's servers as one command reaches them; a server's client is made when first used."""

    def __init__(self, config: HiveConfig, token: str, timeout: float) -> None:
        self._config, self._token, self._timeout = config, token, timeout
        self._made: list[ServerClient] = []

    @functools.cached_property
    def broker(self) -> BrokerClient:
        from .broker.client import BrokerClient

        return self._keep(BrokerClient)

    @functools.cached_property
    def lifecycle(self) -> LifecycleClient:
        from .lifecycle.client import LifecycleClient

        return self._keep(LifecycleClient)

    @functools.cached_property
    def approvals(self) -> ApprovalsClient:
        from .approvals.client import ApprovalsClient

        return self._keep(ApprovalsClient)

    @functools.cached_property
    def operator(self) -> OperatorClient:
        from .operator.client import OperatorClient

        return self._keep(OperatorClient)

    def _keep(self, kind: type[C]) -> C:
        client = kind.for_server(self._config, self._token, timeout=self._timeout, retry_seconds=0)
        self._made.append(client)
        return client

    async def close(self) -> None:
        for client in self._made:
            await client.close()


def _call(home: Path, call: Callable[[_Servers], Awaitable[R]], *, as_name: str = OPERATOR, timeout: float = 30) -> R:
    """Call a tool of the hive's servers, as `as_name` (a five-minute token this owner issues):
    `_call(home, lambda hive: hive.lifecycle.list_agents())`."""
    from fastmcp.exceptions import ToolError

    from .common.client import AuthRefused, ServerUnavailable

    config = _config(home)
    token_text = _mint(config, as_name, 300)

    async def go() -> R:
        servers = _Servers(config, token_text, timeout)
        try:
            return await call(servers)
        finally:
            await servers.close()

    try:
        return asyncio.run(go())
    except ServerUnavailable as e:
        _fail(f"{e} (is `hive up` running, on this --home?)")
    except (ToolError, AuthRefused) as e:
        _fail(str(e))


def _when(timestamp: str | None) -> str:
    """An ISO 8601 UTC time as the CLI shows it: to the second, no T."""
    return (timestamp or "-")[:19].replace("T", " ")


# --------------------------------------------------------------------------------------------- up


@main.command()
@home_option
def up(home: Path) -> None:
    """Run the whole hive on this machine: set up the home if needed, then every server.

    Each server runs as its own process; the lifecycle server creates the manager agent on the
    first run and starts the agents that should run, the manager first. Ctrl-C or SIGTERM stops
    the agents, then the servers in reverse order.
    """
    from .up import run_hive

    created = init_home(home)
    if created:
        click.echo(f"◆ set up hive home {home.resolve()}")
    config = _config(home)
    servers = {name: ["--stop-agents-on-exit"] if name == "lifecycle" else [] for name in SERVERS}
    servers[DASHBOARD] = ["--login-code"]  # a one-time login link, shown once the hive is up
    _signing_key(config)  # a clear error now, not in an hour
    # It renews the servers' tokens while it runs: with the key of the moment (`hive rotate-key`).
    issuer = Issuer(config, ReloadingSigningKey(config.home / PRIVATE_KEY_FILE).current)
    sys.exit(run_hive(config, servers, echo=click.echo, renew_tokens=issuer.issue_handed_tokens))


# ----------------------------------------------------------------------------------------- agents


@main.command()
@home_option
def agents(home: Path) -> None:
    """List the agents: state, role, model, restarts, whether they need an update."""
    listing = _call(home, lambda hive: hive.lifecycle.list_agents())
    click.echo(f"◆ {len(listing.agents)} agents · {listing.backend} · {listing.isolation}")
    rows = [("name", "role", "state", "model", "started", "restarts", "update", "turn")]
    for agent in listing.agents:
        state: str = agent.state
        if agent.last_signal or agent.last_exit_code not in (None, 0):
            state += f" (last: {agent.last_signal or 'exit ' + str(agent.last_exit_code)})"
        started = _when(agent.started_at)
        rows.append(
            (agent.name, agent.role, state, agent.model, started, str(agent.restart_count),
             "needed" if agent.needs_update else "", _turn_text(agent.turn))
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _turn_text(turn: TurnState | None) -> str:
    """What an agent's harness is doing, in a few words: idle, running 12 s, error: why."""
    if turn is None:
        return ""
    since = _duration(int(max(0.0, time.time() - turn.since)))
    if turn.state == "running":
        return f"running {since}" + (f" ({turn.messages} msgs)" if turn.messages else "")
    if turn.state == "error":
        return f"error {since}: {turn.reason or '?'}"
    if turn.state == "unreadable":  # lifecycle could not read its turn.json (a link, a fifo, garbage)
        return f"unreadable: {turn.reason or '?'}"
    return turn.state


@main.command(name="cancel-turn")
@click.argument("name")
@home_option
def cancel_turn(name: str, home: Path) -> None:
    """Stop the Claude Code turn agent NAME is running (its messages are not handled again)."""
    result = _call(home, lambda hive: hive.lifecycle.cancel_turn(name))
    ended = result.turn.state != "running"
    click.echo(f"◆ {name}: turn {result.cancelled} " + ("cancelled" if ended else "asked to stop (still ending)"))


def _agent_action(
    command_name: str, action: Callable[[LifecycleClient, str], Awaitable[AgentInfo]], summary: str
) -> None:
    @main.command(name=command_name, help=summary)
    @click.argument("name")
    @home_option
    def command(name: str, home: Path) -> None:
        agent = _call(home, lambda hive: action(hive.lifecycle, name), timeout=120)
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
@click.option("--agent", help="Only actions on this agent.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="How many, newest first.")
@home_option
def audit(agent: str | None, limit: int, home: Path) -> None:
    """Who did what to which agent, when, and how it ended (refusals and failures too)."""
    entries = _call(home, lambda hive: hive.lifecycle.audit(limit, agent)).entries
    for entry in entries:
        what = f"{entry.actor} {entry.action} {entry.agent} {entry.outcome}"
        click.echo(f"{_when(entry.at)} {what}" + (f" · {entry.detail}" if entry.detail else ""))
    if not entries:
        click.echo("◆ no actions recorded")


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
    _call(home, lambda hive: hive.lifecycle.destroy(name, purge=purge, force=force), timeout=120)
    click.echo(f"◆ {name}: destroyed" + (" and purged" if purge else " (its repos and state are kept)"))


@main.command()
@click.argument("name")
@click.option("-n", "--lines", type=click.IntRange(1, 5000), default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@home_option
def logs(name: str, lines: int, follow: bool, home: Path) -> None:
    """Print the end of agent NAME's log."""
    printed = _call(home, lambda hive: hive.lifecycle.logs(name, lines)).lines
    for line in printed:
        click.echo(line)
    last = printed[-1] if printed else None
    try:
        while follow:
            time.sleep(1)
            fresh = _call(home, lambda hive: hive.lifecycle.logs(name, 500)).lines
            start = len(fresh) - fresh[::-1].index(last) if last in fresh else 0
            for line in fresh[start:]:
                click.echo(line)
            if fresh:
                last = fresh[-1]
    except KeyboardInterrupt:
        pass


# -------------------------------------------------------------------------------------- approvals


def _echo_diff(diff: str) -> None:
    for line in diff.splitlines():
        colour = "green" if line.startswith("+") else "red" if line.startswith("-") else None
        click.secho("    " + line, fg=None if line.startswith(("+++", "---")) else colour)


def _request_title(request: Request) -> str:
    what = {"apply_commit": "apply config", "spawn": "spawn", "spawn_commit": "spawn from draft"}[request.kind]
    commit = f" @ {request.commit_sha[:12]}" if request.commit_sha else ""
    return f"#{request.id} {what} {request.agent}{commit}"


@main.command()
@click.option("--history", "history", type=click.IntRange(1, 500), metavar="N", help="Show the N latest resolved.")
@click.option("--no-diff", is_flag=True, help="Leave out the diffs.")
@home_option
def approvals(history: int | None, no_diff: bool, home: Path) -> None:
    """List the requests waiting for your decision, with the diff each would apply.

    Each also lists its widenings: what the new config may do that the old could not (role,
    bash patterns, tools, recipients, extra MCP servers, sandbox settings, agent.nix).
    Approve with `hive approve ID`, or deny with `hive deny ID --note TEXT`.
    """
    if history is not None:
        resolved = _call(home, lambda hive: hive.approvals.approval_history(history)).requests
        click.echo(f"◆ {len(resolved)} resolved requests, newest first")
        for request in resolved:
            reason = request.note or request.error
            click.echo(
                f"{_request_title(request)} · {request.state} by {request.resolved_by} "
                f"at {_when(request.resolved_at)}" + (f": {reason}" if reason else "")
            )
        return
    waiting = _call(home, lambda hive: hive.approvals.pending_approvals()).requests
    click.echo(f"◆ {len(waiting)} requests waiting" if waiting else "◆ no requests waiting")
    for request in waiting:
        line = f"{_request_title(request)} · asked by {request.requested_by} at {_when(request.requested_at)}"
        if request.state == "approving":  # approved; waiting for the lifecycle server to carry it out
            line += f" · approved by {request.resolved_by}, being carried out"
        click.echo(line)
        for widening in request.widenings:  # shown even without the diff: what it newly allows
            click.secho(f"    widens {widening}", fg="yellow", bold=True)
        if request.diff and not no_diff:
            _echo_diff(request.diff)


@main.command()
@click.argument("request_id", metavar="ID", type=int)
@home_option
def approve(request_id: int, home: Path) -> None:
    """Approve request ID: it is carried out now, and the manager told the outcome."""
    request = _call(home, lambda hive: hive.approvals.approve(request_id), timeout=300)
    if request.state == "failed":
        _fail(f"request #{request_id} was approved but failed: {request.error}")
    if request.state == "approving":
        click.echo(f"◆ {_request_title(request)}: approved; it is carried out when the lifecycle server answers")
    else:
        click.echo(f"◆ {_request_title(request)}: {request.state}")


@main.command()
@click.argument("request_id", metavar="ID", type=int)
@click.option("--note", required=True, help="Why: the manager reads it.")
@home_option
def deny(request_id: int, note: str, home: Path) -> None:
    """Deny request ID, saying why."""
    request = _call(home, lambda hive: hive.approvals.deny(request_id, note))
    click.echo(f"◆ {_request_title(request)}: denied")


# -------------------------------------------------------------------------------------- questions


@main.command()
@home_option
def questions(home: Path) -> None:
    """List the questions waiting for your answer, oldest first.

    Answer with `hive answer ID TEXT…`, or cancel with `hive cancel-question ID`.
    """
    waiting = _call(home, lambda hive: hive.operator.pending_questions()).questions
    click.echo(f"◆ {len(waiting)} questions waiting" if waiting else "◆ no questions waiting")
    for question in waiting:
        click.echo(f"#{question.id} from {question.asker} · {_duration(question.seconds_left)} left")
        for line in question.question.splitlines():
            click.echo(f"    {line}")
        if question.options:
            pick = "pick one or more" if question.multi else "pick one"
            click.echo(f"    {pick}: {' | '.join(question.options)}")


def _duration(seconds: int) -> str:
    """Seconds as their two largest units: 59s, 4m 10s, 23h 59m, 2d 3h."""
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count or (parts and len(parts) < 2):
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return " ".join(part for part in parts if not part.startswith("0")) or "0s"


@main.command()
@click.argument("question_id", metavar="ID", type=int)
@click.argument("text", nargs=-1, required=True)
@home_option
def answer(question_id: int, text: tuple[str, ...], home: Path) -> None:
    """Answer question ID with TEXT; the asker gets it in its inbox.

    With options, TEXT is one of them; for a question that takes several, give each option as
    its own argument (quote options with spaces): hive answer 7 red "dark blue".
    """
    waiting = _call(home, lambda hive: hive.operator.pending_questions()).questions
    question = next((q for q in waiting if q.id == question_id), None)
    given: str | list[str] = " ".join(text)
    if question is not None and question.multi and len(text) > 1:
        given = list(text)
    resolved = _call(home, lambda hive: hive.operator.answer(question_id, given))
    click.echo(f"◆ question #{question_id}: answered {resolved.answer!r}")


@main.command(name="cancel-question")
@click.argument("question_id", metavar="ID", type=int)
@home_option
def cancel_question(question_id: int, home: Path) -> None:
    """Cancel question ID; its asker gets "[cancelled]"."""
    _call(home, lambda hive: hive.operator.cancel_question(question_id))
    click.echo(f"◆ question #{question_id}: cancelled")


# --------------------------------------------------------------------------------------- messages


@main.command()
@click.argument("to")
@click.argument("text", nargs=-1, required=True)
@click.option("--reply-to", type=int, help="Id of the message this answers.")
@home_option
def send(to: str, text: tuple[str, ...], reply_to: int | None, home: Path) -> None:
    """Send a message as the operator to TO: an agent, or '*' for every agent."""
    sent = _call(home, lambda hive: hive.broker.send(to, " ".join(text), reply_to))
    click.echo(f"◆ message #{sent.id} sent to {sent.recipients} inbox{'' if sent.recipients == 1 else 'es'}")


@main.command()
@click.option("--wait", type=click.FloatRange(0, 180), default=0, show_default=True, help="Seconds to wait.")
@home_option
def inbox(wait: float, home: Path) -> None:
    """Take the operator's messages (up to 50), waiting up to --wait seconds for the first."""

    def show(messages: list[Message], queued: int) -> None:
        for message in messages:
            reply = f" (re #{message.in_reply_to})" if message.in_reply_to else ""
            click.echo(f"#{message.id} {_when(message.sent_at)} {message.sender}{reply}: {message.body}")
        if not messages:
            click.echo("◆ no messages")
        if queued:
            click.echo(f"◆ {queued} more waiting")

    _receive(home, 50, wait, OPERATOR, show)


def _receive(home: Path, limit: int, wait: float, as_name: str, show: Callable[[list[Message], int], None]) -> None:
    """Lease messages, show them, then ack them: at-least-once, so a broker (or this process) that
    dies before the ack hands them out again when the lease ends, instead of losing them."""
    result = _call(
        home, lambda hive: hive.broker.recv_batch(max=limit, wait_seconds=wait, ack=False), as_name=as_name,
        timeout=wait + 30,
    )  # fmt: skip
    show(result.messages, result.queued)
    ids = [message.id for message in result.messages]
    if not ids:
        return
    try:
        _call(home, lambda hive: hive.broker.ack(ids), as_name=as_name)
    except click.ClickException as e:
        _fail(f"{e.message}\nthe messages above were shown but not acknowledged: they will be delivered again")


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
    sent = _call(home, lambda hive: hive.broker.send(to, body, reply_to), as_name=as_name)
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


if __name__ == "__main__":
    main()
