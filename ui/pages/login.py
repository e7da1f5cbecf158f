"""/login: the dashboard password, an operator token, or the one-time link `hive up` prints."""

from __future__ import annotations

from fastapi.responses import RedirectResponse
from nicegui import app, ui

from hyperhive.ui.auth import Credentials
from hyperhive.ui.pages.widgets import toast


def register_login(credentials: Credentials) -> None:
    @ui.page("/login")
    async def login(redirect_to: str = "/", code: str = "") -> RedirectResponse | None:
        if code and credentials.code_ok(code):  # the one-time link `hive up` prints
            app.storage.user["operator"] = True
            return RedirectResponse(_local(redirect_to))
        if app.storage.user.get("operator"):
            return RedirectResponse("/")

        async def try_login() -> None:
            given = secret.value or ""
            if credentials.password_ok(given) or await credentials.token_ok(given):
                app.storage.user["operator"] = True
                ui.navigate.to(_local(redirect_to))
            else:
                toast("not the dashboard password or an operator token", "negative")

        with ui.card().classes("absolute-center w-96"):
            ui.label("◆ hyperhive").classes("text-xl")
            if code:
                ui.label("that login link was used or has expired: log in with the password").classes(
                    "text-warning"
                ).mark("code-spent")
            secret = ui.input("password or operator token", password=True).props("autofocus").classes("w-full")
            secret.mark("secret")
            secret.on("keydown.enter", try_login)
            ui.button("log in", on_click=try_login).mark("login")
        return None


def _local(path: str) -> str:
    """Only a path on this dashboard: never another site ("//evil.example" is one)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"
