"""Test support: a hive home with agents, tokens, and brokers served over real HTTP.

`InProcessBroker` serves the real app on a loopback port inside the test's event loop, with a
ManualClock the test moves. `BrokerProcess` runs `hive serve broker` as a real process, for
tests that stop and restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperhive.servers.broker.server import create as create_broker
from hyperhive.servers.cli import init_home, principal_named
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.clock import Clock, ManualClock
from hyperhive.servers.common.config import AGENT_TOML, HiveConfig, Listen, load_hive_config
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.serving import http_app, serve
from hyperhive.servers.common.tokens import load_secret, mint_token

_names = itertools.count(1)


@dataclass
class Hive:
    home: Path

    def __post_init__(self) -> None:
        init_home(self.home)

    @property
    def config(self) -> HiveConfig:
        return load_hive_config(self.home)

    @property
    def secret(self) -> bytes:
        return load_secret(self.config.secret_path)

    def configure(self, toml: str) -> None:
        """Replace hive.toml with these settings; everything else takes its default."""
        (self.home / "hive.toml").write_text(toml + "\n")

    def add_agent(self, name: str | None = None, *, role: str = "agent", extra: str = "") -> str:
        """Write applied/<name>/agent.toml as the lifecycle server would; returns the name."""
        name = name or f"a{os.getpid() % 1000}-{next(_names)}"
        directory = self.home / "applied" / name
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / AGENT_TOML, f'role = "{role}"\n{extra}\n')
        return name

    def remove_agent(self, name: str) -> None:
        (self.home / "applied" / name / AGENT_TOML).unlink()
        (self.home / "applied" / name).rmdir()

    def token(self, name: str, ttl: int = 3600) -> str:
        return mint_token(self.secret, principal_named(self.config, name), ttl)


@dataclass
class BrokerEndpoint:
    hive: Hive
    url: str
    clock: ManualClock | None = None
    _clients: list[HiveClient] = field(default_factory=list)

    def client(self, name: str, **kwargs: Any) -> HiveClient:
        """A HiveClient acting as `name`; closed when the fixture ends."""
        kwargs.setdefault("retry_seconds", 0)
        client = HiveClient(ServerAddress("broker", self.url), self.hive.token(name), **kwargs)
        self._clients.append(client)
        return client

    async def close_clients(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()


@contextlib.asynccontextmanager
async def in_process_broker(hive: Hive, clock: Clock | None = None) -> AsyncIterator[BrokerEndpoint]:
    """The real broker app on 127.0.0.1:<free port>, served in this event loop.

    Time is a ManualClock (`endpoint.clock`) unless another clock is given.
    """
    clock = clock or ManualClock(start=time.time())
    server = create_broker(hive.config, hive.secret, clock=clock)
    stop = asyncio.Event()
    ready: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            http_app(server.mcp),
            Listen(port=0),
            before_shutdown=server.before_shutdown,
            on_ready=ready.set_result,
            stop=stop,
        )
    )
    done, _ = await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what stopped the server
    endpoint = BrokerEndpoint(hive, ready.result()[0], clock if isinstance(clock, ManualClock) else None)
    try:
        yield endpoint
    finally:
        await endpoint.close_clients()
        stop.set()
        await task


class BrokerProcess:
    """`hive serve broker` as a child process on a fixed port, restartable."""

    def __init__(self, hive: Hive, *extra_args: str) -> None:
        self.hive = hive
        self.extra_args = extra_args
        self.process: subprocess.Popen[str] | None = None
        self.urls: list[str] = []
        self.port: int | None = None

    @property
    def url(self) -> str:
        return self.urls[0]

    def start(self, timeout: float = 30) -> BrokerProcess:
        port_args = ["--port", str(self.port)] if self.port else []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hyperhive.servers.cli",
                "serve",
                "broker",
                "--home",
                str(self.hive.home),
                *(port_args or self.extra_args or ["--port", "0"]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.urls = []
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"broker exited: {self.process.wait()}\n{self.stderr()}")
            if line.strip() == "broker ready":
                break
            if " listening on " in line:
                self.urls.append(line.split(" listening on ", 1)[1].strip())
        else:
            raise RuntimeError("broker did not start in time")
        if self.port is None and self.urls and self.urls[0].startswith("http"):
            self.port = int(self.urls[0].rsplit(":", 1)[1].split("/")[0])  # keep it across restarts
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def stderr(self) -> str:
        if self.process is None or self.process.stderr is None or self.process.poll() is None:
            return ""
        return self.process.stderr.read()

    def endpoint(self) -> BrokerEndpoint:
        return BrokerEndpoint(self.hive, self.url)
