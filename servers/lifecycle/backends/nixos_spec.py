"""What an agent's nixos-container runs, handed over in a file.

A container's NixOS configuration is built once per applied config, but what its harness runs
(the command, and an environment with a fresh token's paths and agent.toml's [env]) is decided at
every start. So the lifecycle server writes it to `sandbox.json` in the agent's credentials dir
(bound read-only into the container), and the container's harness unit (nix/agent-base.nix) runs
`hive sandbox-exec` on it, which becomes that command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final, NoReturn

from hyperhive.servers.lifecycle.backends.base import SandboxSpec

SPEC_FILE: Final = "sandbox.json"


class SpecError(Exception):
    """A spec file that cannot be run; the message says why."""


def sandbox_json(spec: SandboxSpec) -> str:
    return json.dumps({"command": spec.command, "env": spec.env, "cwd": str(spec.state_dir)}, indent=2) + "\n"


def read_spec(spec_file: Path, base_env_file: Path | None = None) -> tuple[list[str], dict[str, str], Path]:
    """The command, environment and cwd a spec file says; `base_env_file`'s variables come first."""
    spec = _json_object(spec_file)
    command, env, cwd = spec.get("command"), spec.get("env"), spec.get("cwd")
    if not isinstance(command, list) or not command or not all(isinstance(arg, str) and arg for arg in command):
        raise SpecError(f"{spec_file}: command must be a non-empty list of non-empty strings")
    if not isinstance(cwd, str) or not Path(cwd).is_absolute():
        raise SpecError(f"{spec_file}: cwd must be an absolute path")
    environment = _string_map(_json_object(base_env_file), base_env_file) if base_env_file else {}
    environment.update(_string_map(env, spec_file))
    return command, environment, Path(cwd)


def exec_spec(spec_file: Path, base_env_file: Path | None = None) -> NoReturn:
    """Become the spec's command (execvpe: the spec's PATH finds it), in its cwd, with its environment."""
    command, env, cwd = read_spec(spec_file, base_env_file)
    try:
        os.chdir(cwd)
    except OSError as e:
        raise SpecError(f"cannot enter {cwd}: {e.strerror}") from None
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        raise SpecError(f"cannot run {command[0]} (PATH={env.get('PATH', '')}): {e.strerror}") from None


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise SpecError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path} must hold a JSON object")
    return data


def _string_map(value: object, source: Path) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError(f"{source}: the environment must map names to strings")
    return dict(value)
