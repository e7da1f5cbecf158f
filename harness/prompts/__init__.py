"""The harness's system prompts: manager.md for the manager, agent.md for every other agent."""

from __future__ import annotations

from pathlib import Path

from hyperhive.servers.common.binds import SHARED_MOUNT
from hyperhive.servers.common.harnessdir import HarnessInfo

HERE = Path(__file__).parent


def system_prompt(info: HarnessInfo) -> str:
    """What the harness appends to Claude Code's own system prompt for this agent."""
    base = (HERE / ("manager.md" if info.role == "manager" else "agent.md")).read_text(encoding="utf-8")
    parts = [f"hyperhive agent: {info.agent} (role {info.role})", base.strip()]
    if info.agents_dir:
        parts.append(
            f"The agents' proposed config repos are {info.agents_dir}/<name>/config. Edit agent.toml there, "
            f'commit with `git -C {info.agents_dir}/<name>/config commit -am "<what and why>"`, take the sha '
            f"from `git -C {info.agents_dir}/<name>/config rev-parse HEAD`, then "
            "request_apply_commit(agent, sha, reason)."
        )
    if info.shared:
        access = "read and write" if info.shared == "rw" else "read (not write)"
        parts.append(
            f"{SHARED_MOUNT} is the hive's shared workspace: every agent that has it sees the same files there, "
            f"and you may {access} them. Use it for documents and files you hand to other agents without routing "
            f"them through the manager: write the file there (e.g. {SHARED_MOUNT}/<topic>/<name>.md) and send its "
            "path in a message. Others can change or delete what you put there: keep your own copy in your "
            "working directory of anything you cannot lose."
        )
    if info.binds:
        parts.append("Also bound into your sandbox from the host: " + ", ".join(info.binds) + ".")
    if info.git_url:
        parts.append(
            f"The hive has a git forge at {info.git_url}: plain git works with your identity "
            f"(`git clone {info.git_url}/docs.git`). The `docs` repo holds the hive's shared docs — runbooks, "
            "conventions, skills: clone it and read what concerns your task; "
            + ("you and the operator may push to it. " if info.role == "manager" else "only the manager writes it. ")
            + "Share code through repos of your own (forge create_repo, grant, watch): not through messages. "
            "Before editing files of a repo others work on, reserve them (forge reserve, with a reason); release "
            "them after you push. A push over another's reservation is refused: ask them, or wait."
        )
    if info.prompt.strip():
        parts.append("Instructions from your config (agent.toml):\n" + info.prompt.strip())
    return "\n\n".join(parts)
