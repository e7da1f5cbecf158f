"""The bubblewrap command line of one sandbox, and starting it: what is bound in where (read-only
unless it is the agent's own), the namespaces, the environment, the network's arguments, the drop to
the agent's uid, and the tiny shell that puts it in its cgroup before bwrap runs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import hyperhive.harness
import hyperhive.servers
import hyperhive.ui
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.harnessdir import CREDENTIALS, INSTANCE_DIR
from hyperhive.servers.lifecycle import sandbox_network
from hyperhive.servers.lifecycle.backends.base import BackendError, SandboxSpec

# Writes its own pid to each cgroup.procs given before "--", then execs the rest: the sandbox is
# in its cgroup before bwrap runs (no preexec_fn, which is unsafe in a threaded server).
ENTER_CGROUP: Final = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
ROOT_LINKS: Final = ("bin", "lib", "lib64", "sbin")  # merged-/usr symlinks, or real dirs elsewhere


def command_line(
    spec: SandboxSpec,
    *,
    bwrap: str,
    privileged: bool,
    tmpfs_size: bool,
    runtime: Path,
    status_fd: int,
    info_fd: int,
    block_fd: int | None = None,
    forwards: Sequence[sandbox_network.Forward] = (),
) -> list[str]:
    """bwrap's argv for `spec`: the host's /usr and /etc read-only, Python and hyperhive bound in,
    the agent's dirs read-write and its credentials read-only, its namespaces, environment and
    network (`forwards`: what its keeper will forward, resolve_forwards'), then (as root) setpriv
    down to its uid, then its command."""
    argv = [bwrap, "--new-session", "--ro-bind", "/usr", "/usr"]
    for name in ROOT_LINKS:
        top = Path("/") / name
        if top.is_symlink():
            argv += ["--symlink", str(top.readlink()), str(top)]
        elif top.is_dir():
            argv += ["--ro-bind", str(top), str(top)]
    argv += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--perms", "01777"]
    if spec.tmp_max is not None and tmpfs_size:
        argv += ["--size", str(spec.tmp_max)]
    argv += ["--tmpfs", "/tmp"]
    # The Python and hyperhive the harness runs on, read-only at the same paths. Parent
    # directories are made 0755 first: bwrap would copy the host's modes (/root is 0700).
    made: set[Path] = {Path("/"), Path("/tmp")}
    for directory in runtime_dirs():
        argv += [*parents(directory, made), "--ro-bind", str(directory), str(directory)]
    bound: list[Path] = []
    for directory in (*spec.shared_rw, spec.state_dir, spec.harness_dir):
        if any(directory == b or b in directory.parents for b in bound):
            continue  # already inside a wider bind (the manager's agents tree holds its own dirs)
        argv += [*parents(directory, made), "--bind", str(directory), str(directory)]
        bound.append(directory)
    argv += ["--ro-bind", str(spec.credentials_dir), str(spec.harness_dir / CREDENTIALS)]
    for mount in spec.mounts:  # the shared workspace, agent.toml's [[binds]]
        for own in (*runtime_dirs(), *bound, spec.credentials_dir):
            if mount.path == own or mount.path in own.parents or own in mount.path.parents:
                raise BackendError(
                    f"{spec.name} cannot have {mount.host} at {mount.path}: the sandbox keeps {own} there"
                )
        argv += [
            *parents(mount.path, made),
            "--ro-bind" if mount.read_only else "--bind",
            str(mount.host),
            str(mount.path),
        ]
    if spec.instance_credentials is not None:
        argv += ["--ro-bind", str(spec.instance_credentials), str(spec.harness_dir / CREDENTIALS / INSTANCE_DIR)]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", spec.name]
    if not privileged:
        argv.append("--unshare-user")
    argv += ["--chdir", str(spec.state_dir), "--clearenv"]
    for key, value in spec.env.items():
        argv += ["--setenv", key, value]
    resolv_conf = None
    if spec.network == "outbound":
        # Made again at each start (the host's search domains may change); replaced whole, so a
        # running sandbox keeps the file it was given.
        resolv_conf = runtime / "resolv.conf"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(resolv_conf, sandbox_network.sandbox_resolv_conf(), durable=False)
    hosts = None
    if spec.network != "host":
        try:
            text = sandbox_network.sandbox_hosts(forwards)
        except sandbox_network.NetworkError as e:
            raise BackendError(f"the sandbox of {spec.name} did not start: {e}") from None
        if text is not None:
            # The sandbox's own (the names resolved for its keeper), replaced whole at each start.
            hosts = runtime / f"{spec.name}.hosts"
            runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(hosts, text, durable=False)
    argv += sandbox_network.bwrap_args(spec.network, resolv_conf, hosts)
    if block_fd is not None:
        argv += ["--block-fd", str(block_fd)]
    argv += ["--info-fd", str(info_fd), "--json-status-fd", str(status_fd), "--"]
    if privileged:
        if spec.uid is None:
            raise BackendError(f"{spec.name} has no uid: as root, every agent runs as its own uid")
        argv += [
            "setpriv", f"--reuid={spec.uid}", f"--regid={spec.uid}",
            f"--groups={','.join(map(str, spec.groups))}" if spec.groups else "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        ]  # fmt: skip
    return argv + spec.command


def spawn(argv: list[str], log_fd: int, keep: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """Start bwrap with nothing open but its output, /dev/null and the descriptors in `keep`.

    The standard library's Popen, not the event loop's: uvloop's subprocess passes on inheritable
    descriptors and some of its own, and a sandbox must not hold any of the server's (its
    listening socket among them).
    """
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        pass_fds=keep,
        close_fds=True,
        start_new_session=True,  # not ours to take down when this server stops
        env={},
        umask=0o002,  # what an agent makes in /hive/shared the others (its group) may change too
    )


def runtime_dirs() -> list[Path]:
    """Python's prefixes and hyperhive's package dirs (an editable install lives outside them)."""
    candidates = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix)}
    for package in (hyperhive.servers, hyperhive.harness, hyperhive.ui):
        candidates.update(Path(p) for p in package.__path__)
    resolved = sorted({c.resolve() for c in candidates if c.exists()})
    usr = Path("/usr")
    kept: list[Path] = []
    for path in resolved:
        if path == usr or usr in path.parents or any(k in path.parents for k in kept):
            continue
        kept.append(path)
    return kept


def parents(path: Path, made: set[Path]) -> list[str]:
    argv: list[str] = []
    for parent in reversed(path.parents):
        if parent not in made:
            made.add(parent)
            argv += ["--perms", "0755", "--dir", str(parent)]
    made.add(path)
    return argv


def supports_tmpfs_size(bwrap: str) -> bool:
    """Whether this bwrap knows --size (bubblewrap 0.5 and later)."""
    try:
        result = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10, env={})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in result.stdout
