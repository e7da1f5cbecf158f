"""`hive search`, `hive thread` and `hive inbox --peek` against a real broker process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hivetest import Hive, ServerProcess
from pydantic import TypeAdapter

from hyperhive.servers import cli
from hyperhive.servers.broker.models import ListedMessage, PeekedMessage, SearchHit
from hyperhive.servers.common.client import HiveClient

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(hive: Hive) -> Iterator[ServerProcess]:
    process = ServerProcess(hive, "broker").start()
    try:
        yield process
    finally:
        process.kill_if_running()


def run(hive: Hive, *args: str) -> Result:
    return CliRunner().invoke(cli.main, [*args, "--home", str(hive.home)])


def call(hive: Hive, broker: ServerProcess, who: str, tool: str, **arguments: Any) -> Any:
    async def go() -> Any:
        async with HiveClient.for_server(hive.config, "broker", hive.token(who)) as client:
            return await client.call(tool, arguments)

    return asyncio.run(go())  # the CLI runs its own loop: so does this


def test_hive_search_finds_quotes_and_prints_json(hive: Hive, broker: ServerProcess) -> None:
    alice = hive.add_agent("alice")
    call(hive, broker, alice, "send", to="manager", body="the deploy-bot failed\non staging")
    call(hive, broker, "manager", "send", to=alice, body="deploy again")
    call(hive, broker, alice, "send", to="operator", body="lunch?")

    found = run(hive, "search", "deploy")
    assert found.exit_code == 0, found.output
    lines = found.output.splitlines()
    assert lines[0].endswith(f"manager → {alice}: «deploy» again")  # newest first
    assert lines[1].endswith(f"{alice} → manager: the «deploy»-bot failed on staging")  # one line per hit
    assert lines[2] == "◆ 2 messages found"
    assert run(hive, "search", "deploy", "--limit", "1").output.splitlines()[-1] == "◆ 1 message found (the limit)"
    assert "«lunch»" in run(hive, "search", "lunch", "--agent", alice).output
    assert "◆ 0 messages found" in run(hive, "search", "lunch", "--agent", "manager").output

    bad = run(hive, "search", "deploy-bot")
    assert bad.exit_code == 1
    assert "not a search query the broker can read" in bad.output
    assert "hive search '\"foo-bar\"'" in bad.output and "search_messages" not in bad.output
    quoted = run(hive, "search", '"deploy-bot"', "--json")
    assert quoted.exit_code == 0, quoted.output
    [hit] = TypeAdapter(list[SearchHit]).validate_python(json.loads(quoted.output))
    assert hit.body == "the deploy-bot failed\non staging" and [d.to for d in hit.deliveries] == ["manager"]
    assert run(hive, "search", "x", "--limit", "0").exit_code == 2  # click's range check
    assert "invalid agent name" in run(hive, "search", "x", "--agent", "Not Me").output


def test_hive_inbox_peek_leaves_the_messages_unread(hive: Hive, broker: ServerProcess) -> None:
    alice = hive.add_agent("alice")
    assert "◆ no messages waiting" in run(hive, "inbox", "--peek").output
    first = call(hive, broker, alice, "send", to="operator", body="are you there?")
    call(hive, broker, alice, "send", to="operator", body="second", in_reply_to=first["id"])

    peeked = run(hive, "inbox", "--peek")
    assert peeked.exit_code == 0, peeked.output
    lines = peeked.output.splitlines()
    assert lines[0].startswith(f"#{first['id']} ") and lines[0].endswith(f"{alice}: are you there?")
    assert lines[1].endswith(f"{alice} (re #{first['id']}): second")
    assert lines[2] == "◆ 2 messages waiting; still unread (`hive inbox` takes them)"
    printed = json.loads(run(hive, "inbox", "--peek", "--json").output)
    as_json = TypeAdapter(list[PeekedMessage]).validate_python(printed)
    assert [(m.body, m.state) for m in as_json] == [("are you there?", "queued"), ("second", "queued")]
    assert call(hive, broker, "operator", "pending_count") == {"queued": 2, "leased": 0}  # still unread

    taken = run(hive, "inbox")
    assert "are you there?" in taken.output and "second" in taken.output
    assert "◆ no messages waiting" in run(hive, "inbox", "--peek").output
    assert json.loads(run(hive, "inbox", "--json").output) == []  # taking prints JSON too (nothing left)
    assert "--peek does not wait" in run(hive, "inbox", "--peek", "--wait", "5").output


def test_hive_thread_prints_a_conversation_oldest_first(hive: Hive, broker: ServerProcess) -> None:
    alice = hive.add_agent("alice")
    first = call(hive, broker, alice, "send", to="manager", body="review my branch?")
    call(hive, broker, "manager", "send", to=alice, body="elsewhere")  # not in the thread
    reply = call(hive, broker, "manager", "send", to=alice, body="looks good", in_reply_to=first["id"])

    shown = run(hive, "thread", str(reply["id"]))  # any message of it: the whole thread
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith(f"#{first['id']} ") and lines[0].endswith(f"{alice} → manager: review my branch?")
    assert lines[1].endswith(f"manager → {alice} (re #{first['id']}): looks good")
    assert lines[2] == f"◆ 2 messages in the thread of #{reply['id']}"
    listed = TypeAdapter(list[ListedMessage]).validate_python(
        json.loads(run(hive, "thread", str(first["id"]), "--json").output)
    )
    assert [m.id for m in listed] == [first["id"], reply["id"]]
    missing = run(hive, "thread", "999999")
    assert missing.exit_code == 1 and "unknown message 999999" in missing.output
    assert run(hive, "thread", "0").exit_code == 2  # click's range check
