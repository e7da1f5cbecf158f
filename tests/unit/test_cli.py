"""The `hive` command: init, token, serve's errors, help texts. No tracebacks, ever."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hivetest import free_block

from hyperhive.servers.cli import SERVERS, main
from hyperhive.servers.cli.base import cli_words
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.formatting import plural
from hyperhive.servers.common.instances import new_instance
from hyperhive.servers.common.keys import load_public_keys
from hyperhive.servers.common.registry import REGISTRY
from hyperhive.servers.common.tokens import InvalidToken, decode_token

DEFAULT_PORTS = {spec.name: spec.port for spec in REGISTRY}


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


@pytest.mark.parametrize(
    "args",
    [
        ["token", "operator"],
        ["agents"],
        ["hosts"],
        ["stats"],
        ["audit", "--json"],
        ["config", "alice"],
        ["spawn", "bob"],
    ],
)
def test_commands_outside_a_home_say_where_to_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """Run elsewhere than the home, most often: the fix is --home or HIVE_HOME, not a new hive."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HIVE_HOME", raising=False)
    code, output = hive(*args)
    assert code == 1, output
    assert output == (
        f"Error: {tmp_path / '.hive'} is not a hive home (it has no hive.toml): point at yours with --home DIR "
        "or HIVE_HOME=DIR; `hive init --home DIR` sets up a new one\n"
    )
    assert not (tmp_path / ".hive").exists()  # nothing made on the way


@pytest.mark.parametrize(
    ("count", "noun", "nouns", "text"),
    [
        (0, "agent", None, "0 agents"),
        (1, "agent", None, "1 agent"),
        (2, "agent", None, "2 agents"),
        (1, "inbox", "inboxes", "1 inbox"),
        (3, "inbox", "inboxes", "3 inboxes"),
        (1500, "message", None, "1,500 messages"),
    ],
)
def test_plural(count: int, noun: str, nouns: str | None, text: str) -> None:
    assert plural(count, noun, nouns) == text


@pytest.mark.parametrize(
    ("refusal", "printed"),
    [
        ("no agent named 'ghost'; list_agents shows the agents there are",
         "no agent named 'ghost'; `hive agents` shows the agents there are"),
        ("no question 9; pending_questions lists the open ones", "no question 9; `hive questions` lists the open ones"),
        ("there is no request #4; pending_approvals lists the waiting ones",
         "there is no request #4; `hive approvals` lists the waiting ones"),
        ("no repo named 'x'; list_repos shows the repos you can read",
         "no repo named 'x'; `hive repos` shows the repos you can read"),
        ("'HEAD' is no commit in repo 'x' (list_repos and repo_log show its refs)",
         "'HEAD' is no commit in repo 'x' (`hive repos` and `hive repo log NAME --ref REF` show its refs)"),
        ("the manager is infrastructure; destroying it needs force=true",
         "the manager is infrastructure; destroying it needs --force"),
        ("its context is full: call reset_session", "its context is full: run `hive reset-session NAME`"),
        ("raise it (set_budget) or resume it (resume_agent)",
         "raise it (`hive set-budget NAME USD_PER_DAY`) or resume it (`hive resume NAME`)"),
        ("no free host uid left; destroy agents with purge to free some",
         "no free host uid left; destroy agents with `hive destroy NAME --purge` to free some"),
        ("this hive has no host 'gamma' that can take bob; list_hosts says which there are",
         "this hive has no host 'gamma' that can take bob; `hive hosts` says which there are"),
        ("alice already exists", "alice already exists"),  # nothing to say differently
        ("reset_sessions is no tool", "reset_sessions is no tool"),  # whole words only
    ],
)  # fmt: skip
def test_refusals_name_cli_verbs_not_tools(refusal: str, printed: str) -> None:
    assert cli_words(refusal) == printed


def test_a_refusal_the_cli_prints_names_the_verb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mapping sits where every verb's refusal is printed (call_hive), not in each verb."""
    from fastmcp.exceptions import ToolError

    from hyperhive.servers.cli import base

    hive("init", "--home", str(tmp_path))

    async def refused(servers: base.HiveServers) -> None:
        raise ToolError("no agent named 'ghost'; list_agents shows the agents there are")

    with pytest.raises(click.ClickException) as raised:
        base.call_hive(tmp_path, refused)
    assert raised.value.message == "no agent named 'ghost'; `hive agents` shows the agents there are"


@pytest.mark.parametrize(
    ("base", "error"),
    [
        ("80", "--port-base 80 is out of range: give 1024-65529 (the default is 7800)"),
        ("65530", "--port-base 65530 is out of range"),
        ("-1", "--port-base -1 is out of range"),
        ("lots", "'lots' is not a valid integer"),
    ],
)
def test_init_port_base_refuses_a_base_out_of_range(tmp_path: Path, base: str, error: str) -> None:
    code, output = hive("init", "--port-base", base, "--home", str(tmp_path / "h"))
    assert code != 0 and error in output, output
    assert not (tmp_path / "h").exists()


def test_init_port_base_derives_every_port_and_refuses_taken_ones(tmp_path: Path) -> None:
    base = free_block()
    code, output = hive("init", "--port-base", str(base), "--home", str(tmp_path / "h2"))
    assert code == 0, output
    config = load_hive_config(tmp_path / "h2")
    ports = {name: config.listen(name).port for name in SERVERS}
    assert ports == {name: base + spec_port - 7800 for name, spec_port in DEFAULT_PORTS.items()}
    assert config.dashboard.port == base + 5
    assert len({*ports.values(), config.dashboard.port}) == len(SERVERS) + 1
    # On a home that has its hive.toml: refused, never rewritten.
    again = hive("init", "--port-base", str(base + 100), "--home", str(tmp_path / "h2"))
    assert again[0] == 1 and "--port-base is for a new home" in again[1]
    assert load_hive_config(tmp_path / "h2").listen("broker").port == base + 1
    # A port of the block taken (another hive's forge, say): named, and nothing is made.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 6))
        holder.listen()
        code, output = hive("init", "--port-base", str(base), "--home", str(tmp_path / "h3"))
    assert code == 1 and f"--port-base {base}: in use on this host: forge {base + 6}" in output, output
    assert not (tmp_path / "h3").exists()


def test_new_verbs_teach_with_examples() -> None:
    for verb, example in [
        (["spawn"], "hive spawn alice"),
        (["spawn"], "hive spawn gpu1 --host beta"),
        (["hosts"], "hive hosts --json"),
        (["set-model"], "hive set-model alice default"),
        (["update-all"], "asks first"),
        (["stats"], "hive stats alice --since 7d"),
        (["config"], "hive config alice"),
        (["audit"], "hive audit --agent alice --limit 200"),
        (["init"], "--port-base 7900"),
        (["agents"], "hive agents --json"),
        (["approvals"], "hive approvals --history 20"),
    ]:
        code, output = hive(*verb, "--help")
        assert code == 0 and example in output, (verb, output)
    listing = hive("--help")[1]
    for verb in ("spawn", "set-model", "update-all", "stats", "config", "audit", "hosts"):
        assert f"  {verb} " in listing


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
