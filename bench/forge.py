"""Forge benchmark: git over the forge's smart HTTP against git on a local path. Prints one JSON object.

    .venv/bin/python bench/forge.py [--quick]

Starts `hive serve broker` and `hive serve forge` as processes in a temporary hive, makes a work
tree of random (incompressible) blobs — 10 MB in a few hundred files by default — and measures,
with the real git CLI and each agent's own token:

- push_s / clone_s: pushing it to a new forge repo, and cloning it back, over HTTP;
- the references of the same run: cloning from the local path of a bare copy (`git clone PATH`,
  hard links), over git's own pack transport (`git clone file://PATH`, what HTTP adds to is that),
  and pushing to a local bare repo; each ratio is forge ÷ local;
- fetch_concurrent: 10 agents cloning the repo at once (each its own token and clone), a few
  rounds: per-clone wall time p50/p99, and how many failed;
- forge_rss_mb: the forge server's resident memory after all that, and its peak (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyperhive.servers.common.agent_config import AGENT_TOML
from hyperhive.servers.common.client import HiveClient, ServerAddress
from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.files import write_atomic
from hyperhive.servers.common.instances import new_instance
from hyperhive.servers.common.issuer import issue_token
from hyperhive.servers.home import init_home

AGENTS = 10
OWNER = "a0"


def git(*args: str, cwd: Path | None = None, token: str | None = None) -> float:
    """The real git CLI without the user's config; the wall time it took (it must succeed)."""
    auth = ["-c", f"http.extraHeader=Authorization: Bearer {token}"] if token else []
    env = {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@hyperhive.local",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@hyperhive.local",
    }
    started = time.perf_counter()
    result = subprocess.run(["git", *auth, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return took


# ------------------------------------------------------------------------------------------ setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def hive_with_forge() -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    """A temporary hive with AGENTS agents, its broker and forge running; (home, forge's MCP URL, forge process)."""
    with tempfile.TemporaryDirectory(prefix="hive-bench-") as tmp:
        home = Path(tmp) / "hive"
        init_home(home)
        broker_port, forge_port = _free_port(), _free_port()
        (home / "hive.toml").write_text(
            f"[servers.broker]\nport = {broker_port}\n[servers.forge]\nport = {forge_port}\n"
        )
        config = load_hive_config(home)
        for i in range(AGENTS):
            (config.applied_dir / f"a{i}").mkdir()
            write_atomic(config.applied_dir / f"a{i}" / AGENT_TOML, 'role = "agent"\n')
            new_instance(config.instances_dir, f"a{i}")
        processes = [_start(home, "broker"), _start(home, "forge")]
        try:
            yield home, f"http://127.0.0.1:{forge_port}/mcp", processes[1]
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)


def _start(home: Path, server: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "hyperhive.servers.cli", "serve", server, "--home", str(home)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip().endswith(" ready"):
            return process
    raise RuntimeError(f"{server} did not start")


def make_tree(path: Path, files: int, total_bytes: int) -> None:
    """A git work tree of `files` random blobs, `total_bytes` in all, in a few directories, committed."""
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    size = total_bytes // files
    for i in range(files):
        target = path / f"dir{i % 16:02d}" / f"blob{i:04d}.bin"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(os.urandom(size))
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "random blobs", cwd=path)


# ---------------------------------------------------------------------------------------- measures


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "n": len(ordered),
    }


def rss_mb(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return {"rss": round(kb["VmRSS"] / 1024, 1), "peak": round(kb["VmHWM"] / 1024, 1)}


async def run(quick: bool) -> dict[str, Any]:
    files, total, repeats, rounds = (100, 2 * 1024**2, 2, 1) if quick else (300, 10 * 1024**2, 5, 3)
    with hive_with_forge() as (home, forge_url, forge), tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
        work = Path(tmp)
        config = load_hive_config(home)
        tokens = {f"a{i}": issue_token(config, f"a{i}", 3600) for i in range(AGENTS)}
        tree = work / "tree"
        make_tree(tree, files, total)

        async with HiveClient(ServerAddress("forge", forge_url), tokens[OWNER], retry_seconds=0) as owner:
            repos = [f"big{i}" for i in range(repeats)]
            for name in repos:
                await owner.call("create_repo", {"name": name})
            for i in range(1, AGENTS):
                await owner.call("grant", {"repo": repos[0], "who": f"a{i}", "access": "read"})
        git_base = forge_url.removesuffix("/mcp") + "/git"

        # Pushes: each to a fresh repo, over HTTP and to a local bare repo.
        push = [git("push", "-q", f"{git_base}/{name}.git", "main", cwd=tree, token=tokens[OWNER]) for name in repos]
        local_push = []
        for i in range(repeats):
            bare = work / f"local{i}.git"
            git("init", "-q", "--bare", str(bare))
            local_push.append(git("push", "-q", str(bare), "main", cwd=tree))

        # Clones: over HTTP, from the local path (hard links) and over git's file:// pack transport.
        clone, local_clone, file_clone = [], [], []
        for i in range(repeats):
            clone.append(git("clone", "-q", f"{git_base}/{repos[0]}.git", str(work / f"c{i}"), token=tokens[OWNER]))
            local_clone.append(git("clone", "-q", str(work / "local0.git"), str(work / f"l{i}")))
            file_clone.append(git("clone", "-q", f"file://{work / 'local0.git'}", str(work / f"f{i}")))
            for prefix in ("c", "l", "f"):
                shutil.rmtree(work / f"{prefix}{i}")

        # AGENTS agents cloning at once, `rounds` times.
        concurrent: list[float] = []
        errors: list[str] = []

        def one(agent: str, target: Path) -> None:
            try:
                concurrent.append(git("clone", "-q", f"{git_base}/{repos[0]}.git", str(target), token=tokens[agent]))
            except RuntimeError as e:
                errors.append(str(e))

        started = time.perf_counter()
        for r in range(rounds):
            targets = [work / f"r{r}-{agent}" for agent in tokens]
            await asyncio.gather(*(asyncio.to_thread(one, agent, t) for agent, t in zip(tokens, targets, strict=True)))
            for target in targets:
                shutil.rmtree(target, ignore_errors=True)
        concurrent_wall = time.perf_counter() - started
        memory = rss_mb(forge.pid)

    def median(samples: list[float]) -> float:
        return round(statistics.median(samples), 3)

    return {
        "repo": {"files": files, "bytes": total, "blobs": "random (incompressible)"},
        "push_s": median(push),
        "local_push_s": median(local_push),
        "push_vs_local": round(median(push) / median(local_push), 1),
        "clone_s": median(clone),
        "local_path_clone_s": median(local_clone),
        "file_url_clone_s": median(file_clone),
        "clone_vs_local_path": round(median(clone) / median(local_clone), 1),
        "clone_vs_file_url": round(median(clone) / median(file_clone), 2),
        "clone_mb_per_s": round(total / 1024**2 / median(clone), 1),
        "fetch_concurrent": {
            "agents": AGENTS,
            "rounds": rounds,
            "clone_s": percentiles(concurrent) if concurrent else None,
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "wall_s": round(concurrent_wall, 2),
        },
        "forge_rss_mb": memory["rss"],
        "forge_peak_rss_mb": memory["peak"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "git": _git_version()},
    }


def _git_version() -> str:
    return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 2 MB repo, fewer repeats, one round")
    print(json.dumps(asyncio.run(run(parser.parse_args().quick)), indent=2))


if __name__ == "__main__":
    main()
