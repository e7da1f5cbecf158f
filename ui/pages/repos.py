"""The forge: the repos list (live from the hive view), and a page per repo with its grants (grant
and revoke for the operator), recent pushes, the log of a ref, a file browser at a ref and a
commit's diff. Everything is read through the forge's tools as the operator; what the forge refuses
(a bad ref, a path outside the repo) is a toast with its reason."""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import partial
from typing import Final

from nicegui import ui

from hyperhive.servers.common.formatting import grants_text, when
from hyperhive.servers.common.names import OPERATOR
from hyperhive.servers.forge.models import Access, Repo
from hyperhive.servers.forge.store import EVERYONE
from hyperhive.ui.hive_view import HiveView
from hyperhive.ui.pages.widgets import (
    act,
    agent_name_error,
    breadcrumbs,
    check_as_typed,
    clickable,
    confirm,
    section,
    stale_when,
    text_block,
    while_shown,
)

REPOS_CSS: Final = (
    " .hh-diff { font-family: ui-monospace, monospace; white-space: pre-wrap; overflow-wrap: anywhere;"
    " font-size: 13px; } .hh-add { color: var(--hh-positive-text); } .hh-del { color: var(--hh-negative-text); }"
    " .hh-hunk { color: var(--q-info); }"
)
NO_REPOS: Final = "no repos yet: agents create them with create_repo (or run `hive repo create NAME`)"
FORGE_DOWN: Final = "the forge has not answered yet: is it running? (`hive up` starts it)"


def repos_page(hive: HiveView) -> None:
    section("repos")
    table = ui.column().classes("w-full gap-1")
    stale_when(hive, table, "forge")

    def show(repos: Sequence[Repo] | None) -> None:
        table.clear()
        with table:
            if repos is None:
                ui.label(FORGE_DOWN).classes("text-grey-6").mark("repos-empty")
                return
            if not repos:
                ui.label(NO_REPOS).classes("text-grey-6").mark("repos-empty")
                return
            for repo in repos:
                with ui.row().classes("items-baseline gap-4 w-full").mark(f"repo-{repo.name}"):
                    ui.link(repo.name, f"/repos/{repo.name}").classes("text-lg w-40")
                    ui.label(f"owner {repo.owner}").classes("w-40")
                    ui.label(f"grants: {grants_text(repo.grants)}").classes("w-64")
                    pushed = f"{when(repo.pushed_at)} by {repo.pushed_by}" if repo.pushed_at else "none yet"
                    ui.label(f"last push {pushed}").classes("text-grey-5 w-72")
                    ui.label(repo.description or "").classes("text-grey-6")

    show(hive.state.repos)
    while_shown(hive.repos_changed, show)


def repo_page(hive: HiveView, name: str) -> None:
    section(f"repo {name}")
    header = ui.column().classes("w-full gap-1")

    def show_repo(repos: Sequence[Repo] | None) -> None:
        repo = next((r for r in repos or () if r.name == name), None)
        header.clear()
        with header:
            if repo is None:
                text = FORGE_DOWN if repos is None else f"no repo named {name!r}: the repos page lists them"
                ui.label(text).classes("text-warning").mark("repo-missing")
                return
            ui.label(repo.description or "").classes("text-grey-5")
            ui.label(f"owner {repo.owner} · clone {repo.clone_url}").classes("hh-mono")
            grants_editor(hive, repo)

    show_repo(hive.state.repos)
    while_shown(hive.repos_changed, show_repo)
    with ui.tabs() as tabs:
        for tab in ("files", "log", "pushes"):
            ui.tab(tab).mark(f"tab-{tab}")
    with ui.tab_panels(tabs, value="files").classes("w-full"):
        with ui.tab_panel("files"):
            file_browser(hive, name)
        with ui.tab_panel("log"):
            log_panel(hive, name)
        with ui.tab_panel("pushes"):
            pushes_panel(hive, name)


def grants_editor(hive: HiveView, repo: Repo) -> None:
    """Who holds what, each with a revoke button, and a form to grant (the operator may, on any repo)."""
    with ui.row().classes("items-center gap-2"):
        ui.label("grants:")
        if not repo.grants:
            ui.label("none (only its owner, the manager and the operator)").classes("text-grey-6")
        for who, access in sorted((repo.grants or {}).items()):
            with ui.row().classes("items-center gap-0").mark(f"grant-{who}"):
                ui.label(f"{who} {access}")

                async def revoke(who: str = who, access: str = access) -> None:
                    if await confirm(f"revoke {who}'s {access} on {repo.name}?", "revoke"):
                        await act(f"revoke {who}", hive.call(hive.forge.revoke(repo.name, who)), f"{who}: revoked")

                ui.button(icon="close", on_click=revoke).props(f'flat dense round aria-label="revoke {who}"').mark(
                    f"revoke-{who}"
                )
    with ui.row().classes("items-center gap-2"):
        who_input = ui.input("agent, manager, operator or *").props("dense").classes("w-64").mark("grant-who")
        level = ui.select(["read", "write"], value="read").props("dense").mark("grant-access")

        async def grant() -> None:
            who = (who_input.value or "").strip()
            if not who or grantee_error(repo, who) is not None:
                return  # the button is disabled, and the field says why
            access: Access = "write" if level.value == "write" else "read"
            call = hive.call(hive.forge.grant(repo.name, who, access))
            if await act(f"grant {who}", call, f"{who}: {access} on {repo.name}"):
                who_input.set_value("")

        grant_button = ui.button("grant", on_click=grant).props("dense").mark("grant")
        check_as_typed(who_input, lambda who: grantee_error(repo, who), grant_button)


def grantee_error(repo: Repo, who: str) -> str | None:
    """What is wrong with `who` as a grantee of `repo`: the forge's rule (an agent's name, 'operator'
    or '*'), and its owner holds write already."""
    if who == repo.owner:
        return f"{who} owns {repo.name} and writes to it already"
    if who in (EVERYONE, OPERATOR):
        return None
    error = agent_name_error(who)
    return f"an agent's name, 'manager', 'operator' or '*' (every agent): {error}" if error else None


def file_browser(hive: HiveView, name: str) -> None:
    """A tree at a ref you click through; a file opens in the viewer below it."""
    with ui.row().classes("items-center gap-2"):
        ref = ui.input("ref", value="HEAD").props("dense").classes("w-48").mark("files-ref")
        crumbs = ui.row().classes("items-center gap-1 hh-mono")
    listing = ui.column().classes("w-full gap-0 hh-mono")
    viewer = ui.column().classes("w-full")
    where = {"path": ""}

    async def open_dir(path: str) -> None:
        result = await act(f"list {path or 'the top'}", hive.forge.tree(name, ref.value or "HEAD", path))
        listing.clear()
        viewer.clear()
        if result is None:
            with listing:
                ui.label("nothing to show at this ref (an empty repo has no commit yet)").classes("text-grey-6")
            return
        where["path"] = result.path
        breadcrumbs(crumbs, name, result.path, open_dir)
        with listing:
            if not result.entries:
                ui.label("(empty directory)").classes("text-grey-6")
            for entry in result.entries:
                child = f"{result.path}/{entry.name}" if result.path else entry.name
                if entry.kind == "dir":
                    clickable(f"{entry.name}/", partial(open_dir, child)).mark(f"entry-{child}")
                elif entry.kind in ("file", "link"):
                    size = f"{entry.size:,} B" if entry.size is not None else ""
                    label = f"{entry.name}{' → link' if entry.kind == 'link' else ''}  {size}"
                    clickable(label, partial(open_file, child)).mark(f"entry-{child}")
                else:
                    ui.label(f"{entry.name} (submodule)").classes("text-grey-6")
            if result.truncated:
                ui.label("… more entries than a listing shows: clone the repo for all").classes("text-warning")

    async def open_file(path: str) -> None:
        result = await act(f"read {path}", hive.forge.read_file(name, path, ref.value or "HEAD"))
        viewer.clear()
        if result is None:
            return
        with viewer:
            ui.label(f"{result.path} · {result.size:,} bytes · at {result.commit[:12]}").classes("hh-mono").mark(
                "file-title"
            )
            if result.binary:
                ui.label("binary file: not shown (clone the repo to get it)").classes("text-warning").mark("binary")
            else:
                if result.truncated:
                    ui.label("only the start is shown: the file is larger than [forge] max_file_bytes").classes(
                        "text-warning"
                    )
                text_block(result.text or "", "file-text")

    ref.on("keydown.enter", lambda: open_dir(where["path"]))
    ui.timer(0.1, lambda: open_dir(""), once=True)


def log_panel(hive: HiveView, name: str) -> None:
    with ui.row().classes("items-center gap-2"):
        ref = ui.input("ref", value="HEAD").props("dense").classes("w-48").mark("log-ref")
    commits = ui.column().classes("w-full gap-0 hh-mono")
    shown = ui.column().classes("w-full")

    async def load() -> None:
        result = await act("log", hive.forge.repo_log(name, ref.value or "HEAD", 50))
        commits.clear()
        with commits:
            if result is None:
                ui.label("no log at this ref (an empty repo has no commit yet)").classes("text-grey-6")
                return
            for commit in result.commits:
                text = f"{commit.sha[:12]} {when(commit.date)} {commit.author}: {commit.subject}"
                clickable(text, partial(show, commit.sha)).mark(f"commit-{commit.sha[:12]}")

    async def show(sha: str) -> None:
        result = await act(f"commit {sha[:12]}", hive.forge.show_commit(name, sha))
        shown.clear()
        if result is None:
            return
        with shown:
            ui.label(f"{result.sha} · {result.author} · {when(result.date)}").classes("hh-mono")
            ui.label(result.subject).classes("text-lg").mark("commit-subject")
            if result.body:
                ui.label(result.body).classes("text-grey-5 whitespace-pre-wrap")
            diff_view(result.diff)
            if result.truncated:
                ui.label("the diff is cut at [forge] max_diff_bytes: clone the repo for the rest").classes(
                    "text-warning"
                )

    ref.on("keydown.enter", load)
    ui.button("show", on_click=load).props("dense flat").mark("log-load")
    ui.timer(0.1, load, once=True)


def pushes_panel(hive: HiveView, name: str) -> None:
    rows = ui.column().classes("w-full gap-0 hh-mono")

    async def load() -> None:
        result = await act("pushes", hive.forge.pushes(name, 50))
        rows.clear()
        with rows:
            if result is None:
                return
            if not result.pushes:
                ui.label("no pushes yet").classes("text-grey-6").mark("no-pushes")
            for push in result.pushes:
                old, new = (push.old or "")[:12] or "(new)", (push.new or "")[:12] or "(deleted)"
                ui.label(f"{when(push.at)} {push.pusher} {push.ref} {old}..{new}").mark("push")

    ui.timer(0.1, load, once=True)
    ui.button("refresh", on_click=load).props("flat dense").mark("pushes-refresh")


def diff_view(diff: str) -> None:
    """A unified diff, monospace and wrapped, + lines green, - lines red, hunks blue."""
    lines = []
    for line in diff.splitlines():
        kind = (
            "hh-add" if line.startswith("+") and not line.startswith("+++")
            else "hh-del" if line.startswith("-") and not line.startswith("---")
            else "hh-hunk" if line.startswith("@@")
            else ""
        )  # fmt: skip
        lines.append(f"<span class='{kind}'>{html.escape(line)}</span>" if kind else html.escape(line))
    ui.html("<pre class='hh-diff'>" + "\n".join(lines) + "</pre>").classes("w-full").mark("diff")
