"""The harness's parts on their own: the wake prompt, what Claude Code is allowed, its environment,
the system prompts, turn records, and what the lifecycle server tells the harness."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ResultMessage, ToolUseBlock

from hyperhive.harness import claude, notes
from hyperhive.harness.claude import (
    NO_CREDENTIALS,
    ClaudeSession,
    TurnOutcome,
    allowed_tools,
    builtin_tools,
    claude_env,
    has_credentials,
    tokens_in,
)
from hyperhive.harness.main import load_info, scrub_environment
from hyperhive.harness.prompts import system_prompt
from hyperhive.harness.stats import TurnRecorder, turn_row
from hyperhive.harness.wake import render_wake, restart_note
from hyperhive.servers.broker.models import Message
from hyperhive.servers.common.agent_config import AgentConfig
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.config_parsing import ConfigError
from hyperhive.servers.common.events import ContainerCrash, OperatorAnswered
from hyperhive.servers.common.harnessdir import HarnessInfo, SandboxStart, StartReason, TurnState
from hyperhive.servers.home import init_home
from hyperhive.servers.lifecycle.harness_files import harness_info, read_turn_state
from hyperhive.servers.lifecycle.models import TurnRecord
from hyperhive.servers.lifecycle.paths import AgentPaths


def _info(tmp_path: Path, **changes: object) -> HarnessInfo:
    data: dict[str, object] = {
        "agent": "alice",
        "role": "agent",
        "model": "sonnet",
        "servers": {"broker": "http://127.0.0.1:7801/mcp", "lifecycle": "http://127.0.0.1:7802/mcp"},
        "tools": {"broker": ["send", "recv"], "lifecycle": []},
        "bash": ["git diff:*"],
        "mcp_servers": {"search": {"type": "http", "url": "http://127.0.0.1:9000/mcp", "headers": {}}},
        "env": {"ANTHROPIC_API_KEY": "k"},
        "prompt": "",
        "state_dir": str(tmp_path / "state"),
        "harness_dir": str(tmp_path / "harness"),
        "token_file": str(tmp_path / "harness" / "credentials" / "token"),
    }
    data.update(changes)
    (tmp_path / "harness").mkdir(exist_ok=True)
    return HarnessInfo.model_validate(data)


def _message(id: int, body: str, **fields: object) -> Message:
    return Message.model_validate(
        {"id": id, "sender": "manager", "body": body, "sent_at": "2026-11-21T10:00:00Z", **fields}
    )


# ----------------------------------------------------------------------------------------- the wake


def test_the_wake_names_sender_id_and_reply_and_says_how_many_are_queued() -> None:
    prompt = render_wake([_message(7, "do X", in_reply_to=3), _message(8, "all: lunch", broadcast=True)], 4, "agent")
    assert prompt.startswith("You have 2 new messages, and 4 more are queued: drain them with recv_batch")
    assert "--- message #7 from manager, 2026-11-21T10:00:00Z, in reply to #3\ndo X" in prompt
    assert "#8 from manager" in prompt and "broadcast to every agent: it may need no action from you" in prompt
    assert render_wake([_message(1, "hi")], 0, "agent") == (
        "You have 1 new message.\n\n--- message #1 from manager, 2026-11-21T10:00:00Z\nhi"
    )


def test_helper_events_read_as_what_happened_and_the_manager_gets_what_to_do() -> None:
    crash = ContainerCrash(agent="alice", signal="SIGKILL", restarts=1, will_restart=True)
    answered = OperatorAnswered(question_id=5, question="ok?", answer="[expired]")
    events = [
        _message(9, crash.summary(), sender="system", kind="event", event=crash.model_dump()),
        _message(10, "raw text", sender="system", kind="event", event=answered.model_dump()),
        _message(11, "something new happened", sender="system", kind="event", event={"type": "from_the_future"}),
    ]
    manager = render_wake(events, 0, "manager")
    assert "--- event #9 from system (container_crash)" in manager
    assert "agent alice crashed (signal SIGKILL; 1 restart so far); restarting it" in manager
    assert "(Look at its logs" in manager
    assert "question #5 ('ok?') got no answer: expired" in manager
    assert "something new happened" in manager  # an unknown event falls back to the broker's text
    assert "(Look at its logs" not in render_wake(events, 0, "agent")


def test_reminders_and_late_ones_say_so() -> None:
    prompt = render_wake([_message(3, "check the build", kind="reminder", late=True, sender="alice")], 0, "agent")
    assert "--- reminder #3 from alice" in prompt and "late: it was due while the broker was down" in prompt


# ------------------------------------------------------------------------------- what it may do


def test_allowed_tools_are_exactly_the_allow_list_bash_patterns_and_files_in_its_state_dir(tmp_path: Path) -> None:
    info = _info(tmp_path)
    state = tmp_path / "state"
    assert allowed_tools(info) == [
        "mcp__broker__recv",
        "mcp__broker__send",
        "mcp__search",
        "Bash(git diff:*)",
        f"Read(/{state}/**)",
        f"Edit(/{state}/**)",
        "TodoWrite",
    ]
    assert "Bash" in builtin_tools(info) and "Bash" not in builtin_tools(_info(tmp_path, bash=[]))
    manager = allowed_tools(_info(tmp_path, agent="manager", role="manager", agents_dir="/hive/agents"))
    assert "Edit(//hive/agents/*/config/**)" in manager and "Read(//hive/agents/*/config/**)" in manager


def test_the_shared_workspace_is_readable_and_writable_with_claude_codes_file_tools_as_its_mode_says(
    tmp_path: Path,
) -> None:
    """The system prompt tells an agent it may read (and write) /hive/shared: its file tools must agree."""
    rules = {mode: allowed_tools(_info(tmp_path, shared=mode)) for mode in ("rw", "ro", None)}
    assert "Read(//hive/shared/**)" in rules["rw"] and "Edit(//hive/shared/**)" in rules["rw"]
    assert "Read(//hive/shared/**)" in rules["ro"] and "Edit(//hive/shared/**)" not in rules["ro"]
    assert not [rule for rule in rules[None] if "/hive/shared" in rule]


def test_the_mcp_config_has_only_servers_it_may_use_with_its_token(tmp_path: Path) -> None:
    config = _info(tmp_path).mcp_config("T0K")
    assert config == {
        "broker": {"type": "http", "url": "http://127.0.0.1:7801/mcp", "headers": {"Authorization": "Bearer T0K"}},
        "search": {"type": "http", "url": "http://127.0.0.1:9000/mcp", "headers": {}},
    }  # lifecycle grants it nothing: not offered at all


def test_the_harness_mcp_config_reads_the_current_token_through_a_headers_helper(tmp_path: Path) -> None:
    info = _info(tmp_path, token_file=str(tmp_path / "it's" / "token"))
    config = info.mcp_config()
    assert "headers" not in config["broker"] and config["search"] == {
        "type": "http",
        "url": "http://127.0.0.1:9000/mcp",
        "headers": {},
    }
    (tmp_path / "it's").mkdir()
    for token in ("first.jwt.sig", "renewed.jwt.sig"):  # what Claude Code gets is what the file says now
        (tmp_path / "it's" / "token").write_text(token + "\n")
        printed = subprocess.run(
            ["sh", "-c", config["broker"]["headersHelper"]], capture_output=True, text=True, check=True
        )
        assert json.loads(printed.stdout) == {"Authorization": f"Bearer {token}"}


async def test_claude_code_follows_the_harness_to_the_broker_that_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failover (the harness's client moved to another broker process) Claude Code starts
    again with its MCP config naming that one, its session resumed; while the broker stays, it stays."""
    second = "http://127.0.0.1:7811/mcp"
    info = _info(tmp_path, failover={"broker": [{"url": second}]})
    started: list[ClaudeAgentOptions] = []

    class Client:
        def __init__(self, options: ClaudeAgentOptions) -> None:
            started.append(options)

        async def connect(self) -> None:
            pass

        async def disconnect(self) -> None:
            pass

    monkeypatch.setattr(claude, "ClaudeSDKClient", Client)
    session = ClaudeSession(info, stderr=lambda _: None)
    session.broker_url = info.servers["broker"]  # where the harness's client is: hive.json's first
    await session._ready("sonnet")
    await session._ready("sonnet")
    assert len(started) == 1 and started[0].mcp_servers["broker"]["url"] == info.servers["broker"]  # type: ignore[index]
    assert session.record is not None
    session._save(session.record.model_copy(update={"resumable": True}))  # as a turn that ended leaves it
    session.broker_url = second  # the harness's client failed over
    await session._ready("sonnet")
    assert len(started) == 2 and started[1].mcp_servers["broker"]["url"] == second  # type: ignore[index]
    assert started[1].resume == started[0].session_id  # the same conversation goes on
    await session._ready("sonnet")
    assert len(started) == 2


def test_claude_gets_its_own_home_and_only_configured_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://leak.example")
    monkeypatch.setenv("CLAUDE_CODE_USE_BEDROCK", "1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "inherited")
    monkeypatch.setenv("PYTHONPATH", "/nix/store/0000-hyperhive/lib/python3.11/site-packages")  # the wrapper's
    info = _info(tmp_path)
    scrub_environment(info)
    assert "ANTHROPIC_BASE_URL" not in os.environ and "CLAUDE_CODE_USE_BEDROCK" not in os.environ
    assert "PYTHONPATH" not in os.environ  # not for the agent's own Python
    assert os.environ["ANTHROPIC_API_KEY"] == "inherited"  # configured (hive.json env names it)
    env = claude_env(info, tmp_path / "harness")
    assert env["HOME"] == str(tmp_path / "harness" / "home") and Path(env["CLAUDE_CONFIG_DIR"]).is_dir()
    assert env["ANTHROPIC_API_KEY"] == "k" and "ANTHROPIC_BASE_URL" not in env
    assert has_credentials(env)
    bare = claude_env(_info(tmp_path, env={}), tmp_path / "harness")
    assert not has_credentials(bare)
    (Path(bare["CLAUDE_CONFIG_DIR"]) / ".credentials.json").write_text("{}")  # what `claude login` leaves
    assert has_credentials(bare)
    assert "ANTHROPIC_API_KEY" in NO_CREDENTIALS and "claude login" in NO_CREDENTIALS


def test_system_prompts_name_the_agent_and_carry_its_addendum(tmp_path: Path) -> None:
    manager = system_prompt(_info(tmp_path, agent="manager", role="manager", agents_dir="/hive/agents"))
    assert manager.startswith("hyperhive agent: manager (role manager)")
    assert "git -C /hive/agents/<name>/config commit" in manager
    for must in ("role fit", "package legitimacy", "cheaper alternative", "blast radius", "ask_operator"):
        assert must in manager
    agent = system_prompt(_info(tmp_path, prompt="You review Python code."))
    assert "notes.md" in agent and "ask the manager" in agent and "in_reply_to" in agent
    assert agent.endswith("Instructions from your config (agent.toml):\nYou review Python code.")
    assert "/hive/shared" not in agent  # no shared workspace unless hive.json says so


def test_the_system_prompt_tells_of_the_shared_workspace_and_binds_it_has(tmp_path: Path) -> None:
    shared = system_prompt(_info(tmp_path, shared="rw", binds=["/data (ro)"]))
    assert "/hive/shared is the hive's shared workspace" in shared and "read and write" in shared
    assert "without routing them through the manager" in shared and "/data (ro)" in shared
    assert "read (not write)" in system_prompt(_info(tmp_path, shared="ro"))


# ------------------------------------------------------------------------------------ records


async def test_the_turn_state_is_kept_for_agent_status_and_the_next_run(tmp_path: Path) -> None:
    recorder = TurnRecorder(tmp_path)  # no lifecycle server: rows go nowhere, the state is still kept
    await recorder.open()
    outcome = TurnOutcome(ok=False, error="API error 529")
    await recorder.record(turn_row("wake", time.time() - 5, "haiku", outcome, 1, 0))
    await recorder.set("running", turn=42, leased=[5, 6])
    state = json.loads((tmp_path / "turn.json").read_text())
    assert state["state"] == "running" and state["turn"] == 42 and state["messages"] == 2
    assert state["last_turn_at"] >= time.time() - 5  # the dashboard's "last turn" column
    assert (await TurnRecorder(tmp_path).open()) == TurnState.model_validate(state)  # what the next run finds
    next_run = TurnRecorder(tmp_path)
    await next_run.open()
    assert next_run.state.state == "starting" and next_run.state.last_turn_at == state["last_turn_at"]


def test_a_turn_row_fits_what_record_turn_accepts(tmp_path: Path) -> None:
    outcome = TurnOutcome(ok=False, error="E" * 10_000, terminal_reason="r" * 500, model_turns=3, tokens_in=1200)
    outcome.tool_calls.update({f"mcp__x__tool{i}" + "y" * 200: i + 1 for i in range(100)})
    outcome.cost_usd = float("nan")
    row = turn_row("wake", time.time() - 9, "haiku", outcome, messages=2, queued=5)
    assert (row.model_turns, row.messages, row.inbox_depth, row.tokens_in, row.cost_usd) == (3, 2, 7, 1200, 0.0)
    assert len(row.tool_calls) == 64 and max(map(len, row.tool_calls)) == 128 and min(row.tool_calls.values()) == 37
    assert len(row.error or "") == 2000 and len(row.terminal_reason or "") == 200
    assert TurnRecord.model_validate(row.model_dump()) == row  # what the server will validate
    old = turn_row("compaction", 1.0, "m", TurnOutcome(ok=True), 0, 0)  # a clock that jumped by decades
    assert old.key != row.key and old.ended_at - old.started_at == 7 * 86_400


# One model call of a cached session: most of its input is read from (or written to) the cache.
USAGE = {"input_tokens": 12, "cache_read_input_tokens": 9000, "cache_creation_input_tokens": 300, "output_tokens": 40}


def _turn_messages(usage: dict[str, int]) -> list[object]:
    step = AssistantMessage(content=[ToolUseBlock(id="t1", name="Edit", input={})], model="m", usage=usage)
    result = ResultMessage(
        subtype="success", duration_ms=1, duration_api_ms=1, is_error=False, num_turns=2, session_id="s",
        total_cost_usd=0.25, usage=usage, terminal_reason="completed",
    )  # fmt: skip
    return [step, result]


def test_tokens_in_is_all_input_the_model_read_fresh_or_from_the_cache() -> None:
    assert tokens_in(USAGE) == 12 + 9000 + 300
    assert tokens_in({"output_tokens": 5}) == 0
    assert tokens_in({"input_tokens": None, "cache_read_input_tokens": 7}) == 7  # absent or null: none


async def test_a_wake_and_a_notes_compaction_count_their_turn_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = _info(tmp_path)
    session = ClaudeSession(info, stderr=lambda _: None)

    class Client:
        async def receive_response(self) -> AsyncIterator[object]:
            for message in _turn_messages(USAGE):
                yield message

    wake = await session._collect(Client())  # type: ignore[arg-type]

    async def query(**_: object) -> AsyncIterator[object]:
        for message in _turn_messages(USAGE):
            yield message

    monkeypatch.setattr(notes, "query", query)
    keeper = notes.NotesKeeper(info, session.env, TurnRecorder(tmp_path / "harness"))
    compaction = await keeper._rewrite("sonnet", 40_000, 16_000)

    for outcome in (wake, compaction):
        assert outcome.ok and outcome.terminal_reason == "completed" and outcome.model_turns == 2
        assert (outcome.tokens_in, outcome.tokens_out) == (tokens_in(USAGE), 40)
        assert outcome.tool_calls == {"Edit": 1} and outcome.cost_usd == 0.25
    assert wake.context_tokens == tokens_in(USAGE)


async def test_lifecycle_reads_turn_json_without_following_links(tmp_path: Path) -> None:
    paths = AgentPaths(tmp_path, "alice")
    paths.harness.mkdir(parents=True)
    assert await read_turn_state(paths) is None
    paths.turn_state.write_text('{"state": "idle", "since": 1.0}')
    assert (await read_turn_state(paths)) == TurnState(state="idle", since=1.0)
    paths.turn_state.write_text('{"state": "bogus", "since": 1.0}')
    bogus = await read_turn_state(paths)
    assert bogus is not None and bogus.state == "unreadable" and "state: Input should be" in (bogus.reason or "")
    secret = tmp_path / "secret"
    secret.write_text('{"state": "idle", "since": 1.0}')
    paths.turn_state.unlink()
    paths.turn_state.symlink_to(secret)
    linked = await read_turn_state(paths)
    assert linked is not None and linked.state == "unreadable"
    assert linked.reason == "turn.json is a symbolic link, not a regular file"


# ------------------------------------------------------------------------- what lifecycle writes


def test_harness_info_carries_the_allow_list_and_merges_hive_env_under_agent_env(tmp_path: Path) -> None:
    init_home(tmp_path)
    (tmp_path / "hive.toml").write_text(
        (tmp_path / "hive.toml").read_text().replace("[harness.env]\n", '[harness.env]\nA = "hive"\nB = "hive"\n')
    )
    config = load_hive_config(tmp_path)
    agent = AgentConfig(tools={"broker": ["send"]}, env={"B": "agent"}, bash=["ls:*"], prompt="be brief")
    info = harness_info(config, "alice", agent)
    # record_turn is the harness's: its Claude Code is neither given it nor shown it.
    assert info.tools["broker"] == ["send"] and info.tools["lifecycle"] == [] and info.tools["approvals"] == []
    assert "lifecycle" not in info.mcp_config("T0K") and "lifecycle" not in info.mcp_config()
    assert "record_turn" in agent.allowed_tools("lifecycle")  # while the server lets its harness call it
    assert info.env == {"A": "hive", "B": "agent"} and info.bash == ["ls:*"] and info.prompt == "be brief"
    assert set(info.servers) == {"broker", "lifecycle", "approvals", "operator", "forge"}
    assert info.token_file.endswith("agents/alice/harness/credentials/instance/token")
    manager = harness_info(config, "manager", AgentConfig(role="manager"))
    assert "request_spawn" in manager.tools["approvals"] and "ask_operator" in manager.tools["operator"]
    assert "approve" not in manager.tools["approvals"] and "answer" not in manager.tools["operator"]
    assert "agent_stats" in manager.tools["lifecycle"] and "record_turn" not in manager.tools["lifecycle"]
    assert not any("record_turn" in tool for tool in manager.tool_names())
    Path(manager.harness_dir).mkdir(parents=True)
    options = ClaudeSession(manager, stderr=lambda _: None).options("sonnet")
    assert options.disallowed_tools == ["mcp__lifecycle__budget_check", "mcp__lifecycle__record_turn"]
    assert not any("record_turn" in tool or "budget_check" in tool for tool in options.allowed_tools)
    assert options.max_budget_usd is None  # no agent.toml [budget] usd_per_turn: no per-turn limit
    capped = manager.model_copy(update={"usd_per_turn": 0.25})
    assert ClaudeSession(capped, stderr=lambda _: None).options("sonnet").max_budget_usd == 0.25
    assert manager.agents_dir == str(config.agents_dir) and info.agents_dir is None


def test_hive_json_carries_the_certificate_of_each_server_over_tls_as_text(tmp_path: Path) -> None:
    init_home(tmp_path)
    cert = tmp_path / "tls" / "hive.crt"
    toml = (tmp_path / "hive.toml").read_text()
    (tmp_path / "hive.toml").write_text(toml.replace("port = 7801\n", 'port = 7801\ntls_cert = "tls/hive.crt"\n', 1))
    config = load_hive_config(tmp_path)
    with pytest.raises(ConfigError, match=r"hive\.crt: cannot read broker's tls_cert: No such file or directory"):
        harness_info(config, "alice", AgentConfig())  # the sandbox would not start: it could trust nothing
    cert.parent.mkdir()
    cert.write_text("-----BEGIN CERTIFICATE-----\n...\n")
    info = harness_info(config, "alice", AgentConfig())
    assert info.servers["broker"] == "https://127.0.0.1:7801/mcp" and info.tls_certs == {"broker": cert.read_text()}
    assert HarnessInfo.model_validate_json(info.model_dump_json()).tls_certs == info.tls_certs


def test_the_harness_refuses_a_missing_or_foreign_hive_json(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"cannot read .*hive\.json"):
        load_info("alice", tmp_path)
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "hive.json").write_text(_info(tmp_path).model_dump_json())
    with pytest.raises(SystemExit, match="is for 'alice', not 'bob'"):
        load_info("bob", tmp_path)
    assert load_info("alice", tmp_path).agent == "alice"
    with pytest.raises(SystemExit, match="no harness dir"):
        load_info("alice", None)


def test_the_first_wake_after_a_restart_mid_turn_says_the_last_turn_may_not_have_finished() -> None:
    mid_turn = TurnState(state="running", since=time.time(), turn=1, leased=[4, 5])
    retrying = TurnState(state="error", since=time.time(), leased=[4], reason="turn failed")
    note = restart_note(mid_turn, None)  # a hive.json that does not say why
    assert note and "restarted" in note and "may not have finished" in note
    assert restart_note(retrying, None) == note
    assert restart_note(None, None) is None  # its first start
    assert restart_note(TurnState(state="idle", since=time.time()), None) is None  # stopped while waiting
    assert restart_note(TurnState(state="error", since=time.time(), reason="waiting for messages: down"), None) is None


def test_the_restart_note_says_what_happened_to_the_sandbox() -> None:
    mid_turn = TurnState(state="running", since=time.time(), turn=1, leased=[4])
    idle = TurnState(state="idle", since=time.time())

    def note(previous: TurnState | None, reason: StartReason, detail: str = "") -> str | None:
        return restart_note(previous, SandboxStart(reason=reason, detail=detail))

    assert note(mid_turn, "crashed", "exit 137") == (
        "[hyperhive] Your sandbox was restarted after a crash (exit 137) while your last turn was running: "
        "it may not have finished. Check what it did (files, messages you sent, notes.md) before you go on; "
        "the messages it was handling follow again."
    )
    assert "was rebuilt (config 3f2a9c was applied) while your last turn" in str(
        note(mid_turn, "rebuilt", "config 3f2a9c was applied")
    )
    assert "was stopped and started again by operator while your last turn" in str(
        note(mid_turn, "started", "by operator")
    )
    assert "was restarted by manager while" in str(note(mid_turn, "restarted", "by manager"))
    assert "as the hive came up" in str(note(mid_turn, "boot"))
    assert "destroyed and created again" in str(note(mid_turn, "created"))
    # Idle, it hears of a crash or a rebuild in one line, of nothing else.
    assert note(idle, "crashed", "killed by SIGKILL") == (
        "[hyperhive] Your sandbox was restarted after a crash (killed by SIGKILL) while you were waiting for "
        "messages; no turn was cut short."
    )
    assert note(idle, "rebuilt", "hyperhive was updated") == (
        "[hyperhive] Your sandbox was rebuilt (hyperhive was updated) since your last turn: your tools or "
        "instructions may have changed."
    )
    for quiet in ("started", "restarted", "boot", "created"):
        assert note(idle, quiet, "by operator") is None, quiet  # type: ignore[arg-type]
    assert note(None, "crashed", "exit 1") is None  # no last run: nothing to tell
