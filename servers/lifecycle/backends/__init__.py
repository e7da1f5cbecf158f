"""Sandbox backends: bubblewrap (any Linux) and nixos-container (NixOS)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.lifecycle.backends.base import BackendError, SandboxBackend


def choose_backend(config: HiveConfig) -> SandboxBackend:
    """hive.toml's [lifecycle] backend, or by probing: nixos-container under systemd, else bwrap."""
    wanted = config.lifecycle.backend
    if wanted == "auto":
        under_systemd = Path("/run/systemd/system").is_dir()
        wanted = "nixos-container" if under_systemd and shutil.which("nixos-container") else "bwrap"
    if wanted == "nixos-container":
        from hyperhive.servers.lifecycle.backends.nixos import NixosContainerBackend

        return NixosContainerBackend(config)
    if shutil.which("bwrap") is None:
        raise BackendError("bubblewrap is not installed: `apt install bubblewrap` (scripts/setup.sh does it)")
    from hyperhive.servers.lifecycle.backends.bwrap import BwrapBackend

    return BwrapBackend(config)
