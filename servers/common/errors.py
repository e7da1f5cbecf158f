"""The errors a tool or a store raises on purpose.

Every one is a `Refused`, a ToolError: FastMCP passes its message to the caller verbatim and
nothing else (no traceback, no internals). A store raises the specific kind (`NotFound`,
`LimitReached`, `AlreadyResolved`) with a message that says what was wrong and what to do, so
the rules layer above it needs no union return types to unpack; it catches one only when it
has something to add or another path to take.
"""

from __future__ import annotations

import logging

from fastmcp.exceptions import ToolError


class Refused(ToolError):
    """A call that cannot be done as asked. The message says what was wrong and what to do."""

    def __init__(self, *args: object, log_level: int = logging.INFO) -> None:
        # A refusal is the server working as meant: not an error in its log.
        super().__init__(*args, log_level=log_level)


class NotFound(Refused):
    """What the call names does not exist, or is not the caller's to see."""


class LimitReached(Refused):
    """Doing it would pass a cap; the message names the cap and how to make room."""


class AlreadyResolved(Refused):
    """It was already decided, answered, cancelled or done; the message says how and when."""
