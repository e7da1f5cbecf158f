"""Agent config repositories, through the `git` command.

Each agent has a *proposed* repo (`agents/<name>/config/`, where the manager edits agent.toml and
agent.nix) and an *applied* repo (`applied/<name>/`, written only by the lifecycle server when a
commit is applied). Applying copies the config files at one proposed commit into the applied repo
and commits them with that commit's sha in the message.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import anyio

from hyperhive.servers.common.diffs import CONFIG_FILES
from hyperhive.servers.common.files import write_atomic

_SHA_RE: Final = re.compile(r"^[0-9a-f]{7,64}$")
_IDENTITY: Final = ("-c", "user.name=hyperhive", "-c", "user.email=hyperhive@localhost")
# A proposed repo is the manager's: its refs/replace/ must not make a sha read as another commit.
_ENV: Final = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "PATH": "/usr/bin:/bin",
    "LC_ALL": "C",
}
_CONFIG_FILE_MODES: Final = (b"100644", b"100755")


class RepoError(Exception):
    """A git operation failed, or a commit or file is not there; the message says which."""


async def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git in `repo` and return its stdout. Repos belong to agent uids, hence safe.directory."""
    return (await _git_bytes(repo, *args, check=check)).decode(errors="replace")


async def _git_bytes(repo: Path, *args: str, check: bool = True) -> bytes:
    process = await asyncio.create_subprocess_exec(
        "git", "-c", "safe.directory=*", "-c", "init.defaultBranch=main", *_IDENTITY, "-C", str(repo), *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_ENV,
    )  # fmt: skip
    out, err = await process.communicate()
    if check and process.returncode != 0:
        raise RepoError(f"git {' '.join(args)} in {repo} failed: {err.decode(errors='replace').strip()}")
    return out


async def init_repo(repo: Path, files: Mapping[str, str], message: str) -> str:
    """Create a repo holding `files` in one commit (unless it exists); returns HEAD's sha."""
    if await anyio.to_thread.run_sync(_new_repo_dir, repo):
        await git(repo, "init", "-q")
        await anyio.to_thread.run_sync(_write_files, repo, files)
        await git(repo, "add", "--", *files)
        await git(repo, "commit", "-q", "-m", message)
    return await head(repo)


def _new_repo_dir(repo: Path) -> bool:
    repo.mkdir(parents=True, exist_ok=True)
    return not (repo / ".git").exists()


def _write_files(repo: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        write_atomic(repo / name, text)


async def head(repo: Path) -> str:
    return (await git(repo, "rev-parse", "HEAD")).strip()


async def resolve_commit(repo: Path, ref: str) -> str:
    """The full sha of commit `ref` (a sha or an abbreviation of one) in `repo`; RepoError if there is none."""
    if not _SHA_RE.match(ref):
        raise RepoError(f"{ref!r} is not a commit sha (7 to 64 hex digits)")
    out = await git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
    if not out.strip():
        raise RepoError(f"there is no commit {ref} in {repo.name}'s proposed config repo")
    return out.strip()


async def files_at(repo: Path, sha: str) -> dict[str, str]:
    """The config files present at commit `sha`: name -> text, exactly the bytes that sha names.

    The proposed repo is the manager's to write, and git does not check an object it reads
    against its name: a rewritten object file would make the sha a diff was shown for apply
    other bytes. So the commit, its tree and the files are read raw and their hashes checked.
    """
    commit = await _object(repo, "commit", sha)
    header = commit.split(b"\n", 1)[0]
    if not header.startswith(b"tree "):
        raise RepoError(f"commit {sha[:12]} in {repo.name} has no tree")
    tree_id = header[5:].decode(errors="replace")
    tree = _tree_entries(await _object(repo, "tree", tree_id), len(tree_id) // 2)
    files: dict[str, str] = {}
    for name in CONFIG_FILES:
        if name not in tree:
            continue
        mode, blob = tree[name]
        if mode not in _CONFIG_FILE_MODES:
            raise RepoError(f"{name} at commit {sha[:12]} in {repo.name} is not a regular file")
        files[name] = (await _object(repo, "blob", blob)).decode(errors="replace")
    return files


async def commit_message(repo: Path, sha: str) -> str:
    """Commit `sha`'s message, read raw and hash-checked like files_at (the repo is the manager's)."""
    commit = await _object(repo, "commit", sha)
    _headers, _, message = commit.partition(b"\n\n")  # headers (a signature's lines are indented) end at a blank line
    return message.decode(errors="replace").strip()


async def _object(repo: Path, kind: str, oid: str) -> bytes:
    """Object `oid`'s content, after checking that it hashes to `oid`."""
    data = await _git_bytes(repo, "cat-file", kind, oid)
    algorithm = "sha1" if len(oid) == 40 else "sha256"
    actual = hashlib.new(algorithm, f"{kind} {len(data)}\0".encode() + data).hexdigest()
    if actual != oid:
        raise RepoError(
            f"{kind} {oid[:12]} in {repo.name} does not match its hash (its object file was rewritten); "
            "nothing was read from it"
        )
    return data


def _tree_entries(tree: bytes, id_size: int) -> dict[str, tuple[bytes, str]]:
    """A raw tree's entries: name -> (mode, object id). Each is `<mode> <name>NUL<id, id_size bytes>`."""
    entries: dict[str, tuple[bytes, str]] = {}
    at = 0
    while at < len(tree):
        space, nul = tree.index(b" ", at), tree.index(b"\0", at)
        mode, name = tree[at:space], tree[space + 1 : nul].decode(errors="replace")
        entries[name] = (mode, tree[nul + 1 : nul + 1 + id_size].hex())
        at = nul + 1 + id_size
    return entries


async def commit_files(repo: Path, files: Mapping[str, str], message: str) -> str:
    """Make the config files in `repo` exactly `files` (removing the others) and commit; returns the sha.

    The commit is made even when nothing changed, so every apply is in the history.
    """
    await anyio.to_thread.run_sync(_replace_config_files, repo, files)
    await git(repo, "add", "-A")
    await git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return await head(repo)


def _replace_config_files(repo: Path, files: Mapping[str, str]) -> None:
    for name in CONFIG_FILES:
        path = repo / name
        if name in files:
            write_atomic(path, files[name])
        else:
            path.unlink(missing_ok=True)
