"""The `hive` command: init, token, serve's errors, help texts. No tracebacks, ever."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from hyperhive.servers.cli import _turn_text, main
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.tokens import decode_token, load_secret


def hive(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_init_creates_the_home_and_is_safe_to_run_again(tmp_path: Path) -> None:
    home = tmp_path / "h"
    code, output = hive("init", "--home", str(home))
    assert code == 0
    assert "created hive.toml" in output and "created secret" in output
    assert "created applied/manager/agent.toml" in output
    # applied/ is the one guard of the applied configs: a server let through it (the NixOS module's
    # unprivileged ones, by group) reads the manager's as it reads every other agent's.
    modes = {path: stat.S_IMODE((home / path).stat().st_mode) for path in ("applied", "applied/manager")}
    assert modes == {"applied": 0o700, "applied/manager": 0o755}
    assert (home / "applied/manager/agent.toml").stat().st_mode & 0o004
    secret = (home / "secret").read_text()
    (home / "hive.toml").write_text("[broker]\ninbox_cap = 7\n")  # an operator's edit
    code, output = hive("init", "--home", str(home))
    assert code == 0 and "already set up; nothing changed" in output
    assert (home / "secret").read_text() == secret
    assert load_hive_config(home).broker.inbox_cap == 7


def test_home_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "env-home"))
    assert hive("init")[0] == 0
    assert (tmp_path / "env-home" / "hive.toml").exists()


def test_token_for_each_kind_of_principal(tmp_path: Path) -> None:
    home = str(tmp_path)
    hive("init", "--home", home)
    secret = load_secret(tmp_path / "secret")
    for name, role in [("operator", "operator"), ("manager", "manager"), ("service:approvals", "service")]:
        code, output = hive("token", name, "--home", home)
        assert code == 0
        principal, claims = decode_token(secret, output.strip())
        assert (principal.name, principal.role.value) == (name, role)
    code, output = hive("token", "operator", "--ttl", "15m", "--home", home)
    _, claims = decode_token(secret, output.strip())
    assert claims["exp"] - claims["iat"] == 900


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["token", "ghost"], "no agent named 'ghost'"),
        (["token", "Not Valid"], "invalid agent name 'Not Valid'"),
        (["token", "service:"], "service principals are named 'service:<server>'"),
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


def test_hive_agents_says_why_a_turn_state_is_unreadable() -> None:
    unreadable = {"state": "unreadable", "since": 1.0, "reason": "turn.json is a fifo, not a regular file"}
    assert _turn_text(unreadable) == "unreadable: turn.json is a fifo, not a regular file"
    assert _turn_text({"state": "idle", "since": 1.0}) == "idle"
