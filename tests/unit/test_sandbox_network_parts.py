"""[sandbox] network: the pieces that need no sandbox (tests/integration/test_sandbox_network.py runs real ones)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from hyperhive.servers.common.agent_config import AgentConfig, load_agent_config
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.home import init_home
from hyperhive.servers.lifecycle import sandbox_network
from hyperhive.servers.lifecycle.backends.bwrap import BwrapBackend
from hyperhive.servers.lifecycle.sandbox_network import (
    Forward,
    NetworkError,
    bwrap_args,
    hive_ports,
    keeper_command,
    resolve_forwards,
    sandbox_hosts,
)


def test_only_host_shares_the_hosts_network_namespace() -> None:
    assert bwrap_args("host") == []
    assert bwrap_args("outbound") == bwrap_args("hive-only") == ["--unshare-net"]
    assert AgentConfig().sandbox.network is None  # unset: the backend's default, bubblewrap's is outbound
    assert BwrapBackend.default_network == "outbound"


def test_an_outbound_sandbox_asks_pastas_dns_forward_with_the_hosts_search_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("# resolved\nnameserver 127.0.0.53\nnameserver 10.0.0.1\noptions edns0 trust-ad\nsearch lan\n")
    monkeypatch.setattr(sandbox_network, "HOST_RESOLV_CONF", host)
    assert sandbox_network.sandbox_resolv_conf() == "nameserver 169.254.1.1\noptions edns0 trust-ad\nsearch lan\n"
    mine = tmp_path / "sandbox-resolv.conf"
    assert bwrap_args("outbound", mine) == ["--unshare-net", "--ro-bind", str(mine), str(host)]
    assert bwrap_args("hive-only", mine) == ["--unshare-net"]  # nothing to resolve with
    link = tmp_path / "link.conf"
    link.symlink_to(host)  # systemd-resolved: /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf
    monkeypatch.setattr(sandbox_network, "HOST_RESOLV_CONF", link)
    assert bwrap_args("outbound", mine)[-1] == str(host)  # bound where the link leads
    host.unlink()
    assert sandbox_network.sandbox_resolv_conf() == "nameserver 169.254.1.1\n"
    assert bwrap_args("outbound", mine) == ["--unshare-net"]  # a dangling link: no mount point to bind on


def test_the_forwarded_ports_are_the_servers_fixed_tcp_ports(tmp_path: Path) -> None:
    init_home(tmp_path)
    (tmp_path / "hive.toml").write_text(
        '[servers.broker]\nport = 7901\n[servers.lifecycle]\nhost = "localhost"\nport = 7902\n'
        '[servers.approvals]\nsocket = "run/approvals.sock"\n[servers.operator]\nhost = "::1"\nport = 7904\n'
        "[servers.forge]\nport = 7906\n[lifecycle]\nforward_ports = [4000, 7901]\n"
    )
    assert hive_ports(load_hive_config(tmp_path)) == [
        ("127.0.0.1", 7901), ("127.0.0.1", 7902), ("::1", 7904), ("127.0.0.1", 7906), ("127.0.0.1", 4000)
    ]  # fmt: skip


def test_the_brokers_failover_ports_are_forwarded_after_its_own(tmp_path: Path) -> None:
    init_home(tmp_path)
    (tmp_path / "hive.toml").write_text(
        '[storage]\nurl = "postgresql:///hive"\n[servers.broker]\nport = 7901\n'
        'failover = [{ port = 7911 }, { host = "localhost", port = 7921 }]\n'
    )
    assert hive_ports(load_hive_config(tmp_path))[:3] == [("127.0.0.1", 7901), ("127.0.0.1", 7911), ("127.0.0.1", 7921)]


def test_outbound_without_pasta_is_refused_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_network.shutil, "which", lambda name: None)
    with pytest.raises(NetworkError, match="passt"):
        keeper_command("outbound", 123, 200_000, [Forward("127.0.0.1", 7801, "127.0.0.1")])
    argv = keeper_command("hive-only", 123, 200_000, [Forward("127.0.0.1", 7801, "127.0.0.1")])  # needs no pasta
    assert argv[-5:] == ["--pid", "123", "--uid", "200000", "--forward=127.0.0.1,7801"]


def test_a_server_named_by_host_name_is_resolved_on_the_host_and_pinned_in_the_sandboxs_hosts_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host_hosts = tmp_path / "hosts"
    host_hosts.write_text(
        "127.0.0.1 localhost\n127.0.1.1 box.lan box  # this host\n"
        "10.0.0.9 hive.example.com old-alias\n10.0.0.8 HIVE.Example.com\n"
    )
    monkeypatch.setattr(sandbox_network, "HOST_HOSTS", host_hosts)

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "hive.example.com":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.0.1", port)),
        ]

    monkeypatch.setattr(sandbox_network.socket, "getaddrinfo", getaddrinfo)
    forwards = resolve_forwards([("127.0.0.1", 7802), ("hive.example.com", 7801), ("::1", 7804)])
    # Addresses as they are; the name at its IPv4 address (only where the keeper listens inside).
    assert forwards == [
        Forward("127.0.0.1", 7802, "127.0.0.1"),
        Forward("10.1.0.1", 7801, "hive.example.com"),
        Forward("::1", 7804, "::1"),
    ]
    argv = keeper_command("hive-only", 123, 200_000, forwards)
    assert argv[-3:] == ["--forward=127.0.0.1,7802", "--forward=10.1.0.1,7801,hive.example.com", "--forward=::1,7804"]
    assert [sandbox_network._parse_forward(arg.removeprefix("--forward=")) for arg in argv[-3:]] == forwards

    # The name maps to the keeper's address alone: the host's other entries for it go, its other names stay.
    assert sandbox_hosts(forwards) == (
        "# The hive's servers, as this sandbox's keeper forwards them (resolved when it started):\n"
        "10.1.0.1 hive.example.com\n"
        f"# {host_hosts} of the host, less those names:\n"
        "127.0.0.1 localhost\n127.0.1.1 box.lan box  # this host\n10.0.0.9 old-alias\n"
    )
    assert sandbox_hosts([forwards[0], forwards[2]]) is None  # no name: the host's own file stays
    mine = tmp_path / "sandbox-hosts"
    assert bwrap_args("hive-only", None, mine) == ["--unshare-net", "--ro-bind", str(mine), str(host_hosts)]
    assert bwrap_args("host", None, mine) == []

    with pytest.raises(NetworkError, match=r"'nowhere\.example', which does not resolve on this host \(Name or serv"):
        resolve_forwards([("nowhere.example", 7801)])
    host_hosts.unlink()
    with pytest.raises(NetworkError, match=r"cannot be read here \(No such file or directory\): create it"):
        sandbox_hosts(forwards)


def test_an_unknown_network_is_refused(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('[sandbox]\nnetwork = "everything"\n')
    with pytest.raises(ConfigError, match=r"sandbox\.network"):
        load_agent_config(tmp_path / "agent.toml")
