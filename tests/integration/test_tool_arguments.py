"""Every tool of every server, called with out-of-range and ill-typed arguments over real HTTP:
each gets a clean refusal that says what was wrong, never an internal error, and no server logs a
traceback for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from hivetest import Servers, free_port

from hyperhive.servers.cli import SERVERS
from hyperhive.servers.common.catalog import CATALOG
from hyperhive.servers.common.principals import Role
from hyperhive.servers.common.registry import callers

pytestmark = pytest.mark.slow

BAD_INTS = [2**63, 2**64 + 5, 10**30, -(2**63) - 1, -1, 0]
HUGE_STRING = "x" * 300_000


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    home: Path = tmp_path_factory.mktemp("fuzz") / "hive"
    hive = Servers(home, ports={server: free_port() for server in SERVERS})
    with hive.serving():
        yield hive


def _caller(server: str, tool: str) -> str:
    """Someone who holds the tool: the operator, or the service that calls it."""
    roles = CATALOG[server][tool].roles
    if Role.OPERATOR in roles:
        return "operator"
    if Role.MANAGER in roles:  # the harness's own tools (record_turn)
        return "manager"
    calling = [spec.name for spec in callers() if tool in spec.calls.get(server, ())]  # the service that calls it
    return f"service:{calling[0]}" if calling else f"service:{server}"


def _plausible(schema: dict[str, Any]) -> Any:
    """A value of the parameter's type that names nothing real (so nothing is done)."""
    kinds = _types(schema)
    if "integer" in kinds:
        return 1
    if "number" in kinds:
        return 10.0
    if "boolean" in kinds:
        return False
    if "array" in kinds:
        return [1]
    if "object" in kinds:
        return {"type": "spawned", "agent": "ghost"}
    return "ghost"


def _types(schema: dict[str, Any]) -> set[str]:
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for option in schema.get("anyOf", []):
        found |= _types(option)
    if "$ref" in schema:
        found.add("object")
    return found


def _bad_values(schema: dict[str, Any]) -> list[Any]:
    kinds = _types(schema)
    bad: list[Any] = []
    if "integer" in kinds:
        bad += BAD_INTS
    if "number" in kinds:
        bad += [10**30, -(2**63), -1.5, 1e308]
    if "array" in kinds and "integer" in _types(schema.get("items", {})):
        bad += [[value] for value in BAD_INTS] + [["1"], [1.5]]
    if "string" in kinds:
        bad += [HUGE_STRING, 12]
    else:
        bad += [HUGE_STRING]
    if "boolean" not in kinds:
        bad += [{"nested": True}]
    return bad


async def test_every_tool_refuses_bad_arguments_cleanly(servers: Servers) -> None:
    internal: list[str] = []
    accepted: list[str] = []
    calls = 0
    for server in SERVERS:
        url = servers.processes[server].url
        clients: dict[str, Client[Any]] = {}
        try:
            for tool_name in CATALOG[server]:
                who = _caller(server, tool_name)
                if who not in clients:
                    clients[who] = Client(url, auth=servers.token(who))
                    await clients[who].__aenter__()
                client = clients[who]
                tool = next(t for t in await client.list_tools() if t.name == tool_name)
                properties: dict[str, Any] = tool.input_schema.get("properties", {})
                base = {name: _plausible(schema) for name, schema in properties.items()}
                for name, schema in properties.items():
                    for value in _bad_values(schema):
                        calls += 1
                        what = f"{server}.{tool_name}({name}={str(value)[:30]})"
                        try:
                            await client.call_tool(tool_name, {**base, name: value})
                        except ToolError as e:
                            if "Error calling tool" in str(e) or "Traceback" in str(e):
                                internal.append(f"{what}: {e}")
                        else:
                            accepted.append(what)
        finally:
            for client in clients.values():
                await client.__aexit__(None, None, None)
    assert calls > 300
    assert not internal, "\n".join(internal)
    assert not accepted, "\n".join(accepted)
    for server, process in servers.processes.items():
        assert "Traceback" not in process.stderr(), f"{server}:\n{process.stderr()[-5000:]}"
