"""`hive repos` and `hive repo create|grant|revoke|log` against real broker and forge processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hivetest import Hive, ServerProcess
from test_forge import git, new_work_tree

from hyperhive.servers import cli
from hyperhive.servers.common.registry import GIT_PATH

pytestmark = pytest.mark.slow


@pytest.fixture
def forge(hive: Hive) -> Iterator[ServerProcess]:
    processes = [ServerProcess(hive, "broker"), ServerProcess(hive, "forge")]
    for process in processes:
        process.start()
    try:
        yield processes[1]
    finally:
        for process in reversed(processes):
            process.kill_if_running()


def row_of(table: str, name: str) -> str:
    return next(line for line in table.splitlines() if line.strip().startswith(name))


def run(hive: Hive, *args: str) -> Result:
    return CliRunner().invoke(cli.main, [*args, "--home", str(hive.home)])


def test_repo_verbs_create_grant_revoke_and_log(hive: Hive, forge: ServerProcess, tmp_path: Path) -> None:
    listed = run(hive, "repos")
    assert listed.exit_code == 0 and "docs" in listed.output and "operator" in listed.output, listed.output

    made = run(hive, "repo", "create", "runbooks", "--description", "how we deploy")
    assert made.exit_code == 0, made.output
    assert "created runbooks, owned by operator" in made.output and "/git/runbooks.git" in made.output
    again = run(hive, "repo", "create", "runbooks")
    assert again.exit_code == 1 and "a repo named 'runbooks' exists already" in again.output

    alice = hive.add_agent("alice")
    granted = run(hive, "repo", "grant", "runbooks", alice, "write")
    assert granted.exit_code == 0 and "alice now holds write on runbooks" in granted.output, granted.output
    assert "(already)" in run(hive, "repo", "grant", "runbooks", alice, "write").output
    everyone = run(hive, "repo", "grant", "runbooks", "*", "read")
    assert everyone.exit_code == 0, everyone.output
    table = run(hive, "repos").output
    line = row_of(table, "runbooks")
    assert "alice write, * read" in line and "never" in line and "how we deploy" in line, table

    bad = run(hive, "repo", "grant", "runbooks", "Not An Agent", "read")
    assert bad.exit_code == 1 and "who must be an agent's name" in bad.output, bad.output
    assert run(hive, "repo", "grant", "runbooks", alice, "admin").exit_code == 2  # click's choice
    assert "no repo named 'ghost'" in run(hive, "repo", "grant", "ghost", alice, "read").output

    # alice pushes with her token; the log shows it, and the table says who pushed when.
    url = forge.url.removesuffix("/mcp") + GIT_PATH + "/runbooks.git"
    work = asyncio.run(new_work_tree(tmp_path / "w", {"deploy.md": "step 1\n"}))  # the CLI runs its own loop
    asyncio.run(git("push", "-q", url.replace("http://", f"http://x:{hive.token(alice)}@"), "main", cwd=work))
    log = run(hive, "repo", "log", "runbooks", "--ref", "main", "--limit", "5")
    assert log.exit_code == 0 and "first" in log.output and "t <t@t>" in log.output, log.output
    assert f"by {alice}" in row_of(run(hive, "repos").output, "runbooks")
    assert "is not a ref" in run(hive, "repo", "log", "runbooks", "--ref", "--all").output
    assert run(hive, "repo", "log", "runbooks", "--limit", "0").exit_code == 2
    empty = run(hive, "repo", "log", "docs")
    assert empty.exit_code == 1 and "'HEAD' is no commit in repo 'docs'" in empty.output, empty.output

    revoked = run(hive, "repo", "revoke", "runbooks", alice)
    assert revoked.exit_code == 0 and "alice no longer holds a grant on runbooks" in revoked.output
    assert "nothing changed" in run(hive, "repo", "revoke", "runbooks", alice).output


def test_repo_verbs_say_when_the_forge_is_down(hive: Hive) -> None:
    down = run(hive, "repos")
    assert down.exit_code == 1 and "is `hive up` running" in down.output, down.output


def test_repo_help_teaches() -> None:
    runner = CliRunner()
    assert "hive repo grant runbooks '*' read" in runner.invoke(cli.main, ["repo", "--help"]).output
    assert "owned by the operator" in runner.invoke(cli.main, ["repo", "create", "--help"]).output
    assert "'*' for every agent" in runner.invoke(cli.main, ["repo", "grant", "--help"]).output
    assert "no repos yet" not in runner.invoke(cli.main, ["repos", "--help"]).output
