"""What the hive's issuer hands out: every token, to whom, for which servers.

Only a process holding `signing.key` issues: the `hive` CLI run by the hive's owner (`hive token`,
`hive up`, `hive init`, `hive rotate-key`) and the lifecycle server (agents' tokens at each start).
The servers' own tokens and the dashboard's are files in `<home>/tokens/` (0711; each file 0600,
owned by the process that reads it), re-issued when missing, past half their life, or signed by a
key that is no longer the hive's. On NixOS the units get them as systemd credentials.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from joserfc.jwk import KeySet

from hyperhive.servers.common.agent_config import AGENT_TOML, AgentConfig, load_agent_config
from hyperhive.servers.common.catalog import audience_of_service
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.instances import current_instance
from hyperhive.servers.common.keys import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    PublicKeys,
    ReloadingSigningKey,
    SigningKey,
    load_signing_key,
)
from hyperhive.servers.common.names import OPERATOR, SERVICE_PREFIX, SERVICES, InvalidName, service_principal
from hyperhive.servers.common.principals import Principal, Role, principal_for
from hyperhive.servers.common.registry import SERVER_NAMES, callers, server_spec
from hyperhive.servers.common.systemd import credential
from hyperhive.servers.common.tokens import (
    InvalidToken,
    IssuedToken,
    ServerCredentials,
    TokenFile,
    decode_token,
    mint_token,
)

DASHBOARD_TOKEN: Final = "dashboard"  # tokens/dashboard.token: the dashboard's operator token
SERVICE_TOKEN_CREDENTIAL: Final = "service.token"  # a unit's LoadCredential name for its token


class IssueError(Exception):
    """A token that cannot be issued; the message says why and what to do."""


@dataclass(frozen=True)
class HandedToken:
    """A token file the hive hands one of its own processes."""

    name: str  # the file is tokens/<name>.token; the unit's credential has the same name
    principal: Principal

    def path(self, config: HiveConfig) -> Path:
        return config.tokens_dir / f"{self.name}.token"


# The services that call other servers (a server that issues tokens mints its own), and the dashboard.
HANDED_TOKENS: Final = (
    *(
        HandedToken(f"service-{spec.name}", Principal(service_principal(spec.name), Role.SERVICE))
        for spec in callers()
        if not spec.issues_tokens
    ),
    HandedToken(DASHBOARD_TOKEN, Principal(OPERATOR, Role.OPERATOR)),
)


def handed_token(config: HiveConfig, server: str) -> Path:
    """Where the token of `server` (approvals, operator, dashboard) is handed over."""
    name = DASHBOARD_TOKEN if server == DASHBOARD_TOKEN else f"service-{server}"
    return config.tokens_dir / f"{name}.token"


def agent_audience(config: AgentConfig) -> tuple[str, ...]:
    """The servers an agent's token is for: every hive server, so that a tool outside its allow-list
    is refused by name, saying whom to ask (a 401 would teach it nothing); its allow-list decides."""
    return SERVER_NAMES


def audience_of(principal: Principal, config: AgentConfig | None = None) -> tuple[str, ...]:
    if principal.role is Role.SERVICE:
        return audience_of_service(principal.name)
    if principal.is_agent:
        if config is None:
            raise IssueError(f"{principal.name} has no applied config")
        return agent_audience(config)
    return SERVER_NAMES


class Issuer:
    """Mints tokens with the hive's private key (read through `signing`, which may follow rotations)."""

    def __init__(self, config: HiveConfig, signing: Callable[[], SigningKey]) -> None:
        self.config = config
        self.signing = signing

    # ------------------------------------------------------------------------------ any principal
    def principal_named(self, name: str) -> tuple[Principal, AgentConfig | None]:
        """The principal a token for `name` carries ('operator', 'service:<server>', an agent)."""
        try:
            if name == OPERATOR:
                return principal_for(name, Role.OPERATOR), None
            if name.startswith(SERVICE_PREFIX):
                return principal_for(name, Role.SERVICE), None
            principal_for(name, Role.AGENT)  # validates the name
        except InvalidName as e:
            raise IssueError(f"{e}; NAME is 'operator', 'service:<server>' or an agent name") from None
        path = self.config.applied_dir / name / AGENT_TOML
        if not path.exists():
            raise IssueError(f"no agent named {name!r}: `hive agents` lists them")
        try:
            config = load_agent_config(path)
        except ConfigError as e:
            raise IssueError(str(e)) from None
        return Principal(name, config.principal_role), config

    def token_for(self, name: str, ttl_seconds: int, audience: tuple[str, ...] | None = None) -> str:
        """A token for `name`; an agent's is for its live instance (and ends with it)."""
        principal, config = self.principal_named(name)
        allowed = audience_of(principal, config)
        if audience is not None:
            wrong = [server for server in audience if server not in allowed]
            if wrong:
                raise IssueError(f"{name} holds no tools on {', '.join(wrong)}; it may have: {', '.join(allowed)}")
            allowed = audience
        instance = None
        if principal.is_agent:
            instance = current_instance(self.config.instances_dir, name)
            if instance is None:
                raise IssueError(
                    f"{name} has no live instance: it was never started, or it was destroyed "
                    f"(`hive start {name}` gives it one)"
                )
        return mint_token(self.signing(), principal, ttl_seconds, audience=allowed, instance=instance)

    def agent_token(self, principal: Principal, config: AgentConfig, instance: str) -> str:
        return mint_token(
            self.signing(),
            principal,
            self.config.tokens.ttl_seconds,
            audience=agent_audience(config),
            instance=instance,
        )

    # ----------------------------------------------------------------------------- handed tokens
    def issue_handed_tokens(self, *, force: bool = False) -> list[str]:
        """Write the services' and the dashboard's token files that need it; return their names."""
        signing = self.signing()
        keys = KeySet.import_key_set(signing.public_jwks())  # type: ignore[arg-type]
        self.config.tokens_dir.mkdir(mode=0o711, exist_ok=True)
        self.config.tokens_dir.chmod(0o711)
        issued = []
        for handed in HANDED_TOKENS:
            path = handed.path(self.config)
            if not force and self._still_good(path, keys):
                continue
            ttl = self.config.tokens.ttl_seconds
            token = mint_token(signing, handed.principal, ttl, audience=audience_of(handed.principal))
            write_atomic(path, token + "\n", mode=0o600)
            self._give_to_reader(handed, path)
            issued.append(handed.name)
        return issued

    def _still_good(self, path: Path, keys: KeySet) -> bool:
        """Signed by the current key, and more than half its life left."""
        try:
            _, claims = decode_token(keys, path.read_text().strip())
        except (OSError, InvalidToken):
            return False
        life = int(claims["exp"]) - int(claims["iat"])
        return int(claims["exp"]) - life / 2 > time.time()

    def _give_to_reader(self, handed: HandedToken, path: Path) -> None:
        # The dashboard drops from root to [dashboard] user and must still read its renewed token.
        user = self.config.dashboard.user
        if handed.name != DASHBOARD_TOKEN or os.geteuid() != 0 or not user:
            return
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return  # `hive serve dashboard` says so
        os.chown(path, entry.pw_uid, entry.pw_gid)


def server_credentials(config: HiveConfig, server: str) -> ServerCredentials:
    """What `hive serve SERVER` holds: the public key; a service's token file; lifecycle's private key.

    Raises KeyFileError or Refused (messages say what to do) when something is missing.
    """
    keys = PublicKeys(credential(PUBLIC_KEY_FILE, config.home / PUBLIC_KEY_FILE))
    if server_spec(server).issues_tokens:
        if config.storage.url is not None and not (config.home / PRIVATE_KEY_FILE).exists():
            return ServerCredentials(keys)  # a host of a hive of several: it signs with its own key (keys.py)
        signing = ReloadingSigningKey(config.home / PRIVATE_KEY_FILE)
        principal = Principal(service_principal(server), Role.SERVICE)
        return ServerCredentials(keys, IssuedToken(signing.current, principal, audience_of(principal)), signing)
    if server in SERVICES:
        token = TokenFile(credential(SERVICE_TOKEN_CREDENTIAL, handed_token(config, server)))
        token.check()
        return ServerCredentials(keys, token)
    return ServerCredentials(keys)


def issue_token(config: HiveConfig, name: str, ttl_seconds: int, audience: tuple[str, ...] | None = None) -> str:
    """A token for `name` signed with the home's own key: for its owner (the CLI, tests, benchmarks)."""
    signing = load_signing_key(config.home / PRIVATE_KEY_FILE)
    return Issuer(config, lambda: signing).token_for(name, ttl_seconds, audience)
