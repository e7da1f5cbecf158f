"""Dropping root is for good: no way back, no groups kept."""

from __future__ import annotations

import os

import pytest

from hyperhive.servers.common.privileges import drop_to

NOBODY = 65534


def _in_a_child(check: str) -> int:
    """Run drop_to in a forked child (it cannot be undone) and return the child's exit code."""
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            os.setgroups([0, 1])
            drop_to(NOBODY, NOBODY)
            assert os.getresuid() == (NOBODY,) * 3 and os.getresgid() == (NOBODY,) * 3
            assert os.getgroups() == []
            try:
                os.setuid(0) if check == "uid" else os.setgid(0)
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root")
@pytest.mark.parametrize("check", ["uid", "gid"])
def test_a_dropped_process_cannot_take_root_back(check: str) -> None:
    assert _in_a_child(check) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="as root it would succeed")
def test_without_root_dropping_is_refused_not_ignored() -> None:
    with pytest.raises(PermissionError):
        drop_to(NOBODY, NOBODY)
