"""What the operator types is checked as it is typed (§5's inline validation): the field says what is
wrong and the button waits, instead of a refusal toast after the call. Against the real servers,
through NiceGUI's simulated user."""

from __future__ import annotations

import pytest
from hivetest import Servers
from nicegui import ui
from nicegui.testing import User
from uitest import log_in, swarm_click, swarm_see

pytestmark = pytest.mark.slow


def field(user: User, marker: str) -> ui.input:
    [element] = user.find(marker=marker).elements
    assert isinstance(element, ui.input)
    return element


def enabled(user: User, marker: str) -> bool:
    [element] = user.find(marker=marker).elements
    assert isinstance(element, ui.button)
    return element.enabled


async def test_the_spawn_name_is_checked_as_it_is_typed(user: User, servers: Servers, password: str) -> None:
    await log_in(user, password)
    await swarm_see(user, "state-manager", retries=50)
    name = field(user, "spawn-name")
    assert not enabled(user, "spawn") and name.error is None  # nothing typed: nothing to complain about yet
    for typed, said in [
        ("Bad_Name", "use 1-11 characters, lowercase letters, digits and '-'"),
        ("abcdefghijkl", "use 1-11 characters"),  # 12: over the sandbox name limit
        ("operator", "it is reserved"),
        ("manager", "manager exists already"),
    ]:
        user.find(marker="spawn-name").clear().type(typed)
        assert name.error is not None and said in name.error, (typed, name.error)
        assert not enabled(user, "spawn"), typed
    user.find(marker="spawn-name").trigger("keydown.enter")  # Enter on a bad name sends nothing either
    user.find(marker="spawn-name").clear().type("abcdefghijk")  # 11: fits
    assert name.error is None
    assert enabled(user, "spawn")
    listed = await servers.call("lifecycle", "list_agents")
    assert [a["name"] for a in listed["agents"]] == ["manager"]


async def test_the_model_dialog_checks_the_name_and_empty_means_agent_toml(
    user: User, servers: Servers, password: str
) -> None:
    await log_in(user, password)
    await swarm_see(user, "model-manager", "sonnet", retries=50)
    swarm_click(user, "model-manager")
    await user.should_see(marker="model-input")
    model = field(user, "model-input")
    user.find(marker="model-input").clear().type("not a model!")
    assert model.error is not None and "is not a model name" in model.error
    assert not enabled(user, "set-model")
    user.find(marker="model-input").clear()  # empty: back to agent.toml's model
    assert model.error is None and enabled(user, "set-model")
    user.find(marker="model-input").type("haiku")
    assert model.error is None
    user.find(marker="set-model").click()
    try:
        await user.should_see("manager: model haiku", retries=50)
        assert (await servers.call("lifecycle", "agent_status", name="manager"))["model"] == "haiku"
    finally:
        await servers.call("lifecycle", "set_model", name="manager", model=None)


async def test_deny_waits_for_a_note(user: User, servers: Servers, password: str) -> None:
    request = await servers.call("approvals", "request_spawn", as_name="manager", name="vera", reason="a test")
    rid = request["id"]
    await log_in(user, password, "/approvals")
    await user.open("/approvals")
    await user.should_see(marker=f"deny-{rid}")
    note = field(user, f"note-{rid}")
    assert "required to deny" in str(note.props.get("hint"))
    assert not enabled(user, f"deny-{rid}")
    user.find(marker=f"note-{rid}").type("   ")  # blanks are no reason
    assert not enabled(user, f"deny-{rid}")
    user.find(marker=f"note-{rid}").clear().type("not now")
    assert enabled(user, f"deny-{rid}")
    user.find(marker=f"deny-{rid}").click()
    await user.should_see(f"#{rid} denied", retries=50)
    history = await servers.call("approvals", "approval_history", limit=5)
    [denied] = [r for r in history["requests"] if r["id"] == rid]
    assert (denied["state"], denied["note"]) == ("denied", "not now")
