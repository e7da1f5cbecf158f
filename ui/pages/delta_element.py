"""An element the browser keeps its own state for, changed by small method calls rather than sent again.

NiceGUI sends an element whole on every change of its props; a table of 50 agents or a list of 200
messages would go out whole for each changed row. A DeltaElement's JS component holds the rows and
takes changes as method calls (`put`, `drop`, …); the element's whole state joins its props only
when it is sent whole (`_to_dict`: the page's HTML, a reconnect, an `update()`).

A method call reaches only a mounted component: one in a tab or dialog not shown, or not yet drawn,
misses it. Each call is therefore checked: its method answers `true`, and when it does not (not
mounted, the page not connected within the bound), the element is sent whole, so the browser's copy
of its props (what a component mounted later starts from) is current again. The changes are
idempotent, so a change that arrives twice (in the state and as a call) does no harm.
"""

from __future__ import annotations

from typing import Any, Final

from nicegui import background_tasks, ui

ANSWER_SECONDS: Final = 5.0  # a method call's answer; past it the element is sent whole instead


class DeltaElement(ui.element):
    def _send(self, method: str, *args: Any) -> None:
        """Call `method` in the browser; send the element whole if it did not take it."""
        if self.is_deleted:
            return
        background_tasks.create(self._deliver(method, args), name=f"{type(self).__name__}.{method}")

    async def _deliver(self, method: str, args: tuple[Any, ...]) -> None:
        try:
            taken = await self.run_method(method, *args, timeout=ANSWER_SECONDS)
        except TimeoutError:
            taken = None
        if taken is not True and not self.is_deleted:
            self.update()
