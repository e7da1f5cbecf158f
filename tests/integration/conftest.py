"""Stand-ins for what NixOS provides, shared by the nixos-container backend's contract test and the
lifecycle tests that run the supervisor over both backends.

systemd is a fake `org.freedesktop.systemd1` on a private dbus-daemon (fakes/systemd1.py);
nixos-container and journalctl are stand-in scripts (fakes/bin) first on PATH.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fakes.nixos_host import FAKES_BIN, Tools
from fakes.systemd1 import DBusDaemon, FakeSystemd


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tools:
    """nixos-container and journalctl stand-ins first on PATH, run by this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("nixos-container", "journalctl"):
        shim = bin_dir / tool
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKES_BIN / tool))} "$@"\n')
        shim.chmod(0o755)
    result = Tools(tmp_path / "nixos.log", tmp_path / "journal.log", tmp_path / "journal.json", tmp_path / "conf")
    result.conf_dir.mkdir()
    result.journal.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NIXOS_LOG", str(result.nixos_log))
    monkeypatch.setenv("FAKE_NIXOS_CONF_DIR", str(result.conf_dir))
    monkeypatch.setenv("FAKE_JOURNAL_LOG", str(result.journal_log))
    monkeypatch.setenv("FAKE_JOURNAL", str(result.journal))
    monkeypatch.delenv("FAKE_NIXOS_FAIL", raising=False)
    return result


@pytest.fixture
def bus() -> Iterator[DBusDaemon]:
    # Not under tmp_path: a unix socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="hh-dbus-"))
    daemon = DBusDaemon(directory)
    daemon.start()
    yield daemon
    daemon.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def systemd(bus: DBusDaemon) -> AsyncIterator[FakeSystemd]:
    fake = FakeSystemd()
    await fake.connect(bus.address)
    yield fake
    fake.disconnect()
