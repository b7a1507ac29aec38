#!/usr/bin/env bash
# Install claudeclaw on this Debian 12 machine and start it, in one command (as root):
#
#   sudo packaging/install.sh
#
# 1. Debian packages it needs (only those missing): python3 + pip, npm, dpkg-dev;
# 2. the pinned Claude Code CLI from npm (global: /usr/local/bin/claude);
# 3. the claudeclaw .deb built from this source tree (packaging/build-deb.sh), installed;
# 4. claudeclaw.service enabled and (re)started. Without a Discord token it serves the
#    local control socket only; the last lines say how to add the token and allowlist.
# Safe to run again (upgrade): settings, sessions and the token are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_CLI_VERSION=${CLAUDE_CLI_VERSION:-2.1.330}
if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root: sudo $0" >&2
  exit 1
fi

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! claude --version 2>/dev/null | grep -q "^$CLAUDE_CLI_VERSION "; then
  echo "install.sh: installing @anthropic-ai/claude-code@$CLAUDE_CLI_VERSION"
  npm install -g --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$CLAUDE_CLI_VERSION"
fi

echo "install.sh: building the package"
PYTHON=${PYTHON:-/usr/bin/python3} DIST="$PWD/dist" packaging/build-deb.sh >/dev/null
deb=$(ls -t dist/claudeclaw_*.deb | head -n 1)
echo "install.sh: installing $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "./$deb" >/dev/null

if [ -d /run/systemd/system ]; then
  systemctl enable --quiet claudeclaw.service
  systemctl restart claudeclaw.service   # returns once the daemon said READY=1
  systemctl --no-pager --lines=0 status claudeclaw.service || true
else
  echo "install.sh: systemd is not running here; start the daemon in the foreground with:"
  echo "  runuser -u claudeclaw -- env HOME=/var/lib/claudeclaw claudeclaw run --project /var/lib/claudeclaw"
  echo "(one user, without systemd: claude then runs as claudeclaw, so log it in as claudeclaw:"
  echo "  cd /var/lib/claudeclaw && sudo -u claudeclaw env HOME=/var/lib/claudeclaw claude"
  echo " instead of step 3 below)"
fi
cat <<'NEXT'

claudeclaw is installed. To connect it to Discord (docs/DISCORD.md):
  1. put the bot token in /etc/claudeclaw/discord-token (mode 0600)
  2. put your Discord user id in discord.allowedUserIds of
     /var/lib/claudeclaw/.claude/claudeclaw/settings.json
  3. log the claude CLI in once for the user it runs as (claudeclaw-agent; type /login in it, then /exit):
       cd /var/lib/claudeclaw-agent && sudo -u claudeclaw-agent env HOME=/var/lib/claudeclaw-agent claude
     or put an Anthropic Console API key in /etc/claudeclaw/anthropic-api-key (mode 0600)
  4. sudo systemctl restart claudeclaw, then check everything with:
       sudo -u claudeclaw claudeclaw doctor
NEXT
