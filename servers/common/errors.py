"""The one error a tool raises on purpose."""

from __future__ import annotations

import logging

from fastmcp.exceptions import ToolError


class Refused(ToolError):
    """A call that cannot be done as asked. The message says what was wrong and what to do.

    It is a ToolError, so FastMCP passes the message to the caller verbatim and nothing else
    (no traceback, no internals) leaves the server.
    """

    def __init__(self, *args: object, log_level: int = logging.INFO) -> None:
        # A refusal is the server working as meant: not an error in its log.
        super().__init__(*args, log_level=log_level)
