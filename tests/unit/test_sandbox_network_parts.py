"""[sandbox] network: the pieces that need no sandbox (tests/integration/test_sandbox_network.py runs real ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperhive.servers.common.agent_config import AgentConfig, load_agent_config
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.home import init_home
from hyperhive.servers.lifecycle import sandbox_network
from hyperhive.servers.lifecycle.backends.bwrap import BwrapBackend
from hyperhive.servers.lifecycle.sandbox_network import NetworkError, bwrap_args, hive_ports, keeper_command


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


def test_outbound_without_pasta_is_refused_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_network.shutil, "which", lambda name: None)
    with pytest.raises(NetworkError, match="passt"):
        keeper_command("outbound", 123, 200_000, [("127.0.0.1", 7801)])
    argv = keeper_command("hive-only", 123, 200_000, [("127.0.0.1", 7801)])  # needs no pasta
    assert argv[-5:] == ["--pid", "123", "--uid", "200000", "--forward=127.0.0.1,7801"]


def test_an_unknown_network_is_refused(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('[sandbox]\nnetwork = "everything"\n')
    with pytest.raises(ConfigError, match=r"sandbox\.network"):
        load_agent_config(tmp_path / "agent.toml")
