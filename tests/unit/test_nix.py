"""The NixOS side without nixpkgs: every .nix file parses, the per-agent flake the nixos backend
renders matches its golden files, and the hive.toml the module writes is one hyperhive loads.

Nix itself is Debian's nix-bin (scripts/setup.sh test installs it): `nix-instantiate --parse`
for syntax, `--eval` for nix/settings.nix and nix/hive-toml.nix, which use builtins only.
Set HIVE_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change (then review the diff).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from hyperhive.servers.common.config import HIVE_TOML, SHARED_STORES, HostSettings, load_hive_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.registry import REGISTRY, SERVER_NAMES, callers
from hyperhive.servers.common.systemd import TLS_KEY_CREDENTIAL
from hyperhive.servers.lifecycle.backends.base import SandboxSpec
from hyperhive.servers.lifecycle.backends.nixos_flake import AgentFlake, render_flake
from hyperhive.servers.lifecycle.backends.nixos_spec import sandbox_json

ROOT = Path(__file__).resolve().parents[2]
NIX = ROOT / "nix"
GOLDEN = Path(__file__).parent / "golden" / "nixos"
HOME = Path("/var/lib/hyperhive")
AGENT_NIX = """\
{ pkgs, ... }:
{
  hyperhive.agent.packages = [ pkgs.ripgrep pkgs.jq ];
  hyperhive.agent.env.EDITOR = "true";
}
"""


def nix_instantiate() -> str:
    found = shutil.which("nix-instantiate")
    if found is None:
        pytest.fail("nix-instantiate is missing: `scripts/setup.sh test` installs Debian's nix-bin")
    return found


def parse(path: Path) -> None:
    result = subprocess.run([nix_instantiate(), "--parse", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, f"{path} does not parse:\n{result.stderr}"


def evaluate(expression: str) -> object:
    result = subprocess.run(
        [nix_instantiate(), "--eval", "--strict", "--json", "-E", expression], capture_output=True, text=True, cwd=NIX
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------------ every file


def every_nix_file() -> list[Path]:
    skipped = {".git", ".venv", "node_modules", "build", "test-artifacts"}
    return sorted(path for path in ROOT.rglob("*.nix") if not skipped.intersection(path.relative_to(ROOT).parts))


def test_the_flake_module_and_agent_base_are_there() -> None:
    names = {path.name for path in NIX.glob("*.nix")}
    assert {"flake.nix", "module.nix", "agent-base.nix", "manager.nix", "package.nix"} <= names


@pytest.mark.parametrize("path", every_nix_file(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_nix_file_parses(path: Path) -> None:
    parse(path)


# ---------------------------------------------------------------------------- the agents' flakes

CASES = {
    "agent": (AgentFlake("alice", "agent", 200_001, HOME / "agents/alice/state", HOME / "agents/alice/harness",
                         "x86_64-linux"), None, "hyperhive", None),
    "agent-with-nix": (AgentFlake("bob", "agent", 200_002, HOME / "agents/bob/state", HOME / "agents/bob/harness",
                                  "x86_64-linux"), AGENT_NIX, "path:/nix/store/0000-source?dir=nix",
                       "path:/nix/store/1111-nixpkgs-source"),
    "manager": (AgentFlake("manager", "manager", 200_000, HOME / "agents/manager/state",
                           HOME / "agents/manager/harness", "aarch64-linux"), None,
                'github:someone/hive"${evil}?dir=nix', "path:/nix/store/1111-nixpkgs-source"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_rendered_agent_flake_matches_its_golden_file(case: str, tmp_path: Path) -> None:
    agent, agent_nix, flake_ref, nixpkgs_ref = CASES[case]
    if agent_nix is not None:
        (tmp_path / "agent.nix").write_text(agent_nix)
    files = render_flake(agent, tmp_path, flake_ref, nixpkgs_ref)
    assert render_flake(agent, tmp_path, flake_ref, nixpkgs_ref) == files  # the same bytes every time
    assert files.get("agent.nix") == agent_nix  # the agent's own file, as it is
    golden = GOLDEN / f"{case}.flake.nix"
    if os.environ.get("HIVE_UPDATE_GOLDEN"):
        golden.write_text(files["flake.nix"])
    assert files["flake.nix"] == golden.read_text(), f"differs from {golden} (HIVE_UPDATE_GOLDEN=1 rewrites it)"
    rendered = tmp_path / "flake.nix"
    rendered.write_text(files["flake.nix"])
    parse(rendered)


def test_a_hostile_flake_reference_stays_one_nix_string() -> None:
    text = (GOLDEN / "manager.flake.nix").read_text()
    assert 'inputs.hyperhive.url = "github:someone/hive\\"\\${evil}?dir=nix";' in text


# --------------------------------------------------------------------------- the module's hive.toml

# services.hyperhive's defaults, as module.nix declares them.
MODULE_DEFAULTS = """let plain = { tlsCert = null; tlsKey = null; }; in {
  home = "/var/lib/hyperhive";
  backend = "nixos-container";
  flake = "path:/nix/store/0000-source?dir=nix";
  listen = {
    broker = plain // { host = "127.0.0.1"; port = 7801; socket = "/run/hyperhive/broker.sock"; };
    lifecycle = plain // { host = "127.0.0.1"; port = 7802; socket = "/run/hyperhive/lifecycle/lifecycle.sock"; };
    approvals = plain // { host = "127.0.0.1"; port = 7803; socket = "/run/hyperhive/approvals.sock"; };
    operator = plain // { host = "127.0.0.1"; port = null; socket = "/run/hyperhive/operator.sock"; };
    forge = plain // { host = "127.0.0.1"; port = 7806; socket = null; };
  };
  dashboard = { host = "127.0.0.1"; port = 7805; };
  retention = { messageDays = 14; logFiles = 5; };
  environmentFile = null;
  storage = { url = null; passFile = null; allowedAddresses = [ ]; };
  host = {
    name = null; lifecycleUrl = null; labels = [ ]; capacity = null; heartbeatSeconds = null;
    downAfterSeconds = null;
  };
}"""
HOST_OPTIONS = ("name", "lifecycleUrl", "labels", "capacity", "heartbeatSeconds", "downAfterSeconds")


def module_hive_toml(extra: str = "{ }", cfg: str = MODULE_DEFAULTS) -> str:
    settings = f"import ./settings.nix {{ cfg = {cfg}; nixpkgs = /nix/store/1111-nixpkgs-source; }}"
    # module.nix merges services.hyperhive.settings over them with lib.recursiveUpdate; `//` on
    # one level is enough for the settings tested here.
    text = evaluate(f"import ./hive-toml.nix (({settings}) // {extra})")
    assert isinstance(text, str)
    return text


def test_the_module_writes_a_hive_toml_hyperhive_loads(tmp_path: Path) -> None:
    text = module_hive_toml('{ harness = { batch_max = 5; env.CLAUDE_CODE_MAX_OUTPUT_TOKENS = "8000"; }; }')
    (tmp_path / HIVE_TOML).write_text(text)
    config = load_hive_config(tmp_path)

    assert text.startswith("# Written by the NixOS module services.hyperhive")
    assert config.listen("broker").port == 7801
    assert config.listen("lifecycle").socket == Path("/run/hyperhive/lifecycle/lifecycle.sock")
    assert config.listen("operator").port is None  # null: only the socket
    assert config.lifecycle.backend == "nixos-container"
    assert config.lifecycle.log_keep == 5
    assert config.lifecycle.nixos.flake == "path:/nix/store/0000-source?dir=nix"
    assert config.lifecycle.nixos.nixpkgs == "path:/nix/store/1111-nixpkgs-source"
    assert config.broker.retention_days == 14
    assert config.dashboard.user == ""  # the unit is unprivileged already
    assert config.harness.batch_max == 5
    assert config.harness.env == {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "8000"}
    assert config.harness.env_file is None  # environmentFile = null
    # Each unprivileged server's database in its own StateDirectory; the lifecycle's stays root's.
    assert config.db_path("broker") == HOME / "db" / "broker" / "broker.sqlite"
    assert config.db_path("operator") == HOME / "db" / "operator" / "operator.sqlite"
    assert config.db_path("lifecycle") == tmp_path.resolve() / "state" / "lifecycle.sqlite"
    # The forge writes its repos and hooks where its unit may write: its StateDirectory.
    assert config.forge_dir == HOME / "db" / "forge" / "repos"
    assert config.forge_hooks_dir == HOME / "db" / "forge" / "forge-hooks"


def test_the_module_puts_the_shared_stores_on_postgresql_when_given_a_url(tmp_path: Path) -> None:
    (tmp_path / HIVE_TOML).write_text(module_hive_toml())
    assert load_hive_config(tmp_path).storage.url is None  # sqlite by default
    url = "postgresql://hive@db.internal/hive"
    (tmp_path / HIVE_TOML).write_text(module_hive_toml(cfg=MODULE_DEFAULTS.replace("url = null;", f'url = "{url}";')))
    config = load_hive_config(tmp_path)
    assert config.storage.url == url
    assert config.db_path("lifecycle") == tmp_path.resolve() / "state" / "lifecycle.sqlite"  # its host's own


def test_the_module_passes_a_servers_tls_certificate_and_key_on_to_hive_toml(tmp_path: Path) -> None:
    (tmp_path / HIVE_TOML).write_text(module_hive_toml())
    assert load_hive_config(tmp_path).listen("broker").tls_cert is None  # plain, on loopback, by default
    cert, key = '"/etc/hyperhive/hive.crt"', '"/run/secrets/hive.key"'
    listen = (
        f"({MODULE_DEFAULTS}).listen // {{ "
        f'broker = {{ host = "hive.example.com"; port = 7801; socket = null; tlsCert = {cert}; tlsKey = {key}; }}; '
        f'forge = {{ host = "hive.example.com"; port = 7806; socket = null; tlsCert = {cert}; tlsKey = null; }}; }}'
    )
    (tmp_path / HIVE_TOML).write_text(module_hive_toml(cfg=f"({MODULE_DEFAULTS}) // {{ listen = {listen}; }}"))
    config = load_hive_config(tmp_path)
    broker = config.listen("broker")
    assert (broker.host, broker.tls_cert, broker.tls_key) == (
        "hive.example.com", Path("/etc/hyperhive/hive.crt"), Path("/run/secrets/hive.key"))  # fmt: skip
    forge = config.listen("forge")  # served on another host: only the certificate to trust
    assert (forge.tls_cert, forge.tls_key) == (Path("/etc/hyperhive/hive.crt"), None)
    # An unprivileged server's unit reads the root-only key as the systemd credential `hive serve` looks for.
    assert f'"{TLS_KEY_CREDENTIAL}:${{cfg.listen.${{name}}.tlsKey}}"' in (NIX / "module.nix").read_text()


def test_the_module_describes_this_host_in_host(tmp_path: Path) -> None:
    text = module_hive_toml()
    (tmp_path / HIVE_TOML).write_text(text)
    assert "[host]" not in text and load_hive_config(tmp_path).host == HostSettings()  # hyperhive's defaults
    host = (
        '{ name = "gpu1"; lifecycleUrl = "https://gpu1.example.com:7802/mcp"; labels = [ "gpu" "big-ram" ]; '
        "capacity = 20; heartbeatSeconds = 2.5; downAfterSeconds = 10; }"
    )
    url = "postgresql://hive@db.internal/hive"
    cfg = f'({MODULE_DEFAULTS}) // {{ host = {host}; storage = {{ url = "{url}"; passFile = null; }}; }}'
    (tmp_path / HIVE_TOML).write_text(module_hive_toml(cfg=cfg))
    assert load_hive_config(tmp_path).host == HostSettings(
        name="gpu1", lifecycle_url="https://gpu1.example.com:7802/mcp", labels=["gpu", "big-ram"], capacity=20,
        heartbeat_seconds=2.5, down_after_seconds=10,
    )  # fmt: skip
    # What the loader refuses reaches the operator as its error (the module's types check the rest).
    too_fast = cfg.replace("downAfterSeconds = 10;", "downAfterSeconds = 4;")
    (tmp_path / HIVE_TOML).write_text(module_hive_toml(cfg=too_fast))
    with pytest.raises(ConfigError, match=r"down_after_seconds \(4\) must be at least twice heartbeat_seconds"):
        load_hive_config(tmp_path)
    # module.nix declares each option settings.nix reads (no nixpkgs here to evaluate the module itself).
    declared = re.search(r"\n    host = \{\n(.*?)\n    \};\n", (NIX / "module.nix").read_text(), re.S)
    assert declared, "module.nix lost its services.hyperhive.host options"
    assert re.findall(r"^      (\w+) = mkOption", declared.group(1), re.M) == list(HOST_OPTIONS)


def test_the_module_points_the_lifecycle_server_at_the_environment_file(tmp_path: Path) -> None:
    text = evaluate(
        "import ./hive-toml.nix (import ./settings.nix { nixpkgs = /nix/store/1111-nixpkgs-source; "
        f'cfg = {MODULE_DEFAULTS} // {{ environmentFile = "/run/agenix/hive.env"; }}; }})'
    )
    assert isinstance(text, str)
    (tmp_path / HIVE_TOML).write_text(text)
    assert load_hive_config(tmp_path).harness.env_file == Path("/run/agenix/hive.env")


def test_toml_values_survive_the_nix_writer() -> None:
    text = evaluate(
        'import ./hive-toml.nix { a = "quote \\" back\\\\slash\\n tab\\t"; b = 1.5; c = [ "x" "y" ]; d = true; '
        'e = null; "odd key" = { f = -3; }; g = { h = { i = "j"; }; }; }'
    )
    assert isinstance(text, str)
    assert tomllib.loads(text) == {
        "a": 'quote " back\\slash\n tab\t',
        "b": 1.5,
        "c": ["x", "y"],
        "d": True,
        "odd key": {"f": -3},
        "g": {"h": {"i": "j"}},
    }


def test_servers_nix_says_what_the_server_registry_says() -> None:
    """nix/servers.nix is written by hand; the registry is the truth. Update servers.nix to match."""
    assert evaluate("import ./servers.nix") == {
        "all": list(SERVER_NAMES),
        "unprivileged": [spec.name for spec in REGISTRY if not spec.root],
        "handedToken": [spec.name for spec in callers() if not spec.issues_tokens],
        "sharedStore": [name for name in SERVER_NAMES if name in SHARED_STORES],
        "ports": {spec.name: spec.port for spec in REGISTRY},
    }


# -------------------------------------------------------------------------------------- the package


def test_the_package_pins_the_versions_pyproject_pins() -> None:
    pins = dict(re.findall(r'^\s*([A-Za-z0-9_-]+) = \{ version = "([^"]+)";', (NIX / "package.nix").read_text(), re.M))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    exact = dict(
        match.groups() for dep in project["dependencies"] if (match := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", dep))
    )
    assert exact, "pyproject.toml pins nothing exactly?"
    assert {name: pins.get(name) for name in exact} == exact
    assert project["scripts"]["hive-harness"]  # what agent containers run (SandboxBackend.harness_command)


# ------------------------------------------------------------------- the container's harness unit


def sandbox_exec(*args: str) -> subprocess.CompletedProcess[str]:
    hive = Path(sys.executable).with_name("hive")
    return subprocess.run([str(hive), "sandbox-exec", *args], capture_output=True, text=True, timeout=60)


def test_sandbox_exec_becomes_the_spec_command_in_its_cwd_with_its_env(tmp_path: Path) -> None:
    """What nix/agent-base.nix's harness unit runs on the sandbox.json the nixos backend writes."""
    state = tmp_path / "state"
    state.mkdir()
    spec = make_spec(tmp_path)
    command = ["sh", "-c", 'echo "$PWD|$HIVE_AGENT|$EDITOR|$SHARED|${HOME:-no home}"; exit 7']
    spec_file = tmp_path / "sandbox.json"
    spec_file.write_text(sandbox_json(replace(spec, command=command, state_dir=state)))
    base_env = tmp_path / "env.json"  # agent.nix's hyperhive.agent.env; the spec's own env wins
    base_env.write_text(json.dumps({"EDITOR": "from-agent-nix", "SHARED": "base", "HIVE_AGENT": "not me"}))

    result = sandbox_exec("--base-env", str(base_env), str(spec_file))

    assert result.returncode == 7, result.stderr  # its exit status is the unit's, and so the container's
    assert result.stdout.strip() == f"{state}|alice|from-agent-nix|spec|no home"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"command": [], "env": {}, "cwd": "/"}, "command must be a non-empty list"),
        ({"command": ["true"], "env": {"A": 1}, "cwd": "/"}, "the environment must map names to strings"),
        ({"command": ["true"], "env": {}, "cwd": "relative"}, "cwd must be an absolute path"),
        ({"command": ["no-such-program-here"], "env": {"PATH": "/nonexistent"}, "cwd": "/"}, "cannot run"),
        ([], "must hold a JSON object"),
    ],
)
def test_sandbox_exec_says_what_is_wrong_with_a_spec(spec: object, message: str, tmp_path: Path) -> None:
    spec_file = tmp_path / "sandbox.json"
    spec_file.write_text(json.dumps(spec))
    result = sandbox_exec(str(spec_file))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def make_spec(root: Path) -> SandboxSpec:
    return SandboxSpec(
        name="alice",
        role="agent",
        command=["hive-harness", "--agent", "alice"],
        env={"PATH": "/usr/bin:/bin", "HIVE_AGENT": "alice", "SHARED": "spec"},
        uid=None,
        state_dir=root / "state",
        harness_dir=root / "harness",
        credentials_dir=root / "credentials",
        applied_dir=root / "applied",
        log_path=root / "log",
    )


def test_the_package_depends_on_every_dependency_pyproject_lists() -> None:
    text = (NIX / "package.nix").read_text()
    listed = re.search(r"\n  dependencies = with python\.pkgs; \[\n(.*?)\n  \];", text, re.S)
    assert listed, "package.nix lost its `dependencies = with python.pkgs; [ ... ];` list"
    in_nix = {line.strip() for line in listed.group(1).splitlines()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[=<>!~\[; ]", dep, maxsplit=1)[0].lower().replace("_", "-") for dep in project["dependencies"]}
    assert wanted == in_nix
