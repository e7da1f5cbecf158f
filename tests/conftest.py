from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hivetest import SLEEPER, BrokerEndpoint, BrokerProcess, Hive, Hivemind, in_process, in_process_broker, toml_list
from pgtest import PgCluster

from hyperhive.servers.lifecycle.uidrange import REGISTRY_ENV

# Lifecycle servers run as root register their home's uid block host-wide: never in the host's
# own registry from a test. Each test gets its own (servers started in a test inherit it), but tests
# run side by side (pytest-xdist workers) share one for the run, as two hives on one host do: two
# hives running at once then never give their agents the same uids.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_SHARED_REGISTRY = Path(tempfile.gettempdir()) / f"hive-uids-{_RUN}" / "uid-ranges" if _RUN else None
os.environ[REGISTRY_ENV] = str(_SHARED_REGISTRY or Path(tempfile.mkdtemp(prefix="hive-uids-")) / "uid-ranges")


@pytest.fixture(autouse=True)
def _own_uid_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REGISTRY_ENV, str(_SHARED_REGISTRY or tmp_path / "uid-ranges"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `stores` runs once on each engine of the shared stores."""
    if metafunc.definition.get_closest_marker("stores") and "storage" in metafunc.fixturenames:
        metafunc.parametrize("storage", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """This session's throw-away PostgreSQL (pgtest.py), started when a test first needs it."""
    cluster = PgCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A database of this test's own on the session's PostgreSQL, dropped after it."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def storage(request: pytest.FixtureRequest) -> str:
    """The shared stores' engine: "sqlite", unless the test is marked `stores` (then each in turn)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def storage_url(storage: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """[storage] url for the hive: None on sqlite; on PostgreSQL a database of this test's own."""
    if storage == "sqlite":
        yield None
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture
def hive(tmp_path: Path, storage_url: str | None) -> Hive:
    """A fresh hive home (hive init) with only the manager; its shared stores on `storage`."""
    return Hive(tmp_path / "hive", storage_url=storage_url)


@pytest.fixture
async def broker(hive: Hive) -> AsyncIterator[BrokerEndpoint]:
    """The broker over real HTTP on loopback, in-process, with a ManualClock at `broker.clock`."""
    async with in_process_broker(hive) as endpoint:
        yield endpoint


@pytest.fixture
def broker_process(hive: Hive) -> Iterator[BrokerProcess]:
    """`hive serve broker` as a real process (not started; call .start())."""
    process = BrokerProcess(hive)
    yield process
    process.kill_if_running()


@pytest.fixture
async def hivemind(hive: Hive) -> AsyncIterator[Hivemind]:
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\nrestart_backoff_seconds = 0.2")
    async with (
        in_process(hive, "broker") as broker,
        in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle,
    ):
        yield Hivemind(hive, broker, lifecycle)
