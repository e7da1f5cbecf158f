"""`hive up` and the debug verbs as real processes against a real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hivetest import BrokerProcess, Hive

pytestmark = pytest.mark.slow


def _hive(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperhive.servers.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_hive_up_runs_the_broker_and_stops_without_orphans(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    port = _free_port()
    (home / "hive.toml").write_text(f"[servers.broker]\nport = {port}\n")
    for attempt in range(2):  # a second `hive up` reuses the home and its state
        up = subprocess.Popen(
            [sys.executable, "-m", "hyperhive.servers.cli", "up", "--home", str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert up.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            lines.append(line)
            if "stop: Ctrl-C" in line or not line:
                break
        output = "".join(lines)
        assert f"broker     http://127.0.0.1:{port}/mcp" in output, output
        children = _children_of(up.pid)
        assert len(children) == 1

        sent = _hive(home, "debug", "send", "manager", f"hello #{attempt}")
        assert sent.returncode == 0, sent.stderr
        if attempt == 1:
            received = _hive(home, "debug", "recv", "--as", "manager")
            bodies = [json.loads(line)["body"] for line in received.stdout.splitlines()]
            assert bodies == ["hello #0", "hello #1"]  # the first run's message survived

        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert up.wait(30) == 0
        assert "◆ hive stopped" in up.stdout.read()
        for child in children:
            assert not Path(f"/proc/{child}").exists(), "a server outlived hive up"


def test_hive_up_exits_when_its_server_cannot_start(tmp_path: Path, broker_process: BrokerProcess) -> None:
    home = broker_process.hive.home
    broker_process.start()
    (home / "hive.toml").write_text(f"[servers.broker]\nport = {broker_process.port}\n")  # taken
    up = subprocess.run(
        [sys.executable, "-m", "hyperhive.servers.cli", "up", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 1
    assert "is in use" in up.stderr and "✗ broker exited with code 1 while starting" in up.stdout


def test_debug_verbs_report_refusals_plainly(hive: Hive, broker_process: BrokerProcess) -> None:
    broker_process.start()
    (hive.home / "hive.toml").write_text(f"[servers.broker]\nport = {broker_process.port}\n")
    result = _hive(hive.home, "debug", "send", "ghost", "hi")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: unknown recipient 'ghost'") and "Traceback" not in result.stderr
