"""The wake prompt: the messages a turn handles, as Claude Code reads them.

Each message says who sent it, its id (to reply with in_reply_to) and what it answers; a
broadcast says it may need no action; helper events from `system` read as one line of what
happened, and for the manager what to do about it. When more messages wait than one wake takes
in, the prompt says how many and to drain them with recv_batch before acting.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hyperhive.servers.broker.models import Message
from hyperhive.servers.common.events import HELPER_EVENT
from hyperhive.servers.common.harnessdir import SandboxStart, TurnState

# What the manager should do about each helper event: a reminder, the system prompt has the rest.
MANAGER_HINTS: dict[str, str] = {
    "approval_resolved": "Tell whoever asked for it; if it failed, find out why before trying again.",
    "spawned": "Greet the new agent with its task if it has none yet.",
    "rebuilt": "Its new config is live; check it behaves as intended.",
    "killed": "The operator stopped it; do not restart work on it without asking.",
    "destroyed": "Reassign its work if any was left.",
    "container_crash": "Look at its logs (lifecycle logs) and tell the operator if it keeps crashing.",
    "state_over_budget": "Ask it to clean up its state dir, or ask the operator to raise its state_max.",
    "operator_answered": "Act on the answer, or on the lack of one.",
    "question_asked": "Answer with answer_question, or ask the operator if you cannot.",
}


def render_wake(messages: list[Message], queued: int, role: str) -> str:
    """The prompt of one wake: `messages` in order, and `queued` more still waiting."""
    count = f"{len(messages)} new message{'' if len(messages) == 1 else 's'}"
    lines = [f"You have {count}."]
    if queued:
        lines[0] = (
            f"You have {count}, and {queued} more {'is' if queued == 1 else 'are'} queued: "
            "drain them with recv_batch (ack=false) before acting, so you act on the whole picture, "
            "and ack(ids) once you have handled them (unacked, they come back)."
        )
    for message in messages:
        lines += ["", _heading(message), _body(message, role)]
    return "\n".join(lines)


def _heading(message: Message) -> str:
    if message.kind == "event":
        kind = (message.event or {}).get("type", "event")
        return f"--- event #{message.id} from system ({kind}), {message.sent_at}"
    what = "reminder" if message.kind == "reminder" else "message"
    parts = [f"--- {what} #{message.id} from {message.sender}", message.sent_at]
    if message.in_reply_to is not None:
        parts.append(f"in reply to #{message.in_reply_to}")
    if message.broadcast:
        parts.append("broadcast to every agent: it may need no action from you")
    if message.late:
        parts.append("late: it was due while the broker was down")
    return ", ".join(parts)


def _body(message: Message, role: str) -> str:
    if message.kind != "event" or not message.event:
        return message.body
    summary, kind = _event_summary(message.event, message.body)
    hint = MANAGER_HINTS.get(kind) if role == "manager" else None
    return f"{summary}\n({hint})" if hint else summary


def _event_summary(event: dict[str, Any], fallback: str) -> tuple[str, str]:
    try:
        parsed = HELPER_EVENT.validate_python(event)
    except ValidationError:  # an event kind this harness does not know yet: the broker's text
        return fallback, str(event.get("type", ""))
    return parsed.summary(), parsed.type


def restart_note(previous: TurnState | None, start: SandboxStart | None) -> str | None:
    """What the first wake after a restart starts with: what happened to the sandbox (`start`, from
    hive.json) and, from the turn state the last run left behind, whether a turn it was running (or
    retrying) was cut short. An idle agent hears only of a crash (something it left running may have
    caused it) or a rebuild (its tools or instructions may differ); nothing after its first start."""
    if previous is None:
        return None
    what = _what_happened(start)
    if previous.state in ("running", "error") and previous.leased:
        return (
            f"[hyperhive] Your sandbox was {what} while your last turn was running: it may not have finished. "
            "Check what it did (files, messages you sent, notes.md) before you go on; the messages it was "
            "handling follow again."
        )
    if start is not None and start.reason == "crashed":
        return f"[hyperhive] Your sandbox was {what} while you were waiting for messages; no turn was cut short."
    if start is not None and start.reason == "rebuilt":
        return f"[hyperhive] Your sandbox was {what} since your last turn: your tools or instructions may have changed."
    return None


def _what_happened(start: SandboxStart | None) -> str:
    """ "restarted after a crash (exit 137)", "rebuilt (config 3f2a… was applied)" …"""
    if start is None:  # an older hive.json: it does not say
        return "restarted (after a crash, a stop or a rebuild)"
    detail = start.detail
    match start.reason:
        case "crashed":
            return f"restarted after a crash ({detail})" if detail else "restarted after a crash"
        case "rebuilt":
            return f"rebuilt ({detail})" if detail else "rebuilt"
        case "restarted":
            return f"restarted {detail}".rstrip()
        case "started":
            return f"stopped and started again {detail}".rstrip()
        case "boot":
            return "started again as the hive came up (its lifecycle server restarted, e.g. after a reboot)"
        case "created":
            return "destroyed and created again (your files were kept)"
