"""The harness's system prompts: manager.md for the manager, agent.md for every other agent."""

from __future__ import annotations

from pathlib import Path

from hyperhive.servers.common.harnessdir import HarnessInfo

HERE = Path(__file__).parent


def system_prompt(info: HarnessInfo) -> str:
    """What the harness appends to Claude Code's own system prompt for this agent."""
    base = (HERE / ("manager.md" if info.role == "manager" else "agent.md")).read_text(encoding="utf-8")
    parts = [f"hyperhive agent: {info.agent} (role {info.role})", base.strip()]
    if info.prompt.strip():
        parts.append("Instructions from your config (agent.toml):\n" + info.prompt.strip())
    return "\n\n".join(parts)
