"""A hive across hosts: the hive's directory in PostgreSQL (hosts, and which agents live where),
and servers of one host that know the agents of another through it. Two hosts here are two homes
on one machine sharing the hive's key and database, as two machines would."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import httpx2
import pytest
from fastmcp.exceptions import ToolError
from hivetest import (
    HOST_BEATS,
    SLEEPER,
    Hive,
    Hivemind,
    another_host,
    in_process,
    in_process_broker,
    make_certificate,
    toml_list,
    two_hosts,
)

from hyperhive.servers.common.agents import DirectoryAgentRegistry, PublishingAgentRegistry
from hyperhive.servers.common.call_errors import AuthRefused
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.config import HiveConfig, HostSettings
from hyperhive.servers.common.hivedb import HiveDirectory, NameTaken
from hyperhive.servers.common.instances import new_instance
from hyperhive.servers.common.keys import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, SigningKey, host_signing_key
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.tokens import mint_token
from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.paths import AgentPaths


async def _directory(url: str) -> HiveDirectory:
    directory = HiveDirectory(url)
    await directory.db.open()
    return directory


async def _register(directory: HiveDirectory, *names: str) -> None:
    for name in names:
        url = f"http://{name}.test/mcp"
        await directory.register(
            name, lifecycle_url=url, tls_cert=None, public_key=None, labels=[], capacity=5, backend="bwrap"
        )


async def test_a_name_lives_on_one_host(pg_url: str) -> None:
    directory = await _directory(pg_url)
    try:
        await _register(directory, "alpha", "beta")
        assert await directory.place("alice", "beta") == "beta"
        assert await directory.place("alice", "alpha") == "beta"  # taken: where it lives
        with pytest.raises(NameTaken, match="alice lives on host beta"):
            await directory.publish("alpha", "alice", 'role = "agent"\n', "i1")
        await directory.publish("beta", "alice", 'role = "agent"\n', "i1")
        placed = await directory.agent("alice")
        assert placed is not None and (placed.host, placed.config, placed.instance) == (
            "beta",
            'role = "agent"\n',
            "i1",
        )
        version = placed.version
        await directory.publish("beta", "alice", 'role = "agent"\n', "i1")  # nothing changed: no new version
        assert (await directory.agent("alice")).version == version  # type: ignore[union-attr]
        await directory.unpublish("alpha", "alice")  # not alpha's to remove
        assert await directory.agent("alice") is not None
        await directory.unpublish("beta", "alice")
        assert await directory.agent("alice") is None
        assert await directory.place("alice", "alpha") == "alpha"  # free again
        assert {h.name: h.agents for h in await directory.hosts()} == {"alpha": 1, "beta": 0}
    finally:
        await directory.db.close()


async def test_a_silent_host_is_marked_down_once_and_up_at_its_next_heartbeat(pg_url: str) -> None:
    directories = [await _directory(pg_url) for _ in range(3)]  # three processes watching
    try:
        await _register(directories[0], "alpha", "beta")
        await asyncio.sleep(0.6)
        assert await directories[0].heartbeat("alpha") is None  # alpha is alive; beta says nothing
        marked = await asyncio.gather(*(d.mark_down(0.5) for d in directories))
        assert sorted(name for names in marked for name in names) == ["beta"], marked  # one watcher marked it, once
        assert [h.up for h in await directories[1].hosts()] == [True, False]
        assert await directories[2].mark_down(0.5) == []
        was_down = await directories[0].heartbeat("beta")
        assert was_down is not None  # it comes back: its heartbeat says it had been down
        assert await directories[0].heartbeat("beta") is None
        assert all(h.up for h in await directories[1].hosts())
    finally:
        for directory in directories:
            await directory.db.close()


def _second_host(first: Hive, tmp_path: Path, name: str) -> Hive:
    """Another host of `first`'s hive: a home of its own, the hive's key and database."""
    other = Hive(tmp_path / name, storage_url=first.storage_url, host=name)
    for key in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE):
        shutil.copy2(first.home / key, other.home / key)
    return other


@pytest.mark.stores
async def test_a_server_knows_an_agent_of_another_host_and_refuses_its_ended_instance(
    hive: Hive, storage: str, tmp_path: Path
) -> None:
    if storage != "postgresql":
        pytest.skip("hosts share their agents through PostgreSQL")
    beta = _second_host(hive, tmp_path, "beta")
    async with in_process_broker(hive) as broker:  # on the first host
        bob = beta.add_agent("bob")  # lives on beta: its files are beta's alone
        assert not (hive.home / "applied" / "bob").exists()
        alice = hive.add_agent("alice")
        sent = await broker.client(bob, of=beta).call("send", {"to": alice, "body": "from beta"})
        got = await broker.client(alice).call("recv", {})
        assert (got["message"]["id"], got["message"]["sender"]) == (sent["id"], "bob")

        ended = broker.client(bob, of=beta)  # its token names the instance now live
        new_instance(beta.config.instances_dir, "bob")  # bob's sandbox restarted on beta
        beta.publish()
        refused = False
        for _ in range(100):  # the broker hears of beta's change through LISTEN, within moments
            try:
                await ended.call("pending_count", {})
            except AuthRefused:
                refused = True
                break
            await asyncio.sleep(0.01)
        assert refused, "the ended instance's token still works"
        await broker.client(bob, of=beta).call("send", {"to": alice, "body": "from the new one"})


async def test_a_registry_sees_another_hosts_change_within_moments(pg_url: str, tmp_path: Path) -> None:
    homes = {name: tmp_path / name for name in ("alpha", "beta")}
    for home in homes.values():
        (home / "applied").mkdir(parents=True)
    directory = await _directory(pg_url)
    await _register(directory, "alpha", "beta")
    beta = HiveConfig(home=homes["beta"], host=HostSettings(name="beta"))
    publisher = PublishingAgentRegistry(beta, await _directory(pg_url))
    reader = DirectoryAgentRegistry(homes["alpha"] / "applied", None, await _directory(pg_url))
    watching = asyncio.create_task(reader.watch())
    try:
        await reader.refresh()
        assert reader.names() == []
        (homes["beta"] / "applied" / "bob").mkdir()
        (homes["beta"] / "applied" / "bob" / "agent.toml").write_text('role = "manager"\n')
        await publisher.refresh()
        for _ in range(100):  # heard through LISTEN, not looked up
            if reader.get("bob") is not None:
                break
            await asyncio.sleep(0.01)
        config = reader.get("bob")
        assert config is not None and config.role == "manager"
        shutil.rmtree(homes["beta"] / "applied" / "bob")
        await publisher.refresh()
        for _ in range(100):
            if reader.get("bob") is None:
                break
            await asyncio.sleep(0.01)
        assert reader.get("bob") is None and await directory.agent("bob") is None
    finally:
        watching.cancel()
        for closing in (directory, publisher.directory, reader.directory):
            await closing.db.close()


async def test_two_hosts_one_hive_through_either_lifecycle_server(pg_url: str, tmp_path: Path) -> None:
    hive = Hive(tmp_path / "alpha", storage_url=pg_url, host="alpha", host_settings=HOST_BEATS, manager=True)
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n")
    beta = another_host(hive, tmp_path / "beta", "beta", uid_base=400_000, labels=("gpu",))
    async with (
        in_process(hive, "broker") as broker,
        in_process(hive, "lifecycle", stop_agents_on_exit=True) as alpha_lc,
    ):
        alpha = Hivemind(hive, broker, alpha_lc)
        async with in_process(beta, "lifecycle", stop_agents_on_exit=True) as beta_lc:
            hosts = {h["name"]: h for h in (await alpha.call("list_hosts"))["hosts"]}
            assert set(hosts) == {"alpha", "beta"} and all(h["up"] for h in hosts.values()), hosts
            assert hosts["beta"]["labels"] == ["gpu"] and hosts["alpha"]["answering"]

            # Through alpha's lifecycle server, an agent placed on beta: its files are beta's.
            created = await alpha.call("create_agent", name="bob", host="beta")
            assert created["host"] == "beta"
            assert (beta.home / "applied" / "bob").is_dir() and not (hive.home / "applied" / "bob").exists()
            assert (await alpha.event("spawned"))["agent"] == "bob"
            status = await alpha.until_state("bob", "running")  # relayed to beta
            assert status["host"] == "beta"
            # Placement: the least loaded host with room (alpha has the manager, beta has bob).
            assert (await alpha.call("create_agent", name="carol"))["host"] in ("alpha", "beta")
            draft = await alpha.call("create_draft", name="frank")  # a draft's repo is the answering host's
            assert (await alpha.call("create_agent", name="frank", sha=draft["sha"]))["host"] == "alpha"
            with pytest.raises(ToolError, match="no host named 'gamma'"):
                await alpha.call("create_agent", name="dave", host="gamma")
            with pytest.raises(ToolError, match="bob already exists"):  # beta's refusal, as beta said it
                await alpha.call("create_agent", name="bob")

            listed = {a["name"]: a for a in (await alpha.call("list_agents"))["agents"]}
            assert listed["bob"]["host"] == "beta" and listed["bob"]["state"] == "running"
            assert listed["manager"]["host"] == "alpha"
            # Either host answers for the whole hive.
            beta_view = beta_lc.client("operator", of=hive, timeout=60)  # the hive's owner's token
            assert {a["name"] for a in (await beta_view.call("list_agents"))["agents"]} == set(listed)
            await beta_view.call("stop", {"name": "manager"})  # relayed to alpha
            assert (await alpha.status("manager"))["state"] == "stopped"
            await beta_view.call("start", {"name": "manager"})
            alpha = Hivemind(hive, broker, alpha_lc)  # the manager's new instance, for its inbox

            # [placement] labels: a config asking for "gpu" applies on beta (labelled so), not on alpha.
            bob_repo = AgentPaths.of(beta.config, "bob").config  # as the manager would, were it on beta
            sha = await repos.commit_files(bob_repo, {"agent.toml": '[placement]\nlabels = ["gpu"]\n'}, "gpu")
            await alpha.approvals.call("apply_commit", {"name": "bob", "sha": sha})  # relayed to beta
            assert (await alpha.event("rebuilt"))["agent"] == "bob"
            sha = await alpha.propose("manager", 'role = "manager"\n[placement]\nlabels = ["gpu"]\n')
            with pytest.raises(ToolError, match="manager lives on host alpha, which lacks gpu"):
                await alpha.approvals.call("apply_commit", {"name": "manager", "sha": sha})

        # beta's lifecycle server is gone: its heartbeat stops, alpha marks it down once.
        down = await alpha.event("host_down", timeout=10)
        assert down["host"] == "beta" and "bob" in down["agents"]
        listed = {a["name"]: a for a in (await alpha.call("list_agents"))["agents"]}
        assert listed["bob"]["state"] == "unreachable" and listed["bob"]["host"] == "beta"
        with pytest.raises(ToolError, match="bob lives on host beta, whose lifecycle server does not answer"):
            await alpha.call("agent_status", name="bob")
        with pytest.raises(ToolError, match="host beta cannot take a new agent: down"):
            await alpha.call("create_agent", name="erin", host="beta")

        async with in_process(beta, "lifecycle", stop_agents_on_exit=True):
            back = await alpha.event("host_up", timeout=10)
            assert back["host"] == "beta"
            assert (await alpha.until_state("bob", "running"))["host"] == "beta"


async def test_a_host_whose_lifecycle_server_speaks_tls_is_reached_over_it(pg_url: str, tmp_path: Path) -> None:
    async with two_hosts(pg_url, tmp_path, tls=make_certificate(tmp_path / "certs", "beta")) as (alpha, _):
        hosts = {h["name"]: h for h in (await alpha.call("list_hosts"))["hosts"]}
        assert hosts["beta"]["lifecycle_url"].startswith("https://127.0.0.1:"), hosts
        # Relayed over https, trusting the certificate beta registered with the hive.
        assert (await alpha.call("create_agent", name="bob", host="beta"))["host"] == "beta"
        assert (await alpha.until_state("bob", "running"))["host"] == "beta"


async def test_an_agent_moves_to_another_host_with_its_state_session_and_repos(pg_url: str, tmp_path: Path) -> None:
    async with two_hosts(pg_url, tmp_path) as (alpha, beta):
        hive, broker = alpha.hive, alpha.broker
        await alpha.call("create_agent", name="bob", host="beta")
        before = await alpha.until_state("bob", "running")
        await alpha.call("set_model", name="bob", model="opus")
        there = AgentPaths.of(beta.config, "bob")
        uid = before["uid"]
        # What bob made on beta: notes, its Claude Code session, and a link it planted to a root file.
        for path, text in ((there.state / "notes.md", "remember this"), (there.harness / "claude" / "s.jsonl", "{}")):
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            os.chown(path.parent, uid, uid)
            os.chown(path, uid, uid)
        (there.state / "shadow").symlink_to("/etc/shadow")

        moved = await alpha.call("move_agent", name="bob", host="alpha")
        assert (moved["host"], moved["state"]) == ("alpha", "running"), moved
        status = await alpha.status("bob")
        assert status["applied_sha"] == before["applied_sha"] and status["model"] == "opus"
        here = AgentPaths.of(hive.config, "bob")
        assert (here.state / "notes.md").read_text() == "remember this"
        assert (here.harness / "claude" / "s.jsonl").read_text() == "{}"
        assert (here.state / "notes.md").stat().st_uid == status["uid"] != uid  # alpha's uid for it
        assert (here.state / "shadow").is_symlink()  # moved as a link, never as the file it names
        assert (here.config / ".git").is_dir() and (here.applied / ".git").is_dir()
        assert not there.root.exists() and not there.applied.exists()  # beta forgot it
        listed = [a for a in (await alpha.call("list_agents"))["agents"] if a["name"] == "bob"]
        assert [a["host"] for a in listed] == ["alpha"]
        hive.add_agent("carol")
        await broker.client("bob").call("send", {"to": "carol", "body": "from alpha now"})  # its new token works

        with pytest.raises(ToolError, match="lives on host alpha already"):
            await alpha.call("move_agent", name="bob", host="alpha")
        with pytest.raises(ToolError, match="the manager stays on its host"):
            await alpha.call("move_agent", name="manager", host="beta")


async def test_a_hosts_key_signs_only_for_what_lives_on_it(pg_url: str, tmp_path: Path) -> None:
    async with two_hosts(pg_url, tmp_path) as (alpha, beta):
        broker = alpha.broker
        await alpha.call("create_agent", name="bob", host="beta")  # beta holds no hive key: its own signs
        await alpha.until_state("bob", "running")
        key = host_signing_key(beta.home, "beta")
        assert key.kid.startswith("host:beta:")
        directory = await _directory(pg_url)
        try:
            bob = await directory.agent("bob")
            manager = await directory.agent("manager")
        finally:
            await directory.db.close()
        assert bob is not None and bob.instance and manager is not None and manager.instance

        def signed_by_beta(name: str, role: Role, instance: str | None) -> HiveClient:
            token = mint_token(key, Principal(name, role), 600, audience=["broker"], instance=instance)
            return HiveClient(ServerAddress("broker", broker.url), token, retry_seconds=0)

        async with signed_by_beta("bob", Role.AGENT, bob.instance) as client:  # bob lives on beta: good
            assert (await client.call("pending_count", {}))["queued"] >= 0
        for name, role, instance in (("manager", Role.MANAGER, manager.instance), ("operator", Role.OPERATOR, None)):
            async with signed_by_beta(name, role, instance) as client:  # what beta's key must not sign for
                with pytest.raises(AuthRefused):
                    await client.call("pending_count", {})
        forged = SigningKey.generate()
        forged = SigningKey(forged.key, "host:beta:forged")  # claims to be beta's, is not registered
        token = mint_token(forged, Principal("bob", Role.AGENT), 600, audience=["broker"], instance=bob.instance)
        async with HiveClient(ServerAddress("broker", broker.url), token, retry_seconds=0) as client:
            with pytest.raises(AuthRefused):
                await client.call("pending_count", {})


async def test_the_move_route_serves_no_one_but_a_host_with_the_moves_ticket(pg_url: str, tmp_path: Path) -> None:
    """GET /lifecycle/move/<name>/<part> is on the lifecycle server's port, which sandboxes reach:
    without the lifecycle service's token it answers 401, and with it but no move's ticket, 404."""
    async with two_hosts(pg_url, tmp_path) as (alpha, _):
        await alpha.call("create_agent", name="bob", host="alpha")
        await alpha.until_state("bob", "running")
        base = alpha.lifecycle.url.removesuffix("/mcp")
        async with httpx2.AsyncClient(timeout=10) as http:
            for who in (None, "operator", "bob", "service:approvals"):
                headers = {"Authorization": f"Bearer {alpha.hive.token(who)}"} if who else {}
                response = await http.get(f"{base}/lifecycle/move/bob/state", headers=headers)
                assert response.status_code == 401, (who, response.text)
            service = {"Authorization": f"Bearer {alpha.hive.token('service:lifecycle')}"}
            for path, ticket in (("bob/state", "guess"), ("bob/state", ""), ("..%2F..%2Fetc/state", "x")):
                response = await http.get(f"{base}/lifecycle/move/{path}", params={"ticket": ticket}, headers=service)
                assert response.status_code == 404, (path, response.text)
