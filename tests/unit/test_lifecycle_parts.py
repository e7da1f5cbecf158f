"""The lifecycle server's parts on their own: log files, config repos, the bwrap command line,
choosing a backend, uid allocation."""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time
from pathlib import Path

import pytest

from hyperhive.servers.common.clock import ManualClock, iso
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.db import Database
from hyperhive.servers.common.errors import Refused
from hyperhive.servers.home import init_home
from hyperhive.servers.lifecycle import logfiles, repos, startup, turnstats
from hyperhive.servers.lifecycle.backends import choose_backend
from hyperhive.servers.lifecycle.backends.base import BackendError, SandboxSpec
from hyperhive.servers.lifecycle.backends.bwrap import BwrapBackend
from hyperhive.servers.lifecycle.models import TurnRecord
from hyperhive.servers.lifecycle.paths import AgentPaths
from hyperhive.servers.lifecycle.sandbox_network import Forward
from hyperhive.servers.lifecycle.sandbox_setup import token_dir
from hyperhive.servers.lifecycle.spending import allowance_key, day_start, week_start
from hyperhive.servers.lifecycle.store import MIGRATIONS, AgentRow, LifecycleStore
from hyperhive.servers.lifecycle.turnstats import TurnStats

# --------------------------------------------------------------------------------------- log files


def test_tail_reads_back_across_rotation_and_filters_by_time(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    logfiles.mark(log, 1000.0, "starting sandbox")
    with log.open("a") as f:
        f.write("".join(f"old {i}\n" for i in range(5)))
    assert logfiles.rotate_if_large(log, max_bytes=10, keep=2) is True
    assert log.read_text() == "" and log.with_name("a.log.1").exists()
    logfiles.mark(log, 2000.0, "starting sandbox again")
    with log.open("a") as f:
        f.write("new 0\nnew 1\n")
    assert logfiles.tail(log, 2) == ["new 0", "new 1"]
    again = f"[{iso(2000.0)}] hyperhive: starting sandbox again"
    assert logfiles.tail(log, 4) == ["old 4", again, "new 0", "new 1"]  # the rest from the rotated file
    everything = logfiles.tail(log, 100)
    assert everything[0].endswith("hyperhive: starting sandbox") and everything[-1] == "new 1" and len(everything) == 9
    # Lines without a timestamp belong to the time of the stamped line before them.
    assert logfiles.tail(log, 100, since=1500.0) == [again, "new 0", "new 1"]
    assert logfiles.tail(log, 100, since=3000.0) == []


def test_rotation_keeps_a_bounded_number_of_old_logs(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    for round_ in range(5):
        log.write_text(f"round {round_}\n" * 10)
        logfiles.rotate_if_large(log, max_bytes=5, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "a.log.1", "a.log.2", "a.log.3"]
    assert log.with_name("a.log.1").read_text().startswith("round 4")
    assert logfiles.rotate_if_large(tmp_path / "missing.log", 5, 3) is False
    logfiles.remove_all(log)
    assert list(tmp_path.iterdir()) == []


def test_a_long_last_line_and_an_empty_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("short\n" + "x" * 200_000 + "\n")
    [long] = logfiles.tail(log, 1)
    assert long == "x" * logfiles.LINE_MAX + f" … [{200_000 - logfiles.LINE_MAX:,} more bytes of this line cut]"
    assert logfiles.tail(log, 2) == ["short", long]
    assert logfiles.tail(tmp_path / "none.log", 10) == []
    assert logfiles.one_line("a\nb\r\nc") == "a\\nb\\r\\nc"


@pytest.mark.timeout(60)  # today's code took minutes here; fail, do not hang
def test_logs_read_a_bounded_amount_from_the_end_of_a_50_mb_log_with_a_20_mb_line(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    with log.open("wb") as f:
        short = b"".join(b"early %07d\n" % i for i in range(100_000))  # 1.4 MB a round
        while f.tell() < 30 * 1024 * 1024:
            f.write(short)
        f.write(b"L" * (20 * 1024 * 1024) + b"\n")  # one 20 MB line, written by a hostile agent
        f.write(b"".join(b"late %02d\n" % i for i in range(50)))
    assert log.stat().st_size > 50 * 1024 * 1024
    started = time.monotonic()
    lines = logfiles.tail(log, 100)
    elapsed = time.monotonic() - started
    assert lines[-50:] == [f"late {i:02d}" for i in range(50)]
    assert sum(len(line) for line in lines) <= logfiles.RETURN_MAX
    marker, long = lines[:-50]  # the long line's start and the lines before it are past the scan budget
    assert marker == "[… older lines left out: only the last 16 MiB are read back]"
    assert long.startswith("[… the start of this line was not read] LLLL") and len(long) <= logfiles.LINE_MAX + 200
    assert elapsed < 2.0, f"{elapsed:.1f} s"


@pytest.mark.timeout(60)
def test_logs_of_a_million_short_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"".join(b"[%s] line %07d\n" % (iso(1000.0 + i).encode(), i) for i in range(1_000_000)))
    started = time.monotonic()
    last = logfiles.tail(log, 100)
    most = logfiles.tail(log, 5000)
    recent = logfiles.tail(log, 5000, since=1000.0 + 999_990)
    elapsed = time.monotonic() - started
    assert last == [f"[{iso(1000.0 + i)}] line {i:07d}" for i in range(999_900, 1_000_000)]
    assert len(most) == 5000 and most[0].endswith("line 0995000") and most[-100:] == last
    assert len(recent) == 10 and recent[0].endswith("line 0999990")
    assert elapsed < 2.0, f"{elapsed:.1f} s"


def test_logs_cap_what_they_return(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"{i:05d} " + "y" * 1000 + "\n" for i in range(1000)))  # 1 MB of 1 KB lines
    lines = logfiles.tail(log, 1000)
    assert sum(len(line) for line in lines) <= logfiles.RETURN_MAX
    assert lines[0].startswith("[… older lines left out") and lines[-1].startswith("00999 ")
    assert 200 < len(lines) <= 262


# ------------------------------------------------------------------------------------------- repos


async def test_config_repos(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    first = await repos.init_repo(repo, {"agent.toml": 'model = "opus"\n'}, "initial")
    assert await repos.init_repo(repo, {"agent.toml": "ignored"}, "again") == first  # exists: untouched
    assert await repos.resolve_commit(repo, first[:10]) == first
    assert await repos.files_at(repo, first) == {"agent.toml": 'model = "opus"\n'}
    second = await repos.commit_files(repo, {"agent.toml": "", "agent.nix": "{ }\n"}, "with nix")
    assert await repos.files_at(repo, second) == {"agent.toml": "", "agent.nix": "{ }\n"}
    third = await repos.commit_files(repo, {"agent.toml": ""}, "without nix")
    assert not (repo / "agent.nix").exists() and await repos.files_at(repo, third) == {"agent.toml": ""}
    same = await repos.commit_files(repo, {"agent.toml": ""}, "nothing changed, still recorded")
    assert same != third
    for bad, error in [("xyz", "is not a commit sha"), ("-n", "is not a commit sha"), ("0" * 40, "there is no commit")]:
        with pytest.raises(repos.RepoError, match=error):
            await repos.resolve_commit(repo, bad)


# -------------------------------------------------------------------------------------------- bwrap


def _spec(tmp_path: Path, uid: int | None) -> SandboxSpec:
    init_home(tmp_path)
    config = load_hive_config(tmp_path)
    paths = AgentPaths.of(config, "alice")
    return SandboxSpec(
        name="alice",
        role="agent",
        command=["prog", "--flag"],
        env={"HIVE_AGENT": "alice"},
        uid=uid,
        state_dir=paths.state,
        harness_dir=paths.harness,
        credentials_dir=paths.credentials,
        applied_dir=paths.applied,
        log_path=paths.log,
    )


def test_the_bwrap_command_line(tmp_path: Path) -> None:
    spec = _spec(tmp_path, uid=200_123)
    backend = BwrapBackend(load_hive_config(tmp_path))
    backend.privileged = True
    argv = backend._argv(spec, 9, 10)
    text = " ".join(argv)
    assert "--die-with-parent" not in argv  # sandboxes outlive the server
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session", "--clearenv"):
        assert flag in argv
    assert f"--bind {spec.state_dir} {spec.state_dir}" in text
    assert f"--ro-bind {spec.credentials_dir} {spec.harness_dir}/credentials" in text
    assert f"--ro-bind {Path(sys.prefix).resolve()}" in text or f"--ro-bind {Path(sys.base_prefix).resolve()}" in text
    sources = [Path(argv[i + 1]) for i, arg in enumerate(argv) if arg in ("--bind", "--ro-bind")]
    secret = tmp_path / "secret"
    assert not any(source == secret or source in secret.parents for source in sources)  # nor the home
    assert "--info-fd 10 --json-status-fd 9" in text and "--setenv HIVE_AGENT alice" in text
    tail = argv[argv.index("--") + 1 :]
    assert tail[:2] == ["setpriv", "--reuid=200123"] and "--no-new-privs" in tail and tail[-2:] == ["prog", "--flag"]
    assert "--unshare-user" not in argv

    backend.privileged = False
    unprivileged = backend._argv(_spec(tmp_path, uid=None), 9, 10)
    assert "--unshare-user" in unprivileged and "setpriv" not in unprivileged
    backend.privileged = True
    with pytest.raises(BackendError, match="as root, every agent runs as its own uid"):
        backend._argv(_spec(tmp_path, uid=None), 9, 10)


def test_a_sandbox_has_its_own_hosts_file_only_for_servers_named_by_host_name(tmp_path: Path) -> None:
    spec = _spec(tmp_path, uid=200_123)
    backend = BwrapBackend(load_hive_config(tmp_path))
    backend.privileged = True
    by_address = [Forward("127.0.0.1", 7801, "127.0.0.1"), Forward("10.1.0.1", 7802, "10.1.0.1")]
    assert backend._argv(spec, 9, 10, forwards=by_address) == backend._argv(spec, 9, 10)  # the host's /etc/hosts
    hosts = backend.runtime / "alice.hosts"
    assert not hosts.exists()
    named = [*by_address, Forward("10.1.0.1", 7803, "hive.example.com")]
    argv = backend._argv(spec, 9, 10, forwards=named)
    at = argv.index(str(hosts))
    assert argv[at - 1 : at + 2] == ["--ro-bind", str(hosts), str(Path("/etc/hosts").resolve())]
    assert "\n10.1.0.1 hive.example.com\n" in hosts.read_text()
    hosts.unlink()
    assert str(hosts) not in backend._argv(dataclasses.replace(spec, network="host"), 9, 10, forwards=named)
    assert not hosts.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_preparing_a_sandbox_never_chowns_through_a_link_the_agent_planted(tmp_path: Path) -> None:
    spec = _spec(tmp_path, uid=200_123)
    backend = BwrapBackend(load_hive_config(tmp_path))
    backend.privileged = True
    spec.harness_dir.mkdir(parents=True)
    target = tmp_path / "root-only"  # think /etc
    target.mkdir(mode=0o700)
    (spec.harness_dir / "credentials").symlink_to(target)
    with pytest.raises(BackendError, match="credentials is not a directory"):
        backend._prepare(spec)
    assert target.stat().st_uid == 0
    (spec.harness_dir / "credentials").unlink()
    backend._prepare(spec)
    assert (spec.harness_dir / "credentials").stat().st_uid == 200_123


def test_backend_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_home(tmp_path)
    assert choose_backend(load_hive_config(tmp_path)).name == "bwrap"  # no systemd here
    (tmp_path / "hive.toml").write_text('[lifecycle]\nbackend = "nixos-container"\n')
    assert choose_backend(load_hive_config(tmp_path)).name == "nixos-container"
    (tmp_path / "hive.toml").write_text('[lifecycle]\nbackend = "bwrap"\n')
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(BackendError, match="bubblewrap is not installed"):
        choose_backend(load_hive_config(tmp_path))


# -------------------------------------------------------------------------------------------- uids


async def test_turn_stats_are_kept_for_the_retention_and_pruned_per_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    clock = ManualClock(now)
    async with Database(tmp_path / "l.sqlite", MIGRATIONS) as db:
        stats = TurnStats(LifecycleStore(db), retention_days=90, clock=clock)

        def turn(key: str, age_days: float) -> TurnRecord:
            started = now - age_days * 86_400
            return TurnRecord(
                key=key, started_at=started, ended_at=started + 3, ok=True, terminal_reason=None, model="m",
                model_turns=1, tool_calls={"Read": 1}, tokens_in=1, tokens_out=1, cost_usd=0.0, messages=1,
                inbox_depth=1, error=None,
            )  # fmt: skip

        assert await stats.record("alice", turn("a1", 89)) is True
        assert await stats.record("alice", turn("a1", 89)) is False  # the same key: a retry, kept once
        for i in range(5):
            await stats.record("alice", turn(f"a{i + 2}", 1 - i / 10))
        await stats.record("bob", turn("a1", 10))  # keys are per agent
        clock.advance(2 * 86_400)  # the 89-day-old turn is now 91 days old
        monkeypatch.setattr(turnstats, "KEEP_PER_AGENT", 3)
        assert await stats.prune() == 1 + 2  # past the retention, and alice's beyond her newest 3
        assert [t.started_at for t in await stats.turns("alice", None)] == [
            now - (1 - i / 10) * 86_400 for i in (2, 3, 4)
        ]
        assert len(await stats.turns("bob", None)) == 1
        for i in range(4):  # past the cap when recorded: her oldest make room
            await stats.record("alice", turn(f"b{i}", 0.5 - i / 10))
        assert len(await stats.turns("alice", None)) == 3
        assert (await stats.turns("alice", None))[-1].started_at == now - (0.5 - 3 / 10) * 86_400
        with pytest.raises(Refused, match="older than the 90-day retention"):
            await stats.record("alice", turn("old", 89))  # 91 days old by the clock now
        await stats.store.forget_turns("alice")
        assert await stats.turns("alice", None) == []


async def test_uids_are_allocated_once_and_never_shared(tmp_path: Path) -> None:
    async with Database(tmp_path / "l.sqlite", MIGRATIONS) as db:
        store = LifecycleStore(db)
        taken = {200_000, 200_002}  # accounts of the host
        alice = await store.uid_of("alice", 200_000, taken)
        bob = await store.uid_of("bob", 200_000, taken)
        assert (alice, bob) == (200_001, 200_003)
        assert await store.uid_of("alice", 200_000, taken) == alice  # recorded
        await store.remove("alice", forget_uid=False)
        assert await store.uid("alice") == alice  # kept when destroyed without purge
        await store.remove("bob", forget_uid=True)
        assert await store.uid("bob") is None
        assert await store.uid_of("carol", 200_000, taken) == 200_003  # bob's is free again


def test_a_link_planted_where_the_token_goes_is_refused_not_followed(tmp_path: Path) -> None:
    init_home(tmp_path)
    paths = AgentPaths.of(load_hive_config(tmp_path), "alice")
    paths.credentials.mkdir(parents=True)
    assert token_dir(paths) == paths.token_dir and paths.token_dir.is_dir()  # made when missing
    paths.token_dir.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    paths.token_dir.symlink_to(elsewhere)  # by a process of alice's uid outside its sandbox
    with pytest.raises(BackendError, match="not a directory"):
        token_dir(paths)
    assert list(elsewhere.iterdir()) == []


async def test_a_destroyed_agents_budget_override_is_not_inherited_by_a_new_one_of_its_name(tmp_path: Path) -> None:
    async with Database(tmp_path / "l.sqlite", MIGRATIONS) as db:
        store = LifecycleStore(db)
        await store.add("alice", 100.0, "applied1", "proposed1")
        await store.set_budget_override("alice", 1000.0)  # the operator raised the old alice's budget
        await store.remove("alice", forget_uid=False)
        assert await store.budget_overrides() == {}


async def test_the_agent_rows_change_only_through_named_changes(tmp_path: Path) -> None:
    async with Database(tmp_path / "l.sqlite", MIGRATIONS) as db:
        store = LifecycleStore(db)
        await store.add("alice", 100.0, "applied1", "proposed1")
        row = await store.agent("alice")
        assert row is not None
        assert (row.state, row.desired, row.applied_sha, row.applied_from) == (
            "stopped",
            "running",
            "applied1",
            "proposed1",
        )
        await store.mark_started("alice", 110.0, "applied1", "1.2.3")
        await store.record_exit("alice", 1, None)
        await store.mark_crashed("alice", "failed", 120.0, 3)
        await store.count_restart("alice")
        await store.count_restart("alice")
        await store.want_stopped("alice")
        await store.mark_stopped("alice")  # it was not running: the time it stopped is kept
        row = await store.agent("alice")
        assert row is not None
        assert (row.state, row.desired, row.started_at, row.stopped_at) == ("stopped", "stopped", 110.0, 120.0)
        assert (row.built_sha, row.built_version, row.last_exit_code, row.crashes, row.restart_count) == (
            "applied1",
            "1.2.3",
            1,
            3,
            2,
        )
        await store.want_running("alice")  # a fresh run of crashes
        row = await store.agent("alice")
        assert row is not None and (row.desired, row.crashes) == ("running", 0)
        assert not hasattr(store, "update")  # no write of any column a caller names


def test_tokens_are_renewed_near_their_expiry_not_every_few_hours() -> None:
    from hyperhive.servers.lifecycle.sandbox_setup import renew_every

    assert renew_every(30 * 86_400) == 30 * 86_400 - 3600  # the default: once a month, an hour before
    assert renew_every(600) == 480  # a short life: at four fifths of it
    assert 0 < renew_every(60) < 60


def _utc(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def test_a_budget_day_and_week_turn_over_at_midnight_utc() -> None:
    assert day_start(_utc("2026-12-01T23:59:59")) == _utc("2026-12-01T00:00:00")
    assert day_start(_utc("2026-12-02T00:00:00")) == _utc("2026-12-02T00:00:00")
    # 2026-12-06 is a Sunday: its last second is still the week of Monday 11-30; Monday starts a new one.
    assert week_start(_utc("2026-12-06T23:59:59")) == _utc("2026-11-30T00:00:00")
    assert week_start(_utc("2026-12-07T00:00:00")) == _utc("2026-12-07T00:00:00")
    assert week_start(_utc("2026-12-07T00:00:00") - 0.001) == _utc("2026-11-30T00:00:00")


def test_a_resume_opens_a_new_allowance_for_the_rest_of_its_day_only() -> None:
    now = _utc("2026-12-01T15:00:00")
    assert allowance_key(now, None) == "2026-12-01"
    assert allowance_key(now, _utc("2026-11-30T23:00:00")) == "2026-12-01"  # yesterday's resume: spent
    assert allowance_key(now, _utc("2026-12-01T14:00:00")) == "2026-12-01@2026-12-01T14:00:00.000Z"
    assert allowance_key(now, _utc("2026-12-01T14:00:00")) != allowance_key(now, _utc("2026-12-01T14:30:00"))


# ------------------------------------------------------------------------------------ peers


def test_a_proposed_config_cannot_make_a_sandboxed_agent_a_peer(tmp_path: Path) -> None:
    from hyperhive.servers.lifecycle.provisioning import validate

    validate("alice", "0" * 40, {"agent.toml": 'kind = "agent"\n'}, tmp_path)
    with pytest.raises(Refused, match='kind = "peer" is for agents outside the hive'):
        validate("alice", "0" * 40, {"agent.toml": 'kind = "peer"\n'}, tmp_path)


def test_a_peers_config_names_its_kind_recipients_and_tools() -> None:
    from hyperhive.servers.common.agent_config import parse_agent_config
    from hyperhive.servers.lifecycle.peers import peer_toml

    config = parse_agent_config(peer_toml({"broker": ["send", "recv"]}, ["manager", "operator"]), "peer")
    assert config.is_peer and config.role == "agent"
    assert config.allowed_tools("broker") == {"send", "recv"}
    assert config.may_send_to("manager") and not config.may_send_to("bob")
    defaults = parse_agent_config(peer_toml(None, None), "peer")
    assert defaults.is_peer and defaults.tools == {} and defaults.may_send_to("bob")


def test_a_kill_round_thaws_its_freezer_even_when_the_freeze_outlasted_its_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a load of ~100 (500 sandboxes starting on 2 cores) freezing took more than its 1 s wait;
    the round then never thawed, and 79 agents' cgroups stayed FROZEN with their SIGKILLs pending."""
    from hyperhive.servers.lifecycle import cgroups

    freezer = tmp_path / "freezer"
    freezer.mkdir()
    (freezer / "freezer.state").write_text("THAWED\n")
    (freezer / "cgroup.procs").write_text("")
    writes: list[bool] = []

    def slow_freeze(directory: Path, frozen: bool) -> bool:
        writes.append(frozen)
        (directory / "freezer.state").write_text("FROZEN\n" if frozen else "THAWED\n")
        return not frozen  # the freeze is still under way when the wait ends; a thaw is at once

    monkeypatch.setattr(cgroups, "_freeze", slow_freeze)
    cgroups._V1Cgroup({"freezer": freezer})._kill_round()
    assert writes == [True, False]
    assert (freezer / "freezer.state").read_text().strip() == "THAWED"


async def test_one_agent_failing_to_start_at_boot_leaves_the_others_starting() -> None:
    """Whatever one start raises, refusal or defect, it is that agent's failure: the rest start."""
    row = AgentRow(
        name="manager", state="stopped", desired="running", started_at=None, stopped_at=None,
        last_exit_code=None, last_signal=None, crashes=0, restart_count=0, applied_sha=None,
        built_sha=None, built_version=None, created_at=0.0,
    )  # fmt: skip
    rows = [row, *(dataclasses.replace(row, name=name) for name in ("alice", "bob", "carol"))]
    started: list[str] = []
    failures: list[tuple[str, str, str]] = []

    async def start(name: str) -> None:
        if name == "alice":
            raise Refused("alice's env_file is missing")
        if name == "bob":
            raise FileNotFoundError("a defect")
        started.append(name)

    async def failed(name: str, outcome: str, why: str) -> None:
        failures.append((name, outcome, why))

    await startup.start_wanted(rows, start, failed)
    assert started == ["manager", "carol"]
    assert sorted(failures) == [
        ("alice", "refused", "alice's env_file is missing"),
        ("bob", "failed", "FileNotFoundError: a defect"),
    ]
