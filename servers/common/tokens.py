"""Bearer tokens: HS256 JWTs signed with the hive secret.

Claims: `iss` = "hyperhive", `sub` = principal name, `role`, `iat`, `exp`. Every server verifies
them with HiveTokenVerifier; a request with a missing, forged, expired or unsigned token gets 401.
An agent's token is only good while an applied config with the same role exists, so destroying
an agent or changing its role revokes its tokens.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.dependencies import get_access_token
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from .agents import AgentRegistry
from .errors import Refused
from .names import InvalidName, service_principal
from .principals import Principal, Role, principal_for

log = logging.getLogger("hyperhive.tokens")

ISSUER: Final = "hyperhive"
ALGORITHM: Final = "HS256"
_CLOCK_SKEW: Final = 30  # seconds of leeway for iat/exp between processes


class SecretError(Exception):
    """The hive secret is missing or unsafe; the message says how to fix it."""


class InvalidToken(Exception):
    """A token that does not prove a principal; the message says why."""


# ---------------------------------------------------------------------------------------- secret


def create_secret(path: Path) -> bool:
    """Create the signing secret (0600) unless it exists. Returns True if it was created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return True


def load_secret(path: Path) -> bytes:
    try:
        st = path.stat()
        text = path.read_text().strip()
    except FileNotFoundError:
        raise SecretError(f"{path} not found; run `hive init` to create the hive home") from None
    except PermissionError:
        raise SecretError(f"{path} is not readable by this user") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{path} is readable by others; run `chmod 600 {path}`")
    if len(text) < 32:
        raise SecretError(f"{path} is too short to be a signing secret; delete it and run `hive init`")
    return text.encode()


# ------------------------------------------------------------------------------------ mint/verify


def mint_token(secret: bytes, principal: Principal, ttl_seconds: int, *, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "sub": principal.name,
        "role": principal.role.value,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode({"alg": ALGORITHM, "typ": "JWT"}, claims, OctKey.import_key(secret))


def decode_token(secret: bytes, token: str, *, now: float | None = None) -> tuple[Principal, dict[str, Any]]:
    """Check signature, algorithm and claims; return the principal and the claims."""
    key = OctKey.import_key(secret)
    registry = jwt.JWTClaimsRegistry(
        now=None if now is None else int(now),
        leeway=_CLOCK_SKEW,
        iss={"essential": True, "value": ISSUER},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        role={"essential": True, "values": [r.value for r in Role]},
    )
    try:
        decoded = jwt.decode(token, key, algorithms=[ALGORITHM])
        registry.validate(decoded.claims)
    except JoseError as e:
        raise InvalidToken(e.description or e.error) from None
    except ValueError as e:  # malformed base64/JSON that slipped past joserfc's own checks
        raise InvalidToken(f"malformed token: {e}") from None
    claims = decoded.claims
    try:
        principal = principal_for(str(claims["sub"]), Role(claims["role"]))
    except InvalidName as e:
        raise InvalidToken(str(e)) from None
    return principal, claims


class HiveTokenVerifier(TokenVerifier):
    """Verifies hive tokens for a FastMCP server, and checks agents against the applied configs."""

    def __init__(self, secret: bytes, agents: AgentRegistry, *, cache_size: int = 1024) -> None:
        super().__init__()
        self._secret = secret
        self._agents = agents
        self._cache: OrderedDict[str, tuple[Principal, dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal, claims = self._decode_cached(token)
            if principal.is_agent:
                config = await self._agents.lookup(principal.name)
                if config is None:
                    raise InvalidToken(f"no agent named {principal.name!r} exists")
                if config.principal_role is not principal.role:
                    raise InvalidToken(f"{principal.name} is now a {config.role}, not a {principal.role}")
        except InvalidToken as e:
            log.info("refused a token: %s", e)
            return None
        return AccessToken(
            token=token,
            client_id=principal.name,
            scopes=[principal.role.value],
            expires_at=int(claims["exp"]),
            claims=claims,
        )

    def _decode_cached(self, token: str) -> tuple[Principal, dict[str, Any]]:
        # Verifying HMAC and claims on every call costs more than the broker's own work.
        hit = self._cache.get(token)
        if hit is not None:
            if hit[1]["exp"] + _CLOCK_SKEW > time.time():
                self._cache.move_to_end(token)
                return hit
            del self._cache[token]
            raise InvalidToken("the token is expired")
        result = decode_token(self._secret, token)
        self._cache[token] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result


class ServiceToken:
    """A token for one of our servers to call another: minted on demand, renewed before it expires."""

    def __init__(self, secret: bytes, server: str, ttl_seconds: int = 3600) -> None:
        self._secret = secret
        self._principal = Principal(service_principal(server), Role.SERVICE)
        self._ttl = ttl_seconds
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = mint_token(self._secret, self._principal, self._ttl, now=now)
            self._renew_at = now + self._ttl / 2
        return self._token


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
