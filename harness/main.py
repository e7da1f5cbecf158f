"""`python -m hyperhive.harness --agent NAME`: an agent's harness, run inside its sandbox.

It reads hive.json from the credentials dir the lifecycle server binds read-only into the
sandbox, then runs the turn loop until SIGTERM. Without hive.json (run by hand, or the server
has not written it) it says what is missing and exits 2.

The process takes two forms and execs itself from one into the other, keeping its pid: the turn
loop (harness/loop.py, with Claude Code) and, after idle_close_seconds without a wake, the idle
waiter (`--idle`, harness/idle.py: a small Python waiting for the next message). Each imports only
what it runs; this module imports neither until it knows which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from hyperhive.servers.common.harnessdir import CREDENTIALS, HIVE_JSON, HarnessInfo
from hyperhive.servers.common.names import InvalidName, check_agent_name

log = logging.getLogger("hyperhive.harness")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hive-harness",  # also `python -m hyperhive.harness`
        description="Run one hyperhive agent: wait for its messages and drive Claude Code turns on them.",
    )
    parser.add_argument("--agent", required=True, help="the agent's name")
    parser.add_argument(
        "--harness-dir",
        type=Path,
        default=os.environ.get("HIVE_HARNESS_DIR"),
        help="its harness dir, with credentials/hive.json inside ($HIVE_HARNESS_DIR)",
    )
    parser.add_argument(
        "--idle",
        action="store_true",
        help="start as the idle waiter (the turn loop execs it after idle_close_seconds without a wake)",
    )
    # Set by the harness itself across its execs (the same run of the sandbox goes on):
    parser.add_argument("--from-idle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--note-pending", action="store_true", help=argparse.SUPPRESS)  # a restart note is due
    return parser.parse_args(argv)


def load_info(agent: str, harness_dir: Path | None) -> HarnessInfo:
    if harness_dir is None:
        raise SystemExit("hyperhive harness: no harness dir; pass --harness-dir or set HIVE_HARNESS_DIR")
    path = harness_dir / CREDENTIALS / HIVE_JSON
    try:
        info = HarnessInfo.model_validate_json(path.read_bytes())
    except OSError as e:
        raise SystemExit(
            f"hyperhive harness: cannot read {path}: {e.strerror}; the lifecycle server writes it"
        ) from None
    except ValidationError as e:
        raise SystemExit(f"hyperhive harness: {path} is not valid: {e}") from None
    if info.agent != agent:
        raise SystemExit(f"hyperhive harness: {path} is for {info.agent!r}, not {agent!r}")
    if "broker" not in info.servers:
        raise SystemExit(f"hyperhive harness: {path} names no broker URL; give the broker a TCP port in hive.toml")
    return info


def scrub_environment(info: HarnessInfo) -> None:
    """The SDK passes this process's environment on to Claude Code: keep only configured ANTHROPIC_*/CLAUDE*.

    PYTHONPATH goes too unless configured: a packaged hive-harness (nix/package.nix) gets hyperhive's
    own path through it, which the agent's Bash tool would inherit. This interpreter's sys.path is
    set already (and the environment it was started with is kept for its exec into its other form).
    """
    for key in list(os.environ):
        if (key.startswith(("ANTHROPIC_", "CLAUDE")) or key == "PYTHONPATH") and key not in info.env:
            del os.environ[key]


async def run_turn_loop(info: HarnessInfo, *, from_idle: bool, note_pending: bool) -> tuple[bool, bool]:
    """The turn loop until SIGTERM or until it has been idle long enough to exec the idle waiter:
    (whether it went idle, whether its restart note is still to be said)."""
    from hyperhive.harness.loop import Harness

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    harness = Harness(info, from_idle=from_idle, note_pending=note_pending)
    with contextlib.suppress(asyncio.CancelledError):
        return await harness.run(), harness.restart_note_pending
    return False, False


def run_idle_waiter(info: HarnessInfo) -> None:
    """Wait for messages with Claude Code closed; returns once some are handed over in wake.json."""
    from hyperhive.harness.idle import wait_for_messages

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)  # interrupts the long-poll: nothing is held that needs handing back

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    wait_for_messages(info)


def exec_form(idle: bool, environment: dict[str, str], *, note_pending: bool) -> NoReturn:
    """Replace this process (same pid, same sandbox) with the harness in its other form."""
    ours = ("--idle", "--from-idle", "--note-pending")
    argv = [arg for arg in sys.orig_argv if arg not in ours]
    argv += ["--idle"] if idle else ["--from-idle"]
    argv += ["--note-pending"] if note_pending else []
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], environment)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        check_agent_name(args.agent)
    except InvalidName as e:
        raise SystemExit(f"hyperhive harness: {e}") from None
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format=f"%(asctime)s {args.agent} %(name)s %(levelname)s %(message)s"
    )
    for noisy in ("httpx", "httpx2", "mcp", "claude_agent_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    info = load_info(args.agent, args.harness_dir)
    environment = dict(os.environ)
    scrub_environment(info)
    if args.idle:
        run_idle_waiter(info)
        log.info("messages arrived: starting the turn loop")
        exec_form(idle=False, environment=environment, note_pending=args.note_pending)
    log.info("harness of %s (%s) starting; model %s", info.agent, info.role, info.model)
    went_idle, note_pending = asyncio.run(run_turn_loop(info, from_idle=args.from_idle, note_pending=args.note_pending))
    if went_idle:
        log.info("no wake for %.0f s: Claude Code is closed; the idle waiter takes over", info.idle_close_seconds)
        exec_form(idle=True, environment=environment, note_pending=note_pending)
    log.info("stopped")
