"""Bearer tokens: Ed25519-signed JWTs (RFC 9864's `Ed25519` algorithm, EdDSA), `kid` in the header.

Claims: `iss` = "hyperhive", `sub` = principal name, `role`, `aud` = the servers the token is for,
`iat`, `exp`, and for an agent `inst`: the sandbox instance it was issued to. A server verifies
with the public key only (keys.py) and refuses (HTTP 401) a token that is missing, forged, expired,
unsigned, not meant for it, of an unknown service, or of an agent that no longer exists or whose
instance is not the current one: destroying, stopping or restarting an agent ends its old tokens
at once, so no stray process of an ended sandbox can act as the agent.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.dependencies import get_access_token
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from hyperhive.servers.common.agents import AgentRegistry
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.common.keys import PublicKeys, ReloadingSigningKey, SigningKey, WatchedFile, host_of_kid
from hyperhive.servers.common.names import InvalidName
from hyperhive.servers.common.principals import Principal, Role, principal_for

log = logging.getLogger("hyperhive.tokens")

ISSUER: Final = "hyperhive"
ALGORITHM: Final = "Ed25519"
INSTANCE_CLAIM: Final = "inst"
_CLOCK_SKEW: Final = 30  # seconds of leeway for iat/exp between processes

TokenSource = str | Callable[[], str]


class InvalidToken(Exception):
    """A token that does not prove a principal; the message says why."""


# ------------------------------------------------------------------------------------ mint/verify


def mint_token(
    signing: SigningKey,
    principal: Principal,
    ttl_seconds: int,
    *,
    audience: Sequence[str],
    instance: str | None = None,
    now: float | None = None,
) -> str:
    if not audience:
        raise ValueError("a token needs an audience: the servers it is for")
    if principal.is_agent and not instance:
        raise ValueError(f"an agent's token names its instance; {principal.name} has none")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": principal.name,
        "role": principal.role.value,
        "aud": sorted(audience),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if instance:
        claims[INSTANCE_CLAIM] = instance
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": signing.kid}
    return jwt.encode(header, claims, signing.key, algorithms=[ALGORITHM])


def decode_token(
    keys: KeySet, token: str, *, audience: str | None = None, now: float | None = None
) -> tuple[Principal, dict[str, Any]]:
    """Check signature, algorithm and claims (the audience when given); return principal and claims."""
    registry = jwt.JWTClaimsRegistry(
        now=None if now is None else int(now),
        leeway=_CLOCK_SKEW,
        iss={"essential": True, "value": ISSUER},
        sub={"essential": True},
        aud={"essential": True} if audience is None else {"essential": True, "value": audience},
        exp={"essential": True},
        iat={"essential": True},
        role={"essential": True, "values": [r.value for r in Role]},
    )
    try:
        decoded = jwt.decode(token, keys, algorithms=[ALGORITHM])
        registry.validate(decoded.claims)
    except JoseError as e:
        description = e.description or e.error
        if e.error == "invalid_claim" and "aud" in (e.description or ""):
            description = f"the token is not meant for the {audience} server"
        raise InvalidToken(description) from None
    except ValueError as e:  # malformed base64/JSON that slipped past joserfc's own checks
        raise InvalidToken(f"malformed token: {e}") from None
    claims = decoded.claims
    try:
        principal = principal_for(str(claims["sub"]), Role(claims["role"]))
    except InvalidName as e:
        raise InvalidToken(str(e)) from None
    if principal.is_agent and not isinstance(claims.get(INSTANCE_CLAIM), str):
        raise InvalidToken(f"an agent's token names its instance; this one for {principal.name} does not")
    return principal, claims


class HiveTokenVerifier(TokenVerifier):
    """Verifies hive tokens for one server; agents' against their applied config and current instance."""

    def __init__(self, server: str, keys: PublicKeys, agents: AgentRegistry, *, cache_size: int = 1024) -> None:
        super().__init__()
        self._server = server
        self._keys = keys
        self._agents = agents
        self._cache: OrderedDict[str, tuple[Principal, dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size
        self._generation = keys.generation

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            kid = _kid(token)
            host = host_of_kid(kid)
            host_keys = None
            if host is not None:  # signed by a host's own key (a hive of several hosts: keys.py)
                key = await self._agents.host_key(kid)
                if key is None:
                    raise InvalidToken(f"signed by a key of host {host} the hive does not know")
                host_keys = KeySet([key])
            principal, claims = self._decode_cached(token, host_keys)
            if principal.is_agent:
                config = await self._agents.lookup(principal.name)
                if config is None:
                    raise InvalidToken(f"no agent named {principal.name!r} exists")
                if config.principal_role is not principal.role:
                    raise InvalidToken(f"{principal.name} is now a {config.role}, not a {principal.role}")
                current = await self._agents.current_instance(principal.name, claims[INSTANCE_CLAIM])
                if current != claims[INSTANCE_CLAIM]:
                    raise InvalidToken(
                        f"the token is of an ended instance of {principal.name}"
                        if current
                        else f"{principal.name} was destroyed"
                    )
            if host is not None and principal.name != HOST_SERVICE and self._agents.host_of(principal.name) != host:
                # A host's key signs for what lives on that host alone: a host taken over cannot
                # mint the operator's token, another service's, or another host's agents'.
                raise InvalidToken(f"host {host}'s key signs only for what lives on {host}; {principal.name} does not")
        except InvalidToken as e:
            log.info("refused a token for %s: %s", self._server, e)
            return None
        return AccessToken(
            token=token,
            client_id=principal.name,
            scopes=[principal.role.value],
            expires_at=int(claims["exp"]),
            claims=claims,
        )

    def _decode_cached(self, token: str, host_keys: KeySet | None = None) -> tuple[Principal, dict[str, Any]]:
        # Verifying a signature and claims on every call costs more than the broker's own work.
        keys = self._keys.current() if host_keys is None else host_keys
        if self._keys.generation != self._generation:  # a new key: what the old one signed is void
            self._cache.clear()
            self._generation = self._keys.generation
        hit = self._cache.get(token)
        if hit is not None:
            if hit[1]["exp"] + _CLOCK_SKEW > time.time():
                self._cache.move_to_end(token)
                return hit
            del self._cache[token]
            raise InvalidToken("the token is expired")
        result = decode_token(keys, token, audience=self._server)
        self._cache[token] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result


HOST_SERVICE: Final = "service:lifecycle"  # besides its agents, what a host's own key signs for


def _kid(token: str) -> str:
    """The `kid` of a token's header, unverified ("" if it has none): which key to verify it with."""
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(".", 1)[0] + "=="))
    except (ValueError, UnicodeDecodeError):
        return ""
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else ""


# ------------------------------------------------------------------------------------ holding one


class TokenFile:
    """A token handed over as a file (by `hive up`, a NixOS oneshot or systemd's LoadCredential),
    read again when the file is replaced, so a renewed or re-issued token is used within a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._watch = WatchedFile(path)
        self._token = ""

    def __call__(self) -> str:
        if self._watch.changed() or not self._token:
            try:
                self._token = self.path.read_text().strip()
            except OSError as e:
                if not self._token:
                    raise Refused(f"cannot read the token file {self.path}: {e.strerror}") from None
        return self._token

    def check(self) -> None:
        """Raise Refused (saying how to fix it) unless the file holds a token now."""
        if not self.path.exists():
            raise Refused(f"{self.path} not found; `hive init` (or `hive up`) issues the servers' tokens")
        self()


class IssuedToken:
    """A token an issuer mints for itself on demand, renewed at half its life or when its key changes."""

    def __init__(
        self, signing: Callable[[], SigningKey], principal: Principal, audience: Sequence[str], ttl_seconds: int = 3600
    ) -> None:
        self._signing = signing
        self._principal = principal
        self._audience = tuple(audience)
        self._ttl = ttl_seconds
        self._token = ""
        self._kid = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        signing = self._signing()
        if now >= self._renew_at or signing.kid != self._kid:
            self._token = mint_token(signing, self._principal, self._ttl, audience=self._audience, now=now)
            self._kid = signing.kid
            self._renew_at = now + self._ttl / 2
        return self._token


@dataclass(frozen=True)
class ServerCredentials:
    """What a server process holds: the public keys it verifies callers with, the token it calls
    other servers with (a service's), and only for the lifecycle server the private key."""

    keys: PublicKeys
    token: Callable[[], str] | None = None
    signing: ReloadingSigningKey | None = None

    def service_token(self) -> Callable[[], str]:
        if self.token is None:
            raise RuntimeError("this server was given no service token")
        return self.token


# ------------------------------------------------------------------------------------ in a request


def current_principal() -> Principal | None:
    """The verified caller of the current request, or None outside an authenticated request."""
    token = get_access_token()
    if token is None:
        return None
    return Principal(token.client_id, Role(token.claims["role"]))


def caller() -> Principal:
    """The verified caller of the current tool call; the only identity a tool may act on."""
    principal = current_principal()
    if principal is None:  # only possible without HTTP auth (e.g. an in-memory client)
        raise Refused("not authenticated: call with a bearer token")
    return principal
