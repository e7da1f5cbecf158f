"""The set of agents and their policies, read from the applied configs on disk.

`applied/<name>/agent.toml` is written only by the lifecycle server after an approval, always
atomically (files.write_atomic), so a scan never reads half a file. Every server reads it through
an AgentRegistry, which rescans in the background (and at once when asked about a name it does
not know) so a new, changed or destroyed agent takes effect within a second.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import anyio

from hyperhive.servers.common.agent_config import AGENT_TOML, AgentConfig, load_agent_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.instances import current_instance
from hyperhive.servers.common.names import is_agent_name

log = logging.getLogger("hyperhive.agents")


@dataclass(frozen=True, slots=True)
class _Seen:
    signature: tuple[int, int, int]  # (inode, size, mtime_ns): a change means re-read the file
    config: AgentConfig | None
    error: str | None


class AgentRegistry:
    def __init__(self, applied_dir: Path, instances_dir: Path | None = None) -> None:
        self.applied_dir = applied_dir
        # Beside applied/ in a hive home (HiveConfig.instances_dir).
        self.instances_dir = instances_dir or applied_dir.parent / "instances"
        self._seen: dict[str, _Seen] = {}
        self._scan_lock = anyio.Lock()

    # --------------------------------------------------------------------------------- reading
    def get(self, name: str) -> AgentConfig | None:
        seen = self._seen.get(name)
        return seen.config if seen else None

    def names(self) -> list[str]:
        return sorted(name for name, seen in self._seen.items() if seen.config is not None)

    def errors(self) -> dict[str, str]:
        """Applied configs that could not be read, by agent name (there should be none)."""
        return {name: seen.error for name, seen in self._seen.items() if seen.error}

    async def lookup(self, name: str) -> AgentConfig | None:
        """Like get(), but an agent that appeared since the last scan is found at once."""
        config = self.get(name)
        if config is None and is_agent_name(name):
            # One stat decides: only a name whose agent.toml now exists is worth a rescan.
            path = self.applied_dir / name / AGENT_TOML
            if await anyio.to_thread.run_sync(path.exists):
                await self.refresh()
                config = self.get(name)
        return config

    def instance(self, name: str) -> str | None:
        """The live instance of `name`, read now: a destroyed or ended instance is refused at once."""
        return current_instance(self.instances_dir, name)

    # -------------------------------------------------------------------------------- scanning
    async def refresh(self) -> None:
        async with self._scan_lock:
            self._seen = await anyio.to_thread.run_sync(self._scan, self._seen)

    async def watch(self, interval: float = 1.0) -> None:
        """Rescan forever; run it in a task group and cancel it to stop."""
        while True:
            try:
                await self.refresh()
            except OSError as e:  # the directory vanished or is unreadable: keep the last view
                log.warning("cannot scan %s: %s", self.applied_dir, e)
            await anyio.sleep(interval)

    def _scan(self, previous: dict[str, _Seen]) -> dict[str, _Seen]:
        seen: dict[str, _Seen] = {}
        try:
            entries = list(os.scandir(self.applied_dir))
        except FileNotFoundError:
            return seen
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False) or not is_agent_name(entry.name):
                continue
            path = Path(entry.path) / AGENT_TOML
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            old = previous.get(entry.name)
            if old is not None and old.signature == signature:
                seen[entry.name] = old
                continue
            try:
                seen[entry.name] = _Seen(signature, load_agent_config(path), None)
            except (ConfigError, OSError, UnicodeDecodeError) as e:
                # Keep serving the last good config rather than locking the agent out.
                log.error("applied config of %s is invalid, keeping the previous one: %s", entry.name, e)
                seen[entry.name] = _Seen(signature, old.config if old else None, str(e))
        return seen
