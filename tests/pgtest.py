"""A throw-away PostgreSQL cluster for the tests: Debian's `postgresql` binaries, initdb in a temp
dir, run as an unprivileged user (`postgres` when the tests run as root), reachable only through a
unix socket in that dir. No server outside the test run is used or needed.

One cluster per test session (per pytest-xdist worker), started the first time a test asks for
PostgreSQL; each test gets a database of its own (`fresh_database`), dropped after it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SETTINGS = {
    "listen_addresses": "",  # the unix socket only
    "max_connections": "300",  # every server process holds a pool of its own
    # A throw-away cluster: nothing needs to survive a crash of it.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class PgUnavailable(RuntimeError):
    """This machine has no PostgreSQL binaries; `scripts/setup.sh test` installs them."""


def pg_bin() -> Path:
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")), key=lambda p: int(p.parent.name))
    if not found:
        raise PgUnavailable(f"no PostgreSQL in {PG_BIN_GLOB}: run scripts/setup.sh test (it installs postgresql)")
    return found[-1]


class PgCluster:
    def __init__(
        self, settings: dict[str, str] | None = None, *, prefix: tuple[str, ...] = (), tcp: str | None = None
    ) -> None:
        """`settings` replace SETTINGS' (a benchmark wants fsync on). `prefix` runs its tools under
        another command (`nsenter --net=…`: in a network namespace); `tcp`: it also listens on that
        address (port 5432), any of its users trusted from anywhere (a throw-away cluster)."""
        self.settings = {**SETTINGS, **(settings or {}), **({"listen_addresses": tcp} if tcp else {})}
        self.prefix = prefix
        self.tcp = tcp
        self.bin = pg_bin()
        # Not under pytest's tmp_path: a unix socket's path must stay under 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="hh-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._as_user: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> PgCluster:
        if self._as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        if self.tcp:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")
        self.resume()
        return self

    def pause(self) -> None:
        """Stop the server at once (as a crash would), keeping its data: resume() starts it again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        options = " ".join(f"-c {key}={value or repr('')}" for key, value in self.settings.items())
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60",
            "-o", f"-k {self.dir} {options}", "start",
        )  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql:///{database}?host={self.dir}&user={self.user}"

    def tcp_url(self, database: str) -> str:
        assert self.tcp is not None, "this cluster listens on its unix socket only"
        return f"postgresql://{self.user}@{self.tcp}:5432/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        result = subprocess.run(
            [*self.prefix, *self._as_user, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            log = (self.dir / "log").read_text()[-2000:] if (self.dir / "log").exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr[-2000:]}\n{log}")
