"""Names, hive.toml and agent.toml: good files load, bad ones say file, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperhive.servers.common.agent_config import AgentConfig, agent_toml_template, parse_agent_config
from hyperhive.servers.common.client import failover_addresses, forge_git_url, server_address, server_addresses
from hyperhive.servers.common.config import (
    HIVE_TOML_TEMPLATE,
    SandboxDefaults,
    load_hive_config,
    parse_size,
    read_env_file,
)
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.diffs import created_files, render_diff, widenings
from hyperhive.servers.common.diffs import summary as config_summary
from hyperhive.servers.common.names import InvalidName, check_agent_name
from hyperhive.servers.common.principals import Role
from hyperhive.servers.common.registry import REGISTRY, SERVER_NAMES


@pytest.mark.parametrize("name", ["a", "alice", "bob-2", "abcdefghijk", "m0-x"])
def test_valid_agent_names(name: str) -> None:
    assert check_agent_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "use 1-11 characters"),
        ("abcdefghijkl", "use 1-11 characters"),  # 12: too long for nixos-container
        ("Alice", "lowercase"),
        ("1abc", "starting with a letter"),
        ("-abc", "starting with a letter"),
        ("a_b", "lowercase letters, digits and '-'"),
        ("../x", "use 1-11"),
        ("a b", "use 1-11"),
        ("operator", "reserved"),
        ("system", "reserved"),
        ("broker", "reserved"),
    ],
)
def test_invalid_agent_names_say_why(name: str, why: str) -> None:
    with pytest.raises(InvalidName, match=why):
        check_agent_name(name)


def test_non_string_names_are_refused() -> None:
    with pytest.raises(InvalidName, match="must be a string"):
        check_agent_name(42)


# ----------------------------------------------------------------------------------- hive.toml


PG = '[storage]\nurl = "postgresql://hive@db.internal/hive"\n'


def _home(tmp_path: Path, text: str) -> Path:
    (tmp_path / "hive.toml").write_text(text)
    return tmp_path


def test_the_template_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    config = load_hive_config(_home(tmp_path, HIVE_TOML_TEMPLATE))
    assert config.home == tmp_path.resolve()
    assert config.listen("broker").port == 7801 and config.listen("broker").host == "127.0.0.1"
    assert config.broker.max_body_bytes == 65_536 and config.broker.inbox_cap == 10_000
    assert config.broker.retention_days == 30 and config.broker.reminders.max_pending == 100
    assert config.db_path("broker") == tmp_path.resolve() / "state" / "broker.sqlite"


def test_an_empty_hive_toml_means_all_defaults(tmp_path: Path) -> None:
    assert load_hive_config(_home(tmp_path, "")).broker.lease_seconds == 120


def test_every_server_of_the_registry_listens_on_its_default_port_unless_set(tmp_path: Path) -> None:
    config = load_hive_config(_home(tmp_path, "[servers.operator]\nport = 9904\n"))
    assert list(config.servers) == list(SERVER_NAMES)
    assert {name: config.listen(name).port for name in SERVER_NAMES} == {
        spec.name: 9904 if spec.name == "operator" else spec.port for spec in REGISTRY
    }
    with pytest.raises(KeyError, match="no hyperhive server 'quarry': the servers are broker, lifecycle"):
        config.listen("quarry")


def test_socket_paths_are_relative_to_the_home(tmp_path: Path) -> None:
    config = load_hive_config(_home(tmp_path, '[servers.broker]\nsocket = "run/b.sock"\n'))
    listen = config.listen("broker")
    assert listen.port is None and listen.socket == tmp_path.resolve() / "run" / "b.sock"


BEYOND_LOOPBACK = "listens beyond loopback only over TLS: set tls_cert and tls_key (see docs/scaling.md)"


def test_a_server_listens_beyond_loopback_with_a_certificate_and_its_paths_are_under_the_home(tmp_path: Path) -> None:
    config = load_hive_config(
        _home(
            tmp_path,
            '[servers.broker]\nhost = "10.1.0.1"\nport = 7801\ntls_cert = "tls/hive.crt"\ntls_key = "/etc/hive.key"\n'
            '[servers.forge]\nhost = "hive.example.com"\nport = 7806\ntls_cert = "/etc/forge.crt"\n',
        )
    )
    broker = config.listen("broker")
    assert (broker.host, broker.tls_cert, broker.tls_key) == ("10.1.0.1", tmp_path.resolve() / "tls/hive.crt",
                                                              Path("/etc/hive.key"))  # fmt: skip
    # The certificate alone: a host that only calls the forge, elsewhere, and trusts its certificate.
    forge = config.listen("forge")
    assert (forge.host, forge.tls_cert, forge.tls_key) == ("hive.example.com", Path("/etc/forge.crt"), None)
    assert config.listen("lifecycle").tls_cert is None  # loopback needs none


def test_clients_reach_a_server_with_a_certificate_over_https_trusting_exactly_it(tmp_path: Path) -> None:
    config = load_hive_config(
        _home(
            tmp_path,
            '[servers.broker]\nhost = "hive.example.com"\nport = 7801\ntls_cert = "tls/hive.crt"\n'
            '[servers.forge]\nhost = "fd00::1"\nport = 7806\ntls_cert = "/etc/forge.crt"\n'
            '[servers.operator]\nsocket = "run/operator.sock"\ntls_cert = "tls/hive.crt"\n',
        )
    )
    broker = server_address(config, "broker")
    assert (broker.url, broker.tls_cert) == ("https://hive.example.com:7801/mcp", tmp_path.resolve() / "tls/hive.crt")
    assert forge_git_url(config) == "https://[fd00::1]:7806/git"
    assert server_address(config, "forge").tls_cert == Path("/etc/forge.crt")
    lifecycle = server_address(config, "lifecycle")
    assert (lifecycle.url, lifecycle.tls_cert) == ("http://127.0.0.1:7802/mcp", None)
    operator = server_address(config, "operator")  # the unix socket is plain HTTP whatever the port does
    assert (operator.url, operator.tls_cert, operator.socket) == ("http://localhost/mcp", None,
                                                                  tmp_path.resolve() / "run/operator.sock")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("[servers.broker]\nport = 70000\n", "servers.broker.port", "less than or equal to 65535"),
        ('[servers.broker]\nhost = "0.0.0.0"\nport = 1\n', "servers.broker", BEYOND_LOOPBACK),
        ('[servers.broker]\nhost = "10.1.0.1"\nport = 1\n', "servers.broker", BEYOND_LOOPBACK),
        ('[servers.broker]\nhost = "hive.example.com"\nport = 1\n', "servers.broker", BEYOND_LOOPBACK),
        ('[servers.broker]\nport = 1\ntls_key = "k.pem"\n', "servers.broker", "tls_key without tls_cert: set tls_cert"),
        ('[servers.broker]\nhost = "a host"\nport = 1\n', "servers.broker.host", "neither an IP address nor a host"),
        ('[dashboard]\nhost = "0.0.0.0"\n', "dashboard.host", "not a loopback address"),
        ("[servers.broker]\n", "servers.broker", "set a port, a socket, or both"),
        ("[servers.brokr]\nport = 1\n", "servers", "unknown server 'brokr'; the servers are broker, lifecycle"),
        ('[storage]\ndirs = { brokr = "db" }\n', "storage.dirs", "unknown server 'brokr'; the servers are broker"),
        ("[broker]\ninbox_cap = 0\n", "broker.inbox_cap", "greater than or equal to 1"),
        ("[broker]\ninbox_kap = 5\n", "broker.inbox_kap", "unknown setting"),
        ('[storage]\nsynchronous = "off"\n', "storage.synchronous", "'normal' or 'full'"),
        ('[storage]\nurl = "mysql://db/hive"\n', "storage.url", 'starts with "postgresql://"'),
        ("[storage]\npool_size = 0\n", "storage.pool_size", "greater than or equal to 1"),
        ("[broker.reminders]\nmax_per_minute = -1\n", "broker.reminders.max_per_minute", "greater than"),
        # Two brokers on sqlite files would be two hives: a failing-over client would find another inbox.
        (
            "[servers.broker]\nport = 1\nfailover = [{ port = 2 }]\n",
            "servers.broker.failover",
            "this hive's stores are sqlite files, which two brokers do not share: set [storage] url",
        ),
        (
            f"{PG}[servers.broker]\nport = 1\nfailover = [{{ port = 2 }}, {{ port = 2 }}]\n",
            "servers.broker.failover",
            "127.0.0.1:2 is named twice",
        ),
        (
            f'{PG}[servers.broker]\nport = 1\nfailover = [{{ host = "127.0.0.1", port = 1 }}]\n',
            "servers.broker.failover",
            "127.0.0.1:1 is [servers.broker]'s own address",
        ),
        (
            f"{PG}[servers.forge]\nport = 1\nfailover = [{{ port = 2 }}]\n",
            "servers.forge.failover",
            "only the broker runs as several processes",
        ),
        (
            f'{PG}[servers.broker]\nport = 1\nfailover = [{{ host = "10.1.0.2", port = 2 }}]\n',
            "servers.broker.failover.0",
            "reached only over TLS: set tls_cert",
        ),
        (
            f"{PG}[servers.broker]\nport = 1\nfailover = [{{ port = 0 }}]\n",
            "servers.broker.failover.0.port",
            "greater than or equal to 1",
        ),
    ],
)
def test_bad_hive_toml_names_file_field_and_reason(tmp_path: Path, text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_hive_config(_home(tmp_path, text))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'hive.toml'}: {field}: ")
    assert reason in message


def test_the_brokers_failover_addresses_follow_its_own_for_every_client(tmp_path: Path) -> None:
    config = load_hive_config(
        _home(
            tmp_path,
            f"{PG}[servers.broker]\nport = 7801\n"
            'failover = [{ port = 7811 }, { host = "hub2.example.com", port = 7801, tls_cert = "tls/hub2.crt" }]\n',
        )
    )
    assert [(a.url, a.tls_cert) for a in server_addresses(config, "broker")] == [
        ("http://127.0.0.1:7801/mcp", None),
        ("http://127.0.0.1:7811/mcp", None),
        ("https://hub2.example.com:7801/mcp", tmp_path.resolve() / "tls/hub2.crt"),  # under the home, like tls_cert
    ]
    assert server_addresses(config, "lifecycle") == [server_address(config, "lifecycle")]  # one address: as before
    # Beyond loopback: an entry without a host is another process on the broker's host, serving its certificate.
    config = load_hive_config(
        _home(
            tmp_path,
            f'{PG}[servers.broker]\nhost = "hub.example.com"\nport = 7801\ntls_cert = "tls/hub.crt"\n'
            'failover = [{ port = 7811 }, { host = "127.0.0.1", port = 7821 },\n'
            '            { host = "hub.example.com", port = 7831 }]\n',
        )
    )
    assert [(a.url, a.tls_cert) for a in failover_addresses(config, "broker")] == [
        ("https://hub.example.com:7811/mcp", tmp_path.resolve() / "tls/hub.crt"),
        ("http://127.0.0.1:7821/mcp", None),
        ("https://hub.example.com:7831/mcp", tmp_path.resolve() / "tls/hub.crt"),
    ]
    assert load_hive_config(_home(tmp_path, f"{PG}[servers.broker]\nport = 7801\n")).listen("broker").failover == []


def test_invalid_toml_syntax_is_reported_with_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hive\.toml: invalid TOML: .*line 2"):
        load_hive_config(_home(tmp_path, "[broker]\ninbox_cap = \n"))


def test_missing_hive_toml_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; run `hive init`"):
        load_hive_config(tmp_path)


# ---------------------------------------------------------------------------------- agent.toml


def test_templates_parse_to_their_role() -> None:
    manager = parse_agent_config(agent_toml_template("manager"), "agent.toml")
    assert manager.principal_role is Role.MANAGER and manager.model == "sonnet"
    assert manager.allowed_recipients == ["*"] and manager.tools == {}


def test_a_full_agent_toml() -> None:
    config = parse_agent_config(
        """
        role = "agent"
        model = "claude-sonnet-4-5"
        allowed_recipients = ["manager", "operator", "bob"]
        bash = ["git status", "git diff:*"]
        prompt = "Be brief."
        [tools]
        broker = ["send", "recv"]
        [env]
        LANG = "C.UTF-8"
        [mcp_servers.search]
        type = "http"
        url = "http://127.0.0.1:9000/mcp"
        [mcp_servers.local]
        type = "stdio"
        command = "my-server"
        args = ["--fast"]
        """,
        "agent.toml",
    )
    assert config.allowed_tools("broker") == {"send", "recv"}
    assert config.may_send_to("bob") and not config.may_send_to("carol") and not config.may_send_to("*")
    assert config.mcp_servers["local"].type == "stdio"


def test_role_defaults_apply_to_servers_left_out() -> None:
    agent = AgentConfig()
    assert "send" in agent.allowed_tools("broker") and "post_event" not in agent.allowed_tools("broker")
    assert "list_messages" not in AgentConfig(role="manager").allowed_tools("broker")
    assert AgentConfig().may_send_to("anyone")


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ('role = "operator"', "role", "'agent' or 'manager'"),
        ('model = "a model"', "model", "is not a model name"),
        ('[tools]\nmailer = ["send"]', "tools", "unknown server 'mailer'; servers: broker"),
        ('[tools]\nbroker = ["sned"]', "tools", "broker has no tool 'sned'"),
        (
            '[tools]\nbroker = ["post_event"]',
            "tools",
            "broker.post_event is a service tool; agents cannot be granted",
        ),
        ('[tools]\nbroker = ["stats"]', "tools", "broker.stats is an operator tool"),
        ('allowed_recipients = ["Bob"]', "allowed_recipients", "invalid agent name 'Bob'"),
        ('bash = ["rm -rf /\\nls"]', "bash.0", "String should match pattern"),
        ('[env]\n"1X" = "y"', "env", "'1X' is not an environment variable name"),
        ('[mcp_servers.broker]\ntype = "http"\nurl = "http://x"', "mcp_servers", "is a hyperhive server"),
        ('[mcp_servers.x]\ntype = "ftp"', "mcp_servers.x", "does not match any of the expected tags"),
        (
            '[mcp_servers.x]\ntype = "http"\nurl = "file:///etc"',
            "mcp_servers.x.http.url",
            "should match pattern",
        ),
        ('colour = "blue"', "colour", "unknown setting"),
    ],
)
def test_bad_agent_toml_names_field_and_reason(text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(text, "applied/x/agent.toml")
    message = str(caught.value)
    assert message.startswith(f"applied/x/agent.toml: {field}: "), message
    assert reason in message, message


def test_env_files_read_like_systemd_environment_files(tmp_path: Path) -> None:
    env_file = tmp_path / "hive.env"
    env_file.write_text(
        "# secrets\n\nANTHROPIC_API_KEY=sk-ant-1\nexport QUOTED=\"a b\"\nSINGLE='c=d'\n  SPACED = e \nEMPTY=\n"
    )
    assert read_env_file(env_file) == {
        "ANTHROPIC_API_KEY": "sk-ant-1",
        "QUOTED": "a b",
        "SINGLE": "c=d",
        "SPACED": "e",
        "EMPTY": "",
    }
    env_file.write_text("OK=1\n1BAD=x\njust words\n")
    with pytest.raises(ConfigError) as error:
        read_env_file(env_file)
    assert str(error.value) == f"{env_file}: line 2: expected NAME=value\n{env_file}: line 3: expected NAME=value"
    env_file.write_bytes(b"A=\xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_env_file(env_file)


def _widenings(old: str | None, new: str, **files: str) -> list[str]:
    before = {"agent.toml": old} if old is not None else {}
    return widenings(before, {"agent.toml": new, **files})


def test_widenings_are_read_from_the_parsed_configs() -> None:
    template = agent_toml_template("agent")
    assert _widenings(None, template) == [] and _widenings(template, template) == []
    # Formatting is not a change; narrowing is not a widening.
    assert _widenings('bash = ["ls:*"]', "bash = [ 'ls:*' ]\n# same") == []
    assert _widenings('bash = ["ls:*", "rm:*"]\n[tools]\nbroker = ["send", "recv"]', '[tools]\nbroker = ["recv"]') == []
    assert _widenings('allowed_recipients = ["*"]', 'allowed_recipients = ["bob"]') == []
    assert _widenings("[sandbox]\nmax_restarts = 1", "[sandbox]\nmax_restarts = 9") == []
    assert _widenings('allowed_recipients = ["bob"]', 'allowed_recipients = ["bob", "operator"]') == [
        'allowed_recipients: + "operator"'
    ]
    assert _widenings('[tools]\nbroker = ["recv"]', 'model = "opus"') == [
        "tools.broker: + ack, cancel_reminder, lease, list_my_reminders, pending_count, recv_batch, remind, "
        "search_messages, send, thread"
    ]  # leaving a server out gives the role's defaults back
    http = '[mcp_servers.web]\ntype = "http"\nurl = "http://127.0.0.1:9000/mcp"\n'
    assert _widenings(http, http.replace("9000", "9001")) == [
        "mcp_servers: web changed (http: http://127.0.0.1:9000/mcp → http: http://127.0.0.1:9001/mcp)"
    ]
    assert _widenings('[sandbox]\ncommand = ["run", "it"]', "") == ["sandbox.command: run it → (default)"]
    assert _widenings("", "", **{"agent.nix": "{ }\n"}) == [
        "agent.nix: changed (the container's NixOS config: read its diff)"
    ]
    promoted = _widenings(None, 'role = "manager"')
    assert promoted[0] == "role: agent → manager" and "tools.approvals: + list_my_requests" in promoted[2]
    assert _widenings(None, 'model = "not a model"') == []  # invalid: refused before anyone sees it


def test_a_new_agents_files_are_read_back_whole_from_its_diff_and_nothing_else_is() -> None:
    files = {"agent.toml": 'bash = ["x"]\n\nprompt = """\n+++ a/agent.toml\n--- /dev/null\n@@ -0,0 +1 @@\n"""\n'}
    files["agent.nix"] = "{ ... }: { }\n"
    assert created_files(render_diff({}, files, "none", "template")) == files
    assert created_files(render_diff({}, {"agent.toml": "one = 1"}, "none", "t")) == {"agent.toml": "one = 1\n"}
    changed = render_diff({"agent.toml": "a = 1\n"}, {"agent.toml": "a = 2\n"}, "applied", "proposed")
    assert created_files(changed) is None  # a change to an existing agent is not whole in its diff
    made = render_diff({}, {"agent.toml": "a = 1\nb = 2\n"}, "none", "t")
    assert created_files(made.replace("+b = 2", " b = 2")) is None  # a context line: not a new file
    assert created_files(made.replace("+1,2", "+1,3")) is None  # fewer lines than its hunk says
    assert created_files(made.replace("t/agent.toml", "t/../../etc/passwd")) is None  # only the config files
    assert created_files("") == {}
    summary = config_summary({"agent.toml": '[budget]\nusd_per_day = 2\n[sandbox]\nnetwork = "host"\n'})
    assert summary is not None and (summary.usd_per_day, summary.network, summary.risky) == (2, "host", ["sandbox"])
    assert config_summary({"agent.toml": "model = 1"}) is None


# ---------------------------------------------------------------------------------- [sandbox] sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [("4G", 4 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), ("64KiB", 65536), ("2m", 2 << 20), (4096, 4096)],
)
def test_sizes_parse_in_binary_units(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('memory_max = "4X"', r"sandbox\.memory_max: '4X' is not a size"),
        ('memory_max = "1K"', r"sandbox\.memory_max: '1K' is out of range: between 16M and 1024T"),
        ("tmp_max = true", r"sandbox\.tmp_max: True is not a size"),
        ('state_max = "-1G"', r"sandbox\.state_max: '-1G' is not a size"),
        ("pids_max = 3", r"sandbox\.pids_max: Input should be greater than or equal to 16"),
        ("cpu_weight = 0", r"sandbox\.cpu_weight: Input should be greater than or equal to 1"),
    ],
)
def test_bad_sandbox_bounds_are_refused_clearly(line: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_agent_config(f"[sandbox]\n{line}\n", "agent.toml")


def test_an_agent_overrides_the_hive_bounds_one_by_one(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[sandbox]\nmemory_max = "8G"\npids_max = 1000\n')
    hive = load_hive_config(tmp_path)
    agent = parse_agent_config('[sandbox]\nmemory_max = "512M"\n', "agent.toml")
    bounds = agent.sandbox.bounds(hive.sandbox)
    assert (bounds.memory_max, bounds.pids_max, bounds.cpu_weight) == (512 << 20, 1000, 100)
    assert (bounds.tmp_max, bounds.state_max) == (1 << 30, 10 << 30)  # the documented defaults


def test_the_templates_bounds_are_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text(HIVE_TOML_TEMPLATE)
    assert load_hive_config(tmp_path).sandbox == SandboxDefaults()
    # The agent.toml template's commented [sandbox] example, uncommented, says the same.
    lines = agent_toml_template().splitlines()
    start = lines.index("# [sandbox]")
    example = "\n".join(line.removeprefix("# ") for line in lines[start:] if line.startswith("# "))
    agent = parse_agent_config(example, "agent.toml")
    assert agent.sandbox.bounds(SandboxDefaults()) == SandboxDefaults()


def test_budgets_are_read_from_both_files(tmp_path: Path) -> None:
    agent = parse_agent_config("[budget]\nusd_per_day = 5\nusd_per_turn = 0.5\n", "agent.toml")
    assert agent.budget.usd_per_day == 5.0 and agent.budget.usd_per_turn == 0.5
    assert parse_agent_config("", "agent.toml").budget.usd_per_day is None
    assert load_hive_config(_home(tmp_path, "[budget]\nusd_per_day = 50\n")).budget.usd_per_day == 50.0
    assert load_hive_config(_home(tmp_path, HIVE_TOML_TEMPLATE)).budget.usd_per_day is None
    # The agent.toml template's commented [budget] example, uncommented, is valid.
    lines = agent_toml_template().splitlines()
    start = lines.index("# [budget]")
    example = "\n".join(line.removeprefix("# ") for line in lines[start : start + 3])
    assert parse_agent_config(example, "agent.toml").budget.usd_per_turn == 0.5


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("usd_per_day = 0", "budget.usd_per_day: Input should be greater than or equal to 0.01"),
        ("usd_per_day = -3", "budget.usd_per_day: Input should be greater than or equal to 0.01"),
        ("usd_per_turn = nan", "budget.usd_per_turn: Input should be a finite number"),
        ("usd_per_turn = inf", "budget.usd_per_turn: Input should be a finite number"),
        ('usd_per_day = "lots"', "budget.usd_per_day: Input should be a valid number"),
        ("usd_per_dya = 3", "budget.usd_per_dya: unknown setting"),
    ],
)
def test_bad_budgets_are_refused_clearly(tmp_path: Path, line: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_agent_config(f"[budget]\n{line}\n", "agent.toml")
    with pytest.raises(ConfigError, match=error.replace("usd_per_turn", "usd_per_day")):
        load_hive_config(_home(tmp_path, f"[budget]\n{line.replace('usd_per_turn', 'usd_per_day')}\n"))
