"""Tokens, the secret, the allow-list decision, and the catalog matching what servers register."""

from __future__ import annotations

import base64
import importlib
import json
import stat
import time
from pathlib import Path

import pytest

from hyperhive.servers.cli import SERVERS, init_home
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.catalog import CATALOG, role_default
from hyperhive.servers.common.config import AgentConfig, load_hive_config
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.policy import refusal
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.tokens import (
    HiveTokenVerifier,
    InvalidToken,
    SecretError,
    create_secret,
    decode_token,
    load_secret,
    mint_token,
)

SECRET = b"s" * 64
ALICE = Principal("alice", Role.AGENT)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_mint_and_decode_round_trip() -> None:
    token = mint_token(SECRET, ALICE, 600, now=1_800_000_000)
    principal, claims = decode_token(SECRET, token, now=1_800_000_100)
    assert principal == ALICE
    assert claims == {
        "iss": "hyperhive",
        "sub": "alice",
        "role": "agent",
        "iat": 1_800_000_000,
        "exp": 1_800_000_600,
    }


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: mint_token(b"x" * 64, ALICE, 600), "bad_signature"),
        (lambda: mint_token(SECRET, ALICE, 60, now=time.time() - 3600), "expired"),
        (lambda: mint_token(SECRET, ALICE, 600, now=time.time() + 3600), "future"),
        (lambda: f"{_b64({'alg': 'none'})}.{_b64({'sub': 'alice'})}.", "none"),
        (lambda: "a.b", "Invalid JSON Web Signature|malformed"),
        (lambda: "", "Invalid JSON Web Signature|malformed"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(make: object, why: str) -> None:
    with pytest.raises(InvalidToken, match=why):
        decode_token(SECRET, make())  # type: ignore[operator]


def test_claims_must_fit_the_role() -> None:
    from joserfc import jwt
    from joserfc.jwk import OctKey

    def signed(**claims: object) -> str:
        base = {"iss": "hyperhive", "iat": int(time.time()), "exp": int(time.time()) + 60}
        return jwt.encode({"alg": "HS256"}, {**base, **claims}, OctKey.import_key(SECRET))

    with pytest.raises(InvalidToken, match="role"):
        decode_token(SECRET, signed(sub="alice", role="root"))
    with pytest.raises(InvalidToken, match="operator principal is named 'operator'"):
        decode_token(SECRET, signed(sub="alice", role="operator"))
    with pytest.raises(InvalidToken, match="service:<server>"):
        decode_token(SECRET, signed(sub="approvals", role="service"))
    with pytest.raises(InvalidToken, match="invalid agent name"):
        decode_token(SECRET, signed(sub="../etc", role="agent"))
    with pytest.raises(InvalidToken, match="iss"):
        decode_token(SECRET, signed(sub="alice", role="agent", iss="someone-else"))


def test_secret_is_created_once_0600_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert create_secret(path) is True
    first = load_secret(path)
    assert create_secret(path) is False and load_secret(path) == first  # never overwritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 64
    path.chmod(0o644)
    with pytest.raises(SecretError, match="readable by others; run `chmod 600"):
        load_secret(path)
    with pytest.raises(SecretError, match="run `hive init`"):
        load_secret(tmp_path / "missing")


async def test_verifier_checks_agents_against_their_applied_config(tmp_path: Path) -> None:
    init_home(tmp_path)
    config = load_hive_config(tmp_path)
    secret = load_secret(config.secret_path)
    registry = AgentRegistry(config.applied_dir)
    verifier = HiveTokenVerifier(secret, registry)
    (config.applied_dir / "alice").mkdir()
    write_atomic(config.applied_dir / "alice" / "agent.toml", 'role = "agent"\n')

    token = await verifier.verify_token(mint_token(secret, ALICE, 600))
    assert token is not None and token.client_id == "alice" and token.scopes == ["agent"]
    assert await verifier.verify_token(mint_token(secret, Principal("alice", Role.MANAGER), 600)) is None
    assert await verifier.verify_token(mint_token(secret, Principal("ghost", Role.AGENT), 600)) is None
    assert await verifier.verify_token(mint_token(secret, Principal("operator", Role.OPERATOR), 600)) is not None
    # A role change revokes the old token, even a cached one.
    write_atomic(config.applied_dir / "alice" / "agent.toml", 'role = "manager"\n')
    await registry.refresh()
    assert await verifier.verify_token(mint_token(secret, ALICE, 600)) is None


# --------------------------------------------------------------------------------------- policy


OPERATOR = Principal("operator", Role.OPERATOR)
SERVICE = Principal("service:approvals", Role.SERVICE)


@pytest.mark.parametrize(
    ("tool", "principal", "config", "expected"),
    [
        ("send", ALICE, AgentConfig(), None),
        ("send", OPERATOR, None, None),
        ("list_messages", OPERATOR, None, None),
        ("post_event", SERVICE, None, None),
        ("post_event", OPERATOR, None, "broker.post_event is a service tool; operator may not call it"),
        ("send", SERVICE, None, "broker.send is an agent tool; service:approvals (service) may not call it"),
        ("stats", ALICE, AgentConfig(), "broker.stats is an operator tool; agents may not call it"),
        ("send", ALICE, AgentConfig(tools={"broker": ["recv"]}), "alice lacks broker.send; ask the manager"),
        ("send", ALICE, None, "alice has no applied config"),
        ("send", None, None, "needs an authenticated caller"),
        ("nope", OPERATOR, None, "Unknown tool: 'nope'"),
    ],
)
def test_refusal_decisions(
    tool: str, principal: Principal | None, config: AgentConfig | None, expected: str | None
) -> None:
    result = refusal("broker", tool, principal, config)
    if expected is None:
        assert result is None
    else:
        assert result is not None and expected in result


def test_role_defaults() -> None:
    assert role_default("broker", Role.AGENT) == role_default("broker", Role.MANAGER)
    assert role_default("broker", Role.SERVICE) == {"list_messages", "stats", "post_event"}
    assert "post_event" not in role_default("broker", Role.OPERATOR)


async def test_each_server_registers_exactly_its_catalog_entry(tmp_path: Path) -> None:
    init_home(tmp_path)
    config = load_hive_config(tmp_path)
    secret = load_secret(config.secret_path)
    servers = {name: importlib.import_module(module).create(config, secret) for name, module in SERVERS.items()}
    assert set(servers) == set(CATALOG)
    for name, server in servers.items():
        registered = {tool.name for tool in await server.mcp.list_tools(run_middleware=False)}
        assert registered == set(CATALOG[name]), name
