#!/usr/bin/env bash
# Set up this checkout on Debian: system packages (apt), the Python venv, and for tests the
# npm tools. Safe to re-run: each step is skipped when it is already done.
#
#   scripts/setup.sh run     what `hive up` needs
#   scripts/setup.sh test    that, plus linters, type checker, pytest and the MCP Inspector
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
case "$mode" in run | test) ;; *) echo "usage: $0 run|test" >&2; exit 2 ;; esac

say() { printf '◆ %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "need root to run: $*" >&2; exit 1
  fi
}

apt_updated=
apt_install() {  # install the Debian packages that are missing
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- Python 3.11+ with venv ------------------------------------------------------------------
python_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
python=
for candidate in "${PYTHON:-}" python3.11 python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && python_ok "$candidate"; then
    python=$(command -v "$candidate"); break
  fi
done
if [ -z "$python" ]; then
  apt_install python3 python3-venv
  python=/usr/bin/python3
  python_ok "$python" || { echo "Python 3.11 or newer is required; $python is older" >&2; exit 1; }
fi
# git keeps agent configs; bubblewrap and setpriv (util-linux) make the agents' sandboxes, pasta
# (passt) their outbound network ([sandbox] network = "outbound", the default); libpq is what
# psycopg talks to PostgreSQL with ([storage] url = "postgresql://…", a hive across hosts).
apt_install git ca-certificates bubblewrap util-linux passt libpq5

# --- the venv ----------------------------------------------------------------------------------
extras=""; [ "$mode" = test ] && extras="[dev]"
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }
deps=$(stamp_of pyproject.toml)
have=$(cat .venv/.setup-stamp 2>/dev/null || true)  # "<deps hash>" or "<deps hash>[dev]"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $python"
  "$python" -m venv .venv
  have=
fi
if [ "$have" != "$deps[dev]" ] && [ "$have" != "$deps$extras" ]; then
  say "installing hyperhive$extras into .venv"
  if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".$extras"; } \
      > .venv/pip.log 2>&1; then
    tail -n 40 .venv/pip.log >&2
    echo "pip failed; the whole log is in .venv/pip.log" >&2
    exit 1
  fi
  echo "$deps$extras" > .venv/.setup-stamp
fi

[ "$mode" = test ] || exit 0

# --- test tools: a D-Bus daemon (a stand-in systemd in the NixOS backend's contract test),
# Nix (`nix-instantiate` checks every .nix file and evaluates the module's hive.toml; there is no
# nixpkgs here), Chromium for the browser suite (Playwright drives Debian's, it downloads none),
# the MCP Inspector and the Node it needs (from the npm registry), PostgreSQL (the tests start a
# throw-away cluster of their own with its initdb; the package's own cluster is not used) ----------
apt_install dbus-daemon nix-bin chromium postgresql
command -v npm >/dev/null || apt_install nodejs npm
tools=tests/tools
want="$(stamp_of $tools/package.json $tools/package-lock.json)"
if [ "$(cat $tools/node_modules/.setup-stamp 2>/dev/null)" != "$want" ]; then
  say "installing npm test tools into $tools/node_modules"
  npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error >/dev/null
  echo "$want" > $tools/node_modules/.setup-stamp
fi

# mypy sees the package as hyperhive.* through this view (the editable install uses an import hook).
mkdir -p build/typecheck/hyperhive
for pkg in servers harness ui; do ln -sfn "../../../$pkg" "build/typecheck/hyperhive/$pkg"; done
