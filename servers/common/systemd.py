"""What a hyperhive process takes from systemd when it runs as a unit: credentials and readiness.

Both are no-ops outside systemd, so `hive up` and a unit run the same code.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Final

# A server's TLS key ([servers.X] tls_key), as the NixOS module hands it to that server's unit.
TLS_KEY_CREDENTIAL: Final = "tls.key"


def credential(name: str, default: Path) -> Path:
    """The copy of a file systemd handed this unit (`LoadCredential=NAME:PATH`), else `default`.

    An unprivileged unit reads root's 0600 files this way (the token-signing secret, the
    dashboard password): systemd copies them, 0400 and owned by the unit's user, into
    $CREDENTIALS_DIRECTORY, and no file in the hive home has to be opened up to a group.
    """
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        handed = Path(directory) / name
        if handed.is_file():
            return handed
    return default


def notify(state: str) -> bool:
    """sd_notify(3): tell systemd `state` (e.g. "READY=1") for a Type=notify unit; False if not one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True
