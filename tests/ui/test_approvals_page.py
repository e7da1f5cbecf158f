"""The approvals page and the questions drawer against the real servers, through NiceGUI's simulated
user: requests explain themselves, a spawn reads as a summary, risky fields are flagged, a failed
approval reads as failed; questions sit in a drawer behind a badge with a countdown in h/m."""

from __future__ import annotations

import pytest
from hivetest import Servers
from nicegui import ui
from nicegui.testing import User
from uitest import log_in

from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.paths import AgentPaths

pytestmark = pytest.mark.slow


async def test_a_spawn_reads_as_a_summary_with_its_reason_commit_and_risky_fields(
    user: User, servers: Servers, password: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    await servers.call("approvals", "request_spawn_draft", as_name="manager", name="gina")
    data = tmp_path_factory.mktemp("gina-data")
    sha = await repos.commit_files(
        AgentPaths.of(servers.config, "gina").config,
        {
            "agent.toml": 'model = "opus"\nallowed_recipients = ["manager"]\nbash = ["git diff:*"]\n'
            f'[[binds]]\nhost = "{data}"\npath = "/data"\nmode = "rw"\n[budget]\nusd_per_day = 4\n'
        },
        "gina: reviews the data set\n\nChecked: git diff is read-only; /data is the set she reviews.",
    )
    request = await servers.call(
        "approvals", "request_spawn_commit", as_name="manager", name="gina", commit_ref=sha,
        reason="alice asked for a reviewer of the data set",
    )  # fmt: skip
    rid = request["id"]
    await log_in(user, password, "/approvals")
    await user.open("/approvals")
    await user.should_see(f"#{rid} spawn from draft · gina")
    await user.should_see(marker=f"reason-{rid}", content="alice asked for a reviewer of the data set")
    await user.should_see(marker=f"message-{rid}", content="Checked: git diff is read-only")
    summary = user.find(marker=f"summary-{rid}")
    assert summary.elements, "the spawn's summary"
    for shown in ("opus", "manager", "git diff:*", f"host {data} at /data (rw)", "$4 a day, no limit a turn", "rw"):
        await user.should_see(shown)
    await user.should_see(marker=f"risky-{rid}-bash")
    await user.should_see(marker=f"risky-{rid}-binds")
    await user.should_not_see(marker=f"risky-{rid}-model")
    await user.should_not_see(marker=f"risky-{rid}-budget")  # a limit where the default has none: no widening
    await user.should_see(marker=f"risky-{rid}", content="risky: widens 2")
    await user.should_see("the config as a diff (")  # the diff, behind an expander
    await servers.call("approvals", "deny", id=rid, note="not now")
    await user.should_see(
        marker=f"history-{rid}", content=f"spawn from draft gina @ {sha[:12]} · denied: not now", retries=50
    )


async def test_a_failed_approval_reads_as_failed_and_history_lines_open_to_their_diff(
    user: User, servers: Servers, password: str
) -> None:
    request = await servers.call("approvals", "request_spawn", as_name="manager", name="hank", reason="more hands")
    rid = request["id"]
    await servers.call("lifecycle", "create_draft", name="hank")  # made otherwise meanwhile: approving fails
    sha = await repos.commit_files(
        AgentPaths.of(servers.config, "hank").config, {"agent.toml": "model = 'opus'\n"}, "hank"
    )
    await servers.call("lifecycle", "create_agent", name="hank", sha=sha)
    await log_in(user, password, "/approvals")
    await user.open("/approvals")
    await user.should_see(f"#{rid} spawn · hank")
    await user.should_see(marker=f"reason-{rid}", content="more hands")
    user.find(marker=f"approve-{rid}").click()
    await user.should_see(f"#{rid} approved but failed: ", retries=50)
    await user.should_see(marker=f"history-{rid}", content="failed: ", retries=50)
    [line] = user.find(marker=f"history-{rid}").elements
    assert isinstance(line, ui.expansion) and "text-negative" in line.classes, line.classes  # red
    assert "applied" not in str(line.props["label"]) and "approved" not in str(line.props["label"])
    line.set_value(True)  # open: the diff it would have applied and why it was asked
    await user.should_see('+role = "agent"')
    assert any(line in element.ancestors() for element in user.find(marker=f"reason-{rid}").elements)
    await servers.call("lifecycle", "destroy", name="hank", purge=True)


async def test_a_new_request_leaves_the_cards_shown_alone_a_click_and_a_typed_note_survive_it(
    user: User, servers: Servers, password: str
) -> None:
    """Every change used to rebuild every card: a click on a button just replaced was lost (seen in
    CI: approve clicked, nothing happened) and a deny note being typed vanished."""
    first = await servers.call("approvals", "request_spawn", as_name="manager", name="iris", reason="more hands")
    await log_in(user, password, "/approvals")
    await user.open("/approvals")
    await user.should_see(f"#{first['id']} spawn · iris")
    [approve] = user.find(marker=f"approve-{first['id']}").elements
    [note] = user.find(marker=f"note-{first['id']}").elements
    assert isinstance(note, ui.input)
    note.set_value("half a reason")
    second = await servers.call("approvals", "request_spawn", as_name="manager", name="jack", reason="even more")
    await user.should_see(f"#{second['id']} spawn · jack", retries=50)
    assert not approve.is_deleted and note.value == "half a reason"
    [card] = user.find(marker=f"request-{first['id']}").elements
    [later] = user.find(marker=f"request-{second['id']}").elements
    assert card.parent_slot is not None and later.parent_slot is card.parent_slot
    assert card.parent_slot.children.index(card) < card.parent_slot.children.index(later)  # the queue's order
    await servers.call("approvals", "deny", id=first["id"], note="not now")
    await user.should_not_see(marker=f"request-{first['id']}", retries=50)
    await user.should_see(marker=f"request-{second['id']}")
    await servers.call("approvals", "deny", id=second["id"], note="not now")
    await user.should_see("no requests waiting", retries=50)


async def test_questions_wait_in_a_drawer_behind_a_badge_with_an_h_m_countdown(
    user: User, servers: Servers, password: str
) -> None:
    long = await servers.call(
        "operator", "ask_operator", as_name="manager", question="ship on friday?", options=["yes", "no"],
        ttl_seconds=4430,
    )  # fmt: skip
    soon = await servers.call(
        "operator", "ask_operator", as_name="manager", question="urgent?", ttl_seconds=235, about=41
    )  # fmt: skip
    await log_in(user, password)
    await user.should_see(marker="questions-count", content="2")
    [drawer] = user.find(marker="questions-drawer").elements
    assert isinstance(drawer, ui.right_drawer) and drawer.value is False  # out of the way until asked for
    assert drawer.client.title == "(2) hyperhive"  # the tab says how many wait
    user.find(marker="questions-button").click()
    assert drawer.value is True
    await user.should_see("ship on friday?")
    await user.should_see(marker=f"ttl-{long['id']}", content="1 h 13 m")
    await user.should_see(marker=f"ttl-{soon['id']}", content="3 m")
    [slow_chip] = user.find(marker=f"ttl-{long['id']}").elements
    [urgent_chip] = user.find(marker=f"ttl-{soon['id']}").elements
    assert urgent_chip.props["color"] == "negative" and slow_chip.props["color"] != "negative"  # red under 5 m
    [asker] = user.find(marker=f"asker-{long['id']}").elements
    assert isinstance(asker, ui.link) and asker.props["href"] == "/messages?agent=manager"
    [asker] = user.find(marker=f"asker-{soon['id']}").elements  # a question about a message: its thread
    assert isinstance(asker, ui.link) and asker.props["href"] == "/messages?thread=41"
    user.find(marker=f"cancel-question-{soon['id']}").click()
    await user.should_see(f"#{soon['id']} cancelled", retries=50)
    await user.should_see(marker="questions-count", content="1", retries=50)
    assert drawer.client.title == "(1) hyperhive"
    await user.should_not_see(marker=f"question-{soon['id']}", retries=50)
    await servers.call("operator", "cancel_question", id=long["id"])
    await user.should_see("no questions waiting", retries=50)
    assert drawer.client.title == "hyperhive"
