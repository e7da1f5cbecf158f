"""The swarm page of a hive across two hosts (alpha and beta: two homes sharing the hive's key and
database, as in tests/integration/test_hosts_pg.py): a host column, a strip of the hosts, and an
agent whose host stops answering shown unreachable, like the other problems."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from hivetest import HOST_BEATS, ServerProcess, Servers, another_host
from nicegui.testing import User
from pgtest import PgCluster
from uitest import log_in, swarm_see, swarm_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[Servers]:
    """Host alpha's servers as processes (the dashboard's `servers`), the hive's directory in PostgreSQL."""
    database = pg_cluster.create_database()
    root = tmp_path_factory.mktemp("hosts")
    try:
        url = pg_cluster.url(database)
        alpha = Servers(root / "alpha", storage_url=url, host="alpha", host_settings=HOST_BEATS, manager=True)
        with alpha.serving() as hive:
            yield hive
    finally:
        pg_cluster.drop_database(database)


@pytest.fixture
def beta(servers: Servers) -> Iterator[ServerProcess]:
    """Host beta's lifecycle server, as a process."""
    shutil.rmtree(servers.home.parent / "beta", ignore_errors=True)
    other = another_host(servers, servers.home.parent / "beta", "beta", uid_base=400_000, labels=("gpu",))
    process = ServerProcess(other, "lifecycle", "--stop-agents-on-exit").start()
    try:
        yield process
    finally:
        process.kill_if_running()


async def test_a_hive_across_hosts_shows_each_agents_host_and_an_unreachable_one(
    user: User, servers: Servers, password: str, beta: ServerProcess
) -> None:
    created = await servers.call("lifecycle", "create_agent", name="bob", host="beta")
    assert created["host"] == "beta"
    await log_in(user, password)
    assert swarm_table(user).hosts and swarm_table(user)._props["columns"][2][:2] == ["host", "host"]
    await swarm_see(user, "host-bob", "beta", retries=50)
    await swarm_see(user, "host-manager", "alpha")
    await user.should_see(marker="host-alpha", content="alpha up · 1/100 agents", retries=50)
    await user.should_see(marker="host-beta", content="beta up · 1/100 agents")
    await swarm_see(user, "state-bob", "running · no harness", retries=50)

    beta.stop()  # beta's lifecycle server is gone: its heartbeat stops, alpha marks it down
    await swarm_see(user, "state-bob", "unreachable: host beta does not answer", retries=100)
    row = swarm_table(user).rows["bob"]
    assert (row.kind, row.colour, row.controls) == ("unreachable", "negative", ())  # a problem, nothing to start
    assert swarm_table(user).view.index(("row", "bob")) < swarm_table(user).view.index(("row", "manager"))
    await user.should_see(marker="host-beta", content="beta down since ", retries=100)
    [down] = user.find(marker="host-beta").elements
    assert "text-negative" in down.classes
    await user.should_see(marker="problem", content="host beta does not answer: bob is unreachable")
