"""Logging in to the dashboard: the password `hive init` wrote, or any operator token.

A token is checked by using it: the operator server answers `pending_questions` only for an
operator. The dashboard never holds the hive's signing secret.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Final

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import app
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from hyperhive.servers.common.client import HiveClient
from hyperhive.servers.common.config import HiveConfig

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


class Credentials:
    def __init__(self, config: HiveConfig, password: str) -> None:
        self.config = config
        self.password = password

    def password_ok(self, given: str) -> bool:
        return bool(self.password) and hmac.compare_digest(given.encode(), self.password.encode())

    async def token_ok(self, token: str) -> bool:
        try:
            async with HiveClient.for_server(self.config, "operator", token, retry_seconds=0) as client:
                await client.call("pending_questions")
        except Exception:  # refused (401), not an operator (ToolError), or the server is down
            return False
        return True
