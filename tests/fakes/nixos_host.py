"""What a test needs to know of the NixOS stand-ins (fixtures in tests/integration/conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FAKES_BIN = Path(__file__).parent / "bin"


@dataclass
class Tools:
    """The stand-ins' records and the files they read."""

    nixos_log: Path
    journal_log: Path
    journal: Path
    conf_dir: Path

    def nixos_commands(self) -> list[list[str]]:
        return _json_lines(self.nixos_log)

    def journal_commands(self) -> list[list[str]]:
        return _json_lines(self.journal_log)


def _json_lines(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
