"""The hive's token-signing key pair: who holds which half, on disk.

- `signing.key` (0600): the Ed25519 private key, a JWK with its `kid`. Only issuers read it: the
  `hive` CLI run by the hive's owner, and the lifecycle server (it mints agents' tokens).
- `signing.pub` (0644): the public half as a JWK set. Every server verifies with it; it holds no
  secret, so a unit may read it directly or as a credential.

In a hive that spans hosts, each host's lifecycle server signs with a key of its own instead
(`host.key`, made on its first start; its kid "host:<name>:<thumbprint>"), whose public half it
registers in the hive's directory (hivedb.py): a token signed by a host's key is good only for
the principals that live on that host and for its lifecycle server's service (tokens.py), so a
host that is taken over cannot mint the operator's token, nor another host's agents'. The hive's
own key then stays with the hive's owner.

Both are written atomically, the public half last, and re-read when they change on disk: after
`hive rotate-key` every process verifies with the new key within a second, and a token signed by
the old one is refused (rotation revokes everything minted before it). A home from before key
pairs (an HS256 `secret` file) migrates on `hive init`: a new pair is made and `secret` deleted.
"""

from __future__ import annotations

import contextlib
import json
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey

from hyperhive.servers.common.files import write_atomic

HOST_KEY_FILE: Final = "host.key"
HOST_KID_PREFIX: Final = "host:"
PRIVATE_KEY_FILE: Final = "signing.key"
PUBLIC_KEY_FILE: Final = "signing.pub"
LEGACY_SECRET_FILE: Final = "secret"  # the HS256 secret of homes made before key pairs
CURVE: Final = "Ed25519"
_RECHECK_SECONDS: Final = 1.0  # how stale a view of the key files may get


class KeyFileError(Exception):
    """A key file is missing, unreadable or unsafe; the message says how to fix it."""


@dataclass(frozen=True)
class SigningKey:
    """The private key, for issuers: it signs tokens under its `kid`."""

    key: OKPKey
    kid: str

    @classmethod
    def generate(cls) -> SigningKey:
        key = OKPKey.generate_key(CURVE)
        return cls(key, key.thumbprint())

    def public_jwk(self) -> dict[str, object]:
        public: dict[str, object] = dict(self.key.as_dict(private=False))
        public["kid"] = self.kid
        public["use"] = "sig"
        return public

    def public_jwks(self) -> dict[str, list[dict[str, object]]]:
        return {"keys": [self.public_jwk()]}


def host_kid(host: str, key: OKPKey) -> str:
    return f"{HOST_KID_PREFIX}{host}:{key.thumbprint()}"


def host_of_kid(kid: str) -> str | None:
    """The host whose key `kid` names ("host:<name>:<thumbprint>"), or None for the hive's key."""
    if not kid.startswith(HOST_KID_PREFIX):
        return None
    return kid.removeprefix(HOST_KID_PREFIX).partition(":")[0] or None


def host_signing_key(home: Path, host: str) -> SigningKey:
    """This host's own signing key (host.key, 0600), made on first use or when the host was renamed."""
    path = home / HOST_KEY_FILE
    if path.exists():
        signing = load_signing_key(path)
        if host_of_kid(signing.kid) == host:
            return signing
    key = OKPKey.generate_key(CURVE)
    signing = SigningKey(key, host_kid(host, key))
    private = dict(key.as_dict(private=True))
    private["kid"] = signing.kid
    write_atomic(path, json.dumps(private) + "\n", mode=0o600)
    return signing


def import_public_jwk(text: str) -> OKPKey | None:
    """A host's registered public key (a JWK with its kid), or None if it is not an Ed25519 public key."""
    try:
        key = OKPKey.import_key(json.loads(text))
    except (ValueError, TypeError, JoseError):
        return None
    if key.is_private or key.as_dict(private=False).get("crv") != CURVE:
        return None
    return key


def create_key_pair(home: Path) -> bool:
    """Create signing.key and signing.pub unless the private key exists. True if created."""
    private = home / PRIVATE_KEY_FILE
    if private.exists():
        if not (home / PUBLIC_KEY_FILE).exists():  # a crash between the two writes: finish it
            write_public_key(home, load_signing_key(private))
        return False
    write_key_pair(home, SigningKey.generate())
    return True


def write_key_pair(home: Path, signing: SigningKey) -> None:
    """Replace both halves; the private one first, so a verifier never knows a key nobody holds."""
    private = dict(signing.key.as_dict(private=True))
    private["kid"] = signing.kid
    write_atomic(home / PRIVATE_KEY_FILE, json.dumps(private) + "\n", mode=0o600)
    write_public_key(home, signing)


def write_public_key(home: Path, signing: SigningKey) -> None:
    write_atomic(home / PUBLIC_KEY_FILE, json.dumps(signing.public_jwks()) + "\n", mode=0o644)


def migrate_legacy_secret(home: Path) -> bool:
    """Delete an HS256 `secret` of an older home once the key pair exists. True if one was."""
    legacy = home / LEGACY_SECRET_FILE
    if not legacy.exists() or not (home / PRIVATE_KEY_FILE).exists():
        return False
    legacy.unlink()
    return True


def _read_private(path: Path) -> str:
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"{path} not found; run `hive init` to create the hive home's keys") from None
    except PermissionError:
        raise KeyFileError(f"{path} is not readable by this user: only the hive's owner issues tokens") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is readable by others; run `chmod 600 {path}`")
    return text


def load_signing_key(path: Path) -> SigningKey:
    text = _read_private(path)
    try:
        data = json.loads(text)
        kid = str(data.pop("kid"))
        key = OKPKey.import_key(data)
    except (ValueError, KeyError, TypeError, JoseError) as e:
        raise KeyFileError(f"{path} is not an Ed25519 private key ({e}); `hive rotate-key` makes a new one") from None
    if not key.is_private or key.as_dict(private=False).get("crv") != CURVE:
        raise KeyFileError(f"{path} is not an Ed25519 private key; `hive rotate-key` makes a new one")
    return SigningKey(key, kid)


def load_public_keys(path: Path) -> KeySet:
    try:
        data = json.loads(path.read_text())
        keys = KeySet.import_key_set(data)
    except FileNotFoundError:
        raise KeyFileError(f"{path} not found; run `hive init` to create the hive home's keys") from None
    except PermissionError:
        raise KeyFileError(f"{path} is not readable by this user") from None
    except (ValueError, KeyError, TypeError, JoseError) as e:
        raise KeyFileError(f"{path} is not a JWK set ({e}); `hive rotate-key` writes a new one") from None
    if not keys.keys or any(key.is_private for key in keys.keys):
        raise KeyFileError(f"{path} must hold public keys only; `hive rotate-key` writes a new one")
    return keys


class WatchedFile:
    """Knows whether a file changed since it was last looked at: (inode, size, mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def changed(self) -> bool:
        """True the first time and whenever the file was replaced since; cheap between checks."""
        now = time.monotonic()
        with self._lock:
            if self._signature is not None and now - self._checked < _RECHECK_SECONDS:
                return False
            self._checked = now
            try:
                st = self.path.stat()
                signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:
                signature = (0, 0, 0)
            if signature == self._signature:
                return False
            self._signature = signature
            return True


class PublicKeys:
    """The keys a server verifies tokens with: signing.pub, followed as it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._watch = WatchedFile(path)
        self._keys = load_public_keys(path)  # a server without keys must not start
        self._watch.changed()
        self.generation = 0  # bumped on every reload: caches of verified tokens drop then

    def current(self) -> KeySet:
        if self._watch.changed():
            try:
                self._keys = load_public_keys(self.path)
            except KeyFileError:
                pass  # mid-rotation or a mistake: keep verifying with what we had
            else:
                self.generation += 1
        return self._keys


class ReloadingSigningKey:
    """The issuer's private key, followed as it changes (`hive rotate-key`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._watch = WatchedFile(path)
        self._key = load_signing_key(path)
        self._watch.changed()

    def current(self) -> SigningKey:
        if self._watch.changed():
            with contextlib.suppress(KeyFileError):  # mid-rotation or a mistake: keep what we had
                self._key = load_signing_key(self.path)
        return self._key
