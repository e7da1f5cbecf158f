"""The idle harness: what an agent runs while it waits with Claude Code closed.

    turn loop (loop.py) --no wake for idle_close_seconds--> exec: idle waiter --messages--> exec: turn loop

An idle agent costs what its processes hold: the turn loop keeps Claude Code (~220 MB) and a Python
with the MCP client stack (~100 MB). Closing Claude Code is not enough, as Python does not give back
the modules it imported; so the harness replaces itself (exec: the same process, its sandbox sees
no change) with this waiter, which imports the standard library, pydantic and the harness's file
contract only (~30 MB). It long-polls the broker as the loop does (recv_batch with ack=false: the
messages are leased to it, and come back if it dies), writes what it got to wake.json and execs
the turn loop, which handles those messages first. While it cannot reach the broker, turn.json says
why (state error), as the loop's does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ValidationError

from hyperhive.harness.lean_client import LeanMcpClient, ToolCallFailed
from hyperhive.harness.turn_state import TurnStateFile
from hyperhive.servers.broker.models import RecvBatchResult
from hyperhive.servers.common.backoff import Backoff
from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.harnessdir import WAKE_FILE, HarnessInfo

log = logging.getLogger("hyperhive.harness.idle")

POLL_SECONDS: Final = 170.0  # a long-poll, under the broker's 180 s bound
ANSWER_GRACE: Final = 30.0  # how much longer than the long-poll the broker may take to answer
HANDOFF_FRESH: Final = 30.0  # seconds: a wake.json older than this is not trusted to be still leased to us


def wait_for_messages(info: HarnessInfo) -> RecvBatchResult:
    """Long-poll the broker until messages arrive; they are leased to this agent and left in wake.json."""
    harness_dir = Path(info.harness_dir)
    state = TurnStateFile(harness_dir)
    state.previous()
    state.enter("idle")
    state.save()
    token_file = Path(info.token_file)
    first, *others = info.endpoints("broker")
    broker = LeanMcpClient(
        first.url,
        lambda: token_file.read_text().strip(),
        tls_cert_pem=first.tls_cert,
        # A broken long-poll is tried again below after a pause; one whose process is gone moves on.
        failover=[(other.url, other.tls_cert) for other in others],
    )
    backoff = Backoff(1.0, 30.0)
    arguments = {"max": info.batch_max, "wait_seconds": POLL_SECONDS, "ack": False}
    log.info("idle: Claude Code is closed; waiting for messages")
    try:
        while True:
            try:
                batch = RecvBatchResult.model_validate(
                    broker.call_tool("recv_batch", arguments, timeout=POLL_SECONDS + ANSWER_GRACE)
                )
            except (ServerUnavailable, AuthRefused, ToolCallFailed, ValidationError) as e:
                delay = backoff.failed()
                reason = f"waiting for messages: {_first_line(e)}; trying again in {delay:.0f} s"
                log.warning("%s", reason)
                state.enter("error", reason=reason)
                state.save()
                time.sleep(delay)
                continue
            if backoff.attempts:
                backoff.reset()
                state.enter("idle")
                state.save()
            if batch.messages:
                write_atomic(
                    harness_dir / WAKE_FILE, WakeHandoff(batch=batch, received_at=time.time()).model_dump_json(), 0o600
                )
                return batch
    finally:
        broker.close()


class WakeHandoff(BaseModel):
    """wake.json: what the idle waiter received, for the turn loop it execs."""

    batch: RecvBatchResult
    received_at: float  # epoch seconds


def take_wake(harness_dir: Path, now: float) -> RecvBatchResult | None:
    """The messages the idle waiter handed over, once (the file goes as it is read), if they are fresh:
    older ones may have been delivered again since their lease ended (a sandbox stopped between the
    waiter's write and its exec) and come back from the broker if they are still unhandled. The harness
    dir is the agent's: a file that is not a handoff is dropped the same way."""
    path = harness_dir / WAKE_FILE
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    path.unlink(missing_ok=True)
    try:
        handoff = WakeHandoff.model_validate_json(raw)
    except ValueError as e:
        log.warning("ignoring %s: %s", path, _first_line(e))
        return None
    if not 0 <= now - handoff.received_at <= HANDOFF_FRESH:
        log.info(
            "ignoring a handoff from %.0f s ago: its messages come back from the broker", now - handoff.received_at
        )
        return None
    return handoff.batch if handoff.batch.messages else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
