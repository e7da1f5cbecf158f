"""Authentication (401s) and allow-lists, against the broker over real HTTP."""

from __future__ import annotations

import base64
import json
import time

import httpx2
import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Hive

from hyperhive.servers.common.keys import SigningKey
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.tokens import mint_token

LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


async def _post(url: str, token: str | None, body: dict[str, object] = INITIALIZE) -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient() as http:
        return await http.post(url, json=body, headers=headers)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens(hive: Hive) -> dict[str, str]:
    from joserfc import jwt
    from joserfc.jwk import OctKey

    now = int(time.time())
    operator = Principal("operator", Role.OPERATOR)
    signing, everywhere = hive.signing, ["approvals", "broker", "lifecycle", "operator"]
    claims = {"iss": "hyperhive", "sub": "operator", "role": "operator", "iat": now, "exp": now + 600}
    claims["aud"] = everywhere
    public = (hive.home / "signing.pub").read_bytes()
    return {
        "forged (another key)": mint_token(SigningKey.generate(), operator, 600, audience=everywhere),
        "expired": mint_token(signing, operator, 60, audience=everywhere, now=now - 3600),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "HS256 with the public key as secret": jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(public)),
        "garbage": "not-a-token",
        "unknown role": f"{_b64({'alg': 'Ed25519'})}.{_b64({**claims, 'role': 'root'})}.sig",
        "not meant for the broker": mint_token(signing, operator, 600, audience=["operator"]),
        "a service that does not exist": f"{_b64({'alg': 'Ed25519'})}.{_b64({**claims, 'sub': 'service:evil'})}.x",
        "agent that does not exist": mint_token(
            signing, Principal("ghost", Role.AGENT), 600, audience=everywhere, instance="x"
        ),
        "agent claiming manager": mint_token(
            signing, Principal("alice", Role.MANAGER), 600, audience=everywhere, instance="x"
        ),
        "agent of an ended instance": mint_token(
            signing, Principal("alice", Role.AGENT), 600, audience=everywhere, instance="ended"
        ),
    }


async def test_requests_without_a_valid_token_get_401(hive: Hive, broker: BrokerEndpoint) -> None:
    hive.add_agent("alice")
    response = await _post(broker.url, None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    for reason, token in _bad_tokens(hive).items():
        response = await _post(broker.url, token)
        assert response.status_code == 401, reason
        assert 'error="invalid_token"' in response.headers["www-authenticate"], reason
    assert (await _post(broker.url, hive.token("operator"))).status_code == 200


async def test_a_destroyed_agent_loses_access_at_once(hive: Hive, broker: BrokerEndpoint) -> None:
    alice = hive.add_agent("alice")
    token = hive.token(alice)
    assert (await _post(broker.url, token)).status_code == 200
    hive.remove_agent(alice)  # no rescan, no wait: the next call is refused
    assert (await _post(broker.url, token)).status_code == 401


async def test_agent_sees_only_its_tools_and_is_refused_the_rest(hive: Hive, broker: BrokerEndpoint) -> None:
    alice = hive.add_agent("alice")
    tools = set(await broker.client(alice).list_tools())
    assert tools == {
        "send", "recv", "recv_batch", "ack", "lease", "pending_count", "thread",
        "remind", "list_my_reminders", "cancel_reminder", "search_messages",
    }  # fmt: skip
    for tool, kind in [
        ("list_messages", "operator tool"),
        ("peek_inbox", "operator tool"),
        ("stats", "operator tool"),
        ("post_event", "service"),
    ]:
        with pytest.raises(ToolError, match=rf"permission denied: broker\.{tool} is an? {kind}"):
            await broker.client(alice).call(tool, {})


async def test_operator_and_service_tool_sets(hive: Hive, broker: BrokerEndpoint) -> None:
    operator_tools = set(await broker.client("operator").list_tools())
    assert {"list_messages", "stats", "send", "recv"} <= operator_tools
    assert "post_event" not in operator_tools
    with pytest.raises(ToolError, match=r"broker\.post_event is a service tool"):
        await broker.client("operator").call("post_event", {"to": "manager", "event": {"type": "killed"}})
    # A service may call exactly what its server calls: the lifecycle server only posts events.
    assert set(await broker.client("service:lifecycle").list_tools()) == {"post_event"}
    with pytest.raises(ToolError, match=r"service:lifecycle does not call broker\.send"):
        await broker.client("service:lifecycle").call("send", {"to": "manager", "body": "x"})
    with pytest.raises(ToolError, match=r"service:operator does not call broker\.list_messages"):
        await broker.client("service:operator").call("list_messages", {})


async def test_agent_toml_narrows_and_widens_the_allow_list(hive: Hive, broker: BrokerEndpoint) -> None:
    quiet = hive.add_agent("quiet", extra='[tools]\nbroker = ["recv", "ack"]')
    assert set(await broker.client(quiet).list_tools()) == {"recv", "ack"}
    with pytest.raises(
        ToolError, match=r"quiet lacks broker\.send; ask the manager to add \"send\" to \[tools\] broker"
    ):
        await broker.client(quiet).call("send", {"to": "manager", "body": "hi"})
    # A manager narrowed the same way is told to ask the operator.
    boss = hive.add_agent("boss", role="manager", extra='[tools]\nbroker = ["recv"]')
    with pytest.raises(ToolError, match="ask the operator"):
        await broker.client(boss).call("send", {"to": "manager", "body": "hi"})


async def test_no_tool_takes_a_sender_and_unknown_arguments_are_refused(hive: Hive, broker: BrokerEndpoint) -> None:
    alice, bob = hive.add_agent("alice"), hive.add_agent("bob")
    refusal = r"invalid arguments for send: sender: unknown argument \(send takes: to, body, in_reply_to\)"
    with pytest.raises(ToolError, match=refusal):
        await broker.client(alice).call("send", {"to": bob, "body": "hi", "sender": "operator"})
    assert await broker.client(bob).call("pending_count", {}) == {"queued": 0, "leased": 0}


async def test_unknown_tool(hive: Hive, broker: BrokerEndpoint) -> None:
    with pytest.raises(ToolError, match="Unknown tool: 'nope'"):
        await broker.client("operator").call("nope", {})


async def test_an_agents_whole_tool_surface_stays_small(hive: Hive, broker: BrokerEndpoint) -> None:
    """Every agent pays for its tool list in context on every turn; peers spend ~25k tokens."""
    alice = hive.add_agent("alice")
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {hive.token(alice)}",
    }
    async with httpx2.AsyncClient() as http:
        init = await http.post(broker.url, json=INITIALIZE, headers=headers)
        session = {"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
        listed = await http.post(broker.url, json=LIST_TOOLS, headers={**headers, **session})
    text = listed.text.split("data: ", 1)[-1] if listed.text.startswith("event:") else listed.text
    tools = json.loads(text)["result"]["tools"]
    # What a model is shown of each tool: its name, description and input schema.
    shown = json.dumps([{k: t[k] for k in ("name", "description", "inputSchema")} for t in tools])
    assert len(tools) == 11
    assert len(shown) < 2_500 * 3.5, f"{len(shown)} characters ≈ {len(shown) / 3.5:.0f} tokens"
