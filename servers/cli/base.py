"""What every `hive` command shares: the group, --home, one clear line for a failure, the hive's
settings and key, and calling the hive's servers with a short-lived token this owner issues."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn, TypeVar

import click
from pydantic import BaseModel

from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.config import HIVE_TOML, HiveConfig, load_hive_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.issuer import IssueError, Issuer
from hyperhive.servers.common.keys import PRIVATE_KEY_FILE, KeyFileError, SigningKey, load_signing_key
from hyperhive.servers.common.names import OPERATOR
from hyperhive.servers.common.registry import REGISTRY

if TYPE_CHECKING:  # the clients are imported when a command calls a server: `hive token` needs none
    from hyperhive.servers.approvals.client import ApprovalsClient
    from hyperhive.servers.broker.client import BrokerClient
    from hyperhive.servers.common.server_client import ServerClient
    from hyperhive.servers.forge.client import ForgeClient
    from hyperhive.servers.lifecycle.client import LifecycleClient
    from hyperhive.servers.operator.client import OperatorClient

R = TypeVar("R")
C = TypeVar("C", bound="ServerClient")

DEFAULT_HOME = ".hive"
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


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def hive_config(home: Path) -> HiveConfig:
    if not (home / HIVE_TOML).is_file():
        # Most often the command ran elsewhere than the hive's home: point at it; a new home is rare.
        fail(
            f"{home.resolve()} is not a hive home (it has no {HIVE_TOML}): point at yours with "
            f"--home DIR or HIVE_HOME=DIR; `hive init --home DIR` sets up a new one"
        )
    try:
        return load_hive_config(home)
    except ConfigError as e:
        fail(str(e))


# The servers' refusals name their tools (an agent reads them); the operator at a shell runs verbs.
# Each (pattern, CLI words), applied in order to the text of a refusal the CLI prints.
_CLI_WORDS: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern), words)
    for pattern, words in (
        (r"\blist_repos and repo_log show\b", "`hive repos` and `hive repo log NAME --ref REF` show"),
        (r"\blist_agents (shows|lists)\b", r"`hive agents` \1"),
        (r"\bpending_questions (shows|lists)\b", r"`hive questions` \1"),
        (r"\bpending_approvals (shows|lists)\b", r"`hive approvals` \1"),
        (r"\blist_repos (shows|lists)\b", r"`hive repos` \1"),
        (r"\blist_hosts (says|shows|lists)\b", r"`hive hosts` \1"),
        (r"\bneeds force=true\b", "needs --force"),
        (r"\bdestroy agents with purge\b", "destroy agents with `hive destroy NAME --purge`"),
        (r"\b(?:call |with |run )?reset_session\b", "run `hive reset-session NAME`"),
        (r"\b(?:call |with )?set_budget\b", "`hive set-budget NAME USD_PER_DAY`"),
        (r"\b(?:call |with )?resume_agent\b", "`hive resume NAME`"),
        (r"\b(?:call |with )?set_model\b", "`hive set-model NAME MODEL`"),
        (r"\b(?:call |with )?rebuild_stale\b", "`hive update-all`"),
        (r"\b(?:call |with )?create_agent\b", "`hive spawn NAME`"),
    )
)


def cli_words(text: str) -> str:
    """A server's refusal as the CLI prints it: the verbs to run instead of the tools to call."""
    for pattern, words in _CLI_WORDS:
        text = pattern.sub(words, text)
    return text


json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON array of the items instead.")


def echo_json(items: Sequence[BaseModel]) -> None:
    """Items as one JSON array (each the tool's model, dumped): `jq`, or parsed back into the model."""
    click.echo(json.dumps([item.model_dump(mode="json") for item in items], indent=2))


def signing_key(config: HiveConfig) -> SigningKey:
    """The hive's private key: only its owner (root, or who ran `hive init`) issues tokens."""
    try:
        return load_signing_key(config.home / PRIVATE_KEY_FILE)
    except KeyFileError as e:
        fail(str(e))


def set_up_home(home: Path, port_base: int | None = None) -> list[str]:
    """Create what is missing in the hive home (servers/home.py); a failure is one clear line."""
    from hyperhive.servers.home import init_home

    try:
        return init_home(home, port_base)
    except (ConfigError, KeyFileError, IssueError) as e:
        fail(str(e))


def owner_issuer(config: HiveConfig) -> Issuer:
    signing = signing_key(config)
    return Issuer(config, lambda: signing)


def mint(config: HiveConfig, name: str, ttl_seconds: int, audience: tuple[str, ...] | None = None) -> str:
    try:
        return owner_issuer(config).token_for(name, ttl_seconds, audience)
    except IssueError as e:
        fail(str(e))


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


_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def applied_agent_config(config: HiveConfig, name: str) -> AgentConfig:
    """The applied config of agent `name`, or a clear failure."""
    try:
        _, agent = owner_issuer(config).principal_named(name)
    except IssueError as e:
        fail(str(e))
    if agent is None:
        fail(f"{name} is not an agent")
    return agent


def parse_duration(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 3600, 90s, 15m, 12h or 30d")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[match[2]]


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("HIVE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpx2", "mcp", "fastmcp", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows (the first the header) as aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


class HiveServers:
    """The hive's servers as one command reaches them; a server's client is made when first used."""

    def __init__(self, config: HiveConfig, token: str, timeout: float) -> None:
        self._config, self._token, self._timeout = config, token, timeout
        self._made: list[ServerClient] = []

    @functools.cached_property
    def broker(self) -> BrokerClient:
        from hyperhive.servers.broker.client import BrokerClient

        return self._keep(BrokerClient)

    @functools.cached_property
    def lifecycle(self) -> LifecycleClient:
        from hyperhive.servers.lifecycle.client import LifecycleClient

        return self._keep(LifecycleClient)

    @functools.cached_property
    def approvals(self) -> ApprovalsClient:
        from hyperhive.servers.approvals.client import ApprovalsClient

        return self._keep(ApprovalsClient)

    @functools.cached_property
    def operator(self) -> OperatorClient:
        from hyperhive.servers.operator.client import OperatorClient

        return self._keep(OperatorClient)

    @functools.cached_property
    def forge(self) -> ForgeClient:
        from hyperhive.servers.forge.client import ForgeClient

        return self._keep(ForgeClient)

    def _keep(self, kind: type[C]) -> C:
        client = kind.for_server(self._config, self._token, timeout=self._timeout, retry_seconds=0)
        self._made.append(client)
        return client

    async def close(self) -> None:
        for client in self._made:
            await client.close()


def call_hive(
    home: Path, call: Callable[[HiveServers], Awaitable[R]], *, as_name: str = OPERATOR, timeout: float = 30
) -> R:
    """Call a tool of the hive's servers, as `as_name` (a five-minute token this owner issues):
    `call_hive(home, lambda hive: hive.lifecycle.list_agents())`."""
    from fastmcp.exceptions import ToolError

    from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable

    config = hive_config(home)
    token_text = mint(config, as_name, 300)

    async def go() -> R:
        servers = HiveServers(config, token_text, timeout)
        try:
            return await call(servers)
        finally:
            await servers.close()

    try:
        return asyncio.run(go())
    except ServerUnavailable as e:
        fail(f"{e} (is `hive up` running, on this --home?)")
    except (ToolError, AuthRefused) as e:
        fail(cli_words(str(e)))
