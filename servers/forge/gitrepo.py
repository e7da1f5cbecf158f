"""The forge's bare repos, through the git CLI: names, refs and paths checked before git sees them.

Every git command runs without a shell, with a timeout, in a clean environment (no user or system
config, no prompts, the C locale) and with `-c core.hooksPath=` where hooks could run: what a
hostile agent controls is the content of its repos and the strings it passes to tools, never an
option, a path outside a repo or a program to run.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hyperhive.servers.common.errors import NotFound, Refused
from hyperhive.servers.forge.disk import tree_size

REPO_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# A ref or a commit as a tool takes it: branch and tag names, full ref names, HEAD, hex object names,
# with an optional ~N or ^N. No leading '-' (an option), no '..', '@{', ':' or whitespace.
_REF_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}(?:[~^][0-9]{0,4})?$")
GIT_TIMEOUT: Final = 30.0  # one git command a tool runs
ZERO: Final = "0" * 40
HOOK_SCRIPT: Final = "pre-receive"


class GitFailed(Exception):
    """A git command failed or timed out; the message has its stderr."""


def check_repo_name(name: object) -> str:
    if not isinstance(name, str) or not REPO_NAME_RE.match(name) or name.endswith(".git") or ".." in name:
        raise Refused(
            f"{name!r} is not a repo name: 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a "
            "letter or digit, without '..' and not ending in '.git'"
        )
    return name


def check_ref(ref: object) -> str:
    if (
        not isinstance(ref, str)
        or not _REF_RE.match(ref)
        or ".." in ref
        or "//" in ref
        or ref.endswith((".", "/", ".lock"))
    ):
        raise Refused(
            f"{ref!r} is not a ref: name a branch ('main'), a tag, a full ref ('refs/heads/main'), HEAD or a "
            "commit id, optionally with ~N"
        )
    return ref


def check_path(path: object) -> str:
    """A file's path inside a repo: relative, normalised, not escaping it."""
    if not isinstance(path, str) or not path.strip() or "\0" in path or len(path) > 4096:
        raise Refused(f"{path!r} is not a path in the repo; give one like 'src/main.py'")
    if path.startswith("/") or any(part == ".." for part in path.split("/")):
        raise Refused(f"{path!r} leaves the repo: give a relative path inside it, like 'src/main.py', without '..'")
    normal = posixpath.normpath(path)
    if normal in (".", "") or normal.startswith("../"):
        raise Refused(f"{path!r} is not a file in the repo; give one like 'src/main.py'")
    return normal


def git_env(home: Path) -> dict[str, str]:
    """The whole environment of a git command: nothing inherited but PATH."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }


@dataclass(frozen=True, slots=True)
class Output:
    data: bytes
    truncated: bool


class Repos:
    """The bare repos under one directory (the forge's), and the git commands on them."""

    def __init__(self, root: Path, hooks_dir: Path) -> None:
        self.root = root
        self.hooks_dir = hooks_dir
        self.git = shutil.which("git") or "/usr/bin/git"
        self.http_backend = ""  # found by prepare(), where this git keeps its programs

    def path(self, name: str) -> Path:
        return self.root / f"{check_repo_name(name)}.git"

    def env(self) -> dict[str, str]:
        return git_env(self.root)

    # ------------------------------------------------------------------------------- setting up
    def prepare(self) -> None:
        """The repos' directory (ours alone) and the hooks every repo runs (see hook.py)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.hooks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.http_backend = self._http_backend()
        hook = self.hooks_dir / HOOK_SCRIPT
        # git runs the hook with its clean environment (git_env): where the interpreter finds hyperhive
        # only through PYTHONPATH (the NixOS package's wrapper sets it), the hook must say it itself.
        import_path = os.environ.get("PYTHONPATH", "")
        exported = f"PYTHONPATH={_sh_quote(import_path)}\nexport PYTHONPATH\n" if import_path else ""
        script = f"#!/bin/sh\n{exported}exec {_sh_quote(sys.executable)} -m hyperhive.servers.forge.hook\n"
        if not hook.exists() or hook.read_text() != script:
            temp = hook.with_suffix(".new")
            temp.write_text(script)
            temp.chmod(0o700)
            temp.replace(hook)

    def _http_backend(self) -> str:
        """git's smart HTTP CGI, beside git's other programs (`git --exec-path`: /usr/lib/git-core on
        Debian, the Nix store on NixOS); RuntimeError if this git has none."""
        try:
            found = subprocess.run(
                [self.git, "--exec-path"], env=self.env(), capture_output=True, text=True, timeout=GIT_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"the forge cannot run git ({self.git}): {e}") from None
        backend = Path(found.stdout.strip()) / "git-http-backend"
        if found.returncode != 0 or not os.access(backend, os.X_OK):
            raise RuntimeError(
                f"{self.git} has no git-http-backend (looked in {backend.parent}); the forge serves git's smart "
                "HTTP with it: install git's full package (Debian: git)"
            )
        return str(backend)

    async def init(self, name: str) -> None:
        """A new bare repo: no template (no sample hooks), our hooks, fsck of what is pushed."""
        path = self.path(name)
        if path.exists():
            raise Refused(f"repo {name!r} already exists")
        await self.run("init", "--bare", "--quiet", "--template=", "--initial-branch=main", str(path), cwd=self.root)
        for key, value in (
            ("core.hooksPath", str(self.hooks_dir)),
            ("receive.fsckObjects", "true"),
            ("http.receivepack", "true"),
            ("gc.auto", "0"),  # no background gc forked from a push
        ):
            await self.run("config", key, value, cwd=path)

    async def remove(self, name: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.path(name), True)

    # ------------------------------------------------------------------------------- reading
    async def refs(self, name: str) -> dict[str, str]:
        """Every ref of the repo and the object it points at."""
        out = await self.run("for-each-ref", "--format=%(objectname) %(refname)", cwd=self.path(name))
        refs = {}
        for line in out.decode().splitlines():
            sha, _, ref = line.partition(" ")
            refs[ref] = sha
        return refs

    async def commit(self, name: str, ref: str) -> str:
        """The commit `ref` names in repo `name`; NotFound says so if there is none."""
        check_ref(ref)
        try:
            out = await self.run(
                "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", cwd=self.path(name)
            )
        except GitFailed:
            raise NotFound(f"{ref!r} is no commit in repo {name!r} (list_repos and repo_log show its refs)") from None
        return out.decode().strip()

    async def size(self, name: str) -> int:
        return await asyncio.to_thread(tree_size, self.path(name))

    async def run(self, *args: str, cwd: Path, limit: int | None = None, timeout: float = GIT_TIMEOUT) -> bytes:
        """git ARGS in `cwd`; its stdout (GitFailed on an error or timeout)."""
        output = await self.run_capped(*args, cwd=cwd, limit=limit, timeout=timeout)
        return output.data

    async def run_capped(self, *args: str, cwd: Path, limit: int | None = None, timeout: float = GIT_TIMEOUT) -> Output:
        """git ARGS in `cwd`: at most `limit` bytes of its stdout (then it is stopped) and whether it had more."""
        process = await asyncio.create_subprocess_exec(
            self.git,
            "-c",
            "core.hooksPath=",
            *args,
            cwd=cwd,
            env=self.env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                errors = asyncio.ensure_future(process.stderr.read())
                data = await _read_up_to(process.stdout, limit)
                truncated = limit is not None and len(data) > limit
                if truncated:
                    process.kill()
                    data = data[: limit or 0]
                code = await process.wait()
                stderr = await errors
        except TimeoutError:
            process.kill()
            await process.wait()
            raise GitFailed(f"git {args[0]} took more than {timeout:g} s") from None
        if code != 0 and not truncated:
            raise GitFailed(f"git {args[0]} failed: {stderr.decode(errors='replace').strip()[:500]}")
        return Output(data, truncated)


async def _read_up_to(stream: asyncio.StreamReader, limit: int | None) -> bytes:
    """All of `stream`, or its first limit + 1 bytes (one more than allowed says there was more)."""
    if limit is None:
        return await stream.read()
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(64 * 1024)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
