"""The forge over real HTTP with the real git CLI as its client: repos, grants, git auth, pushes as
helper events through the real broker, the docs repo, limits, and what is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastmcp.exceptions import ToolError
from hivetest import BrokerEndpoint, Endpoint, Hive, in_process, next_event

from hyperhive.servers.common.registry import GIT_PATH, MCP_PATH

pytestmark = pytest.mark.slow  # git processes, two servers per test


@pytest.fixture
async def forge(hive: Hive, broker: BrokerEndpoint) -> AsyncIterator[Endpoint]:
    async with in_process(hive, "forge") as endpoint:
        yield endpoint


def git_url(forge: Endpoint, repo: str, token: str | None = None) -> str:
    base = forge.url.removesuffix(MCP_PATH) + GIT_PATH
    if token is not None:  # Basic auth, the token as password: what git's credential helpers send
        base = base.replace("http://", f"http://x:{token}@")
    return f"{base}/{repo}.git"


async def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real git CLI, without the user's config or prompts (run off the event loop's thread)."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd or "/nonexistent"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    result = await asyncio.to_thread(
        subprocess.run, ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


async def new_work_tree(path: Path, files: dict[str, str | bytes]) -> Path:
    path.mkdir(parents=True)
    await git("init", "-q", "-b", "main", cwd=path)
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    await git("add", "-A", cwd=path)
    await git("commit", "-q", "-m", "first", cwd=path)
    return path


async def test_a_repo_is_shared_by_grants_and_a_push_reaches_the_owner_as_an_event(
    hive: Hive, broker: BrokerEndpoint, forge: Endpoint, tmp_path: Path
) -> None:
    a, b = hive.add_agent("a"), hive.add_agent("b")
    token_a, token_b = hive.token(a), hive.token(b)
    created = await forge.client(a).call("create_repo", {"name": "app", "description": "the app"})
    assert created["owner"] == a and created["access"] == "write"
    assert created["clone_url"] == git_url(forge, "app")

    work = await new_work_tree(tmp_path / "a-work", {"README.md": "hello\n", "src/main.py": "print(1)\n"})
    await git("push", "-q", git_url(forge, "app", token_a), "main", cwd=work)

    # B, without a grant: a clear 403 in git's stderr, and no repo_pushed to anyone but the owner.
    denied = await git("clone", git_url(forge, "app", token_b), str(tmp_path / "b-denied"), check=False)
    assert denied.returncode != 0 and "403" in denied.stderr, denied.stderr
    with pytest.raises(ToolError, match="not yours to read: ask its owner, a"):
        await forge.client(b).call("read_file", {"repo": "app", "path": "README.md"})
    assert [repo["name"] for repo in (await forge.client(b).call("list_repos", {}))["repos"]] == ["docs"]

    # Read: B clones, and cannot push.
    with pytest.raises(ToolError, match="not yours to read"):
        await forge.client(b).call("grant", {"repo": "app", "who": b, "access": "write"})
    await forge.client(a).call("grant", {"repo": "app", "who": b, "access": "read"})
    clone = tmp_path / "b-clone"
    await git("clone", "-q", git_url(forge, "app", token_b), str(clone))
    assert (clone / "src/main.py").read_text() == "print(1)\n"
    (clone / "b.txt").write_text("from b\n")
    await git("add", "b.txt", cwd=clone)
    await git("commit", "-q", "-m", "b's change", cwd=clone)
    refused = await git("push", "-q", "origin", "main", cwd=clone, check=False)
    assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr
    assert (await forge.client(a).call("repo_log", {"repo": "app"}))["commits"][0]["subject"] == "first"

    # Write: B pushes, and A (the owner) gets repo_pushed through the broker.
    await forge.client(a).call("grant", {"repo": "app", "who": b, "access": "write"})
    old = (await git("rev-parse", "origin/main", cwd=clone)).stdout.strip()
    new = (await git("rev-parse", "HEAD", cwd=clone)).stdout.strip()
    await git("push", "-q", "origin", "main", cwd=clone)
    event = await next_event(broker, a)
    assert event == {
        "type": "repo_pushed",
        "repo": "app",
        "ref": "refs/heads/main",
        "old": old,
        "new": new,
        "pusher": b,
    }

    log = (await forge.client(b).call("repo_log", {"repo": "app", "ref": "main", "limit": 5}))["commits"]
    assert [commit["subject"] for commit in log] == ["b's change", "first"]
    text = await forge.client(b).call("read_file", {"repo": "app", "path": "b.txt", "ref": "main"})
    assert text["text"] == "from b\n" and text["size"] == 7
    diff = await forge.client(a).call("diff", {"repo": "app", "base": "main~1", "head": "main"})
    assert "+from b" in diff["diff"] and diff["base"] == old and diff["head"] == new
    listed = {repo["name"]: repo for repo in (await forge.client(a).call("list_repos", {}))["repos"]}
    assert listed["app"]["grants"] == {b: "write"} and listed["app"]["pushed_by"] == b

    # Revoked: B cannot fetch any more.
    await forge.client(a).call("revoke", {"repo": "app", "who": b})
    again = await git("fetch", "-q", "origin", cwd=clone, check=False)
    assert again.returncode != 0 and "403" in again.stderr


async def test_a_watcher_gets_pushes_and_the_pusher_does_not(
    hive: Hive, broker: BrokerEndpoint, forge: Endpoint, tmp_path: Path
) -> None:
    a, c = hive.add_agent("a"), hive.add_agent("c")
    await forge.client(a).call("create_repo", {"name": "lib"})
    await forge.client(a).call("grant", {"repo": "lib", "who": "*", "access": "read"})
    assert (await forge.client(c).call("watch", {"repo": "lib"}))["changed"] is True
    work = await new_work_tree(tmp_path / "w", {"x": "1\n"})
    await git("push", "-q", git_url(forge, "lib", hive.token(a)), "main", cwd=work)
    event = await next_event(broker, c)
    assert (event["type"], event["repo"], event["old"], event["pusher"]) == ("repo_pushed", "lib", None, a)
    message = (await broker.client(a).call("recv", {"wait_seconds": 0.3}))["message"]
    assert message is None, "the pusher was told of its own push"


async def test_the_docs_repo_is_read_by_every_agent_and_written_by_the_manager(
    hive: Hive, broker: BrokerEndpoint, forge: Endpoint, tmp_path: Path
) -> None:
    agent = hive.add_agent("a")
    listed = (await forge.client(agent).call("list_repos", {}))["repos"]
    assert listed[0]["name"] == "docs" and listed[0]["owner"] == "operator" and listed[0]["access"] == "read"
    work = await new_work_tree(tmp_path / "docs", {"runbook.md": "# Runbook\n"})
    await git("push", "-q", git_url(forge, "docs", hive.token("manager")), "main", cwd=work)
    clone = tmp_path / "agent-docs"
    await git("clone", "-q", git_url(forge, "docs", hive.token(agent)), str(clone))
    assert (clone / "runbook.md").read_text() == "# Runbook\n"
    (clone / "mine.md").write_text("x\n")
    await git("add", "mine.md", cwd=clone)
    await git("commit", "-q", "-m", "agent edit", cwd=clone)
    refused = await git("push", "origin", "main", cwd=clone, check=False)
    assert refused.returncode != 0 and "403" in refused.stderr
    event = await next_event(broker, "operator")  # the docs repo's owner hears of the manager's push
    assert (event["repo"], event["pusher"]) == ("docs", "manager")


async def test_git_without_a_valid_token_gets_401(hive: Hive, forge: Endpoint, tmp_path: Path) -> None:
    import httpx2

    url = git_url(forge, "docs") + "/info/refs?service=git-upload-pack"
    async with httpx2.AsyncClient() as http:
        bare = await http.get(url)
        assert bare.status_code == 401 and bare.headers["www-authenticate"] == 'Basic realm="hyperhive forge"'
        forged = hive.token("manager")[:-4] + "AAAA"
        assert (await http.get(url, headers={"Authorization": f"Bearer {forged}"})).status_code == 401
        expired = hive.token("manager", ttl=-120)
        assert (await http.get(url, auth=("x", expired))).status_code == 401
        good = await http.get(url, auth=("x", hive.token("manager")))
        assert good.status_code == 200 and good.headers["content-type"].startswith("application/x-git-upload-pack")
        assert (await http.get(git_url(forge, "docs") + "/HEAD", auth=("x", hive.token("manager")))).status_code == 404
        nothing = await http.get(
            git_url(forge, "nope") + "/info/refs?service=git-upload-pack", auth=("x", hive.token("manager"))
        )
        assert nothing.status_code == 404
    result = await git(
        "clone", git_url(forge, "docs", hive.token("manager")[:-4] + "AAAA"), str(tmp_path / "c"), check=False
    )
    assert result.returncode != 0 and ("401" in result.stderr or "Authentication failed" in result.stderr)


@pytest.mark.parametrize("name", ["../x", "a/b", "x.git", "-x", "", "A", "a" * 64, ".hidden", "a..b"])
async def test_bad_repo_names_are_refused(hive: Hive, forge: Endpoint, name: str) -> None:
    with pytest.raises(ToolError, match="is not a repo name"):
        await forge.client(hive.add_agent()).call("create_repo", {"name": name})


async def test_bad_refs_and_paths_are_refused(hive: Hive, forge: Endpoint) -> None:
    client = forge.client("manager")
    for ref in ("--upload-pack=x", "-n", "main..evil", "a b", "HEAD@{1}", "x:y"):
        with pytest.raises(ToolError, match="is not a ref"):
            await client.call("repo_log", {"repo": "docs", "ref": ref})
    for path in ("../../etc/passwd", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ToolError, match=r"leaves the repo|is not a path"):
            await client.call("read_file", {"repo": "docs", "path": path})


async def test_the_repo_count_limit(hive: Hive, broker: BrokerEndpoint, tmp_path: Path) -> None:
    hive.configure("[forge]\nmax_repos_per_agent = 1")
    async with in_process(hive, "forge") as forge:
        agent = hive.add_agent()
        await forge.client(agent).call("create_repo", {"name": "one"})
        with pytest.raises(ToolError, match="you own 1 repos, the limit"):
            await forge.client(agent).call("create_repo", {"name": "two"})
        with pytest.raises(ToolError, match="exists already"):
            await forge.client("manager").call("create_repo", {"name": "one"})


async def test_a_push_past_the_size_limit_is_refused_and_the_repo_is_intact(
    hive: Hive, broker: BrokerEndpoint, tmp_path: Path
) -> None:
    hive.configure('[forge]\nmax_repo_size = "1M"')
    async with in_process(hive, "forge") as forge:
        agent = hive.add_agent()
        token = hive.token(agent)
        await forge.client(agent).call("create_repo", {"name": "big"})
        work = await new_work_tree(tmp_path / "w", {"small.txt": "ok\n"})
        await git("push", "-q", git_url(forge, "big", token), "main", cwd=work)
        first = (await git("rev-parse", "HEAD", cwd=work)).stdout.strip()
        (work / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # incompressible
        await git("add", "blob.bin", cwd=work)
        await git("commit", "-q", "-m", "too big", cwd=work)
        refused = await git("push", git_url(forge, "big", token), "main", cwd=work, check=False)
        assert refused.returncode != 0, refused.stderr
        log = (await forge.client(agent).call("repo_log", {"repo": "big"}))["commits"]
        assert [commit["sha"] for commit in log] == [first]
        bare = hive.config.forge_dir / "big.git"
        fsck = await git("--git-dir", str(bare), "fsck", "--full", "--strict")
        assert fsck.returncode == 0
        assert sum(f.stat().st_size for f in (bare / "objects").rglob("*") if f.is_file()) < 1024 * 1024


async def test_the_size_hook_refuses_what_passes_max_input_size(
    hive: Hive, broker: BrokerEndpoint, tmp_path: Path
) -> None:
    """Several pushes each under the limit, together past it: the pre-receive hook's total refuses the last."""
    hive.configure('[forge]\nmax_repo_size = "2M"')
    async with in_process(hive, "forge") as forge:
        agent = hive.add_agent()
        url = git_url(forge, "grow", hive.token(agent))
        await forge.client(agent).call("create_repo", {"name": "grow"})
        work = await new_work_tree(tmp_path / "w", {"a": "a\n"})
        refused = None
        for step in range(4):
            (work / f"part{step}.bin").write_bytes(os.urandom(900 * 1024))
            await git("add", "-A", cwd=work)
            await git("commit", "-q", "-m", f"part {step}", cwd=work)
            result = await git("push", url, "main", cwd=work, check=False)
            if result.returncode != 0:
                refused = result
                break
        assert refused is not None, "no push was refused"
        assert "past the forge's limit of 2.0 MB" in refused.stderr, refused.stderr
        bare = hive.config.forge_dir / "grow.git"
        assert (await git("--git-dir", str(bare), "fsck", "--full")).returncode == 0


async def test_the_forge_starts_again_on_its_repos(hive: Hive, broker: BrokerEndpoint, tmp_path: Path) -> None:
    async with in_process(hive, "forge") as forge:
        await forge.client("manager").call("create_repo", {"name": "kept"})
    started = time.monotonic()
    async with in_process(hive, "forge") as forge:
        names = [repo["name"] for repo in (await forge.client("manager").call("list_repos", {}))["repos"]]
        assert names == ["docs", "kept"]
    assert time.monotonic() - started < 30


async def test_the_harness_git_config_clones_with_the_current_token_and_keeps_working_after_renewal(
    hive: Hive, broker: BrokerEndpoint, forge: Endpoint, tmp_path: Path
) -> None:
    from hyperhive.harness.claude import claude_env
    from hyperhive.harness.prompts import system_prompt
    from hyperhive.servers.common.agents import AgentRegistry
    from hyperhive.servers.lifecycle.harness_files import harness_info

    agent = hive.add_agent("a")
    config = await AgentRegistry(hive.config.applied_dir, hive.config.instances_dir).lookup(agent)
    assert config is not None
    token_file = tmp_path / "token"
    token_file.write_text(hive.token(agent, ttl=120))
    info = harness_info(hive.config, agent, config).model_copy(update={"token_file": str(token_file)})
    assert info.git_url == forge.url.removesuffix(MCP_PATH) + GIT_PATH
    assert f"git clone {info.git_url}/docs.git" in system_prompt(info)
    harness_dir = tmp_path / "harness"
    harness_dir.mkdir()
    env = claude_env(info, harness_dir)
    env["GIT_TERMINAL_PROMPT"] = "0"

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)

    clone = tmp_path / "docs"
    result = await asyncio.to_thread(run, "clone", f"{info.git_url}/docs.git", str(clone))
    assert result.returncode == 0, result.stderr
    # Renewed: the old token is void (its instance ended), the file holds the new one, git goes on.
    hive.add_agent("a")  # a new instance, as a restart makes; the old token now gets 401
    refused = await asyncio.to_thread(run, "fetch", cwd=clone)
    assert refused.returncode != 0
    token_file.write_text(hive.token(agent, ttl=120))
    fetched = await asyncio.to_thread(run, "fetch", cwd=clone)
    assert fetched.returncode == 0, fetched.stderr
