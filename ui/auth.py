"""Logging in to the dashboard: the password `hive init` wrote, any operator token, or the
one-time login link `hive up` prints (a code, never a token, in the URL: one use, minutes long).

A token is checked by using it: the operator server answers `pending_questions` only for an
operator. The dashboard never holds the hive's signing key.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import app
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from hyperhive.servers.common.config import HiveConfig
from hyperhive.servers.operator.client import OperatorClient

PASSWORD_FILE: Final = "dashboard.password"
OPEN_PATHS: Final = ("/login", "/_nicegui", "/favicon.ico")


def password_path(config: HiveConfig) -> Path:
    return config.home / PASSWORD_FILE


def logged_in() -> bool:
    return bool(app.storage.user.get("operator"))


class LoginRequired(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if logged_in() or path.startswith(OPEN_PATHS):
            return await call_next(request)
        return RedirectResponse(f"/login?redirect_to={path}")


@dataclass
class LoginCode:
    """A one-time login code: good once, until `expires_at`."""

    code: str
    expires_at: float
    used: bool = field(default=False)

    @classmethod
    def new(cls, ttl_seconds: float) -> LoginCode:
        return cls(secrets.token_urlsafe(24), time.monotonic() + ttl_seconds)

    def redeem(self, given: str) -> bool:
        """True once for the right code in time; it is spent then (or by a wrong guess after expiry)."""
        if self.used or time.monotonic() > self.expires_at:
            return False
        if not hmac.compare_digest(given.encode(), self.code.encode()):
            return False
        self.used = True
        return True


class Credentials:
    def __init__(self, config: HiveConfig, password: str, login_code: LoginCode | None = None) -> None:
        self.config = config
        self.password = password
        self.login_code = login_code

    def code_ok(self, given: str) -> bool:
        return self.login_code is not None and self.login_code.redeem(given)

    def password_ok(self, given: str) -> bool:
        return bool(self.password) and hmac.compare_digest(given.encode(), self.password.encode())

    async def token_ok(self, token: str) -> bool:
        if not token.startswith("ey"):  # not a JWT: the password mistyped, say, which must not leave here
            return False
        try:
            async with OperatorClient.for_server(self.config, token, retry_seconds=0) as operator:
                await operator.pending_questions()
        except Exception:  # refused (401), not an operator (ToolError), or the server is down
            return False
        return True
