"""Where an agent's things live in the hive home: stated once, used by the server and the backends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.harnessdir import (
    CANCEL_FILE,
    CREDENTIALS,
    HIVE_JSON,
    INSTANCE_DIR,
    MODEL_FILE,
    RESET_FILE,
    TURN_STATE,
)


@dataclass(frozen=True, slots=True)
class AgentPaths:
    home: Path
    name: str

    @classmethod
    def of(cls, config: HiveConfig, name: str) -> AgentPaths:
        return cls(config.home, name)

    @property
    def root(self) -> Path:
        return self.home / "agents" / self.name

    @property
    def config(self) -> Path:
        """The proposed config repo: the manager edits it."""
        return self.root / "config"

    @property
    def state(self) -> Path:
        """The agent's own files and its cwd (notes.md ...)."""
        return self.root / "state"

    @property
    def harness(self) -> Path:
        """Harness-owned: turn state, Claude Code's own config; the agent can write here."""
        return self.root / "harness"

    @property
    def applied(self) -> Path:
        """The applied config repo: written only by the lifecycle server."""
        return self.home / "applied" / self.name

    @property
    def credentials(self) -> Path:
        """Its token and the harness's instructions (hive.json, model, cancel), outside the agents tree;
        bound read-only at harness/credentials in its sandbox."""
        return self.home / "credentials" / self.name

    @property
    def token_dir(self) -> Path:
        """Where the harness finds its token (INSTANCE_DIR), in the credentials dir. A backend with
        per-instance credentials binds `instance_credentials(...)` over it; the others keep it here."""
        return self.credentials / INSTANCE_DIR

    def instance_credentials(self, instance: str) -> Path:
        """One run's own token dir (bwrap): bound over token_dir in that run's sandbox only, and
        removed when the run ends, so a process that outlived a run never reads a later run's token."""
        return self.instance_credentials_root / instance

    @property
    def instance_credentials_root(self) -> Path:
        return self.home / "instance-credentials" / self.name

    @property
    def credentials_mount(self) -> Path:
        return self.harness / CREDENTIALS

    @property
    def hive_json(self) -> Path:
        return self.credentials / HIVE_JSON

    @property
    def model_override(self) -> Path:
        return self.credentials / MODEL_FILE

    @property
    def cancel_request(self) -> Path:
        return self.credentials / CANCEL_FILE

    @property
    def reset_request(self) -> Path:
        return self.credentials / RESET_FILE

    @property
    def turn_state(self) -> Path:
        return self.harness / TURN_STATE

    @property
    def log(self) -> Path:
        """The sandbox's output (bwrap); outside the agent's reach."""
        return self.home / "logs" / f"{self.name}.log"

    def exists(self) -> bool:
        """Provisioned: both repos, the state dir and the harness dir are there."""
        return all(p.is_dir() for p in (self.config / ".git", self.applied / ".git", self.state, self.harness))
