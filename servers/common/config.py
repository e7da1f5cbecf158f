"""Hive settings: `hive.toml`, its models, loading and the template `hive init` writes.

Agents' settings are agent_config.py's; what both files share (ConfigError, strict models, reading
TOML) is config_parsing.py's. About 400 lines for one concept: a fifth of them is the template,
which documents every setting as a hive's owner reads it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from hyperhive.servers.common.config_parsing import (
    ENV_NAME_RE,
    STRICT,
    ConfigError,
    check_env_names,
    read_toml,
    validated,
)
from hyperhive.servers.common.registry import REGISTRY, SERVER_NAMES, server_spec

HIVE_TOML: Final = "hive.toml"


class _Strict(BaseModel):
    model_config = STRICT


# A DNS name: dot-separated labels of letters, digits and inner hyphens (RFC 1123).
_LABEL: Final = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME_RE: Final = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine's loopback ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME_RE.match(host):
            raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
    return host


class FailoverAddress(_Strict):
    """Another process of a server, as its clients reach it: an entry of `[servers.broker] failover`.
    The client-side fields of Listen (where to connect, which certificate to trust); the process
    itself is started with `hive serve broker --port N` on its own host, which holds its key."""

    # In hive.toml, unset: [servers.broker]'s host (Listen fills it in), where `hive serve broker
    # --port N` on that machine listens; and then its tls_cert too, which that process serves.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)]  # a fixed TCP port: clients must know it beforehand
    tls_cert: Path | None = None  # relative paths are under the hive home

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        return _check_host(host)

    @model_validator(mode="after")
    def _tls_beyond_loopback(self) -> Self:
        if self.tls_cert is None and not is_loopback(self.host):  # tokens travel encrypted off this machine
            raise ValueError(
                f"host {self.host!r} is not a loopback address, and a broker beyond loopback is reached only "
                "over TLS: set tls_cert to the certificate it serves (see docs/scaling.md)"
            )
        return self

    def same_place(self, listen: Listen) -> bool:
        return (self.host, self.port) == (listen.host, listen.port)


class Listen(_Strict):
    """Where a server listens: TCP (loopback, or beyond it over TLS), a unix socket, or both.

    `host` is where clients connect as much as what the server binds: beyond loopback, the name or
    address its certificate names, the same in every host's hive.toml (docs/scaling.md)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] | None = None  # 0 picks a free port
    socket: Path | None = None  # relative paths are under the hive home (it stays plain HTTP: 0600, local)
    # TLS on the TCP port: PEM files, relative paths under the hive home. A host beyond loopback
    # needs it. tls_cert without tls_key is how a host that does not run this server says where it
    # is and what to trust: clients verify the server against exactly this certificate.
    tls_cert: Path | None = None
    tls_key: Path | None = None  # readable by its owner only, or the server refuses to start
    # The broker only: its other processes on the hive's database, in the order clients try them
    # when this one does not answer (a connection refused or unreachable: nothing was sent). It
    # says where clients go, not where this process listens; [storage] url is required.
    failover: list[FailoverAddress] = []

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        return _check_host(host)

    @model_validator(mode="before")
    @classmethod
    def _failover_defaults_to_this_host(cls, data: object) -> object:
        """A failover entry without a host is another process on this server's host, and one on this
        server's host serves its certificate: they default to this table's host and tls_cert."""
        if not isinstance(data, dict) or not isinstance(data.get("failover"), list):
            return data
        host = data.get("host", "127.0.0.1")
        entries: list[object] = []
        for entry in data["failover"]:
            if isinstance(entry, dict):
                entry = {"host": host, **entry}
                if entry["host"] == host and "tls_cert" not in entry and data.get("tls_cert") is not None:
                    entry["tls_cert"] = data["tls_cert"]
            entries.append(entry)
        return {**data, "failover": entries}

    @model_validator(mode="after")
    def _somewhere(self) -> Self:
        if self.port is None and self.socket is None:
            raise ValueError("set a port, a socket, or both")
        return self

    @model_validator(mode="after")
    def _tls_beyond_loopback(self) -> Self:
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key without tls_cert: set tls_cert to the certificate the key belongs to")
        # Tokens are bearer credentials: off this machine they travel encrypted, or not at all.
        if self.tls_cert is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not a loopback address, and a hyperhive server listens beyond "
                "loopback only over TLS: set tls_cert and tls_key (see docs/scaling.md)"
            )
        return self


class ReminderLimits(_Strict):
    max_pending: Annotated[int, Field(ge=1, le=100_000)] = 100
    min_delay_seconds: Annotated[float, Field(ge=0, le=86_400)] = 5.0
    max_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 20
    max_horizon_days: Annotated[float, Field(gt=0, le=3650)] = 365.0


class BrokerSettings(_Strict):
    max_body_bytes: Annotated[int, Field(ge=1, le=16 * 1024 * 1024)] = 64 * 1024
    inbox_cap: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    lease_seconds: Annotated[float, Field(ge=1, le=86_400)] = 120.0
    retention_days: Annotated[float, Field(gt=0, le=36_500)] = 30.0
    retention_interval_seconds: Annotated[float, Field(ge=1, le=86_400)] = 3600.0
    reminders: ReminderLimits = ReminderLimits()


class ServingSettings(_Strict):
    """Connection limits of every server, so one client (a hostile sandbox) cannot take it offline."""

    idle_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 15  # keep-alive between two requests
    header_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0  # request line and headers in full
    # A peer is a uid (unix socket, loopback TCP) or an address; more connections are closed at once.
    max_connections_per_peer: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    max_connections: Annotated[int, Field(ge=16, le=1_000_000)] = 4096  # in all, and below the fd limit


def default_listens() -> dict[str, Listen]:
    """[servers]: each server of the registry on its default port; a table in hive.toml replaces its entry."""
    return {spec.name: Listen(port=spec.port) for spec in REGISTRY}


def _known_servers(servers: object) -> object:
    if isinstance(servers, dict):
        unknown = [name for name in servers if name not in SERVER_NAMES]
        if unknown:
            raise ValueError(f"unknown server {unknown[0]!r}; the servers are {', '.join(SERVER_NAMES)}")
    return servers


class QuestionSettings(_Strict):
    default_ttl_seconds: Annotated[float, Field(ge=1, le=30 * 86_400)] = 86_400.0  # when ttl_seconds is not given
    max_ttl_seconds: Annotated[float, Field(ge=1, le=365 * 86_400)] = 7 * 86_400.0
    max_question_bytes: Annotated[int, Field(ge=16, le=1024 * 1024)] = 8192
    max_options: Annotated[int, Field(ge=2, le=100)] = 20
    max_pending_per_asker: Annotated[int, Field(ge=1, le=10_000)] = 50


class DashboardSettings(_Strict):
    """The operator dashboard (NiceGUI); loopback only, like the servers."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 7805
    user: str = "nobody"  # started as root, it drops to this user ("" keeps root)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if not is_loopback(host):
            raise ValueError(f"{host!r} is not a loopback address; the dashboard listens on 127.0.0.1 or ::1")
        return host


class ApprovalSettings(_Strict):
    max_pending: Annotated[int, Field(ge=1, le=10_000)] = 100  # requests waiting for the operator, in all


class NixosSettings(_Strict):
    flake: str = "hyperhive"  # the flake whose agent base each agent's flake extends (a registry name or URL)
    nixpkgs: str | None = None  # the nixpkgs the agents' flakes make hyperhive's follow (the NixOS module: the host's)
    conf_dir: Path = Path("/etc/nixos-containers")  # where nixos-container keeps <name>.conf


class LifecycleSettings(_Strict):
    backend: Literal["auto", "bwrap", "nixos-container"] = "auto"  # auto: nixos-container under systemd
    uid_base: Annotated[int, Field(ge=1000, le=2**31 - 70_000)] = 200_000  # where this hive's uid block starts
    stop_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    restart_backoff_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0  # doubles with each crash
    log_max_bytes: Annotated[int, Field(ge=4096)] = 10 * 1024 * 1024
    log_keep: Annotated[int, Field(ge=1, le=100)] = 3
    rebuild_stale_on_start: bool = True
    # Host loopback ports (127.0.0.1) that sandboxes with a network of their own reach besides the
    # hive's servers ([sandbox] network = "outbound" or "hive-only"), e.g. a local model API proxy.
    forward_ports: list[Annotated[int, Field(ge=1, le=65535)]] = []
    # What a sandbox runs when agent.toml has no [sandbox] command. Unset: the harness.
    default_command: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    # move_agent: how long each of an agent's dirs may take to copy to another host.
    move_timeout_seconds: Annotated[float, Field(ge=1, le=86_400)] = 900.0
    nixos: NixosSettings = NixosSettings()


_SIZE_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$", re.IGNORECASE)
_SIZE_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: object) -> int:
    """Bytes from a size: "4G", "512M", "1.5G", "64KiB" (binary units: 1K = 1024) or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f'{value!r} is not a size; write it like "4G", "512M" or a number of bytes')
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _SIZE_RE.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f'{value!r} is not a size; write it like "4G", "512M" or a number of bytes')
        number, unit = float(match[1]), match[2].upper()
    return int(number * _SIZE_UNITS[unit])


def _size_between(minimum: str, maximum: str = "1024T") -> Callable[[object], int]:
    """A validator: a size ("4G"), in bytes, between `minimum` and `maximum`."""
    low, high = parse_size(minimum), parse_size(maximum)

    def check(value: object) -> int:
        size = parse_size(value)
        if not low <= size <= high:
            raise ValueError(f"{value!r} is out of range: between {minimum} and {maximum}")
        return size

    return check


MemorySize = Annotated[int, BeforeValidator(_size_between("16M"))]
TmpSize = Annotated[int, BeforeValidator(_size_between("1M"))]
StateSize = Annotated[int, BeforeValidator(_size_between("1M"))]
PidsMax = Annotated[int, Field(ge=16, le=4_194_304)]
CpuWeight = Annotated[int, Field(ge=1, le=10_000)]


class SandboxDefaults(_Strict):
    """Every agent's sandbox bounds (hive.toml [sandbox]); an agent.toml [sandbox] overrides them."""

    memory_max: MemorySize = 4 * 1024**3  # RAM of everything in the sandbox; past it, the OOM killer
    pids_max: PidsMax = 512  # processes and threads at once
    cpu_weight: CpuWeight = 100  # its share of CPU when the host is busy (100 is even, 1..10000)
    tmp_max: TmpSize = 1024**3  # its /tmp (RAM-backed)
    state_max: StateSize = 10 * 1024**3  # its state dir: a warning past it, and no start
    state_check_seconds: Annotated[float, Field(ge=1, le=86_400)] = 300.0  # how often running agents' are measured


class HarnessSettings(_Strict):
    """How every agent's harness drives Claude Code (agent.toml's env adds to and overrides `env`)."""

    # Given to every agent's Claude Code, e.g. ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL.
    env: dict[str, str] = {}
    # More of it from a file of NAME=value lines, read at each agent start: secrets kept out of
    # hive.toml (the NixOS module's environmentFile). It wins over `env`; agent.toml's [env] over both.
    env_file: Path | None = None
    batch_max: Annotated[int, Field(ge=1, le=50)] = 10  # messages one wake takes in at most
    notes_max_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 32 * 1024  # then notes.md is compacted
    # A session whose context grew past this many tokens is replaced by a fresh one before the next wake.
    context_reset_tokens: Annotated[int, Field(ge=1000, le=10_000_000)] = 150_000
    # An agent's Claude Code is closed after this long without a wake, and its harness becomes a small
    # waiter (they cost memory); the next wake resumes the same session.
    idle_close_seconds: Annotated[float, Field(ge=1, le=7 * 86400)] = 300.0
    # How long the lifecycle server keeps the turn stats the harnesses report (agent_stats).
    stats_retention_days: Annotated[int, Field(ge=1, le=3650)] = 90

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env_names(env)


# A budget in US dollars: positive and finite (a cent at least), up to a million.
Usd = Annotated[float, Field(ge=0.01, le=1_000_000, allow_inf_nan=False)]


class ForgeSettings(_Strict):
    """hive.toml [forge]: the git forge's limits."""

    max_repos_per_agent: Annotated[int, Field(ge=0, le=100_000)] = 20  # repos one agent may own
    max_repo_size: Annotated[int, BeforeValidator(_size_between("1M"))] = 200 * 1024**2  # a push past it is refused
    request_timeout_seconds: Annotated[float, Field(ge=5, le=86_400)] = 600.0  # one git HTTP request, in all
    max_file_bytes: Annotated[int, Field(ge=1024, le=64 * 1024**2)] = 1024**2  # read_file returns at most this
    max_diff_bytes: Annotated[int, Field(ge=1024, le=64 * 1024**2)] = 512 * 1024  # diff returns at most this
    dir: Path = Path("forge")  # the bare repos; relative paths are under the home


class HiveBudget(_Strict):
    """hive.toml [budget]: what the whole hive may spend a day (UTC), from the cost Claude Code reports.
    Past it every agent pauses until the day ends or the budget is raised; unset: no hive-wide limit."""

    usd_per_day: Usd | None = None


class TokenSettings(_Strict):
    ttl_seconds: Annotated[int, Field(ge=60, le=10 * 365 * 86_400)] = 30 * 86_400


class StorageSettings(_Strict):
    # NORMAL survives a crash of the process (WAL); FULL also survives power loss, at an fsync per commit.
    synchronous: Literal["normal", "full"] = "normal"
    # A server's database directory when not <home>/state; relative paths are under the home. The
    # NixOS module gives each unprivileged server its own, so none can touch the lifecycle's.
    dirs: Annotated[dict[str, Path], BeforeValidator(_known_servers)] = {}
    # A PostgreSQL database for the stores the hive shares across processes and hosts (SHARED_STORES:
    # each server a schema of its own in it); unset, every store is a sqlite file. The lifecycle
    # server's store stays sqlite: it belongs to its host. A password is better kept out of this file:
    # libpq's passfile (`?passfile=/path`) or PGPASSFILE.
    url: str | None = None
    pool_size: Annotated[int, Field(ge=1, le=200)] = 10  # connections each server process may hold

    @field_validator("url")
    @classmethod
    def _postgresql_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError('a PostgreSQL url starts with "postgresql://" (postgresql://user@host/db)')
        return url


# The servers whose store moves to [storage] url: what one hive shares across hosts. The lifecycle
# server's is its host's own (its sandboxes, its uids).
SHARED_STORES: Final = frozenset({"broker", "approvals", "operator"})

HOST_NAME_PATTERN: Final = r"^[a-z][a-z0-9-]{0,30}$"
HostLabel = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$")]


class HostSettings(_Strict):
    """This host, in a hive that spans several (`[storage] url` set: hosts.py). Each host runs a
    lifecycle server of its own; it registers itself with these settings and keeps a heartbeat."""

    name: Annotated[str, Field(pattern=HOST_NAME_PATTERN)] = "local"
    # Where the other hosts' lifecycle servers reach this one (relayed calls, merged lists); unset,
    # [servers.lifecycle]'s own address, which is loopback: one host only.
    lifecycle_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/.*)?$")] | None = None
    labels: list[HostLabel] = []  # what agents may ask for in agent.toml's [placement] labels
    capacity: Annotated[int, Field(ge=0, le=100_000)] = 100  # agents placed here at most (0: none new)
    heartbeat_seconds: Annotated[float, Field(ge=0.2, le=600)] = 5.0
    # A host whose heartbeat is this late is down: its agents show as unreachable, the manager hears.
    down_after_seconds: Annotated[float, Field(ge=0.5, le=86_400)] = 15.0

    @model_validator(mode="after")
    def _heard_before_down(self) -> Self:
        if self.down_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                f"down_after_seconds ({self.down_after_seconds:g}) must be at least twice heartbeat_seconds "
                f"({self.heartbeat_seconds:g}), or one late heartbeat marks a live host down"
            )
        return self


class HiveConfig(_Strict):
    """Everything in hive.toml, plus `home`: the directory the file lives in."""

    home: Path
    # Where each server listens, one entry per server of the registry (registry.py).
    servers: Annotated[dict[str, Listen], BeforeValidator(_known_servers)] = Field(default_factory=default_listens)
    serving: ServingSettings = ServingSettings()
    broker: BrokerSettings = BrokerSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    questions: QuestionSettings = QuestionSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    harness: HarnessSettings = HarnessSettings()
    dashboard: DashboardSettings = DashboardSettings()
    tokens: TokenSettings = TokenSettings()
    storage: StorageSettings = StorageSettings()
    host: HostSettings = HostSettings()
    sandbox: SandboxDefaults = SandboxDefaults()
    budget: HiveBudget = HiveBudget()
    forge: ForgeSettings = ForgeSettings()

    @property
    def instances_dir(self) -> Path:
        return self.home / "instances"

    @property
    def tokens_dir(self) -> Path:
        """Tokens the hive hands its own processes: the services' and the dashboard's (0700)."""
        return self.home / "tokens"

    @property
    def applied_dir(self) -> Path:
        return self.home / "applied"

    @property
    def agents_dir(self) -> Path:
        return self.home / "agents"

    @property
    def dashboard_dir(self) -> Path:
        """The dashboard's login sessions; owned by the user it runs as."""
        return self.home / "dashboard"

    @property
    def forge_dir(self) -> Path:
        """The forge's bare repos (<name>.git), owned by the forge server alone."""
        return self.home / self.forge.dir

    @property
    def forge_hooks_dir(self) -> Path:
        """The hooks every forge repo runs, beside the repos' dir (so whatever may write one may write both)."""
        return self.forge_dir.parent / "forge-hooks"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def credentials_dir(self) -> Path:
        return self.home / "credentials"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @field_validator("servers")
    @classmethod
    def _every_server(cls, servers: dict[str, Listen]) -> dict[str, Listen]:
        """Servers hive.toml leaves out listen on their defaults, in the registry's order."""
        defaults = default_listens()
        return {name: servers.get(name, defaults[name]) for name in SERVER_NAMES}

    @model_validator(mode="after")
    def _failover_shares_the_store(self) -> Self:
        # Raised on the whole model (it needs [storage] too), so each reason names its field itself.
        for name, listen in self.servers.items():
            if not listen.failover:
                continue
            where = f"servers.{name}.failover"
            if name != "broker":
                raise ValueError(f"{where}: only the broker runs as several processes of one hive; remove it")
            # Brokers share messages, leases and reminders only through PostgreSQL: two brokers on
            # sqlite files would be two hives, and a client failing over would find another inbox.
            if self.storage.url is None:
                raise ValueError(
                    f"{where}: names other broker processes, but this hive's stores are sqlite files, which "
                    "two brokers do not share: set [storage] url to the hive's PostgreSQL database "
                    '(docs/scaling.md, "Several broker processes"), or remove failover'
                )
            seen: set[tuple[str, int]] = set()
            for address in listen.failover:
                place = (address.host, address.port)
                if address.same_place(listen):
                    raise ValueError(f"{where}: {address.host}:{address.port} is [servers.{name}]'s own address")
                if place in seen:
                    raise ValueError(f"{where}: {address.host}:{address.port} is named twice")
                seen.add(place)
        return self

    def db_path(self, server: str) -> Path:
        directory = self.storage.dirs.get(server_spec(server).name, Path("state"))
        return self.home / directory / f"{server}.sqlite"

    def listen(self, server: str) -> Listen:
        """Where `server` listens, its relative paths (socket, TLS files) made absolute under the home."""
        listen = self.servers[server_spec(server).name]
        paths = {"socket": listen.socket, "tls_cert": listen.tls_cert, "tls_key": listen.tls_key}
        under_home: dict[str, object] = {
            field: self.home / path for field, path in paths.items() if path is not None and not path.is_absolute()
        }
        if any(a.tls_cert is not None and not a.tls_cert.is_absolute() for a in listen.failover):
            under_home["failover"] = [
                a.model_copy(update={"tls_cert": self.home / a.tls_cert}) if a.tls_cert is not None else a
                for a in listen.failover
            ]
        return listen.model_copy(update=under_home) if under_home else listen


def load_hive_config(home: Path) -> HiveConfig:
    path = home / HIVE_TOML
    if not path.is_file():
        raise ConfigError(path, [("", "not found; run `hive init` to create the hive home")])
    data = read_toml(path)
    data["home"] = home.resolve()
    return validated(HiveConfig, data, path)


def _servers_template() -> str:
    """hive.toml's [servers.*] tables: every server of the registry on its default port."""
    tables = []
    for index, spec in enumerate(REGISTRY):
        table = f'[servers.{spec.name}]\nhost = "127.0.0.1"\nport = {spec.port}\n'
        if index == 0:
            table += f'# socket = "run/{spec.name}.sock"   # a unix socket too (created 0600 in a 0700 directory)\n'
            # Beyond loopback (host = this host's name or address): TLS, the key 0600 (docs/scaling.md).
            table += '# tls_cert = "tls/hive.crt"    # TLS on the port; other hosts set it alone, to trust it\n'
            table += '# tls_key = "tls/hive.key"     # the host that runs the server: its key (chmod 600)\n'
        if spec.name == "broker":  # several broker processes share one PostgreSQL (docs/scaling.md)
            table += "# failover = [{ port = 7811 }]  # its other processes ([storage] url): clients move on to them\n"
        tables.append(table)
    return "\n".join(tables)


HIVE_TOML_TEMPLATE: Final = (
    "# hyperhive settings. Relative paths are under this file's directory (the hive home).\n\n"
    + _servers_template()
    + """
[serving]                       # every server's connections (a peer: a uid, or an address)
idle_timeout_seconds = 15       # a kept-alive connection idle this long is closed
header_timeout_seconds = 10     # a request's line and headers must arrive within this
max_connections_per_peer = 64   # more from one peer are closed at once (logged once a minute)
max_connections = 4096          # in all (at most the open-files limit, which the server raises)

[broker]
max_body_bytes = 65536          # largest message body, in bytes of UTF-8
inbox_cap = 10000               # undelivered messages per inbox before sends are refused
lease_seconds = 120             # recv(ack=false): unacked messages come back after this
retention_days = 30             # delivered messages older than this are deleted

[broker.reminders]
max_pending = 100               # pending reminders per agent
min_delay_seconds = 5
max_per_minute = 20             # reminders an agent may create per minute
max_horizon_days = 365

[lifecycle]
backend = "auto"                # "bwrap", "nixos-container", or auto: nixos-container under systemd
uid_base = 200000               # as root: this hive's block of agent uids starts here
stop_timeout_seconds = 10       # SIGTERM, then SIGKILL after this long
restart_backoff_seconds = 1     # after a crash; doubles each time (agent.toml [sandbox] max_restarts)
log_max_bytes = 10485760        # each agent's log is rotated at this size
log_keep = 3
rebuild_stale_on_start = true   # rebuild agents built by another hyperhive version
# forward_ports = [4000]        # host loopback ports sandboxes reach besides the hive's (a local API proxy)

[questions]
default_ttl_seconds = 86400     # a question nobody answers in time resolves as "[expired]"
max_ttl_seconds = 604800
max_question_bytes = 8192
max_options = 20
max_pending_per_asker = 50

[approvals]
max_pending = 100               # requests waiting for the operator, in all

[harness]
batch_max = 10                  # messages one wake of an agent takes in at most
notes_max_bytes = 32768         # an agent's notes.md past this size is rewritten shorter
context_reset_tokens = 150000   # a Claude Code session past this context size starts afresh
idle_close_seconds = 300        # idle this long, an agent closes Claude Code and waits in a small process
stats_retention_days = 90       # the lifecycle server keeps agents' turn stats this long

# Given to every agent's Claude Code; an agent.toml [env] adds to it and wins.
# env_file = "/run/secrets/hive.env"   # more of it from NAME=value lines, read at each agent start
[harness.env]
# ANTHROPIC_API_KEY = "sk-ant-..."      # or run `claude login` as the agent (see the README)

[dashboard]
host = "127.0.0.1"
port = 7805                     # log in with dashboard.password, or the link `hive up` prints
user = "nobody"                 # started as root, the dashboard runs as this user ("" keeps root)

[sandbox]
# Every agent's bounds (an agent.toml [sandbox] overrides them). Sizes: "4G", "512M", bytes.
# Limits need cgroups the lifecycle server may write (root); unprivileged, it runs without them.
memory_max = "4G"               # RAM of everything in the sandbox; past it, the OOM killer
pids_max = 512                  # processes and threads at once (a fork bomb stops here)
cpu_weight = 100                # its share of CPU when the host is busy (1..10000, 100 is even)
tmp_max = "1G"                  # its /tmp, which is RAM-backed
state_max = "10G"               # its state dir: a warning to the manager past it, and no start
state_check_seconds = 300       # how often the state dirs of running agents are measured

[budget]
# What the whole hive may spend a day (UTC), in US dollars, from the cost Claude Code reports per
# turn. Past it every agent pauses (messages wait) until the day ends or the budget is raised.
# Each agent's own limits are its agent.toml [budget].
# usd_per_day = 50

[forge]                         # the git forge (git over HTTP at /git/<repo>.git on its port)
max_repos_per_agent = 20        # repos one agent may own
max_repo_size = "200M"          # a push that would make a repo bigger is refused; the repo stays as it was
request_timeout_seconds = 600   # a clone, fetch or push taking longer is cut off
# dir = "forge"                 # where the bare repos live (under the home unless absolute)

[tokens]
ttl_seconds = 2592000           # lifetime of tokens minted by `hive token` and given to agents (30 days)

[storage]
synchronous = "normal"          # "full" also survives power loss, at an fsync per commit
# dirs = { broker = "/var/lib/hyperhive/db/broker" }   # a server's database elsewhere than state/
# A hive across hosts (docs/scaling.md): the broker's, approvals' and operator's stores in one
# PostgreSQL database, a schema each; sqlite stays the default.
# url = "postgresql://hive@db.example/hive?passfile=/etc/hyperhive/pgpass"
# pool_size = 10                # connections each server process may hold
"""
)


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines (systemd EnvironmentFile style: # comments, blank lines, optional quotes)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(path, [("", f"cannot read it: {e.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, [("", "is not UTF-8 text")]) from None
    env: dict[str, str] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not ENV_NAME_RE.match(name):
            problems.append((f"line {number}", "expected NAME=value"))
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[name] = value
    if problems:
        raise ConfigError(path, problems)
    return env
