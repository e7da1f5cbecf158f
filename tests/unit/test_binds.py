"""agent.toml `shared` and [[binds]]: what parses, what is refused and why, and that a change
is flagged to the operator as a widening."""

from __future__ import annotations

import pytest

from hyperhive.servers.common.agent_config import parse_agent_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.diffs import widenings


def _bind(host: str, path: str = "/data", mode: str = "ro") -> str:
    return f'[[binds]]\nhost = "{host}"\npath = "{path}"\nmode = "{mode}"\n'


def test_shared_defaults_to_read_write_and_takes_ro_and_none() -> None:
    assert parse_agent_config("", "agent.toml").shared == "rw"
    assert parse_agent_config('shared = "ro"', "agent.toml").shared == "ro"
    assert parse_agent_config('shared = "none"', "agent.toml").shared == "none"
    with pytest.raises(ConfigError, match="shared"):
        parse_agent_config('shared = "yes"', "agent.toml")


@pytest.mark.parametrize(
    ("host", "path", "normal_host", "normal_path"),
    [
        ("/srv/data", "/data", "/srv/data", "/data"),
        ("//srv//data/", "/data/", "/srv/data", "/data"),  # '//' and a trailing '/' are folded
        ("/srv/./data", "/./data", "/srv/data", "/data"),
        ("/home/alice/shared-docs", "/work/docs", "/home/alice/shared-docs", "/work/docs"),
    ],
)
def test_binds_are_normalised(host: str, path: str, normal_host: str, normal_path: str) -> None:
    (bind,) = parse_agent_config(_bind(host, path), "agent.toml").binds
    assert (bind.host, bind.path, bind.mode) == (normal_host, normal_path, "ro")


@pytest.mark.parametrize(
    ("host", "path", "why"),
    [
        ("srv/data", "/data", "must be an absolute path"),
        ("/srv/../etc", "/data", "contains '..'"),
        ("/srv/data/..", "/data", "contains '..'"),
        ("/srv/data", "/data/../tmp", "contains '..'"),
        ("/", "/data", "the whole host"),
        ("//", "/data", "the whole host"),
        ("/etc", "/data", "system dir /etc"),
        ("/etc/", "/data", "system dir /etc"),
        ("//etc//ssh", "/data", "system dir /etc"),
        ("/proc/self/root", "/data", "system dir /proc"),
        ("/proc/1/root/etc", "/data", "system dir /proc"),
        ("/var", "/data", "system dir /var/lib"),  # over a system dir
        ("/var/lib/hyperhive/agents/bob/state", "/data", "system dir /var/lib"),  # the production home
        ("/root/.ssh", "/data", "system dir /root"),
        ("/dev/sda", "/data", "system dir /dev"),
        ("/lib64", "/data", "system dir /lib64"),
        ("/run/docker.sock", "/data", "system dir /run"),
        ("/srv/a b", "/data", "only letters, digits"),
        ("/srv/a:b", "/data", "only letters, digits"),
        ("/srv/data", "/", "the whole sandbox"),
        ("/srv/data", "/tmp", "/tmp, which the sandbox keeps"),
        ("/srv/data", "/hive/shared", "/hive, which the sandbox keeps"),
        ("/srv/data", "/hive", "/hive, which the sandbox keeps"),
        ("/srv/data", "/usr/local/bin", "/usr, which the sandbox keeps"),
        ("/srv/data", "/nix/store", "/nix, which the sandbox keeps"),
        ("/srv/data", "/etc/passwd", "/etc, which the sandbox keeps"),
        ("/srv/data", "relative", "must be an absolute path"),
    ],
)
def test_bad_binds_are_refused_at_parse_saying_why(host: str, path: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_agent_config(_bind(host, path), "agent.toml")
    assert why in str(refused.value) and "binds" in str(refused.value)


def test_binds_may_not_overlap_each_other_and_mode_is_ro_or_rw() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        parse_agent_config(_bind("/srv/a", "/data") + _bind("/srv/b", "/data/b"), "agent.toml")
    with pytest.raises(ConfigError, match="mode"):
        parse_agent_config(_bind("/srv/a", "/data", "rwx"), "agent.toml")
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_agent_config('[[binds]]\nhost = "/srv/a"\npath = "/a"\nrecursive = true\n', "agent.toml")


def test_a_binds_or_shared_change_is_a_widening() -> None:
    def flagged(old: str, new: str) -> list[str]:
        return widenings({"agent.toml": old}, {"agent.toml": new})

    assert flagged("", _bind("/srv/data")) == ["binds: + host /srv/data at /data (ro)"]
    assert flagged(_bind("/srv/data"), _bind("/srv/data", mode="rw")) == ["binds: + host /srv/data at /data (rw)"]
    assert flagged(_bind("/srv/data"), _bind("/srv/other")) == ["binds: + host /srv/other at /data (ro)"]
    assert flagged(_bind("/srv/data"), _bind("//srv/data/")) == []  # the same bind, written otherwise
    assert flagged(_bind("/srv/data"), "") == []  # dropping a bind narrows
    assert flagged('shared = "none"', "") == ["shared: none → rw (the hive's shared workspace, /hive/shared)"]
    assert flagged('shared = "none"', 'shared = "ro"') == [
        "shared: none → ro (the hive's shared workspace, /hive/shared)"
    ]
    assert flagged("", 'shared = "ro"') == []
