"""Config diffs: what applying a proposed config would change, as the operator reviews it."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Final

CONFIG_FILES: Final = ("agent.toml", "agent.nix")  # what a config repo holds and an apply copies


def render_diff(old: Mapping[str, str], new: Mapping[str, str], old_label: str, new_label: str) -> str:
    """A unified diff of the config files, file by file ('' when nothing differs)."""
    parts: list[str] = []
    for name in CONFIG_FILES:
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        parts.extend(
            difflib.unified_diff(
                (before or "").splitlines(keepends=True),
                (after or "").splitlines(keepends=True),
                fromfile=f"{old_label}/{name}" if before is not None else "/dev/null",
                tofile=f"{new_label}/{name}" if after is not None else "/dev/null",
            )
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in parts)
