"""Running the hive: `hive serve SERVER` (an MCP server or the dashboard), `hive up`, and the
hidden `sandbox-exec` a NixOS agent container runs."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import uvloop

from hyperhive.servers.cli.base import (
    DASHBOARD,
    LOGIN_CODE_MINUTES,
    SERVERS,
    fail,
    hive_config,
    home_option,
    main,
    mint,
    set_up_home,
    setup_logging,
    signing_key,
)
from hyperhive.servers.common.config import HiveConfig, Listen
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.issuer import DASHBOARD_TOKEN, Issuer, handed_token, server_credentials
from hyperhive.servers.common.keys import PRIVATE_KEY_FILE, KeyFileError, ReloadingSigningKey
from hyperhive.servers.common.names import OPERATOR
from hyperhive.servers.common.privileges import drop_to
from hyperhive.servers.common.serving import ListenError, http_app, serve
from hyperhive.servers.common.systemd import TLS_KEY_CREDENTIAL, credential, notify
from hyperhive.servers.common.tokens import TokenFile
from hyperhive.servers.home import DASHBOARD_PASSWORD
from hyperhive.servers.lifecycle.backends.base import BackendError
from hyperhive.servers.lifecycle.uidrange import UidRangeError


def _serve_dashboard(config: HiveConfig, port: int | None, login_code: bool) -> None:
    """The dashboard holds an operator token (a file the issuer renews), never key material."""
    os.environ.pop("PYTEST_CURRENT_TEST", None)  # NiceGUI would think it runs under pytest (hive up in a test)
    from nicegui import app as nicegui_app

    from hyperhive.ui.app import read_password, run
    from hyperhive.ui.auth import LoginCode

    setup_logging()
    token = TokenFile(credential(f"{DASHBOARD_TOKEN}.token", handed_token(config, DASHBOARD_TOKEN)))
    try:
        token.check()
    except Refused as e:
        fail(str(e))
    password_file = credential(DASHBOARD_PASSWORD, config.home / DASHBOARD_PASSWORD)
    try:
        password = read_password(password_file)
    except OSError as e:
        fail(f"cannot read {password_file}: {e.strerror}; `hive init` creates it")
    if not password:
        fail(f"{password_file} is empty; write the dashboard password in it")
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
        fail(f'[dashboard] user = "{user}": no such user; name an existing one, or "" to keep root')
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
    drop_to(entry.pw_uid, entry.pw_gid)
    log.info("the dashboard runs as %s (uid %d)", user, entry.pw_uid)


@main.command(name="serve")
@click.argument("server", type=click.Choice([*sorted(SERVERS), DASHBOARD]), metavar="SERVER")
@home_option
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Listen on this port of the server's host (0: any free one)."
)
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
    config = hive_config(home)
    if server == DASHBOARD:
        _serve_dashboard(config, port, login_code)
        return
    if login_code:
        fail("--login-code is for the dashboard")
    listen = config.listen(server)
    if port is not None or socket_path is not None:
        try:
            listen = Listen(
                host=listen.host, port=port, socket=socket_path, tls_cert=listen.tls_cert, tls_key=listen.tls_key
            )
        except ValueError as e:
            fail(str(e))
    if listen.tls_key is not None:
        # A unit reads a key that only root may read as the copy systemd hands it (nix/module.nix).
        listen = listen.model_copy(update={"tls_key": credential(TLS_KEY_CREDENTIAL, listen.tls_key)})
    options: dict[str, Any] = {}
    if stop_agents_on_exit:
        if server != "lifecycle":
            fail("--stop-agents-on-exit is for the lifecycle server")
        options["stop_agents_on_exit"] = True
    setup_logging()
    module = __import__(SERVERS[server], fromlist=["create"])
    try:
        hive_server = module.create(config, server_credentials(config, server), **options)
    except (BackendError, KeyFileError, Refused, UidRangeError) as e:
        fail(str(e))

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
                    http_app(hive_server.mcp, listen.host),
                    listen,
                    before_shutdown=hive_server.before_shutdown,
                    on_ready=ready,
                    limits=config.serving,
                )
            )
    except ListenError as e:
        fail(str(e))


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
    from hyperhive.servers.lifecycle.backends.nixos_spec import SpecError, exec_spec

    try:
        exec_spec(spec_file, base_env)
    except SpecError as e:
        fail(str(e))


@main.command()
@home_option
def up(home: Path) -> None:
    """Run the whole hive on this machine: set up the home if needed, then every server.

    Each server runs as its own process; the lifecycle server creates the manager agent on the
    first run and starts the agents that should run, the manager first. Ctrl-C or SIGTERM stops
    the agents, then the servers in reverse order.
    """
    from hyperhive.servers.up import AlreadyUp, run_hive

    created = set_up_home(home)
    if created:
        click.echo(f"◆ set up hive home {home.resolve()}")
    config = hive_config(home)
    servers = {name: ["--stop-agents-on-exit"] if name == "lifecycle" else [] for name in SERVERS}
    servers[DASHBOARD] = ["--login-code"]  # a one-time login link, shown once the hive is up
    signing_key(config)  # a clear error now, not in an hour
    # It renews the servers' tokens while it runs: with the key of the moment (`hive rotate-key`).
    issuer = Issuer(config, ReloadingSigningKey(config.home / PRIVATE_KEY_FILE).current)
    try:
        code = run_hive(config, servers, echo=click.echo, renew_tokens=issuer.issue_handed_tokens,
                        before_start=lambda: _refuse_if_serving(config))  # fmt: skip
    except AlreadyUp as e:
        fail(_already_up(config, e))
    sys.exit(code)


def _already_up(config: HiveConfig, running: Exception) -> str:
    from hyperhive.servers.up import AlreadyUp

    assert isinstance(running, AlreadyUp)
    record = running.record
    dashboard = f"http://{config.dashboard.host}:{config.dashboard.port}"
    if record is None:  # it holds the lock but has not written where it runs yet: it is starting
        return f"the hive at {config.home} is already starting (`hive up` holds {config.run_dir / 'up.lock'})"
    urls = record.urls.get(DASHBOARD) or [dashboard]
    return (
        f"the hive at {config.home} is already running: `hive up` pid {record.pid} since "
        f"{record.started_at[:19].replace('T', ' ')} UTC, dashboard {urls[0]}. "
        f"`hive agents` shows it; stop it with Ctrl-C where it runs, or `kill {record.pid}`"
    )


def _refuse_if_serving(config: HiveConfig) -> None:
    """This hive's servers may run without `hive up` (systemd units, `hive serve`): one that answers
    this home's operator token on its port is this hive's, and starting another would only fail."""
    from hyperhive.servers.home import ports_in_use
    from hyperhive.servers.lifecycle.client import LifecycleClient

    listen = config.listen("lifecycle")
    if listen.port is None or not ports_in_use({"lifecycle": listen.port}, listen.host):
        return
    token = mint(config, OPERATOR, 60)

    async def answers() -> bool:
        client = LifecycleClient.for_server(config, token, timeout=5, retry_seconds=0)
        try:
            await client.list_agents()
            return True
        except Exception:  # anything else on that port (another hive, another program) is not ours
            return False
        finally:
            await client.close()

    if asyncio.run(answers()):
        fail(
            f"the hive at {config.home} is already running outside `hive up` (its lifecycle server answers "
            f"on {listen.host}:{listen.port}: a service, or `hive serve`); `hive agents` shows it"
        )
