"""The set of agents and their policies: their applied configs and live instances.

On one host they are files: `applied/<name>/agent.toml` is written only by the lifecycle server after
an approval, always atomically (files.write_atomic), so a scan never reads half a file. Every server
reads them through an AgentRegistry, which rescans in the background (and at once when asked about a
name it does not know) so a new, changed or destroyed agent takes effect within a second.

In a hive that spans hosts (`[storage] url`), the files belong to the host an agent lives on, and
every server reads the hive's agent directory instead (hivedb.py, `DirectoryAgentRegistry`): rows
each host's lifecycle server publishes from its own files (`PublishingAgentRegistry`), seen by every
process through LISTEN within milliseconds. `agent_registry(config, server)` picks the kind.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from joserfc.jwk import OKPKey

from hyperhive.servers.common.agent_config import AGENT_TOML, AgentConfig, load_agent_config, parse_agent_config
from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.db import DatabaseError
from hyperhive.servers.common.instances import current_instance
from hyperhive.servers.common.keys import host_of_kid, import_public_jwk
from hyperhive.servers.common.names import is_agent_name

if TYPE_CHECKING:
    from hyperhive.servers.common.hivedb import HiveDirectory, PlacedAgent

log = logging.getLogger("hyperhive.agents")


@dataclass(frozen=True, slots=True)
class _Seen:
    # (inode, size, mtime_ns) of the file, or (version, 0, 0) of a directory row: a change means read again
    signature: tuple[int, int, int]
    config: AgentConfig | None
    error: str | None


def agent_registry(config: HiveConfig, server: str) -> AgentRegistry:
    """The registry `server` reads agents through: the home's files on one host; with [storage] url,
    the hive's directory (the lifecycle server publishing its host's agents to it)."""
    if config.storage.url is None:
        return AgentRegistry(config.applied_dir, config.instances_dir)
    from hyperhive.servers.common.hivedb import HiveDirectory

    directory = HiveDirectory(config.storage.url)
    if server == "lifecycle":
        return PublishingAgentRegistry(config, directory)
    return DirectoryAgentRegistry(config.applied_dir, config.instances_dir, directory)


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

    async def current_instance(self, name: str, claimed: str | None = None) -> str | None:
        """The live instance of `name`, read now: a destroyed or ended instance is refused at once.
        (`claimed`: the instance a token names, for a registry that reads again when it differs.)"""
        return current_instance(self.instances_dir, name)

    async def instances_changed(self) -> None:
        """The lifecycle server began or ended an instance (instances.py): a registry that reads
        files reads them at each call; one that publishes them does so now."""

    def host_of(self, name: str) -> str | None:
        """The host agent (or peer) `name` lives on, in a hive of several hosts; None on one host."""
        return None

    async def host_key(self, kid: str) -> OKPKey | None:
        """The public key a host signs with under `kid` (keys.py); a hive of one host has none."""
        return None

    async def open(self) -> None:
        """Before the first refresh (a registry that reads a database connects)."""

    async def close(self) -> None:
        pass

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


class DirectoryAgentRegistry(AgentRegistry):
    """The agents of a hive that spans hosts, read from its directory (hivedb.py) instead of files.

    Its view changes when the directory NOTIFYs (watch); a name it does not know, or a token whose
    instance differs from the one it knows, is looked up at once, so an agent created or restarted a
    moment ago on another host is not refused. (An instance that ended is refused once its host's
    change arrives, milliseconds later; by then its sandbox is gone.)
    """

    def __init__(self, applied_dir: Path, instances_dir: Path | None, directory: HiveDirectory) -> None:
        super().__init__(applied_dir, instances_dir)
        self.directory = directory
        self._instances: dict[str, str | None] = {}
        self._hosts: dict[str, str] = {}  # agent -> the host it lives on
        self._host_keys: dict[str, OKPKey] = {}  # kid -> a host's public key
        self._keys_read = 0.0

    def host_of(self, name: str) -> str | None:
        return self._hosts.get(name)

    async def host_key(self, kid: str) -> OKPKey | None:
        """From the directory's hosts, read again (once a second at most) for a kid not known yet."""
        key = self._host_keys.get(kid)
        if key is None and time.monotonic() - self._keys_read > 1.0:
            self._keys_read = time.monotonic()
            keys = {}
            for host in await self.directory.hosts():
                public = import_public_jwk(host.public_key) if host.public_key else None
                if public is not None and host_of_kid(public.kid or "") == host.name:  # a host signs as itself
                    keys[public.kid or ""] = public
            self._host_keys = keys
            key = keys.get(kid)
        return key

    async def open(self) -> None:
        await self.directory.db.open()

    async def close(self) -> None:
        await self.directory.db.close()

    async def lookup(self, name: str) -> AgentConfig | None:
        config = self.get(name)
        if config is None and is_agent_name(name):
            await self._refresh_one(name)
            config = self.get(name)
        return config

    async def current_instance(self, name: str, claimed: str | None = None) -> str | None:
        current = self._instances.get(name)
        if current != claimed:
            await self._refresh_one(name)
            current = self._instances.get(name)
        return current

    async def refresh(self) -> None:
        async with self._scan_lock:
            self._take(await self.directory.agents(), everything=True)

    async def _refresh_one(self, name: str) -> None:
        placed = await self.directory.agent(name)
        async with self._scan_lock:
            self._take([placed] if placed else [], everything=False, names=[name])

    def _take(self, rows: Iterable[PlacedAgent], *, everything: bool, names: Iterable[str] = ()) -> None:
        seen = {} if everything else dict(self._seen)
        instances = {} if everything else dict(self._instances)
        hosts = {} if everything else dict(self._hosts)
        for name in names:  # asked about and not in the directory: gone
            seen.pop(name, None)
            instances.pop(name, None)
            hosts.pop(name, None)
        for row in rows:
            instances[row.name] = row.instance
            hosts[row.name] = row.host
            if row.config is None:  # placed, not applied yet: not an agent so far
                seen.pop(row.name, None)
                continue
            signature = (row.version, 0, 0)
            old = self._seen.get(row.name)
            if old is not None and old.signature == signature:
                seen[row.name] = old
                continue
            try:
                seen[row.name] = _Seen(signature, parse_agent_config(row.config, f"{row.name} ({row.host})"), None)
            except ConfigError as e:
                log.error("applied config of %s on %s is invalid, keeping the previous one: %s", row.name, row.host, e)
                seen[row.name] = _Seen(signature, old.config if old else None, str(e))
        self._seen, self._instances, self._hosts = seen, instances, hosts

    async def watch(self, interval: float = 1.0) -> None:
        """Follow the directory's changes forever (LISTEN; everything again after each reconnect)."""
        while True:
            try:
                async for _, name in self.directory.changes():
                    if name:
                        await self._refresh_one(name)
                    else:  # listening (again): what changed meanwhile was not heard
                        await self.refresh()
            except DatabaseError as e:
                log.warning("lost the agent directory's changes, listening again: %s", e)
            await anyio.sleep(interval)


class PublishingAgentRegistry(DirectoryAgentRegistry):
    """The lifecycle server's: its host's agents are its own files (it writes them); each refresh
    first publishes what changed in them to the directory, so every server sees what this host's
    agents are and may do. `placing` names taken for an agent being created here, not yet on disk."""

    def __init__(self, config: HiveConfig, directory: HiveDirectory) -> None:
        super().__init__(config.applied_dir, config.instances_dir, directory)
        self.config = config
        self.host = config.host.name
        self.placing: set[str] = set()
        self._published: dict[str, tuple[str | None, str | None]] | None = None
        self._foreign: set[str] = set()  # names living on another host (logged once)
        self._publish_lock = anyio.Lock()

    async def open(self) -> None:
        await super().open()
        # This host first: its agents' rows name it.
        from hyperhive.servers.common.client import server_address
        from hyperhive.servers.common.keys import host_signing_key

        settings = self.config.host
        cert = self.config.listen("lifecycle").tls_cert
        signing = await anyio.to_thread.run_sync(host_signing_key, self.config.home, self.host)
        await self.directory.register(
            self.host,
            lifecycle_url=settings.lifecycle_url or server_address(self.config, "lifecycle").url,
            tls_cert=await anyio.to_thread.run_sync(cert.read_text) if cert else None,
            public_key=json.dumps(signing.public_jwk()),
            labels=settings.labels,
            capacity=settings.capacity,
            backend=self.config.lifecycle.backend,
        )

    async def refresh(self) -> None:
        await self.publish()
        await super().refresh()

    async def instances_changed(self) -> None:
        await self.refresh()

    async def publish(self) -> None:
        """Bring this host's rows of the directory in line with its files."""
        from hyperhive.servers.common.hivedb import NameTaken

        async with self._publish_lock:
            if self._published is None:  # what an earlier run left there
                self._published = {a.name: (a.config, a.instance) for a in await self.directory.agents(self.host)}
            local = await anyio.to_thread.run_sync(self._local)
            for name, (config, instance) in local.items():
                if self._published.get(name) != (config, instance) and name not in self._foreign:
                    try:
                        await self.directory.publish(self.host, name, config, instance)
                    except NameTaken as e:  # files of a name the hive gave another host: not an agent here
                        log.warning("%s; its files on this host (%s) are not published", e, self.host)
                        self._foreign.add(name)
                        continue
                    self._published[name] = (config, instance)
            for name in sorted(set(self._published) - set(local) - self.placing):
                await self.directory.unpublish(self.host, name)
                del self._published[name]

    def _local(self) -> dict[str, tuple[str | None, str | None]]:
        """(applied agent.toml, live instance) of each agent whose files are on this host."""
        names: set[str] = set()
        for directory in (self.applied_dir, self.instances_dir):
            try:
                names |= {e.name for e in os.scandir(directory) if is_agent_name(e.name)}
            except FileNotFoundError:
                continue
        local: dict[str, tuple[str | None, str | None]] = {}
        for name in names:
            try:
                config: str | None = (self.applied_dir / name / AGENT_TOML).read_text(encoding="utf-8")
            except (FileNotFoundError, NotADirectoryError):
                config = None
            instance = current_instance(self.instances_dir, name)
            if config is not None or instance is not None:
                local[name] = (config, instance)
        return local
