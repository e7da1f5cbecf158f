"""Adding a server takes one entry in servers/common/registry.py plus the server's own folder.

The test copies hyperhive's sources, adds a fifth server ("forge", one tool) to the copy's registry
and a folder for it, and checks in a fresh interpreter on that copy that every place which lists
the servers knows it without being touched: hive.toml's defaults and template, the tool catalog,
agent.toml validation, the reserved names, the service principals and their handed tokens, the
ports a sandbox reaches, what the harness is told, `hive serve`. Then it serves the forge with
`hive serve forge` and calls its tool over HTTP with an agent's token.
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
        name="forge",
        module="hyperhive.servers.forge.server",
        port={port},
        tools={{"forge_ping": AGENT}},
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
    mcp = create_mcp("forge", instructions="a fake fifth server", credentials=credentials,
                     agents=AgentRegistry(config.applied_dir, config.instances_dir))

    @mcp.tool
    async def forge_ping() -> dict[str, str]:
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
assert list(SERVERS)[-1] == "forge" and SERVERS["forge"] == "hyperhive.servers.forge.server"
assert f'[servers.forge]\\nhost = "127.0.0.1"\\nport = {port}\\n' in HIVE_TOML_TEMPLATE
assert "forge" in names.RESERVED and "forge" in names.SERVICES
assert catalog.CATALOG["forge"]["forge_ping"] is access.AGENT
assert catalog.SERVICE_TOOLS["service:forge"] == {"broker": frozenset({"post_event"})}
assert "service-forge" in [handed.name for handed in HANDED_TOKENS]
assert "forge" in main.commands["serve"].params[0].type.choices  # hive serve forge

home = Path(os.environ["HOME_DIR"])
init_home(home)
config = load_hive_config(home)
assert config.listen("forge").port == port and config.db_path("forge").name == "forge.sqlite"
assert (config.tokens_dir / "service-forge.token").is_file()
assert ("127.0.0.1", port) in hive_ports(config)
agent = AgentConfig.model_validate({"tools": {"forge": ["forge_ping"]}})
info = harness_info(config, "alice", agent)
assert info.tools["forge"] == ["forge_ping"] and info.servers["forge"].endswith(f":{port}/mcp")
assert AgentConfig().allowed_tools("forge") == {"forge_ping"}  # an agent tool: every agent's by default

(home / "applied" / "alice").mkdir(parents=True)
write_atomic(home / "applied" / "alice" / "agent.toml", 'role = "agent"\\n')
new_instance(config.instances_dir, "alice")
token = issue_token(config, "alice", 600)

serving = subprocess.Popen(
    [sys.executable, "-c", "from hyperhive.servers.cli import main; main()", "serve", "forge", "--home", str(home)],
    stdout=subprocess.PIPE, text=True,
)
try:
    lines = []
    for line in serving.stdout:
        lines.append(line)
        if line.strip() == "forge ready":
            break
    assert lines and lines[-1].strip() == "forge ready", lines

    async def ping():
        async with HiveClient(server_address(config, "forge"), token, retry_seconds=0) as forge:
            return await forge.call("forge_ping", {})

    assert asyncio.run(ping()) == {"pong": "alice"}
finally:
    serving.terminate()
    serving.wait(10)
print("fifth server ok")
"""


def test_a_fifth_server_is_one_registry_entry_and_its_folder(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("servers", "harness", "ui"):
        shutil.copytree(ROOT / folder, copy / "hyperhive" / folder, ignore=ignore)
    registry = copy / "hyperhive" / "servers" / "common" / "registry.py"
    port = free_port()
    registry.write_text(registry.read_text() + FORGE_ENTRY.format(port=port))
    forge = copy / "hyperhive" / "servers" / "forge"
    forge.mkdir()
    (forge / "__init__.py").write_text("")
    (forge / "server.py").write_text(FORGE_SERVER)

    env = {**os.environ, "PYTHONPATH": str(copy), "COPY": str(copy), "FORGE_PORT": str(port)}
    env["HOME_DIR"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECKS)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fifth server ok" in result.stdout
