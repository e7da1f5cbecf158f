"""Why a call to another hyperhive server failed, as every client tells it apart (no imports: the idle
harness's small client raises them too, without loading the MCP client stack)."""

from __future__ import annotations


class ServerUnavailable(Exception):
    """The server could not be reached, or the connection broke during a call."""


class AuthRefused(Exception):
    """The server refused the token (401): it is missing, expired, forged or revoked."""
