"""`hive hosts`, `hive agents`' host column and `hive spawn --host` as their own processes, against
real lifecycle servers: one host, and a hive across two (alpha and beta, as in test_hosts_pg.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from hivetest import HOST_BEATS, SLEEPER, Hive, Hivemind, another_host, in_process, toml_list
from pydantic import TypeAdapter

from hyperhive.servers.lifecycle.models import HostInfo

pytestmark = pytest.mark.slow


def _hive(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "hyperhive.servers.cli", *args, "--home", str(home)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def hive_at(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hive ARGS --home HOME` as its own process, beside the servers running in this event loop."""
    return await asyncio.to_thread(_hive, home, *args)


def table(output: str) -> dict[str, dict[str, str]]:
    """A printed table (its lines indented, between the "◆" and the "!" lines) as {first cell: {header:
    cell}}: print_table pads each column to its widest cell, two spaces apart, so every column starts
    where its header does."""
    header, *lines = [line for line in output.splitlines() if line.startswith("  ")]
    starts = [2] + [i for i in range(3, len(header)) if header[i] != " " and header[i - 2 : i] == "  "]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    rows: dict[str, dict[str, str]] = {}
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


async def test_one_host_lists_itself_and_no_host_column(hivemind: Hivemind) -> None:
    home = hivemind.hive.home
    listed = await hive_at(home, "hosts")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == "◆ 1 host", listed.stdout
    [(name, row)] = table(listed.stdout).items()
    assert (name, row["state"], row["agents"], row["labels"]) == ("local (here)", "up", "1/100", "-"), row
    [host] = TypeAdapter(list[HostInfo]).validate_json((await hive_at(home, "hosts", "--json")).stdout)
    assert (host.name, host.up, host.answering) == ("local", True, True)

    agents = await hive_at(home, "agents")
    assert "host" not in table(agents.stdout)["manager"], agents.stdout  # one host: no column for it
    refused = await hive_at(home, "spawn", "alice", "--host", "gamma")
    assert refused.returncode == 1
    assert "no host 'gamma'" in refused.stderr and "`hive hosts` says which there are" in refused.stderr, refused


async def test_two_hosts_show_where_agents_live_and_a_silent_host_down(pg_url: str, tmp_path: Path) -> None:
    hive = Hive(tmp_path / "alpha", storage_url=pg_url, host="alpha", host_settings=HOST_BEATS, manager=True)
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n")
    beta = another_host(hive, tmp_path / "beta", "beta", uid_base=400_000, labels=("gpu",))
    async with (
        in_process(hive, "broker") as broker,
        in_process(hive, "lifecycle", stop_agents_on_exit=True) as alpha_lc,
    ):
        alpha = Hivemind(hive, broker, alpha_lc)
        async with in_process(beta, "lifecycle", stop_agents_on_exit=True):
            spawned = await hive_at(hive.home, "spawn", "bob", "--host", "beta")
            assert spawned.returncode == 0, spawned.stderr
            assert spawned.stdout.startswith("◆ bob: created (config ") and spawned.stdout.endswith(" · on beta\n")
            await alpha.until_state("bob", "running")

            agents = table((await hive_at(hive.home, "agents")).stdout)
            assert (agents["bob"]["host"], agents["bob"]["state"]) == ("beta", "running"), agents
            assert agents["manager"]["host"] == "alpha", agents

            listed = await hive_at(hive.home, "hosts")
            assert listed.stdout.splitlines()[0] == "◆ 2 hosts", listed.stdout
            hosts = table(listed.stdout)
            assert set(hosts) == {"alpha (here)", "beta"}, hosts
            assert hosts["beta"]["state"].startswith("up · seen ") and hosts["beta"]["agents"] == "1/100"
            assert hosts["beta"]["labels"] == "gpu" and hosts["beta"]["lifecycle"].startswith("http://127.0.0.1:")
            assert hosts["alpha (here)"]["agents"] == "1/100" and hosts["alpha (here)"]["labels"] == "-"

            # `hive move`: carol goes from beta to alpha, and runs there.
            assert (await hive_at(hive.home, "spawn", "carol", "--host", "beta")).returncode == 0
            await alpha.until_state("carol", "running")
            moved = await hive_at(hive.home, "move", "carol", "alpha")
            assert moved.returncode == 0, moved.stderr
            assert moved.stdout.startswith("◆ carol: on alpha now · running"), moved.stdout
            refused = await hive_at(hive.home, "move", "carol", "alpha")
            assert refused.returncode != 0 and "carol lives on host alpha already" in refused.stderr + refused.stdout

        # beta's lifecycle server is gone: its heartbeat stops, alpha marks it down.
        assert (await alpha.event("host_down", timeout=10))["host"] == "beta"
        listed = await hive_at(hive.home, "hosts")
        assert listed.returncode == 0 and listed.stdout.splitlines()[0] == "◆ 2 hosts · 1 down", listed.stdout
        hosts = table(listed.stdout)
        assert hosts["beta"]["state"].startswith("down since "), hosts
        assert hosts["alpha (here)"]["state"].startswith("up"), hosts
        assert "! beta: no heartbeat since " in listed.stdout
        assert "its 1 agent is unreachable until its lifecycle server is back" in listed.stdout

        shown = await hive_at(hive.home, "agents")
        agents = table(shown.stdout)
        assert (agents["bob"]["host"], agents["bob"]["state"]) == ("beta", "unreachable"), shown.stdout
        assert "! host beta does not answer: bob is unreachable (`hive hosts` shows the hive's hosts)" in shown.stdout
