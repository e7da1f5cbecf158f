"""The shared workspace (/hive/shared in sandboxes), read-only: a tree you click through and a file
viewer, through the lifecycle server's shared_files and read_shared_file. Agents wrote everything
there: links are shown as links and never followed, only regular files up to 1 MiB are shown."""

from __future__ import annotations

from functools import partial

from nicegui import ui

from hyperhive.servers.common.formatting import when
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.widgets import act, breadcrumbs, clickable, section, text_block

EMPTY = "the shared workspace is empty: agents write files to /hive/shared for each other"


def shared_page(hive: HiveView) -> None:
    section("shared workspace")
    ui.label("/hive/shared in every sandbox (read-only here)").classes("text-grey-6")
    crumbs = ui.row().classes("items-center gap-1 hh-mono")
    listing = ui.column().classes("w-full gap-0 hh-mono")
    viewer = ui.column().classes("w-full")

    async def open_dir(path: str) -> None:
        result = await act(f"list {path or 'the shared workspace'}", hive.lifecycle.shared_files(path))
        if result is None:
            return
        listing.clear()
        viewer.clear()
        breadcrumbs(crumbs, "shared", result.path, open_dir)
        with listing:
            if not result.entries:
                ui.label(EMPTY if not result.path else "(empty directory)").classes("text-grey-6").mark("shared-empty")
            for entry in result.entries:
                child = f"{result.path}/{entry.name}" if result.path else entry.name
                about = f"{entry.size:,} B · {when(entry.modified)} · {entry.owner}"
                if entry.kind == "dir":
                    clickable(f"{entry.name}/  {about}", partial(open_dir, child)).mark(f"shared-{child}")
                elif entry.kind == "file":
                    clickable(f"{entry.name}  {about}", partial(open_file, child)).mark(f"shared-{child}")
                else:
                    what = "link, not followed" if entry.kind == "link" else "not a regular file"
                    ui.label(f"{entry.name} ({what})  {about}").classes("text-grey-6").mark(f"shared-{child}")
            if result.truncated:
                ui.label("… more entries than a listing shows").classes("text-warning")

    async def open_file(path: str) -> None:
        result = await act(f"read {path}", hive.lifecycle.read_shared_file(path))
        viewer.clear()
        if result is None:
            return
        with viewer:
            ui.label(f"{result.path} · {result.size:,} bytes").classes("hh-mono").mark("shared-title")
            if result.binary:
                ui.label("binary file: not shown").classes("text-warning").mark("binary")
            else:
                text_block(result.text or "", "shared-text")

    ui.button("refresh", on_click=lambda: open_dir("")).props("flat dense")
    ui.timer(0.1, lambda: open_dir(""), once=True)
