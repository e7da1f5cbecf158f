"""Keeping an agent's notes.md short: past `notes_max_bytes`, a short secondary turn rewrites it.

The rewrite is a one-shot Claude Code run outside the agent's session (its context stays as it
was), allowed to touch notes.md only. The version before is kept as notes.previous.md.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Final

import anyio
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKError,
    ResultMessage,
    query,
)

from hyperhive.harness.claude import TurnOutcome, count_result, count_step
from hyperhive.harness.stats import TurnRecorder, turn_row
from hyperhive.servers.common.harnessdir import HarnessInfo

log = logging.getLogger("hyperhive.harness.notes")

NOTES: Final = "notes.md"
PREVIOUS: Final = "notes.previous.md"
RETRY_AFTER: Final = 3600.0  # a rewrite that left notes.md too long is tried again after this long

SYSTEM: Final = (
    "You maintain the durable notes of an agent in a team of Claude Code agents. The notes are all it "
    "remembers when its session is reset. You rewrite them shorter without losing what it needs."
)


def compaction_prompt(size: int, target: int) -> str:
    return (
        f"notes.md in the current directory has grown to {size:,} bytes. Rewrite it in place to at most "
        f"{target:,} bytes. Keep: open tasks and commitments, decisions and their reasons, who does what, "
        "facts that took effort to learn, pointers to files. Drop: finished work's details, repetition, "
        "logs and transcripts. Keep its structure readable (headings, short bullets). The old version is "
        f"saved as {PREVIOUS}; do not touch any other file. Reply with one line saying what you removed."
    )


class NotesKeeper:
    def __init__(self, info: HarnessInfo, env: dict[str, str], recorder: TurnRecorder) -> None:
        self.info = info
        self.env = env
        self.recorder = recorder
        self.path = Path(info.state_dir) / NOTES
        self._not_before = 0.0

    def size(self) -> int:
        try:
            return self.path.stat().st_size if self.path.is_file() and not self.path.is_symlink() else 0
        except OSError:
            return 0

    async def keep_short(self, model: str) -> None:
        size = self.size()
        limit = self.info.notes_max_bytes
        if size <= limit or time.time() < self._not_before:
            return
        log.info("notes.md is %d bytes (more than %d): rewriting it", size, limit)
        await self.recorder.set("running", reason="rewriting notes.md shorter")
        started = time.time()
        await anyio.to_thread.run_sync(shutil.copyfile, self.path, self.path.with_name(PREVIOUS))
        outcome = await self._rewrite(model, size, limit // 2)
        after = self.size()
        if outcome.ok and after > limit:
            outcome.ok, outcome.error = False, f"notes.md is still {after:,} bytes after the rewrite"
        if not outcome.ok:
            log.warning("compacting notes.md failed: %s; trying again in an hour", outcome.error)
            self._not_before = time.time() + RETRY_AFTER
        await self.recorder.record(turn_row("compaction", started, model, outcome, 0, 0))

    async def _rewrite(self, model: str, size: int, target: int) -> TurnOutcome:
        state = self.info.state_dir.rstrip("/")
        options = ClaudeAgentOptions(
            model=model,
            cwd=state,
            env=self.env,
            tools=["Read", "Edit", "Write"],
            allowed_tools=[f"Read(/{state}/{NOTES})", f"Edit(/{state}/{NOTES})"],  # Edit covers Write
            permission_mode="dontAsk",
            setting_sources=[],
            strict_mcp_config=True,
            system_prompt=SYSTEM,
            max_turns=8,
        )
        outcome = TurnOutcome(ok=False)
        try:
            async for message in query(prompt=compaction_prompt(size, target), options=options):
                if isinstance(message, AssistantMessage):
                    count_step(outcome, message)
                elif isinstance(message, ResultMessage):
                    count_result(outcome, message, message.total_cost_usd or 0.0)  # a one-shot run: its total
        except ClaudeSDKError as e:
            outcome.ok, outcome.error = False, str(e).splitlines()[0] if str(e) else type(e).__name__
        return outcome
