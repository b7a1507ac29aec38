#!/usr/bin/env bash
# Install everything the tests need, then run lint, types and the whole test suite.
#
#   ./tests/run.sh [pytest args...]
#
# Installs (only what is missing): Debian packages (systemd tools, npm, dpkg-dev) when run
# as root, the Python package with its test extras, and the pinned Claude Code CLI from npm
# into a cache directory (the real-CLI tests run it against a loopback fake API).
set -euo pipefail
cd "$(dirname "$0")/.."

# The pinned Claude Code CLI. To see whether a newer one still works with claudeclaw
# (a drift check before moving the pin): CLAUDE_CLI_VERSION=2.1.400 ./tests/run.sh -m realcli
CLAUDE_CLI_VERSION=${CLAUDE_CLI_VERSION:-2.1.330}
CACHE=${CLAUDECLAW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claudeclaw-ci}
PYTHON=${PYTHON:-python3}

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg-dev)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v fakeroot >/dev/null 2>&1 || missing+=(fakeroot)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "tests/run.sh: installing Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "tests/run.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
  fi
fi

echo "tests/run.sh: installing the package and its test dependencies"
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]'

CLI_DIR="$CACHE/claude-$CLAUDE_CLI_VERSION"
CLAUDE_BIN="$CLI_DIR/node_modules/.bin/claude"
if [ "$CLAUDE_CLI_VERSION" = latest ] || \
   ! "$CLAUDE_BIN" --version 2>/dev/null | grep -q "^$CLAUDE_CLI_VERSION "; then
  echo "tests/run.sh: installing @anthropic-ai/claude-code@$CLAUDE_CLI_VERSION into $CLI_DIR"
  mkdir -p "$CLI_DIR"
  npm install --prefix "$CLI_DIR" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CLI_VERSION"
fi
export CLAUDECLAW_REAL_CLAUDE="$CLAUDE_BIN"
"$CLAUDECLAW_REAL_CLAUDE" --version

echo "tests/run.sh: ruff and mypy"
"$PYTHON" -m ruff check claudeclaw tests bench
"$PYTHON" -m ruff format --check claudeclaw tests bench
"$PYTHON" -m mypy

# A full run (no arguments, as CI does) also measures line and branch coverage of
# claudeclaw/, its subprocesses included (the supervisor, the fork server and its workers:
# [tool.coverage] in pyproject.toml), and fails under the floor set there. A partial run
# (./tests/run.sh -m realcli, one file...) does not; COVERAGE=0 turns it off.
cov=()
if [ $# -eq 0 ] && [ "${COVERAGE:-1}" != 0 ]; then
  cov=(--cov --cov-report=term)
fi
echo "tests/run.sh: pytest ${cov[*]}"
exec "$PYTHON" -m pytest "${cov[@]}" "$@"
