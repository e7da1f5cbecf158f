"""An agent's terminal (/agent/NAME/terminal): xterm.js (ui.xterm) on a shell the lifecycle server
opens in the agent's sandbox, as the agent (servers/lifecycle/terminal.py says how, and why it is
all MCP calls: terminal_open, terminal_io, terminal_resize, terminal_close).

While the page is shown, one pump long-polls terminal_io for output; keystrokes go out at once,
one call at a time so they arrive in order; outputs are written in the server's `seq` order (a
keystroke's call and the pump's may both bring some). Leaving the page, or the browser going away,
closes the session; the server closes one nobody reads anyway (its idle_seconds). The shell
ending (the agent stopped, the sandbox ended, `exit`) is written into the terminal, and the page
offers to open a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from fastmcp.exceptions import ToolError
from nicegui import background_tasks, context, ui
from nicegui.events import XtermDataEventArguments, XtermResizeEventArguments

from hyperhive.servers.common.call_errors import AuthRefused, ServerUnavailable
from hyperhive.servers.lifecycle.models import TerminalOutput
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.widgets import section

log = logging.getLogger("hyperhive.ui")

POLL_MS: Final = 10_000  # one long poll; the server closes a session after its idle_seconds without one
RETRY_SECONDS: Final = 1.0  # after a failed call (the lifecycle server restarting)
FAILURES_MAX: Final = 10  # calls in a row that fail before the page gives the session up
TERMINAL_STYLE: Final = "height: 70vh; min-height: 240px; max-width: calc(100vw - 32px); overflow: hidden"  # phones too
XTERM_OPTIONS: Final = {
    "cursorBlink": True,
    "fontSize": 13,
    "fontFamily": "ui-monospace, monospace",
    "scrollback": 5000,
    "theme": {"background": "#121212"},
}


class TerminalPump:
    """One session of one page: opening it, moving keystrokes and output, closing it."""

    def __init__(self, hive: HiveView, name: str, term: ui.xterm, status: ui.label) -> None:
        self.hive, self.name, self.term, self.status = hive, name, term, status
        self.session: str | None = None
        self.closed = False
        self._pending: list[str] = []
        self._sending: asyncio.Task[None] | None = None
        self._next_seq = 1
        self._held: dict[int, TerminalOutput] = {}
        self._in_flight = 0

    async def run(self, cols: int, rows: int) -> None:
        """Open a session and pump its output until it ends or the page goes."""
        try:
            opened = await self.hive.lifecycle.terminal_open(self.name, max(20, cols), max(5, rows))
        except (ToolError, ServerUnavailable, AuthRefused) as e:
            self._show(f"cannot open a terminal: {e}", error=True)
            self.term.write(f"\r\n\x1b[31mcannot open a terminal: {e}\x1b[0m\r\n")
            return
        self.session = opened.session
        self._show(f"a shell in {self.name}'s sandbox, as {self.name}; it closes when you leave this page")
        failures = 0
        while not self.closed and not self.term.is_deleted:
            try:
                out = await self._io("", POLL_MS)
                failures = 0
            except (ServerUnavailable, AuthRefused) as e:
                failures += 1
                if failures >= FAILURES_MAX:
                    self._ended(f"the lifecycle server did not answer: {e}")
                    return
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except ToolError as e:  # the session is gone (the server restarted, or it was forgotten)
                self._ended(str(e))
                return
            if out.ended:
                return
        await self.close()

    async def _io(self, data: str, wait_ms: int) -> TerminalOutput:
        assert self.session is not None
        self._in_flight += 1
        try:
            out = await self.hive.lifecycle.terminal_io(self.session, data, wait_ms)
        finally:
            self._in_flight -= 1
        self._deliver(out)
        return out

    def _deliver(self, out: TerminalOutput) -> None:
        """Write outputs in seq order; with nothing else in flight, whatever is held goes out."""
        if out.seq:
            self._held[out.seq] = out
        while self._next_seq in self._held or (self._held and self._in_flight == 0):
            seq = self._next_seq if self._next_seq in self._held else min(self._held)
            chunk = self._held.pop(seq)
            self._next_seq = seq + 1
            if chunk.dropped:
                self.term.write(f"\r\n\x1b[33m[{chunk.dropped:,} bytes of output dropped: nobody read them]\x1b[0m\r\n")
            if chunk.output and not self.term.is_deleted:
                self.term.write(chunk.output)
        if out.ended:
            self._ended(out.reason or "the shell ended")

    def _ended(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.session = None
        if not self.term.is_deleted:
            self.term.write(f"\r\n\x1b[33m[{reason}]\x1b[0m\r\n")
            self._show(f"{reason}. Reload the page for a new shell.", error=True)

    def type(self, event: XtermDataEventArguments) -> None:
        """Keystrokes: sent at once, in order, by one sender at a time."""
        if self.session is None or self.closed:
            return
        self._pending.append(event.data)
        if self._sending is None or self._sending.done():
            self._sending = background_tasks.create(self._send(), name="terminal-keys")

    async def _send(self) -> None:
        while self._pending and self.session is not None:
            data = "".join(self._pending)
            self._pending.clear()
            try:
                await self._io(data, 0)
            except (ToolError, ServerUnavailable, AuthRefused) as e:
                self.term.write(f"\r\n\x1b[31m[not sent: {e}]\x1b[0m\r\n")
                return

    async def resize(self, event: XtermResizeEventArguments) -> None:
        if self.session is None or self.closed:
            return
        with contextlib.suppress(ToolError, ServerUnavailable, AuthRefused):
            await self.hive.lifecycle.terminal_resize(self.session, max(20, event.cols), max(5, event.rows))

    async def close(self) -> None:
        session, self.session, self.closed = self.session, None, True
        if session is not None:
            with contextlib.suppress(ToolError, ServerUnavailable, AuthRefused):
                await self.hive.lifecycle.terminal_close(session)

    def _show(self, text: str, *, error: bool = False) -> None:
        if not self.status.is_deleted:
            self.status.set_text(text)
            self.status.classes(replace="text-warning" if error else "text-grey-5")


def terminal_page(hive: HiveView, name: str) -> None:
    section(f"{name}: terminal")
    with ui.row().classes("items-center gap-4"):
        ui.link(f"← {name}", f"/agent/{name}").mark("terminal-back")
        status = ui.label("opening a shell…").classes("text-grey-5").mark("terminal-status")
    term = ui.xterm(XTERM_OPTIONS).classes("w-full").style(TERMINAL_STYLE).mark("terminal")
    pump = TerminalPump(hive, name, term, status)
    term.on_data(pump.type)
    term.on_resize(pump.resize)
    client = context.client
    client.on_disconnect(pump.close)
    ui.button("close", on_click=pump.close).props("flat dense").mark("terminal-close").tooltip(
        "end the shell (leaving the page does too)"
    )

    async def start() -> None:
        await client.connected(timeout=30)
        await term.fit()
        cols, rows = await term.get_columns(), await term.get_rows()
        await pump.run(cols, rows)

    background_tasks.create(start(), name=f"terminal-{name}")
    # The window's size: the terminal fits it, and its resize event tells the shell.
    ui.on("hh-terminal-resize", lambda: None if term.is_deleted else term.fit(), throttle=0.3)
    ui.run_javascript(
        "if (!window.hhTerminalResize) { window.hhTerminalResize = true;"
        " window.addEventListener('resize', () => emitEvent('hh-terminal-resize')); }"
    )
