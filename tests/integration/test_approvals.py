"""The approval queue over real HTTP, with a real broker and lifecycle server carrying it out."""

from __future__ import annotations

import asyncio
import os
import shlex
import stat
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastmcp.exceptions import ToolError
from hivetest import SLEEPER, Endpoint, Hive, Hivemind, in_process, toml_list

from hyperhive.servers.approvals.approval_queue import Approvals
from hyperhive.servers.approvals.server import SCHEMAS
from hyperhive.servers.approvals.store import approval_store
from hyperhive.servers.common.kit import ServiceKit
from hyperhive.servers.common.principals import Principal, Role
from hyperhive.servers.common.storage import store_database
from hyperhive.servers.lifecycle import repos
from hyperhive.servers.lifecycle.paths import AgentPaths

# Three servers per test, and events that travel through the outbox; on sqlite and on PostgreSQL.
pytestmark = [pytest.mark.slow, pytest.mark.stores]


class Queue:
    """The three servers, and the manager and operator at the approval queue."""

    def __init__(self, hivemind: Hivemind, approvals: Endpoint) -> None:
        self.hivemind = hivemind
        self.hive = hivemind.hive
        self.endpoint = approvals
        self.manager = approvals.client("manager", timeout=120)
        self.operator = approvals.client("operator", timeout=120)

    async def request(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """A request_* call as the manager; a reason unless the test gives its own."""
        if tool.startswith("request_") and tool != "request_spawn_draft":
            arguments.setdefault("reason", f"the test asks for it: {tool}")
        result: dict[str, Any] = await self.manager.call(tool, arguments)
        return result

    async def approve(self, request_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.operator.call("approve", {"id": request_id})
        return result

    async def propose(self, name: str, agent_toml: str) -> str:
        return await self.hivemind.propose(name, agent_toml)


@pytest.fixture
async def queue(hivemind: Hivemind) -> AsyncIterator[Queue]:
    async with in_process(hivemind.hive, "approvals") as approvals:
        yield Queue(hivemind, approvals)


MANAGER = Principal("manager", Role.MANAGER)
OPERATOR = Principal("operator", Role.OPERATOR)
SLEEPING = f"[sandbox]\ncommand = {toml_list(SLEEPER)}\n"


async def test_apply_commit_flow_with_diff(queue: Queue) -> None:
    hivemind = queue.hivemind
    await hivemind.create("alice")
    sha = await queue.propose("alice", 'model = "opus"\n' + SLEEPING)
    request = await queue.request("request_apply_commit", agent="alice", commit_ref=sha[:10])
    assert (request["kind"], request["agent"], request["commit_sha"], request["state"]) == (
        "apply_commit", "alice", sha, "pending",
    )  # fmt: skip
    assert '-model = "sonnet"' in request["diff"] and '+model = "opus"' in request["diff"]
    assert "--- applied/agent.toml" in request["diff"] and f"+++ proposed@{sha[:12]}/agent.toml" in request["diff"]

    [waiting] = (await queue.operator.call("pending_approvals", {}))["requests"]
    assert waiting["id"] == request["id"] and waiting["diff"] == request["diff"]
    assert [(e["action"], e["actor"]) for e in waiting["audit"]] == [("requested", "manager")]

    approved = await queue.approve(request["id"])
    assert approved["state"] == "applied" and approved["resolved_by"] == "operator" and approved["error"] is None
    resolved = await hivemind.event("approval_resolved")
    assert resolved == {
        "type": "approval_resolved", "request_id": request["id"], "request": "apply_commit", "agent": "alice",
        "outcome": "applied", "by": "operator", "note": None, "error": None,
    }  # fmt: skip
    assert (await hivemind.event("rebuilt"))["sha"] == sha
    alice = await hivemind.until_state("alice", "running")
    assert alice["model"] == "opus"
    assert (await hivemind.call("agent_config", name="alice"))["proposed_sha"] == sha

    with pytest.raises(ToolError, match=rf"request #{request['id']} was already applied: by operator at "):
        await queue.approve(request["id"])
    [history] = (await queue.operator.call("approval_history", {}))["requests"]
    assert [e["action"] for e in history["audit"]] == ["requested", "approved", "applied"]
    mine = (await queue.request("list_my_requests"))["requests"]
    assert [r["id"] for r in mine] == [request["id"]] and "diff" not in mine[0]


async def test_deny_with_a_note(queue: Queue) -> None:
    await queue.hivemind.create("alice")
    sha = await queue.propose("alice", 'model = "opus"\n')
    request = await queue.request("request_apply_commit", agent="alice", commit_ref=sha)
    with pytest.raises(ToolError, match="say why in note"):
        await queue.operator.call("deny", {"id": request["id"], "note": "  "})
    denied = await queue.operator.call("deny", {"id": request["id"], "note": "opus costs too much"})
    assert (denied["state"], denied["note"]) == ("denied", "opus costs too much")
    event = await queue.hivemind.event("approval_resolved")
    assert (event["outcome"], event["note"]) == ("denied", "opus costs too much")
    with pytest.raises(ToolError, match="was already denied: by operator"):
        await queue.approve(request["id"])
    assert (await queue.hivemind.status("alice"))["model"] == "sonnet"  # nothing applied


async def test_requests_are_checked_when_made(queue: Queue) -> None:
    hivemind = queue.hivemind
    await hivemind.create("alice")
    bad = await queue.propose("alice", 'model = "not a model"\n')
    cases = [
        (
            {"agent": "alice", "commit_ref": bad, "reason": "opus for alice"},
            r"cannot be applied: .*'not a model' is not a model name",
        ),
        ({"agent": "alice", "commit_ref": "abcdef1234"}, "there is no commit abcdef1234"),
        ({"agent": "ghost", "commit_ref": "abcdef1234"}, "ghost has no proposed config repo"),
        ({"agent": "Bad!", "commit_ref": "abcdef1234"}, "invalid agent name"),
    ]
    for arguments, error in cases:
        with pytest.raises(ToolError, match=error):
            await queue.request("request_apply_commit", **arguments)
    same = await queue.propose("alice", (AgentPaths.of(queue.hive.config, "alice").applied / "agent.toml").read_text())
    with pytest.raises(ToolError, match="changes nothing in alice's applied config"):
        await queue.request("request_apply_commit", agent="alice", commit_ref=same)
    good = await queue.propose("alice", 'model = "haiku"\n')
    first = await queue.request("request_apply_commit", agent="alice", commit_ref=good)
    with pytest.raises(ToolError, match=rf"request #{first['id']} asks for this already and is pending"):
        await queue.request("request_apply_commit", agent="alice", commit_ref=good)
    with pytest.raises(ToolError, match="manager exists already"):
        await queue.request("request_spawn", name="manager")
    assert len((await queue.operator.call("pending_approvals", {}))["requests"]) == 1  # nothing else stored


async def test_identical_requests_at_once_make_one_and_the_queue_is_capped(hivemind: Hivemind) -> None:
    hive = hivemind.hive
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}\n[approvals]\nmax_pending = 2")
    async with in_process(hive, "approvals") as approvals:
        manager = approvals.client("manager", timeout=60)
        spawns = [manager.call("request_spawn", {"name": "bob", "reason": "more hands"}) for _ in range(4)]
        outcomes = await asyncio.gather(*spawns, return_exceptions=True)
        made = [o for o in outcomes if isinstance(o, dict)]
        assert len(made) == 1, outcomes
        refusal = f"request #{made[0]['id']} asks for this already and is pending"
        assert all(refusal in str(o) for o in outcomes if o not in made), outcomes
        await manager.call("request_spawn", {"name": "carol", "reason": "more hands"})
        with pytest.raises(ToolError, match="2 requests are waiting for the operator already, the limit"):
            await manager.call("request_spawn", {"name": "dave", "reason": "more hands"})
        waiting = (await approvals.client("operator").call("pending_approvals", {}))["requests"]
        assert [r["agent"] for r in waiting] == ["bob", "carol"]


async def test_who_may_do_what(queue: Queue) -> None:
    alice = queue.hive.add_agent("alice")
    as_alice = queue.endpoint.client(alice)
    with pytest.raises(ToolError, match=r"alice lacks approvals\.request_spawn; ask the manager"):
        await as_alice.call("request_spawn", {"name": "bob", "reason": "more hands"})
    with pytest.raises(ToolError, match=r"approvals\.approve is an operator tool"):
        await as_alice.call("approve", {"id": 1})
    with pytest.raises(ToolError, match=r"approvals\.approve is an operator tool"):
        await queue.manager.call("approve", {"id": 1})  # the manager asks; only the operator decides


async def test_spawn_in_one_step(queue: Queue) -> None:
    request = await queue.request("request_spawn", name="bob")
    assert request["kind"] == "spawn" and "+++ template/agent.toml" in request["diff"]
    approved = await queue.approve(request["id"])
    assert approved["state"] == "applied"
    assert (await queue.hivemind.event("spawned"))["agent"] == "bob"
    event = await queue.hivemind.event("approval_resolved")
    assert (event["request"], event["agent"], event["outcome"]) == ("spawn", "bob", "applied")
    assert (await queue.hivemind.until_state("bob", "running"))["role"] == "agent"


async def test_spawn_in_two_steps_from_a_draft(queue: Queue) -> None:
    config = queue.hive.config
    draft = await queue.request("request_spawn_draft", name="carol")
    paths = AgentPaths.of(config, "carol")
    assert (draft["config_dir"], draft["state_dir"]) == (str(paths.config), str(paths.state))
    assert (await queue.hivemind.call("list_agents"))["agents"][-1]["name"] != "carol"  # not an agent yet
    manager_uid = (await queue.hivemind.status("manager"))["uid"]
    assert paths.state.stat().st_uid == manager_uid  # the manager seeds it
    (paths.state / "notes.md").write_text("# carol\nYou review pull requests.\n")
    (paths.state / "seed").mkdir()
    (paths.state / "seed" / "todo.md").write_text("- first\n")
    outside = queue.hive.home / "not-carols"
    outside.write_text("the host's\n")
    (paths.state / "link").symlink_to(outside)  # a seeded link must not hand its target to carol
    sha = await queue.propose("carol", 'model = "haiku"\n' + SLEEPING)

    request = await queue.request("request_spawn_commit", name="carol", commit_ref=sha)
    assert request["kind"] == "spawn_commit" and "--- /dev/null" in request["diff"]
    await queue.approve(request["id"])
    carol = await queue.hivemind.until_state("carol", "running")
    assert carol["model"] == "haiku"
    notes = paths.state / "notes.md"
    assert notes.read_text().startswith("# carol") and notes.stat().st_uid == carol["uid"] != manager_uid
    assert (paths.state / "seed" / "todo.md").stat().st_uid == carol["uid"]
    assert (paths.state / "link").lstat().st_uid == carol["uid"] and outside.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(paths.state.stat().st_mode) == 0o700
    with pytest.raises(ToolError, match="carol exists already"):
        await queue.request("request_spawn_draft", name="carol")


async def test_a_failing_apply_is_reported(queue: Queue) -> None:
    await queue.hivemind.create("alice")
    sha = await queue.propose("alice", 'model = "opus"\n')
    request = await queue.request("request_apply_commit", agent="alice", commit_ref=sha)
    await queue.hivemind.call("destroy", name="alice", purge=True)  # gone before the operator decides
    failed = await queue.approve(request["id"])
    assert failed["state"] == "failed" and "no agent named 'alice'" in failed["error"]
    event = await queue.hivemind.event("approval_resolved")
    assert event["outcome"] == "failed" and "no agent named 'alice'" in event["error"]


async def test_concurrent_approvals_resolve_once(queue: Queue) -> None:
    await queue.hivemind.create("alice")
    sha = await queue.propose("alice", 'model = "opus"\n' + SLEEPING)
    request = await queue.request("request_apply_commit", agent="alice", commit_ref=sha)
    other = queue.endpoint.client("operator", timeout=120)
    results = await asyncio.gather(
        queue.approve(request["id"]), other.call("approve", {"id": request["id"]}), return_exceptions=True
    )
    refusals = [r for r in results if isinstance(r, ToolError)]
    assert len(refusals) == 1 and "approved by operator" in str(refusals[0])
    assert (await queue.hivemind.event("approval_resolved"))["outcome"] == "applied"
    await asyncio.sleep(0.5)
    messages = (await queue.hivemind.broker.client("operator").call("list_messages", {"agent": "manager"}))["messages"]
    assert sum(m.get("event", {}).get("type") == "approval_resolved" for m in messages) == 1


# ------------------------------------------------------------------------------------ restarts


async def test_pending_requests_survive_a_restart(hivemind: Hivemind, storage: str) -> None:
    await hivemind.create("alice")
    sha = await hivemind.propose("alice", 'model = "opus"\n')
    async with in_process(hivemind.hive, "approvals") as approvals:
        request = await approvals.client("manager").call(
            "request_apply_commit", {"agent": "alice", "commit_ref": sha, "reason": "opus for alice"}
        )
    async with in_process(hivemind.hive, "approvals") as approvals:
        [waiting] = (await approvals.client("operator").call("pending_approvals", {}))["requests"]
        assert waiting["id"] == request["id"] and waiting["state"] == "pending"
    # Kept where [storage] says: the server's own sqlite file, or else the PostgreSQL database alone.
    assert hivemind.hive.config.db_path("approvals").exists() == (storage == "sqlite")


async def _crash_mid_approval(hive: Hive, request_id: int) -> None:
    """What a crash between claiming and carrying out leaves: the claim (approving, its audit entry), nothing else."""
    async with store_database("approvals", hive.config, SCHEMAS) as db:
        await approval_store(db).claim(request_id, "operator", time.time())


async def test_a_crash_between_approve_and_apply_is_recovered(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    first = await hivemind.propose("alice", 'model = "opus"\n' + SLEEPING)
    async with in_process(hivemind.hive, "approvals") as approvals:
        request = await approvals.client("manager").call(
            "request_apply_commit", {"agent": "alice", "commit_ref": first, "reason": "opus for alice"}
        )
    await _crash_mid_approval(hivemind.hive, request["id"])
    async with in_process(hivemind.hive, "approvals") as approvals:  # recovery carries it out
        event = await hivemind.event("approval_resolved")
        assert (event["request_id"], event["outcome"]) == (request["id"], "applied")
        [done] = (await approvals.client("operator").call("approval_history", {}))["requests"]
        assert [e["action"] for e in done["audit"]] == ["requested", "approved", "applied"]
    assert (await hivemind.status("alice"))["model"] == "opus"

    # Had the apply itself happened before the crash, recovery finds it done and does not repeat it.
    second = await hivemind.propose("alice", 'model = "haiku"\n' + SLEEPING)
    async with in_process(hivemind.hive, "approvals") as approvals:
        request = await approvals.client("manager").call(
            "request_apply_commit", {"agent": "alice", "commit_ref": second, "reason": "opus for alice"}
        )
    await hivemind.approvals.call("apply_commit", {"name": "alice", "sha": second})
    applies = await repos.git(AgentPaths.of(hivemind.hive.config, "alice").applied, "rev-list", "--count", "HEAD")
    await _crash_mid_approval(hivemind.hive, request["id"])
    async with in_process(hivemind.hive, "approvals"):
        assert (await hivemind.event("approval_resolved"))["outcome"] == "applied"
    again = await repos.git(AgentPaths.of(hivemind.hive.config, "alice").applied, "rev-list", "--count", "HEAD")
    assert again == applies


async def test_approving_while_the_lifecycle_server_is_down(hive: Hive) -> None:
    hive.configure(f"[lifecycle]\ndefault_command = {toml_list(SLEEPER)}")
    async with in_process(hive, "broker") as broker, in_process(hive, "approvals") as approvals:
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            hivemind = Hivemind(hive, broker, lifecycle)
            await hivemind.create("alice")
            sha = await hivemind.propose("alice", 'model = "opus"\n' + SLEEPING)
            request = await approvals.client("manager").call(
                "request_apply_commit", {"agent": "alice", "commit_ref": sha, "reason": "opus for alice"}
            )
            await hivemind.operator.close()
            await hivemind.approvals.close()
        approved = await approvals.client("operator", timeout=60).call("approve", {"id": request["id"]})
        assert approved["state"] == "approving"  # recorded; carried out when the lifecycle server is back
        async with in_process(hive, "lifecycle", stop_agents_on_exit=True) as lifecycle:
            hivemind = Hivemind(hive, broker, lifecycle)
            assert (await hivemind.event("approval_resolved", timeout=20))["outcome"] == "applied"
            assert (await hivemind.status("alice"))["model"] == "opus"


async def test_an_approve_and_the_recovery_carry_a_request_out_once(hivemind: Hivemind) -> None:
    await hivemind.create("alice")
    sha = await hivemind.propose("alice", 'model = "opus"\n' + SLEEPING)
    hive = hivemind.hive
    approvals = Approvals(
        ServiceKit("approvals", hive.config, SCHEMAS, token=hive.credentials("approvals").service_token())
    )
    async with approvals.running():
        request = await approvals.request_apply_commit(MANAGER, "alice", sha, "opus for alice")
        # The recovery looks for `approving` requests while the approve is still carrying this one out.
        approved, _ = await asyncio.gather(approvals.approve(OPERATOR, request.id), approvals._recovery_pass())
        final = await approvals.store.get(request.id)
        assert (await hivemind.event("approval_resolved"))["outcome"] == "applied"
    assert (final.state, final.error) == ("applied", None), final
    assert approved.state in ("applied", "approving")
    applied = AgentPaths.of(hive.config, "alice").applied
    assert (await repos.git(applied, "rev-list", "--count", "HEAD")).strip() == "2"  # created, then applied once


# ------------------------------------------------------------------- what approving applies (#12)


async def test_a_one_step_spawn_is_refused_while_a_draft_of_that_name_exists(queue: Queue) -> None:
    await queue.request("request_spawn_draft", name="carol")
    with pytest.raises(ToolError, match=r"a draft of carol exists: use request_spawn_commit\('carol', sha\)"):
        await queue.request("request_spawn", name="carol")
    # What a destroyed agent left (its config repos) is a draft too: the template is not what it holds.
    await queue.hivemind.create("alice")
    await queue.hivemind.call("destroy", name="alice")
    with pytest.raises(ToolError, match="a draft of alice exists"):
        await queue.request("request_spawn", name="alice")
    assert (await queue.operator.call("pending_approvals", {}))["requests"] == []


async def test_a_one_step_spawn_never_applies_a_draft_made_after_it(queue: Queue) -> None:
    request = await queue.request("request_spawn", name="bob")
    await queue.hivemind.call("create_draft", name="bob")  # after the operator was shown the template
    await queue.propose("bob", 'bash = ["rm:*"]\n' + SLEEPING)
    failed = await queue.approve(request["id"])
    assert failed["state"] == "failed", failed
    assert "a draft of bob exists" in failed["error"] and "request_spawn_commit" in failed["error"]
    assert "bob" not in [a["name"] for a in (await queue.hivemind.call("list_agents"))["agents"]]
    assert not (AgentPaths.of(queue.hive.config, "bob").applied / ".git").exists()
    event = await queue.hivemind.event("approval_resolved")
    assert event["outcome"] == "failed" and "a draft of bob exists" in event["error"]


async def test_a_one_step_spawn_is_not_reported_applied_for_an_agent_made_otherwise(queue: Queue) -> None:
    request = await queue.request("request_spawn", name="bob")
    await queue.hivemind.call("create_draft", name="bob")
    sha = await queue.propose("bob", 'bash = ["rm:*"]\n' + SLEEPING)
    await queue.hivemind.call("create_agent", name="bob", sha=sha)  # the operator, from the draft
    failed = await queue.approve(request["id"])
    assert failed["state"] == "failed" and "bob already exists" in failed["error"], failed


async def test_a_request_whose_diff_went_stale_is_refused(queue: Queue) -> None:
    await queue.hivemind.create("alice")
    base = (await queue.hivemind.call("agent_config", name="alice"))["sha"]
    opus = await queue.propose("alice", 'model = "opus"\n' + SLEEPING)
    first = await queue.request("request_apply_commit", agent="alice", commit_ref=opus)
    assert (first["commit_sha"], first["base_sha"]) == (opus, base)
    haiku = await queue.propose("alice", 'model = "haiku"\n' + SLEEPING)
    second = await queue.request("request_apply_commit", agent="alice", commit_ref=haiku)
    assert (await queue.approve(second["id"]))["state"] == "applied"
    moved = (await queue.hivemind.call("agent_config", name="alice"))["sha"]
    # Asked again, against what is applied now: a request of its own, not "asks for this already".
    again = await queue.request("request_apply_commit", agent="alice", commit_ref=opus)
    assert again["id"] != first["id"] and again["base_sha"] == moved

    stale = await queue.approve(first["id"])  # its diff was against `base`, not what is applied now
    assert stale["state"] == "failed", stale
    assert f"changed since the diff was made (it was {base[:12]}, it is {moved[:12]})" in stale["error"]
    assert "ask the manager to request it again" in stale["error"]
    assert (await queue.hivemind.status("alice"))["model"] == "haiku"  # nothing applied
    assert (await queue.hivemind.call("agent_config", name="alice"))["sha"] == moved
    with pytest.raises(ToolError, match="changed since the diff was made"):  # checked by lifecycle itself
        await queue.hivemind.approvals.call("apply_commit", {"name": "alice", "sha": opus, "expected_base": base})
    assert (await queue.approve(again["id"]))["state"] == "applied"
    assert (await queue.hivemind.status("alice"))["model"] == "opus"


@pytest.mark.parametrize("how", ["rewritten object", "replace ref"])
async def test_a_commit_rewritten_after_the_request_is_not_applied(queue: Queue, how: str) -> None:
    await queue.hivemind.create("alice")
    paths = AgentPaths.of(queue.hive.config, "alice")
    shown = await queue.propose("alice", 'model = "opus"\n' + SLEEPING)
    request = await queue.request("request_apply_commit", agent="alice", commit_ref=shown)
    # The manager owns its agents' proposed repos and can change what a sha reads as in them.
    swapped = await queue.propose("alice", 'model = "opus"\nbash = ["rm:*"]\n' + SLEEPING)
    if how == "replace ref":
        await repos.git(paths.config, "replace", shown, swapped)
    else:
        blob = (await repos.git(paths.config, "rev-parse", f"{shown}:agent.toml")).strip()
        other = (await repos.git(paths.config, "rev-parse", f"{swapped}:agent.toml")).strip()
        objects = paths.config / ".git" / "objects"
        target = objects / blob[:2] / blob[2:]
        target.chmod(0o644)
        target.write_bytes((objects / other[:2] / other[2:]).read_bytes())
    approved = await queue.approve(request["id"])
    if how == "replace ref":  # not followed: the commit the diff was shown for is applied
        assert approved["state"] == "applied", approved
        assert (paths.applied / "agent.toml").read_text() == 'model = "opus"\n' + SLEEPING
    else:  # refused: the bytes are not the ones the sha names
        assert approved["state"] == "failed", approved
        assert f"blob {blob[:12]} in config does not match its hash" in approved["error"], approved["error"]
    assert "rm:*" not in (paths.applied / "agent.toml").read_text()


async def test_widenings_are_listed_with_the_request(queue: Queue) -> None:
    await queue.hivemind.create("alice")
    wide = await queue.propose(
        "alice",
        'bash = ["rm:*", "ls:*"]\nallowed_recipients = ["*"]\n'
        '[tools]\nlifecycle = ["list_agents", "logs"]\n'
        '[mcp_servers.foo]\ntype = "stdio"\ncommand = "/usr/bin/foo"\nargs = ["--serve"]\n' + SLEEPING,
    )
    request = await queue.request("request_apply_commit", agent="alice", commit_ref=wide)
    assert request["widenings"] == [
        'bash: + "rm:*", "ls:*"',
        "tools.lifecycle: + list_agents, logs",
        "mcp_servers: + foo (stdio: /usr/bin/foo --serve)",
        f"sandbox.command: (default) → {shlex.join(SLEEPER)}",
    ]
    [waiting] = (await queue.operator.call("pending_approvals", {}))["requests"]
    assert waiting["widenings"] == request["widenings"]
    assert (await queue.approve(request["id"]))["state"] == "applied"

    # Fewer patterns and tools, no extra server, the same command: a narrowing is no widening.
    narrower = await queue.propose("alice", 'bash = ["ls:*"]\n[tools]\nlifecycle = ["logs"]\n' + SLEEPING)
    request = await queue.request("request_apply_commit", agent="alice", commit_ref=narrower)
    assert request["widenings"] == [] and request["diff"]
    spawn = await queue.request("request_spawn", name="bob")
    assert spawn["widenings"] == []  # the template is the default agent


async def test_only_the_agent_named_manager_has_role_manager(queue: Queue) -> None:
    await queue.hivemind.create("alice")
    promoted = await queue.propose("alice", 'role = "manager"\n' + SLEEPING)
    refusal = r'role = "manager" is for the agent named manager only'
    with pytest.raises(ToolError, match=refusal):
        await queue.request("request_apply_commit", agent="alice", commit_ref=promoted)
    with pytest.raises(ToolError, match=refusal):
        await queue.hivemind.approvals.call("apply_commit", {"name": "alice", "sha": promoted})
    await queue.request("request_spawn_draft", name="carol")
    draft = await queue.propose("carol", 'role = "manager"\n')
    with pytest.raises(ToolError, match=refusal):
        await queue.request("request_spawn_commit", name="carol", commit_ref=draft)
    with pytest.raises(ToolError, match=refusal):
        await queue.hivemind.call("create_agent", name="carol", sha=draft)
    demoted = await queue.propose("manager", 'role = "agent"\n')
    with pytest.raises(ToolError, match='the manager\'s config must keep role = "manager"'):
        await queue.request("request_apply_commit", agent="manager", commit_ref=demoted)
    assert (await queue.hivemind.status("alice"))["role"] == "agent"


# ------------------------------------------------------------- requests explain themselves (#16)


async def test_every_request_needs_a_reason_which_is_stored_and_shown(queue: Queue) -> None:
    await queue.hivemind.create("alice")
    sha = await repos.commit_files(
        AgentPaths.of(queue.hive.config, "alice").config,
        {"agent.toml": 'model = "opus"\n'},
        "alice: opus\n\nShe reviews proofs; sonnet misses steps. Checked: cost is within budget.",
    )
    bad = [
        ({}, "reason"),  # left out: the schema requires it
        ({"reason": "   \n"}, "give a reason: why this change or agent is needed"),
        ({"reason": "x" * 2001}, "the reason is 2001 characters, over the 2000 allowed"),
        ({"reason": "fine\x1b[2Jgone"}, "the reason has control characters"),
        ({"reason": "bidi \u202e trick"}, "the reason has control characters"),
    ]
    for reason, error in bad:
        with pytest.raises(ToolError, match=error):
            await queue.manager.call("request_apply_commit", {"agent": "alice", "commit_ref": sha, **reason})
        with pytest.raises(ToolError, match=error):
            await queue.manager.call("request_spawn", {"name": "bob", **reason})
    assert (await queue.operator.call("pending_approvals", {}))["requests"] == []  # none was stored

    request = await queue.request(
        "request_apply_commit", agent="alice", commit_ref=sha, reason="  alice asked for a stronger model\n"
    )
    assert request["reason"] == "alice asked for a stronger model"
    assert (
        request["message"] == "alice: opus\n\nShe reviews proofs; sonnet misses steps. Checked: cost is within budget."
    )
    assert "summary" not in request  # an existing agent's change is read as its diff (nulls are left out)
    [waiting] = (await queue.operator.call("pending_approvals", {}))["requests"]
    assert (waiting["reason"], waiting["message"]) == (request["reason"], request["message"])
    assert (await queue.approve(request["id"]))["state"] == "applied"
    [done] = (await queue.operator.call("approval_history", {}))["requests"]
    assert (done["reason"], done["message"]) == (request["reason"], request["message"])
    [mine] = (await queue.request("list_my_requests"))["requests"]
    assert mine["reason"] == request["reason"]

    spawn = await queue.request("request_spawn", name="bob", reason="a second reviewer")
    assert (spawn["reason"], spawn.get("message")) == ("a second reviewer", None)  # the template: no commit


async def test_a_commit_message_is_kept_plain_and_bounded(queue: Queue) -> None:
    await queue.request("request_spawn_draft", name="carol")
    sha = await repos.commit_files(
        AgentPaths.of(queue.hive.config, "carol").config,
        {"agent.toml": 'model = "haiku"\n'},
        "carol\x1b]0;owned\x07 \u202ereviews\n\n" + "y" * 5000,
    )
    request = await queue.request("request_spawn_commit", name="carol", commit_ref=sha)
    assert request["message"].startswith("carol]0;owned reviews\n\nyyy") and len(request["message"]) == 4000


async def test_a_spawn_is_summarised_from_its_agent_toml_with_the_risky_fields(
    queue: Queue, tmp_path_factory: pytest.TempPathFactory
) -> None:
    template = await queue.request("request_spawn", name="bob")
    summary = template["summary"]
    assert (summary["role"], summary["model"], summary["recipients"], summary["bash"]) == (
        "agent", "sonnet", ["*"], [],
    )  # fmt: skip
    assert (summary["shared"], summary["binds"], summary["usd_per_day"], summary["risky"]) == ("rw", [], None, [])

    await queue.request("request_spawn_draft", name="carol")
    data = tmp_path_factory.mktemp("data")  # outside the hive's home
    wide = await queue.propose(
        "carol",
        'model = "opus"\nallowed_recipients = ["manager", "operator"]\nbash = ["+++ x:*", "git diff:*"]\n'
        '[tools]\nforge = ["list_repos"]\n'
        f'[[binds]]\nhost = "{data}"\npath = "/data"\nmode = "rw"\n'
        "[budget]\nusd_per_day = 3\n" + SLEEPING,
    )
    request = await queue.request("request_spawn_commit", name="carol", commit_ref=wide)
    summary = request["summary"]
    assert (summary["model"], summary["recipients"]) == ("opus", ["manager", "operator"])
    assert summary["bash"] == ["+++ x:*", "git diff:*"]  # a line that reads like a diff header is still a line
    assert summary["tools"] == {"forge": ["list_repos"]} and summary["binds"] == [f"host {data} at /data (rw)"]
    assert (summary["usd_per_day"], summary["command"]) == (3.0, SLEEPER)
    assert summary["risky"] == ["bash", "binds", "sandbox"]
    [waiting] = [r for r in (await queue.operator.call("pending_approvals", {}))["requests"] if r["agent"] == "carol"]
    assert waiting["summary"] == summary
    assert "summary" not in (await queue.request("list_my_requests"))["requests"][0]  # the requester's list is short


async def test_a_raised_or_removed_budget_is_a_widening(queue: Queue) -> None:
    await queue.hivemind.create("alice")
    capped = await queue.propose("alice", "[budget]\nusd_per_day = 5\nusd_per_turn = 0.5\n" + SLEEPING)
    await queue.hivemind.approvals.call("apply_commit", {"name": "alice", "sha": capped})
    raised = await queue.propose("alice", "[budget]\nusd_per_day = 50\n" + SLEEPING)
    request = await queue.request("request_apply_commit", agent="alice", commit_ref=raised)
    assert request["widenings"] == ["budget.usd_per_day: $5 → $50", "budget.usd_per_turn: $0.5 → no limit"]
    lowered = await queue.propose("alice", "[budget]\nusd_per_day = 1\nusd_per_turn = 0.1\n" + SLEEPING)
    assert (await queue.request("request_apply_commit", agent="alice", commit_ref=lowered))["widenings"] == []
