"""Tokens, the secret, the allow-list decision, and the catalog matching what servers register."""

from __future__ import annotations

import base64
import importlib
import json
import stat
import time
from pathlib import Path

import pytest
from joserfc.jwk import KeySet

from hyperhive.servers.cli import SERVERS
from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.catalog import CATALOG, SERVICE_TOOLS, role_default
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.instances import current_instance, end_instances, new_instance
from hyperhive.servers.common.issuer import Issuer, server_credentials
from hyperhive.servers.common.keys import (
    KeyFileError,
    PublicKeys,
    SigningKey,
    create_key_pair,
    load_public_keys,
    load_signing_key,
    migrate_legacy_secret,
    write_key_pair,
)
from hyperhive.servers.common.policy import recipient_refusal, refusal
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.registry import REGISTRY, SERVER_NAMES
from hyperhive.servers.common.tokens import HiveTokenVerifier, InvalidToken, TokenFile, decode_token, mint_token
from hyperhive.servers.home import init_home

KEY = SigningKey.generate()
OTHER_KEY = SigningKey.generate()
KEYS = KeySet.import_key_set(KEY.public_jwks())  # type: ignore[arg-type]
ALICE = Principal("alice", Role.AGENT)
ALL = ("approvals", "broker", "lifecycle", "operator")


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_mint_and_decode_round_trip() -> None:
    token = mint_token(KEY, ALICE, 600, audience=["broker"], instance="i1", now=1_800_000_000)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "Ed25519", "typ": "JWT", "kid": KEY.kid}
    principal, claims = decode_token(KEYS, token, audience="broker", now=1_800_000_100)
    assert principal == ALICE
    assert claims == {
        "iss": "hyperhive",
        "sub": "alice",
        "role": "agent",
        "aud": ["broker"],
        "inst": "i1",
        "iat": 1_800_000_000,
        "exp": 1_800_000_600,
    }


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: mint_token(OTHER_KEY, ALICE, 600, audience=ALL, instance="i"), "bad_signature|kid"),
        (lambda: mint_token(KEY, ALICE, 60, audience=ALL, instance="i", now=time.time() - 3600), "expired"),
        (lambda: mint_token(KEY, ALICE, 600, audience=ALL, instance="i", now=time.time() + 3600), "future"),
        (lambda: mint_token(KEY, ALICE, 600, audience=["approvals"], instance="i"), "not meant for the broker"),
        (lambda: f"{_b64({'alg': 'none'})}.{_b64({'sub': 'alice'})}.", "none|alg"),
        (lambda: "a.b", "Invalid JSON Web Signature|malformed"),
        (lambda: "", "Invalid JSON Web Signature|malformed"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(make: object, why: str) -> None:
    with pytest.raises(InvalidToken, match=why):
        decode_token(KEYS, make(), audience="broker")  # type: ignore[operator]


def test_an_hs256_token_signed_with_the_public_key_is_refused() -> None:
    """The classic algorithm confusion: the public key used as an HMAC secret."""
    from joserfc import jwt
    from joserfc.jwk import OctKey

    claims = {"iss": "hyperhive", "sub": "operator", "role": "operator", "aud": list(ALL)}
    claims |= {"iat": int(time.time()), "exp": int(time.time()) + 60}
    public = json.dumps(KEY.public_jwks()).encode()
    forged = jwt.encode({"alg": "HS256", "kid": KEY.kid}, claims, OctKey.import_key(public))
    with pytest.raises(InvalidToken):
        decode_token(KEYS, forged, audience="broker")


def test_claims_must_fit_the_role() -> None:
    from joserfc import jwt

    def signed(**claims: object) -> str:
        base = {"iss": "hyperhive", "iat": int(time.time()), "exp": int(time.time()) + 60, "aud": list(ALL)}
        return jwt.encode({"alg": "Ed25519", "kid": KEY.kid}, {**base, **claims}, KEY.key, algorithms=["Ed25519"])

    with pytest.raises(InvalidToken, match="role"):
        decode_token(KEYS, signed(sub="alice", role="root"))
    with pytest.raises(InvalidToken, match="operator principal is named 'operator'"):
        decode_token(KEYS, signed(sub="alice", role="operator"))
    # Service principals are a closed set: service:evil is refused at the door.
    with pytest.raises(InvalidToken, match="'service:evil' is not a service principal"):
        decode_token(KEYS, signed(sub="service:evil", role="service"))
    with pytest.raises(InvalidToken, match="not a service principal"):
        decode_token(KEYS, signed(sub="approvals", role="service"))
    with pytest.raises(InvalidToken, match="invalid agent name"):
        decode_token(KEYS, signed(sub="../etc", role="agent", inst="i"))
    with pytest.raises(InvalidToken, match="iss"):
        decode_token(KEYS, signed(sub="alice", role="agent", iss="someone-else", inst="i"))
    with pytest.raises(InvalidToken, match="names its instance"):
        decode_token(KEYS, signed(sub="alice", role="agent"))
    with pytest.raises(InvalidToken, match="aud"):
        decode_token(KEYS, signed(sub="operator", role="operator", aud=None))


def test_the_key_pair_is_created_once_the_private_half_0600_and_refused_when_others_can_read_it(
    tmp_path: Path,
) -> None:
    assert create_key_pair(tmp_path) is True
    first = load_signing_key(tmp_path / "signing.key")
    assert create_key_pair(tmp_path) is False and load_signing_key(tmp_path / "signing.key").kid == first.kid
    assert stat.S_IMODE((tmp_path / "signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "signing.pub").stat().st_mode) == 0o644
    public = load_public_keys(tmp_path / "signing.pub")
    assert not any(key.is_private for key in public.keys)  # the public file holds no secret
    assert '"d"' not in (tmp_path / "signing.pub").read_text()
    (tmp_path / "signing.key").chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others; run `chmod 600"):
        load_signing_key(tmp_path / "signing.key")
    with pytest.raises(KeyFileError, match="run `hive init`"):
        load_signing_key(tmp_path / "missing")
    (tmp_path / "signing.pub").write_text(json.dumps({"keys": [dict(KEY.key.as_dict(private=True))]}))
    with pytest.raises(KeyFileError, match="public keys only"):
        load_public_keys(tmp_path / "signing.pub")


def test_an_old_home_with_a_shared_secret_migrates(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s" * 64)
    assert migrate_legacy_secret(tmp_path) is False  # not before the key pair exists
    create_key_pair(tmp_path)
    assert migrate_legacy_secret(tmp_path) is True
    assert not (tmp_path / "secret").exists()


async def test_verifier_checks_agents_against_their_applied_config_and_instance(tmp_path: Path) -> None:
    init_home(tmp_path)
    config = load_hive_config(tmp_path)
    signing = load_signing_key(tmp_path / "signing.key")
    registry = AgentRegistry(config.applied_dir, config.instances_dir)
    verifier = HiveTokenVerifier("broker", PublicKeys(tmp_path / "signing.pub"), registry)
    (config.applied_dir / "alice").mkdir()
    write_atomic(config.applied_dir / "alice" / "agent.toml", 'role = "agent"\n')
    first = new_instance(config.instances_dir, "alice")

    def minted(principal: Principal, instance: str | None = first) -> str:
        return mint_token(signing, principal, 600, audience=ALL, instance=instance if principal.is_agent else None)

    token = await verifier.verify_token(minted(ALICE))
    assert token is not None and token.client_id == "alice" and token.scopes == ["agent"]
    assert await verifier.verify_token(minted(Principal("alice", Role.MANAGER))) is None
    assert await verifier.verify_token(minted(Principal("ghost", Role.AGENT))) is None
    assert await verifier.verify_token(minted(Principal("operator", Role.OPERATOR))) is not None
    assert await verifier.verify_token(minted(ALICE, "not-the-live-one")) is None
    # A new instance (its sandbox restarted) ends the old one's tokens at once, cached or not.
    old = minted(ALICE)
    second = new_instance(config.instances_dir, "alice")
    assert await verifier.verify_token(old) is None
    assert await verifier.verify_token(minted(ALICE, second)) is not None
    # Destroyed: no token of it works, without waiting for a rescan.
    end_instances(config.instances_dir, "alice")
    assert current_instance(config.instances_dir, "alice") is None
    assert await verifier.verify_token(minted(ALICE, second)) is None
    # A role change revokes the old token, even a cached one.
    third = new_instance(config.instances_dir, "alice")
    write_atomic(config.applied_dir / "alice" / "agent.toml", 'role = "manager"\n')
    await registry.refresh()
    assert await verifier.verify_token(minted(ALICE, third)) is None


async def test_a_rotated_key_voids_what_the_old_one_signed(tmp_path: Path) -> None:
    init_home(tmp_path)
    config = load_hive_config(tmp_path)
    keys = PublicKeys(tmp_path / "signing.pub")
    verifier = HiveTokenVerifier("broker", keys, AgentRegistry(config.applied_dir, config.instances_dir))
    old = Issuer(config, lambda: load_signing_key(tmp_path / "signing.key")).token_for("operator", 600)
    assert await verifier.verify_token(old) is not None  # and cached
    rotated = SigningKey.generate()
    write_key_pair(tmp_path, rotated)
    keys._watch._checked = 0.0  # as if a second had passed
    assert await verifier.verify_token(old) is None
    assert await verifier.verify_token(Issuer(config, lambda: rotated).token_for("operator", 600)) is not None


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
        ("send", SERVICE, None, "service:approvals does not call broker.send"),
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


def test_one_allowed_recipients_check_for_sending_reminding_and_asking() -> None:
    alice = Principal("alice", Role.AGENT)
    limited = AgentConfig(allowed_recipients=["manager", "operator"])
    for verb in ("send to", "ask"):
        assert recipient_refusal(alice, limited, "manager", verb=verb) is None
        assert recipient_refusal(alice, limited, "bob", verb=verb) == (
            f"you may not {verb} 'bob'; your allowed_recipients are: manager, operator"
        )
    assert recipient_refusal(alice, AgentConfig(), "bob", verb="send to") is None  # default: everyone
    assert recipient_refusal(alice, limited, "*", verb="send to") == (
        "broadcast ('*') is not in your allowed_recipients; send to each agent instead"
    )
    nobody = AgentConfig(allowed_recipients=[])
    assert (
        recipient_refusal(alice, nobody, "bob", verb="ask")
        == "you may not ask 'bob'; your allowed_recipients are: nobody"
    )
    # An agent whose applied config is gone addresses no one; the manager and the operator anyone.
    assert recipient_refusal(alice, None, "bob", verb="send to") == (
        "you may not send to 'bob'; your allowed_recipients are: nobody"
    )
    for boss in (Principal("manager", Role.MANAGER), Principal("operator", Role.OPERATOR)):
        assert recipient_refusal(boss, nobody, "bob", verb="send to") is None


@pytest.mark.parametrize(
    ("server", "tool", "service", "allowed"),
    [
        ("lifecycle", "apply_commit", "service:approvals", True),
        ("lifecycle", "create_agent", "service:approvals", True),
        ("lifecycle", "kill", "service:approvals", False),
        ("lifecycle", "destroy", "service:approvals", False),
        ("lifecycle", "apply_commit", "service:operator", False),
        ("lifecycle", "apply_commit", "service:lifecycle", False),
        ("broker", "post_event", "service:operator", True),
        ("broker", "list_messages", "service:operator", False),
        ("broker", "post_event", "service:lifecycle", True),
    ],
)
def test_each_service_may_call_exactly_what_its_server_calls(
    server: str, tool: str, service: str, allowed: bool
) -> None:
    result = refusal(server, tool, Principal(service, Role.SERVICE), None)
    assert (result is None) is allowed, result


def test_service_tools_exist_and_are_service_tools() -> None:
    for service, servers in SERVICE_TOOLS.items():
        for server, tools in servers.items():
            for tool in tools:
                assert Role.SERVICE in CATALOG[server][tool].roles, (service, server, tool)


def test_the_server_registry_is_consistent() -> None:
    """Unique names and ports; one server issues tokens, and it calls others with a token it mints itself."""
    assert len({spec.name for spec in REGISTRY}) == len({spec.port for spec in REGISTRY}) == len(REGISTRY)
    issuers = [spec for spec in REGISTRY if spec.issues_tokens]
    assert len(issuers) == 1 and issuers[0].calls
    assert REGISTRY[0].name == "broker"  # started first: every service posts its events there
    for spec in REGISTRY:
        assert set(spec.calls) <= set(SERVER_NAMES), spec.name
        # None calls itself, but a host's lifecycle server calls another host's (move_agent's adopt_agent).
        assert spec.name not in spec.calls or spec.calls[spec.name] == {"adopt_agent"}, spec.name


def test_role_defaults() -> None:
    assert role_default("broker", Role.AGENT) == role_default("broker", Role.MANAGER)
    assert role_default("broker", Role.SERVICE) == {"list_messages", "stats", "post_event"}
    assert "post_event" not in role_default("broker", Role.OPERATOR)


async def test_each_server_registers_exactly_its_catalog_entry(tmp_path: Path) -> None:
    init_home(tmp_path)
    config = load_hive_config(tmp_path)
    servers = {
        name: importlib.import_module(module).create(config, server_credentials(config, name))
        for name, module in SERVERS.items()
    }
    assert set(servers) == set(CATALOG)
    for name, server in servers.items():
        registered = {tool.name for tool in await server.mcp.list_tools(run_middleware=False)}
        assert registered == set(CATALOG[name]), name


def test_handed_tokens_are_reissued_when_missing_half_spent_or_of_another_key(tmp_path: Path) -> None:
    init_home(tmp_path)
    config = load_hive_config(tmp_path)
    signing = load_signing_key(tmp_path / "signing.key")
    issuer = Issuer(config, lambda: signing)
    assert issuer.issue_handed_tokens() == []  # init issued them; all still good
    (tmp_path / "tokens" / "service-operator.token").unlink()
    assert issuer.issue_handed_tokens() == ["service-operator"]
    half_spent = mint_token(signing, Principal("operator", Role.OPERATOR), 600, audience=ALL, now=time.time() - 301)
    (tmp_path / "tokens" / "dashboard.token").write_text(half_spent)
    assert issuer.issue_handed_tokens() == ["dashboard"]
    rotated = SigningKey.generate()
    assert Issuer(config, lambda: rotated).issue_handed_tokens() == [
        "service-approvals",
        "service-operator",
        "service-forge",
        "dashboard",
    ]


def test_a_token_file_is_read_again_when_it_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "service.token"
    write_atomic(path, "first\n")
    token = TokenFile(path)
    assert token() == "first"
    write_atomic(path, "second\n")
    token._watch._checked = 0.0  # as if a second had passed
    assert token() == "second"
    path.unlink()
    token._watch._checked = 0.0
    assert token() == "second"  # gone for a moment (a rotation): keep the last good one
