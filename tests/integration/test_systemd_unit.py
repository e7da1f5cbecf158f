"""`hive serve` the way the NixOS module's units run it: the token-signing secret handed in as a
systemd credential ($CREDENTIALS_DIRECTORY), readiness told over $NOTIFY_SOCKET (Type=notify),
and the database in the server's own directory ([storage] dirs, its StateDirectory).

No systemd here: the test plays its part, a datagram socket for sd_notify and a credentials
directory with the secret, against a real `hive serve broker` process and the real `hive` CLI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def hive(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperhive.servers.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    directory = Path(tempfile.mkdtemp(prefix="hh-notify-"))  # a socket path stays under 108 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "notify"))
    sock.settimeout(30)
    yield sock
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_a_unit_gets_its_key_as_a_credential_says_ready_and_keeps_its_own_database(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    home = tmp_path / "hive"
    assert hive(home, "init").returncode == 0
    # As the module does it: systemd copies the public key for the unit; the private one stays root's.
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (home / "signing.pub").rename(credentials / "signing.pub")
    (credentials / "signing.pub").chmod(0o400)
    db_dir = tmp_path / "db" / "broker"
    port = free_port()
    toml = (home / "hive.toml").read_text()
    toml = re.sub(r"(\[servers\.broker\]\nhost = \"127\.0\.0\.1\"\nport = )7801", rf"\g<1>{port}", toml)
    toml = toml.replace("[storage]\n", f'[storage]\ndirs = {{ broker = "{db_dir}" }}\n')
    (home / "hive.toml").write_text(toml)
    unit_env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}

    broker = subprocess.Popen(
        [sys.executable, "-m", "hyperhive.servers.cli", "serve", "broker", "--home", str(home)],
        env={**unit_env, "NOTIFY_SOCKET": notify_socket.getsockname()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert notify_socket.recv(4096) == b"READY=1"  # Type=notify: units after it start now
        sent = hive(home, "send", "manager", "hello from a unit", env=unit_env)
        assert sent.returncode == 0, sent.stderr
        assert "sent to 1 inbox" in sent.stdout
        assert (db_dir / "broker.sqlite").is_file()
        assert not (home / "state" / "broker.sqlite").exists()
        # Without the credential a server has no key to verify with: a clear error, not a traceback.
        refused = hive(home, "serve", "broker", "--port", "0")
        assert refused.returncode == 1
        assert f"{home.resolve() / 'signing.pub'} not found; run `hive init`" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        broker.terminate()
        _, stderr = broker.communicate(timeout=30)
    assert broker.returncode == 0, stderr


def test_the_dashboard_takes_its_password_from_a_credential(tmp_path: Path) -> None:
    """services.hyperhive.operatorSecretFile reaches the dashboard as credential dashboard.password."""
    home = tmp_path / "hive"
    assert hive(home, "init").returncode == 0
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "dashboard.password").write_text("\n")  # an operator secret file left empty

    result = hive(home, "serve", "dashboard", env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)})

    assert result.returncode == 1
    assert f"{credentials / 'dashboard.password'} is empty; write the dashboard password in it" in result.stderr
    assert "Traceback" not in result.stderr
