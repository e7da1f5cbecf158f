"""The forge's pre-receive hook runs once per push as a fresh interpreter: it must start fast."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import hyperhive.servers
from hyperhive.servers.forge.gitrepo import Repos, git_env
from hyperhive.servers.forge.hook import LIMIT_ENV, REPO_ENV


def test_the_pre_receive_hook_imports_no_mcp_stack() -> None:
    """Each push pays the hook's imports; fastmcp and mcp cost about a second on a small machine
    (bench/forge.py: a 2 MB push took 1.9 s, 6x a local push). The hook only measures a directory."""
    probe = "import sys, json, hyperhive.servers.forge.hook; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True).stdout)
    heavy = [m for m in loaded if m.split(".")[0] in ("fastmcp", "mcp", "pydantic", "starlette", "httpx2")]
    assert not heavy, heavy


def test_the_hook_runs_where_the_interpreter_finds_hyperhive_only_through_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the NixOS package: `hive` is a wrapper that sets PYTHONPATH for a bare interpreter, and
    git runs the hook with a clean environment (gitrepo.git_env), so the hook must carry the path."""
    site = tmp_path / "site"
    (site / "hyperhive").mkdir(parents=True)
    (site / "hyperhive" / "__init__.py").write_text("")
    (site / "hyperhive" / "servers").symlink_to(Path(hyperhive.servers.__file__).parent)
    bare = shutil.which("python3", path="/usr/bin")
    if bare is None or subprocess.run([bare, "-c", "import hyperhive"], capture_output=True).returncode == 0:
        pytest.skip("needs an interpreter that does not import hyperhive by itself")
    monkeypatch.setattr(sys, "executable", bare)
    # The wrapper's PYTHONPATH has hyperhive and its dependencies (nix/package.nix); here: this venv's.
    dependencies = Path(anyio.__file__).parent.parent
    monkeypatch.setenv("PYTHONPATH", f"{site}:{dependencies}")
    repos = Repos(tmp_path / "repos", tmp_path / "hooks")
    repos.prepare()
    git_dir = tmp_path / "repo.git"
    (git_dir / "objects").mkdir(parents=True)
    env = {**git_env(tmp_path), "GIT_DIR": str(git_dir), LIMIT_ENV: str(1024**2), REPO_ENV: "repo"}
    ran = subprocess.run([str(repos.hooks_dir / "pre-receive")], input="", env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr


def test_git_http_backend_is_found_where_this_git_keeps_its_programs(tmp_path: Path) -> None:
    """Not at Debian's /usr/lib/git-core: on NixOS git lives in the Nix store."""
    programs = tmp_path / "libexec" / "git-core"
    programs.mkdir(parents=True)
    (programs / "git-http-backend").write_text("#!/bin/sh\n")
    (programs / "git-http-backend").chmod(0o755)
    fake = tmp_path / "git"
    fake.write_text(f"#!/bin/sh\ntest \"$1\" = --exec-path && echo '{programs}'\n")
    fake.chmod(0o755)
    repos = Repos(tmp_path / "repos", tmp_path / "hooks")
    repos.git = str(fake)
    repos.prepare()
    assert repos.http_backend == str(programs / "git-http-backend")
    (programs / "git-http-backend").unlink()
    with pytest.raises(RuntimeError, match="no git-http-backend"):
        repos.prepare()
