"""The swarm's words for an agent: its one health badge, the tool its turn is calling, a
harness's reason grouped with its fix, and its host (servers/common/formatting.py, turn_reasons.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hyperhive.harness.stats import TurnRecorder
from hyperhive.servers.common.formatting import (
    health,
    health_rank,
    host_load,
    host_state,
    tool_text,
    turn_text,
    unreachable_lines,
)
from hyperhive.servers.common.harnessdir import TOOL_TEXT_MAX, TURN_STATE, TurnState
from hyperhive.servers.common.turn_reasons import explain, group_problems, problem_line
from hyperhive.servers.lifecycle.models import AgentInfo, HostInfo

NOW = 1_800_000_000.0
NO_CREDENTIALS = (
    "no Claude credentials: set ANTHROPIC_API_KEY or run `claude login` "
    "(hive.toml [harness.env], or `hive claude NAME auth login`)"
)


def agent(name: str = "alice", state: str = "running", turn: TurnState | None = None, **extra: Any) -> AgentInfo:
    fields: dict[str, Any] = {
        "name": name, "role": "agent", "state": state, "desired": "running", "model": "sonnet",
        "started_at": None, "last_exit_code": None, "last_signal": None, "restart_count": 0,
        "applied_sha": None, "needs_update": False, "turn": turn,
    }  # fmt: skip
    return AgentInfo.model_validate(fields | extra)


@pytest.mark.parametrize(
    ("name", "arguments", "text"),
    [
        ("Bash", {"command": "git diff --stat\n  HEAD~1"}, "Bash: git diff --stat HEAD~1"),
        ("mcp__broker__send", {"to": "manager", "body": "hi"}, "send → manager"),
        ("Read", {"file_path": "notes.md"}, "Read: notes.md"),
        ("mcp__broker__recv_batch", {"max": 5}, "recv_batch"),
        ("Bash", {"command": 7}, "Bash"),  # not what the tool takes: its name only
        ("Bash", {"command": "x" * 200}, "Bash: " + "x" * 53 + "…"),
    ],
)
def test_a_tool_call_reads_in_a_few_words(name: str, arguments: dict[str, Any], text: str) -> None:
    assert tool_text(name, arguments) == text
    assert len(tool_text(name, arguments)) <= 60


def test_the_badge_combines_the_sandbox_and_the_turn() -> None:
    working = TurnState(state="running", since=NOW - 12, turn=3, tool="Bash: git diff")
    assert health(agent(turn=working), now=NOW) == ("working", "working 12s · Bash: git diff")
    assert health(agent(turn=TurnState(state="idle", since=NOW - 180)), now=NOW) == ("idle", "idle 3m")
    assert health(agent(turn=TurnState(state="error", since=NOW, reason=NO_CREDENTIALS)), now=NOW) == (
        "error", f"error: {NO_CREDENTIALS}"
    )  # fmt: skip
    paused = TurnState(state="paused", since=NOW, reason="paused: budget $1.00/day reached")
    assert health(agent(turn=paused))[0] == "paused"
    # The sandbox wins over a stale turn.json: a failed agent is failed, whatever its harness last said.
    failed = agent(state="failed", turn=working, last_exit_code=1, restart_count=3)
    assert health(failed) == ("failed", "failed: exit 1 · 3 restarts")
    assert health(agent(state="failed", last_signal="SIGKILL", restart_count=1)) == (
        "failed", "failed: signal SIGKILL · 1 restart"
    )  # fmt: skip
    assert health(agent(state="restarting", turn=working)) == ("restarting", "restarting")
    assert health(agent(state="stopped", turn=working)) == ("stopped", "stopped")
    assert health(agent()) == ("idle", "running · no harness")
    assert health(agent(problem="its state dir is past state_max"))[0] == "error"


def test_rows_sort_failed_error_needs_update_working_idle() -> None:
    rows = [
        agent("a-idle", turn=TurnState(state="idle", since=NOW)),
        agent("b-work", turn=TurnState(state="running", since=NOW)),
        agent("c-stale", turn=TurnState(state="idle", since=NOW), needs_update=True),
        agent("d-err", turn=TurnState(state="error", since=NOW, reason="x")),
        agent("e-failed", state="failed"),
        agent("f-idle", turn=TurnState(state="idle", since=NOW)),
    ]
    ordered = sorted(rows, key=lambda a: (health_rank(a), a.name))
    assert [a.name for a in ordered] == ["e-failed", "d-err", "c-stale", "b-work", "a-idle", "f-idle"]


def test_an_agent_whose_host_does_not_answer_is_a_problem_after_the_errors() -> None:
    lost = agent("b-lost", state="unreachable", desired=None, host="beta")
    assert health(lost) == ("unreachable", "unreachable: host beta does not answer")
    rows = [
        agent("a-idle", turn=TurnState(state="idle", since=NOW)),
        lost,
        agent("c-paused", turn=TurnState(state="paused", since=NOW, reason="paused: budget")),
        agent("d-err", turn=TurnState(state="error", since=NOW, reason="x")),
        agent("e-stale", turn=TurnState(state="idle", since=NOW), needs_update=True),
    ]
    ordered = sorted(rows, key=lambda a: (health_rank(a), a.name))
    assert [a.name for a in ordered] == ["d-err", "b-lost", "c-paused", "e-stale", "a-idle"]


def test_a_running_turn_says_its_tool() -> None:
    turn = TurnState(state="running", since=NOW - 5, turn=1, messages=1, tool="send → manager")
    assert turn_text(turn, True, now=NOW) == "running 5s · 1 msg · send → manager"


def test_an_agent_cannot_put_terminal_escapes_or_a_novel_into_its_tool() -> None:
    turn = TurnState.model_validate_json(json.dumps({"state": "running", "since": NOW, "tool": "\x1b[2J" + "y" * 500}))
    assert turn.tool is not None and "\x1b" not in turn.tool and len(turn.tool) == TOOL_TEXT_MAX


def test_reasons_group_by_their_known_problem_with_its_fix() -> None:
    first = explain(NO_CREDENTIALS)
    assert first.key == "no-credentials" and first.fix is not None
    assert problem_line(first, [f"a{i}" for i in range(10)]) == (
        "10 agents: no Claude credentials → add ANTHROPIC_API_KEY to hive.toml [harness.env] "
        "or run `hive claude NAME auth login`"
    )
    assert problem_line(first, ["bob"]).endswith("`hive claude bob auth login`")
    # The same unknown reason with other numbers (retry delays) is one group; another is another.
    one = explain("waiting for messages: boom; trying again in 8 s")
    two = explain("waiting for messages: boom; trying again in 16 s")
    assert one.key == two.key and one.fix is None
    assert explain("something else").key != one.key
    assert explain("turn failed: API error 529: overloaded; trying again in 4 s").key == "api-overloaded"
    assert explain("paused: budget $1.00/day reached").key == "agent-budget"
    assert explain("paused: hive budget $9.00/day reached").key == "hive-budget"
    assert explain(None).summary == "no reason given"


async def test_the_recorder_writes_the_running_turns_tool_and_drops_it_with_the_turn(tmp_path: Path) -> None:
    recorder = TurnRecorder(tmp_path)
    await recorder.open()
    await recorder.set_tool("Bash: ls")  # no turn runs: nothing to say
    assert TurnState.model_validate_json((tmp_path / TURN_STATE).read_text()).tool is None
    await recorder.set("running", turn=1, leased=[4])
    await recorder.set_tool("Bash: git diff")
    assert TurnState.model_validate_json((tmp_path / TURN_STATE).read_text()).tool == "Bash: git diff"
    await recorder.set("idle")
    assert TurnState.model_validate_json((tmp_path / TURN_STATE).read_text()).tool is None


def test_problems_group_most_agents_first_with_their_names() -> None:
    stuck = [("c", NO_CREDENTIALS), ("x", "disk on fire"), ("a", NO_CREDENTIALS), ("b", NO_CREDENTIALS)]
    assert group_problems(stuck) == [
        (problem_line(explain(NO_CREDENTIALS), ["a", "b", "c"]), ["a", "b", "c"]),
        ("x: disk on fire", ["x"]),
    ]


def test_an_unknown_reason_carries_no_terminal_escapes() -> None:
    [(line, names)] = group_problems([("eve", "\x1b]0;pwned\x07\x1b[2Jboom")])
    assert "\x1b" not in line and "\x07" not in line and line.endswith("boom") and names == ["eve"]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def test_a_host_reads_up_with_its_heartbeat_or_down_since_when() -> None:
    beta = HostInfo(
        name="beta", lifecycle_url="https://beta:7802/mcp", labels=["gpu"], capacity=5, agents=2, up=True,
        last_seen=_iso(NOW - 3),
    )  # fmt: skip
    assert (host_state(beta, now=NOW), host_load(beta)) == ("up · seen 3s ago", "2/5")
    assert host_state(beta.model_copy(update={"last_seen": None}), now=NOW) == "up"  # one host: no heartbeat
    down = beta.model_copy(update={"up": False, "last_seen": _iso(NOW - 300), "down_since": _iso(NOW - 240)})
    assert host_state(down, now=NOW) == f"down since {_iso(NOW - 240)[:19].replace('T', ' ')} (4m ago)"


def test_unreachable_agents_read_as_one_line_per_host() -> None:
    listed = [
        agent("carol", state="unreachable", host="beta"),
        agent("alice", host="alpha"),
        agent("bob", state="unreachable", host="beta"),
        agent("dave", state="unreachable", host="gamma"),
    ]
    assert unreachable_lines(listed) == [
        "host beta does not answer: bob, carol are unreachable",
        "host gamma does not answer: dave is unreachable",
    ]
    assert unreachable_lines([agent("alice", host="alpha")]) == []
