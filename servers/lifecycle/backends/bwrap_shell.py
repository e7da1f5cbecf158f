"""Entering a running bubblewrap sandbox for the operator's terminal (servers/lifecycle/terminal.py).

This module run as a program (`python -m ...bwrap_shell`), started by the root lifecycle server
with a PTY's slave as its stdin, stdout and stderr. Everything privileged happens before anything
of the sandbox's is even looked at, and nothing the agent controls runs, or is opened, as root:

1. In the host's mount namespace, as root: a pidfd of the sandbox's init (the pid bwrap reported),
   checked to be in the sandbox's pid namespace (the inode bwrap reported) while that pidfd is
   live, so a recycled pid is never entered; then this process writes its own pid into the
   sandbox's cgroup (the host paths the server made), so the sandbox's limits apply to the shell.
2. setns(pidfd, mount | pid | ipc | uts | net): one atomic call into all of the sandbox's
   namespaces (the pid namespace for the children). No user namespace: as root, bwrap makes none.
3. The drop, still before anything is executed: every capability out of the bounding set, the
   ambient set cleared, the agent's supplementary groups, gid and uid (real, effective and saved:
   the kernel then clears the permitted and effective capabilities), no_new_privs (a setuid binary
   inside gains nothing), the parent-death signal cleared by that drop set again below.
4. fork: the child is in the sandbox's pid namespace; it starts a session with the PTY as its
   controlling terminal, dies with this process (PR_SET_PDEATHSIG), changes to the agent's dir
   and execs the shell — a path inside the sandbox, run as the agent, never as root. This process
   only waits for it, as the agent too, and exits as it did.

Refusals before the exec are written to stderr (the operator sees them in the terminal), exit 125.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import signal
import termios
from pathlib import Path
from typing import Final, NoReturn

CANNOT: Final = 125
_CLONE_NEWNS: Final = 0x00020000
_CLONE_NEWUTS: Final = 0x04000000
_CLONE_NEWIPC: Final = 0x08000000
_CLONE_NEWPID: Final = 0x20000000
_CLONE_NEWNET: Final = 0x40000000
_PR_SET_PDEATHSIG: Final = 1
_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
SHELLS: Final = (("/bin/bash", "--noprofile", "--norc", "-i"), ("/bin/sh", "-i"))

_libc = ctypes.CDLL(None, use_errno=True)


def _call(name: str, *args: int) -> None:
    if getattr(_libc, name)(*[ctypes.c_ulong(a) for a in args]) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}: {os.strerror(error)}")


def _fail(why: str) -> NoReturn:
    os.write(2, f"\r\ncannot open a shell in the sandbox: {why}\r\n".encode())
    os._exit(CANNOT)


def enter(pid: int, pidns: int, cgroup_procs: list[str]) -> None:
    """Steps 1 and 2: into the sandbox's cgroup and namespaces, checked against a recycled pid."""
    pidfd = os.pidfd_open(pid)
    if Path(f"/proc/{pid}/ns/pid").stat().st_ino != pidns:
        raise OSError(f"process {pid} is not the sandbox's init any more")
    signal.pidfd_send_signal(pidfd, 0)  # ESRCH if what the pidfd holds ended: the check above read another
    for procs in cgroup_procs:
        with open(procs, "w") as file:  # noqa: PTH123 (a host path of the server's own making)
            file.write(str(os.getpid()))
    _call("setns", pidfd, _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS | _CLONE_NEWNET)
    os.close(pidfd)


def drop(uid: int, gid: int, groups: list[int], last_cap: int) -> None:
    """Step 3: the agent's ids, no capabilities (0 to `last_cap`), no_new_privs."""
    for cap in range(last_cap + 1):
        _call("prctl", _PR_CAPBSET_DROP, cap, 0, 0, 0)
    _call("prctl", _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PermissionError(f"could not drop to uid {uid}, gid {gid}")
    _call("prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def shell(cwd: str, env: dict[str, str]) -> NoReturn:
    """Step 4, in the child: a session on the PTY, the agent's dir, the shell."""
    parent = os.getppid()
    _call("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the signal was set
        os._exit(CANNOT)
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:
        os.chdir(cwd)  # as the agent: its own dir, opened with its rights only
    except OSError:
        os.chdir("/")
    for argv in SHELLS:
        if os.access(argv[0], os.X_OK):
            os.execve(argv[0], list(argv), env)
    _fail("no /bin/bash or /bin/sh in it")


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="bwrap_shell", description=__doc__)
    parser.add_argument("--pid", type=int, required=True, help="the sandbox's init, as the host sees it")
    parser.add_argument("--pidns", type=int, required=True, help="the inode of its pid namespace")
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--group", type=int, action="append", default=[], help="a supplementary group")
    parser.add_argument("--cgroup-procs", action="append", default=[], help="a cgroup.procs file to join")
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE of the shell's environment")
    args = parser.parse_args(argv)
    if args.uid == 0 or args.gid == 0:
        _fail("refusing to open a root shell")
    env = dict(item.split("=", 1) for item in args.env)
    try:
        last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())  # the host's /proc, before entering
        enter(args.pid, args.pidns, args.cgroup_procs)
        drop(args.uid, args.gid, args.group, last_cap)
    except OSError as e:
        _fail(str(e))
    child = os.fork()
    if child == 0:  # pragma: no cover (exec'd or exits)
        try:
            shell(args.cwd, env)
        except OSError as e:
            _fail(str(e))
    for fd in (0, 1, 2):  # the shell alone holds the terminal: its end ends the session
        os.close(fd)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
