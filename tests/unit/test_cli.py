"""The `hive` command: init, token, serve's errors, help texts. No tracebacks, ever."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from hyperhive.servers.cli import main
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.instances import new_instance
from hyperhive.servers.common.keys import load_public_keys
from hyperhive.servers.common.tokens import InvalidToken, decode_token


def hive(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_init_creates_the_home_and_is_safe_to_run_again(tmp_path: Path) -> None:
    home = tmp_path / "h"
    code, output = hive("init", "--home", str(home))
    assert code == 0
    assert "created hive.toml" in output and "created signing.key" in output
    for name in ("service-approvals", "service-operator", "dashboard"):
        assert f"created tokens/{name}.token" in output
        assert stat.S_IMODE((home / "tokens" / f"{name}.token").stat().st_mode) == 0o600
    assert "created applied/manager/agent.toml" in output
    # applied/ is the one guard of the applied configs: a server let through it (the NixOS module's
    # unprivileged ones, by group) reads the manager's as it reads every other agent's.
    modes = {path: stat.S_IMODE((home / path).stat().st_mode) for path in ("applied", "applied/manager")}
    assert modes == {"applied": 0o700, "applied/manager": 0o755}
    assert (home / "applied/manager/agent.toml").stat().st_mode & 0o004
    key = (home / "signing.key").read_text()
    tokens = (home / "tokens" / "dashboard.token").read_text()
    (home / "hive.toml").write_text("[broker]\ninbox_cap = 7\n")  # an operator's edit
    code, output = hive("init", "--home", str(home))
    assert code == 0 and "already set up; nothing changed" in output
    assert (home / "signing.key").read_text() == key
    assert (home / "tokens" / "dashboard.token").read_text() == tokens  # still good: not re-issued
    assert load_hive_config(home).broker.inbox_cap == 7


def test_home_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "env-home"))
    assert hive("init")[0] == 0
    assert (tmp_path / "env-home" / "hive.toml").exists()


def test_token_for_each_kind_of_principal(tmp_path: Path) -> None:
    home = str(tmp_path)
    hive("init", "--home", home)
    keys = load_public_keys(tmp_path / "signing.pub")
    new_instance(tmp_path / "instances", "manager")  # as the lifecycle server does when it starts it
    expected = [
        ("operator", "operator", ["approvals", "broker", "forge", "lifecycle", "operator"]),
        ("manager", "manager", ["approvals", "broker", "forge", "lifecycle", "operator"]),
        ("service:approvals", "service", ["broker", "lifecycle"]),
        ("service:operator", "service", ["broker"]),
    ]
    for name, role, audience in expected:
        code, output = hive("token", name, "--home", home)
        assert code == 0, output
        principal, claims = decode_token(keys, output.strip())
        assert (principal.name, principal.role.value, claims["aud"]) == (name, role, audience)
    code, output = hive("token", "operator", "--ttl", "15m", "--aud", "broker", "--home", home)
    _, claims = decode_token(keys, output.strip())
    assert claims["exp"] - claims["iat"] == 900 and claims["aud"] == ["broker"]


def test_rotate_key_voids_old_tokens_and_reissues_the_handed_ones(tmp_path: Path) -> None:
    home = str(tmp_path)
    hive("init", "--home", home)
    old_token = hive("token", "operator", "--home", home)[1].strip()
    handed = (tmp_path / "tokens" / "service-approvals.token").read_text()
    code, output = hive("rotate-key", "--yes", "--home", home)
    assert code == 0 and "re-issued tokens: service-approvals, service-operator, service-forge, dashboard" in output
    keys = load_public_keys(tmp_path / "signing.pub")
    with pytest.raises(InvalidToken):
        decode_token(keys, old_token)
    fresh = (tmp_path / "tokens" / "service-approvals.token").read_text()
    assert fresh != handed and decode_token(keys, fresh.strip())[0].name == "service:approvals"


def test_an_old_home_migrates_from_its_shared_secret(tmp_path: Path) -> None:
    hive("init", "--home", str(tmp_path))
    (tmp_path / "signing.key").unlink()
    (tmp_path / "signing.pub").unlink()
    (tmp_path / "secret").write_text("s" * 64 + "\n")
    code, output = hive("init", "--home", str(tmp_path))
    assert code == 0 and "replaces the old shared secret" in output
    assert not (tmp_path / "secret").exists() and (tmp_path / "signing.pub").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["token", "ghost"], "no agent named 'ghost'"),
        (["token", "manager"], "manager has no live instance: it was never started, or it was destroyed"),
        (["token", "operator", "--aud", "quarry"], "operator holds no tools on quarry"),
        (["token", "service:evil"], "'service:evil' is not a service principal"),
        (["token", "Not Valid"], "invalid agent name 'Not Valid'"),
        (["token", "service:"], "is not a service principal"),
        (["token", "operator", "--ttl", "soon"], "'soon' is not a duration"),
        (["serve", "mailer"], "Invalid value for 'SERVER'"),
        (["serve", "broker", "--port", "99999"], "99999 is not in the range"),
    ],
)
def test_mistakes_get_one_clear_line(tmp_path: Path, args: list[str], error: str) -> None:
    hive("init", "--home", str(tmp_path))
    code, output = hive(*args, "--home", str(tmp_path))
    assert code != 0 and error in output


def test_a_bad_hive_toml_is_reported_not_raised(tmp_path: Path) -> None:
    hive("init", "--home", str(tmp_path))
    (tmp_path / "hive.toml").write_text("[servers.broker]\nport = -1\n")
    code, output = hive("token", "operator", "--home", str(tmp_path))
    assert code == 1
    assert f"Error: {tmp_path / 'hive.toml'}: servers.broker.port: Input should be greater than or equal to 0" in output


def test_commands_without_a_home_say_to_init(tmp_path: Path) -> None:
    code, output = hive("token", "operator", "--home", str(tmp_path / "nowhere"))
    assert code == 1 and "run `hive init`" in output


def test_help_teaches_and_hides_the_debug_verbs() -> None:
    code, output = hive("--help")
    assert code == 0
    for command in ("init", "serve", "token", "up"):
        assert command in output
    assert "debug" not in output
    assert "Authorization: Bearer" in hive("token", "--help")[1]
    assert "listening on URL" in hive("serve", "--help")[1]
    assert "Send BODY" in hive("debug", "send", "--help")[1]


@pytest.mark.parametrize("amount", ["nan", "inf", "Infinity", "lots"])
def test_set_budget_refuses_what_is_not_an_amount_before_calling(tmp_path: Path, amount: str) -> None:
    """float() takes "nan" and "inf"; sent, they would arrive as null and clear the agent's budget."""
    assert hive("init", "--home", str(tmp_path / "h"))[0] == 0
    code, output = hive("set-budget", "alice", amount, "--home", str(tmp_path / "h"))
    assert code == 1 and "is not an amount" in output, output
