"""The hive home's layout, created by `hive init` and `hive up`: settings, keys, tokens, dirs.

`init_home` only adds what is missing (and renews the handed tokens past half their life); it
never overwrites a setting or a key. Its errors are the kernel's (ConfigError, KeyFileError,
IssueError): the command line turns them into one clear line.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Final

from hyperhive.servers.common.agent_config import AGENT_TOML, agent_toml_template
from hyperhive.servers.common.config import HIVE_TOML, HIVE_TOML_TEMPLATE, load_hive_config
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.issuer import Issuer
from hyperhive.servers.common.keys import PRIVATE_KEY_FILE, create_key_pair, load_signing_key, migrate_legacy_secret
from hyperhive.servers.common.names import MANAGER

DASHBOARD_PASSWORD: Final = "dashboard.password"  # hyperhive.ui.auth.PASSWORD_FILE


def init_home(home: Path) -> list[str]:
    """Create what is missing in the hive home; return what was created (relative paths)."""
    created = []
    if not home.exists():
        created.append(".")
    # 0711: agents' uids may pass through to their own dirs (`hive claude`); nothing here is listable.
    home.mkdir(mode=0o711, parents=True, exist_ok=True)
    hive_toml = home / HIVE_TOML
    if not hive_toml.exists():
        write_atomic(hive_toml, HIVE_TOML_TEMPLATE, mode=0o600)  # it may hold an API key ([harness.env])
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
