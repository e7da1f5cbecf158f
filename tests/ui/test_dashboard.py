"""The dashboard against the real servers, through NiceGUI's simulated user."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from typing import Any

import pytest
from hivetest import Servers, gone, sandbox_process
from nicegui import ui
from nicegui.testing import User
from nicegui.testing.user_notify import UserNotify
from uitest import LOGIN_CODE, log_in, swarm_click, swarm_see, swarm_text

from hyperhive.harness.claude import TurnOutcome
from hyperhive.harness.stats import StatsReporter, TurnRecorder, turn_row
from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.client import LifecycleClient
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = pytest.mark.slow


async def test_login_is_required_and_the_password_or_a_token_lets_you_in(
    user: User, servers: Servers, password: str
) -> None:
    await user.open("/")
    await user.should_see("log in")
    user.find(marker="secret").type("wrong")
    user.find(marker="login").click()
    await user.should_see("not the dashboard password or an operator token")
    user.find(marker="secret").clear().type(password)
    user.find(marker="login").click()
    await user.should_see("◆ swarm")
    await swarm_see(user, "state-manager", "running", retries=100)


async def test_the_one_time_link_logs_in_once_and_a_token_in_a_url_never(user: User, servers: Servers) -> None:
    await user.open("/login?code=guessed")
    await user.should_see("that login link was used or has expired")
    await user.open(f"/login?code={LOGIN_CODE}")
    await user.should_see("◆ swarm")
    await user.open("/approvals")
    await user.should_see("◆ approvals")
    user.find("log out").click()
    await user.should_see("log in")
    await user.open(f"/login?code={LOGIN_CODE}")  # spent
    await user.should_see("that login link was used or has expired")
    await user.open(f"/login?token={servers.token('operator')}")  # tokens stay out of URLs (and logs)
    await user.open("/messages")
    await user.should_see("log in")
    user.find(marker="secret").type(servers.token("operator"))  # pasted into the form, a token works
    user.find(marker="login").click()
    await user.should_see("log out")  # the frame's: only a logged-in page has it


async def test_swarm_spawns_stops_starts_sets_the_model_and_destroys(
    user: User, servers: Servers, password: str
) -> None:
    await log_in(user, password)
    user.find(marker="spawn-name").type("alice")
    user.find(marker="spawn").click()
    await swarm_see(user, "state-alice", "running", retries=50)

    swarm_click(user, "stop-alice")
    await user.should_see("stop alice?")
    user.find(marker="confirm").click()
    await swarm_see(user, "state-alice", "stopped", retries=50)
    assert (await servers.call("lifecycle", "agent_status", name="alice"))["state"] == "stopped"
    swarm_click(user, "start-alice")
    await swarm_see(user, "state-alice", "running", retries=50)

    swarm_click(user, "model-alice")
    await user.should_see(marker="model-input")
    user.find(marker="model-input").clear().type("haiku")
    user.find(marker="set-model").click()
    await swarm_see(user, "model-alice", "haiku", retries=50)
    assert (await servers.call("lifecycle", "agent_status", name="alice"))["model"] == "haiku"

    user.find(marker="spawn-name").type("Bad Name")
    [spawn] = user.find(marker="spawn").elements
    assert not spawn.enabled  # the field says why (tests/ui/test_validation.py); nothing is sent
    user.find(marker="spawn-name").clear()

    swarm_click(user, "destroy-alice")
    await user.should_see("also purge its repos, files, token and logs")
    user.find(marker="purge").click()
    user.find(marker="confirm").click()
    await user.should_see("alice: destroyed", retries=50)
    await swarm_see(user, "state-alice", retries=50, shown=False)
    listing = await servers.call("lifecycle", "list_agents")
    assert [a["name"] for a in listing["agents"]] == ["manager"]


async def test_approvals_show_the_diff_and_are_approved_or_denied_with_a_note(
    user: User, servers: Servers, password: str
) -> None:
    first = await servers.call("approvals", "request_spawn", as_name="manager", name="bob", reason="more hands")
    second = await servers.call("approvals", "request_spawn", as_name="manager", name="carol", reason="more hands")
    await log_in(user, password, "/approvals")
    await user.open("/approvals")
    await user.should_see(f"#{first['id']} spawn · bob")
    await user.should_see('+role = "agent"')  # the diff of the template config
    user.find(marker=f"approve-{first['id']}").click()
    await user.should_see(f"#{first['id']} approved", retries=50)
    [deny] = user.find(marker=f"deny-{second['id']}").elements
    assert not deny.enabled  # until a reason is typed
    user.find(marker=f"note-{second['id']}").type("not now")
    user.find(marker=f"deny-{second['id']}").click()
    await user.should_see(f"#{second['id']} denied", retries=50)
    await user.should_see(f"#{second['id']} spawn carol · denied: not now · by operator", retries=50)
    await user.should_see(f"#{first['id']} spawn bob · applied", retries=50)
    assert (await servers.call("lifecycle", "agent_status", name="bob"))["state"] in ("running", "starting")
    await servers.call("lifecycle", "destroy", name="bob", purge=True)


class _Toasts(UserNotify):
    """The toasts a page showed, with their colours (NiceGUI's own keeps the text only)."""

    def __init__(self) -> None:
        super().__init__()
        self.types: list[tuple[str, str | None]] = []

    def __call__(self, message: str, **kwargs: Any) -> None:
        super().__call__(message, **kwargs)
        self.types.append((message, kwargs.get("type")))


async def test_an_approval_whose_apply_fails_is_toasted_as_failed_with_the_reason(
    user: User, servers: Servers, password: str
) -> None:
    request = await servers.call("approvals", "request_spawn", as_name="manager", name="erin", reason="more hands")
    # Meanwhile the operator makes erin otherwise (from a draft): approving the template spawn must fail.
    await servers.call("lifecycle", "create_draft", name="erin")
    sha = await repos.commit_files(
        AgentPaths.of(servers.config, "erin").config, {"agent.toml": "model = 'opus'\n"}, "erin"
    )
    await servers.call("lifecycle", "create_agent", name="erin", sha=sha)
    toasts = _Toasts()
    user.notify = toasts
    await log_in(user, password, "/approvals")
    await user.open("/approvals")
    await user.should_see(f"#{request['id']} spawn · erin")
    user.find(marker=f"approve-{request['id']}").click()
    await user.should_see(f"#{request['id']} approved but failed: ", retries=50)
    shown = [(text, kind) for text, kind in toasts.types if text.startswith(f"#{request['id']}")]
    assert len(shown) == 1 and shown[0][1] == "negative", shown  # red, and never a green "approved"
    assert "erin already exists" in shown[0][0], shown
    await user.should_see(f"#{request['id']} spawn erin · failed: ", retries=50)  # the history says so too
    await servers.call("lifecycle", "destroy", name="erin", purge=True)


async def test_an_approval_shows_what_it_widens(user: User, servers: Servers, password: str) -> None:
    await servers.call("approvals", "request_spawn_draft", as_name="manager", name="dave")
    paths = AgentPaths.of(servers.config, "dave")
    sha = await repos.commit_files(paths.config, {"agent.toml": 'bash = ["rm:*"]\n'}, "dave may rm")
    request = await servers.call(
        "approvals", "request_spawn_commit", as_name="manager", name="dave", commit_ref=sha, reason="dave cleans up"
    )
    await log_in(user, password, "/approvals")
    await user.open("/approvals")
    await user.should_see(f"#{request['id']} spawn from draft · dave")
    await user.should_see('widens bash: + "rm:*"', marker=f"widening-{request['id']}")
    await servers.call("approvals", "deny", id=request["id"], note="no rm")


async def test_questions_are_on_every_page_and_answered_with_options(
    user: User, servers: Servers, password: str
) -> None:
    asked = await servers.call(
        "operator", "ask_operator", as_name="manager",
        question="which regions?", options=["eu", "us", "asia"], multi=True, ttl_seconds=600,
    )  # fmt: skip
    other = await servers.call("operator", "ask_operator", as_name="manager", question="free text?", ttl_seconds=600)
    await log_in(user, password)
    await user.should_see("which regions?")  # the strip over the swarm page
    await user.should_see(marker=f"ttl-{asked['id']}")
    user.find(marker=f"answer-{asked['id']}").click()
    user.find("eu").click()
    user.find("asia").click()
    user.find(marker=f"send-{asked['id']}").click()
    await user.should_see(f"#{asked['id']} answered", retries=50)
    user.find(marker=f"cancel-question-{other['id']}").click()
    await user.should_see(f"#{other['id']} cancelled", retries=50)
    asks = {q["id"]: q for q in (await servers.call("operator", "list_my_asks", as_name="manager"))["questions"]}
    assert asks[asked["id"]]["answer"] == "eu, asia" and asks[other["id"]]["state"] == "cancelled"
    await user.open("/questions")
    await user.should_see("which regions? · answered: eu, asia", retries=50)


async def test_an_unreachable_server_shows_a_banner_until_it_is_back(
    user: User, servers: Servers, password: str
) -> None:
    await log_in(user, password)
    await user.should_not_see("unreachable")
    approvals = servers.processes["approvals"]
    approvals.stop()
    await user.should_see("approvals unreachable for", marker="banner", retries=100)
    await asyncio.to_thread(approvals.start)
    await user.should_not_see("unreachable", retries=100)


async def test_new_requests_and_questions_pop_up_as_toasts(user: User, servers: Servers, password: str) -> None:
    await log_in(user, password)
    await asyncio.sleep(0.5)  # the dashboard has seen what was there before
    asked = await servers.call("operator", "ask_operator", as_name="manager", question="toast?", ttl_seconds=600)
    await user.should_see("manager asks: toast?", retries=50)
    await servers.call("operator", "cancel_question", id=asked["id"])


async def test_swarm_kills_restarts_rebuilds_and_updates_all(user: User, servers: Servers, password: str) -> None:
    await servers.call("lifecycle", "create_agent", name="erin")
    await log_in(user, password)
    await swarm_see(user, "state-erin", "running", retries=50)
    await swarm_see(user, "last-turn-erin", "never")  # a sleeper: no harness, no turns

    first = sandbox_process(servers, "erin")
    swarm_click(user, "restart-erin")
    await user.should_see("restart erin?")
    user.find(marker="confirm").click()
    await user.should_see("erin: restart", retries=50)
    await swarm_see(user, "state-erin", "running", retries=50)
    assert sandbox_process(servers, "erin") != first

    swarm_click(user, "kill-erin")
    await user.should_see("kill erin?")
    user.find(marker="confirm").click()
    await swarm_see(user, "state-erin", "stopped", retries=50)
    assert gone(first) and (await servers.call("lifecycle", "agent_status", name="erin"))["state"] == "stopped"

    swarm_click(user, "rebuild-erin")
    await user.should_see("rebuild erin?")  # it restarts a running agent: asked once too
    user.find(marker="confirm").click()
    await user.should_see("erin: rebuild", retries=50)

    # Pretend erin was built by an older hyperhive, as after an upgrade.
    with sqlite3.connect(servers.config.db_path("lifecycle")) as db:
        db.execute("UPDATE agents SET built_version = '0.0.1' WHERE name = 'erin'")
    db.close()
    await swarm_see(user, "update-erin", retries=50)
    user.find(marker="update-all").click()
    await user.should_see("update all: rebuild and restart erin?", retries=50)  # the list it restarts
    user.find(marker="confirm").click()
    await user.should_see("rebuilt erin", retries=50)
    await swarm_see(user, "update-erin", retries=50, shown=False)
    assert not (await servers.call("lifecycle", "agent_status", name="erin"))["needs_update"]
    await servers.call("lifecycle", "destroy", name="erin", purge=True)


async def test_a_running_turn_is_shown_and_cancelled(user: User, servers: Servers, password: str) -> None:
    """The test plays the harness: it writes turn.json as the real one does and obeys the cancel file."""
    await servers.call("lifecycle", "create_agent", name="gus")
    paths = AgentPaths.of(servers.config, "gus")
    harness = TurnRecorder(paths.harness)
    await harness.open()
    await harness.set("running", turn=42, leased=[7, 8])
    await log_in(user, password)
    await swarm_see(user, "state-gus", "working", retries=50)
    await swarm_see(user, "state-gus", "2 msgs")
    await swarm_see(user, "last-turn-gus", "now")

    async def obey_cancel() -> None:
        while not paths.cancel_request.exists():
            await asyncio.sleep(0.05)
        assert paths.cancel_request.read_text().strip() == "42"
        await harness.record(
            turn_row("wake", time.time() - 3, "sonnet", TurnOutcome(ok=False, error="cancelled"), 2, 0)
        )
        await harness.set("idle")

    obeying = asyncio.create_task(obey_cancel())
    swarm_click(user, "cancel-gus")
    await user.should_see("turn cancelled", retries=100)
    await obeying
    await swarm_see(user, "state-gus", "idle", retries=50)
    await swarm_see(user, "last-turn-gus", "s ago", retries=50)
    await swarm_see(user, "cancel-gus", shown=False)
    await servers.call("lifecycle", "destroy", name="gus", purge=True)


async def test_a_crash_pops_up_a_toast(user: User, servers: Servers, password: str) -> None:
    await servers.call("lifecycle", "create_agent", name="fred")
    await log_in(user, password)
    await swarm_see(user, "state-fred", "running", retries=50)
    await asyncio.sleep(0.5)  # the dashboard has read the flow so far
    os.kill(sandbox_process(servers, "fred"), signal.SIGKILL)
    await user.should_see("fred crashed", retries=100)
    await servers.call("lifecycle", "destroy", name="fred", purge=True)


async def test_the_stats_tab_charts_real_turns(user: User, servers: Servers, password: str) -> None:
    """Two turns reported by the harness's own recorder, as the manager, to the lifecycle server."""
    lifecycle = LifecycleClient.for_server(servers.config, servers.token("manager"))
    harness = TurnRecorder(AgentPaths.of(servers.config, "manager").harness, StatsReporter(lifecycle))
    await harness.open()
    ok = TurnOutcome(ok=True, terminal_reason="completed", model_turns=2, tokens_in=900, tokens_out=40)
    ok.tool_calls.update({"mcp__broker__send": 2, "Read": 1})
    await harness.record(turn_row("wake", time.time() - 5, "sonnet", ok, messages=1, queued=3))
    await harness.record(turn_row("wake", time.time() - 2, "sonnet", TurnOutcome(ok=False, error="API 529"), 1, 0))
    await harness.set("idle")
    await harness.close()  # sends what is waiting
    assert harness.reporter.dropped == 0
    await log_in(user, password)
    await swarm_see(user, "last-turn-manager", "s ago", retries=50)
    await user.open("/agent/manager")
    user.find(marker="tab-stats").click()
    await user.should_see(marker="stats-summary", content="2 turns · 1 error ·", retries=50)
    await user.should_see(marker="stats-summary", content="tokens 900 in / 40 out")
    charts = user.find(kind=ui.echart).elements
    titles = {chart.options["title"]["text"] for chart in charts}  # type: ignore[attr-defined]
    assert titles == {"turns per hour", "duration (s) and inbox depth", "tool calls", "tokens and cost"}
    [tools] = [c for c in charts if c.options["title"]["text"] == "tool calls"]  # type: ignore[attr-defined]
    assert tools.options["xAxis"]["data"] == ["mcp__broker__send", "Read"]  # type: ignore[attr-defined]
    assert tools.options["series"][0]["data"] == [2, 1]  # type: ignore[attr-defined]
    [tokens] = [c for c in charts if c.options["title"]["text"] == "tokens and cost"]  # type: ignore[attr-defined]
    assert [series["name"] for series in tokens.options["series"]] == ["tokens in", "tokens out", "cost $"]  # type: ignore[attr-defined]


async def test_a_paused_agent_shows_its_cost_and_the_operator_resumes_it(
    user: User, servers: Servers, password: str
) -> None:
    """bud's harness reports a turn past its $1.00/day: the swarm and its page show it paused, with
    the hive's cost; the page's resume button starts its day afresh."""
    await servers.call("lifecycle", "create_agent", name="bud")
    try:
        await servers.call("lifecycle", "set_budget", name="bud", usd_per_day=1.0)
        now = time.time()
        turn = turn_row("wake", now - 5, "sonnet", TurnOutcome(ok=True, cost_usd=1.25), messages=1, queued=0)
        await servers.call("lifecycle", "record_turn", as_name="bud", turn=turn.model_dump())
        await log_in(user, password)
        await swarm_see(user, "cost-bud", "$1.25/1.00 paused", retries=50)
        await user.should_see(marker="swarm-summary", content="hive $1.25 today", retries=50)
        await user.open("/agent/bud")
        await user.should_see(marker="agent-cost", content="$1.25 of $1.00 today · $1.25 this week", retries=50)
        await user.should_see(marker="agent-cost", content="paused: budget $1.00/day reached")
        user.find(marker="resume").click()
        await user.should_see("bud: resumed; its day starts afresh", retries=50)
        await user.should_not_see(marker="agent-cost", content="paused", retries=50)
        await user.should_not_see(marker="resume")
        audit = await servers.call("lifecycle", "audit", agent="bud", limit=1)
        assert [(e["action"], e["outcome"], e["actor"]) for e in audit["entries"]] == [
            ("resume_agent", "ok", "operator")
        ]
    finally:
        await servers.call("lifecycle", "destroy", name="bud", purge=True)


async def test_a_peer_shows_as_a_peer_without_actions_and_its_page_says_what_it_is(
    user: User, servers: Servers, password: str
) -> None:
    await servers.call("lifecycle", "add_peer", name="outside", allowed_recipients=["manager"])
    await log_in(user, password)
    await swarm_see(user, "state-outside", retries=50)
    assert swarm_text(user, "state-outside") == "peer"
    await swarm_see(user, "stop-manager")  # a running agent: stop, never start
    await swarm_see(user, "start-manager", shown=False)
    await swarm_see(user, "start-outside", shown=False)  # nothing to start, stop or steer
    await swarm_see(user, "model-outside", shown=False)
    await user.open("/agent/outside")
    await user.should_see("outside the hive", retries=50)
    await user.should_see('allowed_recipients = ["manager"]', retries=50)
    await user.should_not_see(marker="log")
