"""What a nixos-container is given besides its flake: nixos-container's `CONF_DIR/NAME.conf`
(systemd-nspawn flags: the agent's binds at the same paths, its /tmp; the host's network), its
unit's resource limits (MemoryMax, TasksMax, CPUWeight), the flake's directory, and sandbox.json.
"""

from __future__ import annotations

import builtins
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from dbus_fast import Variant

from hyperhive.servers.common.binds import BIND_PATH_RE
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.lifecycle.backends.base import BackendError, SandboxSpec
from hyperhive.servers.lifecycle.backends.nixos_spec import SPEC_FILE, sandbox_json

UNLIMITED: Final = 2**64 - 1  # MemoryMax/TasksMax "infinity", CPUWeight "not set": systemd's UINT64_MAX

# Bind paths go through systemd's EnvironmentFile parser and then unquoted shell word splitting
# and globbing in the container's start script, and nspawn splits --bind on ':' (binds.py).


def nspawn_bind_flags(spec: SandboxSpec) -> builtins.list[str]:
    """The agent's directories as systemd-nspawn flags, at the same paths inside as outside."""
    binds = [
        ("--bind", spec.state_dir, spec.state_dir),
        ("--bind", spec.harness_dir, spec.harness_dir),
        ("--bind-ro", spec.credentials_dir, spec.harness_dir / "credentials"),
        *(("--bind", path, path) for path in spec.shared_rw),
        # /hive/shared and agent.toml's [[binds]]: the same places as in a bubblewrap sandbox.
        *(("--bind-ro" if mount.read_only else "--bind", mount.host, mount.path) for mount in spec.mounts),
    ]
    for _, source, target in binds:
        for path in (source, target):
            if not path.is_absolute() or not BIND_PATH_RE.fullmatch(str(path)):
                raise BackendError(
                    f"cannot bind {path} into the container of {spec.name}: the path must be absolute and use only "
                    "letters, digits and ._+@%=,~/- (it is word-split by the container's start script)"
                )
    return [f"{flag}={source}:{target}" for flag, source, target in binds]


def nspawn_flags(spec: SandboxSpec) -> builtins.list[str]:
    """Everything hyperhive adds to systemd-nspawn's command line: the agent's binds and its /tmp.

    /tmp is a tmpfs of [sandbox] tmp_max bytes (nspawn's own /tmp has no size). Raises BackendError
    for a network a container cannot honour, before anything is built or started.
    """
    container_network(spec)
    flags = nspawn_bind_flags(spec)
    if spec.tmp_max is not None:
        flags.append(f"--tmpfs=/tmp:mode=1777,size={int(spec.tmp_max)}")
    return flags


def container_network(spec: SandboxSpec) -> str:
    """PRIVATE_NETWORK for `spec`: "0", the host's network, which is all a nixos-container offers here.

    The hive's servers listen on host loopback. A container with a network of its own
    (PRIVATE_NETWORK=1: loopback only, or a veth with host NAT) would not reach them, and nothing
    here forwards their ports into it as the bubblewrap backend's keeper does; so "outbound" and
    "hive-only", which promise the host's other loopback services out of reach, are refused
    rather than quietly given the host's network.
    """
    if spec.network != "host":
        raise BackendError(
            f'{spec.name} asks for [sandbox] network = "{spec.network}", which the nixos-container backend cannot '
            "honour: its containers share the host's network (the hive's servers are on host loopback), so every "
            'loopback service of the host is in reach. Set network = "host" in its agent.toml (or leave it unset), '
            'or run the hive with [lifecycle] backend = "bwrap" for a network of its own'
        )
    return "0"


def unit_limits(spec: SandboxSpec) -> builtins.list[tuple[str, Variant]]:
    """[sandbox] memory_max, pids_max and cpu_weight as container@NAME's MemoryMax, TasksMax and CPUWeight;
    an unset one is set to systemd's "infinity" / "not set", so a limit dropped from the config goes too."""
    limits = spec.limits
    values = {"MemoryMax": limits.memory_max, "TasksMax": limits.pids_max, "CPUWeight": limits.cpu_weight}
    return [(key, Variant("t", UNLIMITED if value is None else int(value))) for key, value in values.items()]


def container_conf(conf: str, flags: Iterable[str]) -> str:
    """nixos-container's NAME.conf as hyperhive runs it: the agent's binds in EXTRA_NSPAWN_FLAGS, and
    the host's network (the servers listen on host loopback, as for bwrap sandboxes). The rest is kept.

    `nixos-container create` gives a container a private network with 10.233.x addresses; from there
    the harness could not reach 127.0.0.1 on the host.
    """
    values = {"PRIVATE_NETWORK": "0", "EXTRA_NSPAWN_FLAGS": f'"{" ".join(flags)}"'}
    cleared = ("HOST_ADDRESS", "LOCAL_ADDRESS", "HOST_ADDRESS6", "LOCAL_ADDRESS6")  # of the private network
    lines, seen = [], set()
    for line in conf.splitlines():
        key = line.split("=", 1)[0]
        if key in values:
            if key not in seen:  # a repeated key goes
                seen.add(key)
                lines.append(f"{key}={values[key]}")
            continue
        lines.append(f"{key}=" if key in cleared else line)
    lines += [f"{key}={value}" for key, value in values.items() if key not in seen]
    return "\n".join(lines) + "\n"


def write_flake(directory: Path, files: dict[str, str]) -> None:
    """Make `directory` hold exactly `files`.

    Anything else goes, flake.lock included: the lock would pin the hyperhive input, and a
    rebuild must follow hive.toml's flake reference to the hyperhive installed now.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.name in files:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for file_name, text in files.items():
        write_atomic(directory / file_name, text)


def write_spec(spec: SandboxSpec) -> None:
    path = spec.credentials_dir / SPEC_FILE
    write_atomic(path, sandbox_json(spec), mode=0o600)  # its env may hold an API key
    if spec.uid is not None and os.geteuid() == 0:
        os.chown(path, spec.uid, spec.uid)
