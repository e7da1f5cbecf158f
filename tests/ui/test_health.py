"""Staying truthful when a server is slow or down: each server polled on its own with a short bound,
its health in the header, its data greyed out while stale; against the real servers as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hivetest import Servers
from nicegui import ui
from nicegui.element import Element
from nicegui.testing import User
from uitest import log_in

from hyperhive.servers.common.issuer import issue_token
from hyperhive.ui.hive_view import Health, HiveView, ServerHealth
from hyperhive.ui.pages.frame import health_summary

pytestmark = pytest.mark.slow


@contextmanager
def hung(servers: Servers, server: str) -> Iterator[None]:
    """`server`'s process stopped (SIGSTOP: it accepts connections and never answers) until the block ends."""
    process = servers.processes[server].process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


async def until(check: Callable[[], object], within: float, what: str) -> float:
    """Seconds until `check()` is truthy; fails after `within`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_hung_broker_is_down_within_3_s_and_the_other_servers_keep_being_polled(servers: Servers) -> None:
    view = HiveView(servers.config, issue_token(servers.config, "operator", 600), interval=1.0)
    await view.start()
    try:
        health = view.state.health
        await until(lambda: all(h.answered_at is not None and h.fresh for h in health.values()), 30, "all answer")
        await asyncio.sleep(0.1)  # just after the broker's poll: the worst moment to hang it
        with hung(servers, "broker"):
            took = await until(lambda: not view.is_fresh("broker"), 3.0, "the broker shown down")
            assert health["broker"].trouble == "not answering", health["broker"]
            others_before = {s: h.answered_at for s, h in health.items() if s != "broker"}
            await asyncio.sleep(2.5)  # a hung poll would hold a shared round up for its whole timeout
            assert all(health[s].answered_at != at and health[s].state != "down" for s, at in others_before.items()), (
                health
            )
            assert not view.is_fresh("broker")
        await until(lambda: view.is_fresh("broker"), 15, "the broker back up")
        assert health["broker"].state in ("up", "slow")
        print(f"broker down {took:.2f} s after SIGSTOP")
    finally:
        await view.stop()


def _stale(user: User) -> list[Element]:
    return [element for element in user.client.elements.values() if "hh-stale" in element.classes]


def _chip(user: User, server: str) -> Element:
    return next(iter(user.find(marker=f"health-{server}").elements))


async def test_the_header_shows_each_servers_health_and_a_down_servers_data_greys_out(
    user: User, servers: Servers, password: str
) -> None:
    await log_in(user, password, "/approvals")
    await user.should_see("updated just now", marker="updated", retries=100)
    for server in ("broker", "lifecycle", "approvals", "operator", "forge"):
        assert "hh-health-up" in _chip(user, server).classes
    assert _stale(user) == []
    approvals = servers.processes["approvals"]
    approvals.stop()
    try:
        await user.should_see("approvals unreachable for", marker="banner", retries=100)
        assert "hh-health-down" in _chip(user, "approvals").classes
        assert "hh-health-up" in _chip(user, "broker").classes
        assert any("approvals: unreachable" in t.text for t in user.find(kind=ui.tooltip).elements)
        assert len(_stale(user)) == 1  # the pending approvals, not the (operator's) question strip
        await user.should_see("updated", marker="updated")
        await asyncio.sleep(2.5)
        await user.should_not_see("updated just now", marker="updated")  # the view is as old as its stalest part
    finally:
        await asyncio.to_thread(approvals.start)
    await user.should_not_see(marker="banner", retries=100)
    await user.should_see("updated just now", marker="updated", retries=100)
    assert "hh-health-up" in _chip(user, "approvals").classes
    assert _stale(user) == []


def test_a_phones_health_summary_names_the_worst_state_and_who_is_in_it() -> None:
    def of(**states: Health) -> dict[str, ServerHealth]:
        return {server: ServerHealth(state=state) for server, state in states.items()}

    assert health_summary(of(broker="up", forge="up")) == ("up", "all up")
    assert health_summary(of(broker="up", forge="slow")) == ("slow", "forge slow")
    assert health_summary(of(broker="slow", forge="down", operator="up")) == ("down", "forge down")
    assert health_summary(of(broker="down", forge="down", operator="slow")) == ("down", "2 down")
