"""The dashboard against the real servers, through NiceGUI's simulated user."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hivetest import Hive
from nicegui.testing import User
from uitest import Servers, log_in

from hyperhive.servers.common.client import HiveClient

pytestmark = pytest.mark.slow


async def call(hive: Hive, server: str, tool: str, as_name: str = "operator", **arguments: Any) -> Any:
    async with HiveClient.for_server(hive.config, server, hive.token(as_name), retry_seconds=0) as client:
        return await client.call(tool, arguments)


async def test_login_is_required_and_the_password_or_a_token_lets_you_in(
    user: User, servers: Hive, password: str
) -> None:
    await user.open("/")
    await user.should_see("log in")
    user.find(marker="secret").type("wrong")
    user.find(marker="login").click()
    await user.should_see("not the dashboard password or an operator token")
    user.find(marker="secret").clear().type(password)
    user.find(marker="login").click()
    await user.should_see("◆ swarm")
    await user.should_see(marker="state-manager", content="running", retries=100)


async def test_a_token_link_logs_in(user: User, servers: Hive) -> None:
    await user.open(f"/login?token={servers.token('operator')}")
    await user.should_see("◆ swarm")
    await user.open("/approvals")
    await user.should_see("◆ approvals")
    user.find("log out").click()
    await user.should_see("log in")
    await user.open("/login?token=forged")
    await user.should_see("log in")
    await user.open("/messages")
    await user.should_see("log in")


async def test_swarm_spawns_stops_starts_sets_the_model_and_destroys(user: User, servers: Hive, password: str) -> None:
    await log_in(user, password)
    user.find(marker="spawn-name").type("alice")
    user.find(marker="spawn").click()
    await user.should_see(marker="state-alice", content="running", retries=50)

    user.find(marker="stop-alice").click()
    await user.should_see("stop alice?")
    user.find(marker="confirm").click()
    await user.should_see(marker="state-alice", content="stopped", retries=50)
    assert (await call(servers, "lifecycle", "agent_status", name="alice"))["state"] == "stopped"
    user.find(marker="start-alice").click()
    await user.should_see(marker="state-alice", content="running", retries=50)

    user.find(marker="model-alice").click()
    await user.should_see(marker="model-input")
    user.find(marker="model-input").clear().type("haiku")
    user.find(marker="set-model").click()
    await user.should_see(marker="model-alice", content="haiku", retries=50)
    assert (await call(servers, "lifecycle", "agent_status", name="alice"))["model"] == "haiku"

    user.find(marker="spawn-name").type("Bad Name")
    user.find(marker="spawn").click()
    await user.should_see("invalid agent name")  # the server's refusal, as a toast

    user.find(marker="destroy-alice").click()
    await user.should_see("also purge its repos, files, token and logs")
    user.find(marker="purge").click()
    user.find(marker="confirm").click()
    await user.should_see("alice: destroyed", retries=50)
    await user.should_not_see(marker="state-alice", retries=50)
    listing = await call(servers, "lifecycle", "list_agents")
    assert [a["name"] for a in listing["agents"]] == ["manager"]


async def test_approvals_show_the_diff_and_are_approved_or_denied_with_a_note(
    user: User, servers: Hive, password: str
) -> None:
    first = await call(servers, "approvals", "request_spawn", as_name="manager", name="bob")
    second = await call(servers, "approvals", "request_spawn", as_name="manager", name="carol")
    await log_in(user, password, "/approvals")
    await user.open("/approvals")
    await user.should_see(f"#{first['id']} spawn · bob")
    await user.should_see('+role = "agent"')  # the diff of the template config
    user.find(marker=f"approve-{first['id']}").click()
    await user.should_see(f"#{first['id']} approved", retries=50)
    user.find(marker=f"deny-{second['id']}").click()
    await user.should_see("say why, for the manager")
    user.find(marker=f"note-{second['id']}").type("not now")
    user.find(marker=f"deny-{second['id']}").click()
    await user.should_see(f"#{second['id']} denied", retries=50)
    await user.should_see(f"#{second['id']} spawn carol · denied: not now · by operator", retries=50)
    await user.should_see(f"#{first['id']} spawn bob · applied", retries=50)
    assert (await call(servers, "lifecycle", "agent_status", name="bob"))["state"] in ("running", "starting")
    await call(servers, "lifecycle", "destroy", name="bob", purge=True)


async def test_questions_are_on_every_page_and_answered_with_options(user: User, servers: Hive, password: str) -> None:
    asked = await call(
        servers, "operator", "ask_operator", as_name="manager",
        question="which regions?", options=["eu", "us", "asia"], multi=True, ttl_seconds=600,
    )  # fmt: skip
    other = await call(servers, "operator", "ask_operator", as_name="manager", question="free text?", ttl_seconds=600)
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
    asks = {q["id"]: q for q in (await call(servers, "operator", "list_my_asks", as_name="manager"))["questions"]}
    assert asks[asked["id"]]["answer"] == "eu, asia" and asks[other["id"]]["state"] == "cancelled"
    await user.open("/questions")
    await user.should_see("which regions? · answered: eu, asia", retries=50)


async def test_messages_compose_filter_and_follow_a_thread(user: User, servers: Hive, password: str) -> None:
    await log_in(user, password)
    await user.open("/messages")
    user.find(marker="compose-body").type("hello manager")
    user.find(marker="compose-send").click()
    await user.should_see("sent")
    await user.should_see("operator → manager: hello manager", retries=50)
    inbox = await call(servers, "broker", "recv_batch", as_name="manager", max=10)
    [mine] = [m for m in inbox["messages"] if m["body"] == "hello manager"]
    await call(servers, "broker", "send", as_name="manager", to="operator", body="hi back", in_reply_to=mine["id"])
    await user.should_see(f"manager → operator re #{mine['id']}: hi back", retries=50)


async def test_an_agent_page_has_its_log_config_files_and_stats(user: User, servers: Hive, password: str) -> None:
    state = servers.home / "agents" / "manager" / "state"
    (state / "notes.md").write_text("# notes\nremember the milk\n")
    await log_in(user, password)
    await user.open("/agent/manager")
    await user.should_see("◆ manager")
    await user.should_see(marker="log")
    user.find(marker="tab-config").click()
    await user.should_see('role = "manager"', retries=50)
    user.find(marker="tab-files").click()
    user.find(marker="file-read").click()
    await user.should_see("remember the milk", retries=50)
    user.find(marker="file-path").clear().type("../../secret")
    user.find(marker="file-read").click()
    await user.should_see("contains '..'", retries=50)
    user.find(marker="tab-stats").click()
    await user.should_see("0 turns · 0 errors", retries=50)


async def test_an_unreachable_server_shows_a_banner_until_it_is_back(
    user: User, servers: Servers, password: str
) -> None:
    await log_in(user, password)
    await user.should_not_see("unreachable")
    approvals = servers.processes["approvals"]
    approvals.stop()
    await user.should_see("approvals unreachable: retrying every second", retries=100)
    await asyncio.to_thread(approvals.start)
    await user.should_not_see("unreachable", retries=100)


async def test_new_requests_and_questions_pop_up_as_toasts(user: User, servers: Hive, password: str) -> None:
    await log_in(user, password)
    await asyncio.sleep(0.5)  # the dashboard has seen what was there before
    asked = await call(servers, "operator", "ask_operator", as_name="manager", question="toast?", ttl_seconds=600)
    await user.should_see("manager asks: toast?", retries=50)
    await call(servers, "operator", "cancel_question", id=asked["id"])
