"""Adding a server takes one entry in servers/common/registry.py plus the server's own folder.

The test copies hyperhive's sources, adds a sixth server ("wiki", one tool) to the copy's registry
and a folder for it, and checks in a fresh interpreter on that copy that every place which lists
the servers knows it without being touched: hive.toml's defaults and template, the tool catalog,
agent.toml validation, the reserved names, the service principals and their handed tokens, the
ports a sandbox reaches, what the harness is told, `hive serve`. Then it serves the wiki with
`hive serve wiki` and calls its tool over HTTP with an agent's token.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hivetest import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

FORGE_ENTRY = """
REGISTRY = (
    *REGISTRY,
    ServerSpec(
        name="wiki",
        module="hyperhive.servers.wiki.server",
        port={port},
        tools={{"wiki_ping": AGENT}},
        calls={{"broker": frozenset({{"post_event"}})}},
    ),
)
SERVER_NAMES = tuple(spec.name for spec in REGISTRY)
_BY_NAME = {{spec.name: spec for spec in REGISTRY}}
"""

FORGE_SERVER = """
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.tokens import ServerCredentials, caller
from hyperhive.servers.common.toolserver import HiveServer, create_mcp


def create(config: HiveConfig, credentials: ServerCredentials) -> HiveServer:
    credentials.service_token()  # handed to it as to every other service
    mcp = create_mcp("wiki", instructions="a fake sixth server", credentials=credentials,
                     agents=AgentRegistry(config.applied_dir, config.instances_dir))

    @mcp.tool
    async def wiki_ping() -> dict[str, str]:
        return {"pong": caller().name}

    return HiveServer(mcp)
"""

CHECKS = """
import asyncio, os, subprocess, sys
from pathlib import Path

import hyperhive
assert str(Path(hyperhive.__path__[0]).parent) == os.environ["COPY"], hyperhive.__path__

from hyperhive.servers.cli import SERVERS, main
from hyperhive.servers.home import init_home
from hyperhive.servers.common import access, catalog, names
from hyperhive.servers.common.client import HiveClient, server_address
from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.config import HIVE_TOML_TEMPLATE, load_hive_config
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.instances import new_instance
from hyperhive.servers.common.issuer import HANDED_TOKENS, issue_token
from hyperhive.servers.lifecycle.harness_files import harness_info
from hyperhive.servers.lifecycle.sandbox_network import hive_ports

port = int(os.environ["FORGE_PORT"])
assert list(SERVERS)[-1] == "wiki" and SERVERS["wiki"] == "hyperhive.servers.wiki.server"
assert f'[servers.wiki]\\nhost = "127.0.0.1"\\nport = {port}\\n' in HIVE_TOML_TEMPLATE
assert "wiki" in names.RESERVED and "wiki" in names.SERVICES
assert catalog.CATALOG["wiki"]["wiki_ping"] is access.AGENT
assert catalog.SERVICE_TOOLS["service:wiki"] == {"broker": frozenset({"post_event"})}
assert "service-wiki" in [handed.name for handed in HANDED_TOKENS]
assert "wiki" in main.commands["serve"].params[0].type.choices  # hive serve wiki

home = Path(os.environ["HOME_DIR"])
init_home(home)
config = load_hive_config(home)
assert config.listen("wiki").port == port and config.db_path("wiki").name == "wiki.sqlite"
assert (config.tokens_dir / "service-wiki.token").is_file()
assert ("127.0.0.1", port) in hive_ports(config)
agent = AgentConfig.model_validate({"tools": {"wiki": ["wiki_ping"]}})
info = harness_info(config, "alice", agent)
assert info.tools["wiki"] == ["wiki_ping"] and info.servers["wiki"].endswith(f":{port}/mcp")
assert AgentConfig().allowed_tools("wiki") == {"wiki_ping"}  # an agent tool: every agent's by default

(home / "applied" / "alice").mkdir(parents=True)
write_atomic(home / "applied" / "alice" / "agent.toml", 'role = "agent"\\n')
new_instance(config.instances_dir, "alice")
token = issue_token(config, "alice", 600)

serving = subprocess.Popen(
    [sys.executable, "-c", "from hyperhive.servers.cli import main; main()", "serve", "wiki", "--home", str(home)],
    stdout=subprocess.PIPE, text=True,
)
try:
    lines = []
    for line in serving.stdout:
        lines.append(line)
        if line.strip() == "wiki ready":
            break
    assert lines and lines[-1].strip() == "wiki ready", lines

    async def ping():
        async with HiveClient(server_address(config, "wiki"), token, retry_seconds=0) as wiki:
            return await wiki.call("wiki_ping", {})

    assert asyncio.run(ping()) == {"pong": "alice"}
finally:
    serving.terminate()
    serving.wait(10)
print("sixth server ok")
"""


def test_another_server_is_one_registry_entry_and_its_folder(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("servers", "harness", "ui"):
        shutil.copytree(ROOT / folder, copy / "hyperhive" / folder, ignore=ignore)
    registry = copy / "hyperhive" / "servers" / "common" / "registry.py"
    port = free_port()
    registry.write_text(registry.read_text() + FORGE_ENTRY.format(port=port))
    wiki = copy / "hyperhive" / "servers" / "wiki"
    wiki.mkdir()
    (wiki / "__init__.py").write_text("")
    (wiki / "server.py").write_text(FORGE_SERVER)

    env = {**os.environ, "PYTHONPATH": str(copy), "COPY": str(copy), "FORGE_PORT": str(port)}
    env["HOME_DIR"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECKS)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sixth server ok" in result.stdout
