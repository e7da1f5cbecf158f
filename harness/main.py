"""`python -m hyperhive.harness --agent NAME`: an agent's harness, run inside its sandbox.

It reads hive.json from the credentials dir the lifecycle server binds read-only into the
sandbox, then runs the turn loop until SIGTERM. Without hive.json (run by hand, or the server
has not written it) it says what is missing and exits 2.
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

from pydantic import ValidationError

from hyperhive.harness.claude import scrub_environment
from hyperhive.harness.loop import Harness
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


async def run(info: HarnessInfo) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await Harness(info).run()
    log.info("stopped")


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
    scrub_environment(info)
    log.info("harness of %s (%s) starting; model %s", info.agent, info.role, info.model)
    asyncio.run(run(info))
