"""The hive home's layout, created by `hive init` and `hive up`: settings, keys, tokens, dirs.

`init_home` only adds what is missing (and renews the handed tokens past half their life); it
never overwrites a setting or a key. Its errors are the kernel's (ConfigError, KeyFileError,
IssueError): the command line turns them into one clear line.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path
from typing import Final

from hyperhive.servers.common.agent_config import AGENT_TOML, agent_toml_template
from hyperhive.servers.common.config import HIVE_TOML, HIVE_TOML_TEMPLATE, DashboardSettings, load_hive_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.issuer import Issuer
from hyperhive.servers.common.keys import PRIVATE_KEY_FILE, create_key_pair, load_signing_key, migrate_legacy_secret
from hyperhive.servers.common.names import MANAGER
from hyperhive.servers.common.registry import REGISTRY

DASHBOARD_PASSWORD: Final = "dashboard.password"  # hyperhive.ui.auth.PASSWORD_FILE

# `hive init --port-base N`: each server (and the dashboard) on N + its default port's offset from
# DEFAULT_PORT_BASE, so a second hive on one host takes a block of its own (7900: 7901, 7902, ...).
DEFAULT_PORT_BASE: Final = 7800
PORT_OFFSETS: Final[dict[str, int]] = {
    **{spec.name: spec.port - DEFAULT_PORT_BASE for spec in REGISTRY},
    "dashboard": DashboardSettings().port - DEFAULT_PORT_BASE,
}
MIN_PORT_BASE: Final = 1024  # below: ports only root may bind
MAX_PORT_BASE: Final = 65535 - max(PORT_OFFSETS.values())


def ports_from(base: int) -> dict[str, int]:
    """Each server's port (and the dashboard's) for --port-base `base`, checked: a clear ValueError
    for a base out of range."""
    if not MIN_PORT_BASE <= base <= MAX_PORT_BASE:
        raise ValueError(
            f"--port-base {base} is out of range: give {MIN_PORT_BASE}-{MAX_PORT_BASE} "
            f"(the default is {DEFAULT_PORT_BASE})"
        )
    return {name: base + offset for name, offset in PORT_OFFSETS.items()}


def ports_in_use(ports: dict[str, int], host: str = "127.0.0.1") -> list[str]:
    """'broker 7901' for each port something on this host listens on (another hive, or anything)."""
    taken = []
    for name, port in ports.items():
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex((host, port)) == 0:
                taken.append(f"{name} {port}")
    return taken


def hive_toml_template(base: int) -> str:
    """hive.toml's template with every port derived from `base`."""
    text = HIVE_TOML_TEMPLATE
    for name, port in ports_from(base).items():
        default = DEFAULT_PORT_BASE + PORT_OFFSETS[name]
        head = f"[{name}]\n" if name == "dashboard" else f"[servers.{name}]\n"
        start = text.index(head)
        line = text.index(f"port = {default}", start)
        text = text[:line] + f"port = {port}" + text[line + len(f"port = {default}") :]
    return text


def init_home(home: Path, port_base: int | None = None) -> list[str]:
    """Create what is missing in the hive home; return what was created (relative paths).

    `port_base` (a new home only): every port derived from it, refused if out of range or taken.
    """
    created = []
    hive_toml = home / HIVE_TOML
    template = HIVE_TOML_TEMPLATE
    if port_base is not None:
        if hive_toml.exists():
            raise ConfigError(
                hive_toml,
                [
                    (
                        "",
                        "exists already: --port-base is for a new home; "
                        "edit its [servers.*] and [dashboard] ports instead",
                    )
                ],
            )
        try:
            taken = ports_in_use(ports_from(port_base))
        except ValueError as e:
            raise ConfigError(hive_toml, [("", str(e))]) from None
        if taken:
            raise ConfigError(
                hive_toml,
                [
                    (
                        "",
                        f"--port-base {port_base}: in use on this host: {', '.join(taken)}; "
                        "pick another base (another hive's? see its hive.toml)",
                    )
                ],
            )
        template = hive_toml_template(port_base)
    if not home.exists():
        created.append(".")
    # 0711: agents' uids may pass through to their own dirs (`hive claude`); nothing here is listable.
    home.mkdir(mode=0o711, parents=True, exist_ok=True)
    if not hive_toml.exists():
        write_atomic(hive_toml, template, mode=0o600)  # it may hold an API key ([harness.env])
        created.append(HIVE_TOML)
    config = load_hive_config(home)
    if create_key_pair(config.home):
        created.append(PRIVATE_KEY_FILE)
    if migrate_legacy_secret(config.home):
        created.append(f"{PRIVATE_KEY_FILE} (it replaces the old shared secret, now deleted)")
    password = config.home / DASHBOARD_PASSWORD
    if not password.exists():
        write_atomic(password, secrets.token_urlsafe(18) + "\n", mode=0o600)
        created.append(DASHBOARD_PASSWORD)
    for directory in (config.home / "state", config.run_dir, config.applied_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.instances_dir.mkdir(mode=0o755, exist_ok=True)  # ids only; the servers read them
    signing = load_signing_key(config.home / PRIVATE_KEY_FILE)
    created += [f"tokens/{name}.token" for name in Issuer(config, lambda: signing).issue_handed_tokens()]
    # Agents' own uids pass through it to their dirs (the manager to every proposed repo).
    config.agents_dir.mkdir(mode=0o711, exist_ok=True)
    manager_toml = config.applied_dir / MANAGER / AGENT_TOML
    if not manager_toml.exists():
        # Like every applied repo: readable inside applied/, which alone guards them (0700; the
        # NixOS module opens it to the unprivileged servers' group, which enforce the allow-lists).
        manager_toml.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(manager_toml, agent_toml_template("manager"))
        created.append(str(manager_toml.relative_to(config.home)))
    return created
