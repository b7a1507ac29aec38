"""Who runs ``claude``: the daemon's own user, or a separate unprivileged account.

Two-user mode (the .deb): the unit sets ``CLAUDECLAW_AGENT_USER=claudeclaw-agent`` and keeps
only CAP_SETUID, CAP_SETGID and CAP_KILL. Every run is started through ``setpriv`` as that
user with no capability left (and no_new_privs), so Claude's tools cannot write the
daemon's state, read its credentials or ``/proc/<daemon>/environ``, or signal it; the
daemon keeps CAP_KILL to stop a run. The agent's primary group is the daemon's group and
it runs with umask 027: what it makes (transcripts for ``/context``, images in the outbox)
is readable by the daemon, while the daemon's own files stay 0600. The daemon opens exactly
the directories the agent needs (:func:`share_state_dirs`).

Without the variable (someone running ``claudeclaw run`` as themselves), ``claude`` runs as
the daemon's user and only the CLI's permission rules stand in the way (see argv.py).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from claudeclaw.errors import StateError
from claudeclaw.paths import ProjectPaths

AGENT_USER_ENV = "CLAUDECLAW_AGENT_USER"
AGENT_HOME_ENV = "CLAUDECLAW_AGENT_HOME"  # default: the account's home (claudeclaw@NAME: own)
AGENT_UMASK = 0o027
SETPRIV = "/usr/bin/setpriv"

# (directory, mode) the agent needs, relative to the project root. The state directory
# and the parents are pass-through only (x): the agent cannot list them, and every daemon
# file in them is 0600.
SHARED_DIRS = (
    (Path(".claude"), 0o750),  # the CLI's project config is read from here
    (Path(".claude/claudeclaw"), 0o710),
    (Path(".claude/claudeclaw/outbox"), 0o710),
    (Path(".claude/claudeclaw/outbox/discord"), 0o770),  # the agent saves images here
    (Path(".claude/claudeclaw/inbox"), 0o710),
    (Path(".claude/claudeclaw/inbox/discord"), 0o750),  # attachments, for it to read
)
# The project root: the agent works here. Sticky: it cannot rename or delete the
# daemon's entries (``.claude`` above all) and put its own in their place.
ROOT_MODE = 0o1770
INBOX_FILE_MODE = 0o640
INBOX_DIR_MODE = 0o750


@dataclass(frozen=True, slots=True)
class AgentAccount:
    """The account ``claude`` runs as in two-user mode."""

    name: str
    uid: int
    gid: int
    home: Path


def agent_account(environ: Mapping[str, str] | None = None) -> AgentAccount | None:
    """The configured agent account, or None (single-user mode). An unknown user is an
    error, never a silent fallback to running ``claude`` as the daemon."""
    env = os.environ if environ is None else environ
    name = env.get(AGENT_USER_ENV, "").strip()
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StateError(
            f"{AGENT_USER_ENV}={name}: no such user; create it (the .deb's postinst does) "
            f"or remove the variable to run claude as the daemon's own user"
        ) from None
    if entry.pw_uid == os.getuid():
        return None
    home = env.get(AGENT_HOME_ENV, "").strip() or entry.pw_dir
    return AgentAccount(name, entry.pw_uid, entry.pw_gid, Path(home))


def agent_argv(argv: list[str], account: AgentAccount) -> list[str]:
    """``argv`` run as ``account`` with every capability dropped (setpriv, util-linux)."""
    setpriv = SETPRIV if os.path.exists(SETPRIV) else (shutil.which("setpriv") or SETPRIV)
    return [
        setpriv,
        f"--reuid={account.uid}",
        f"--regid={account.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--no-new-privs",
        "--",
        *argv,
    ]


def agent_env(env: Mapping[str, str], account: AgentAccount, project: Path) -> dict[str, str]:
    """``env`` for the agent: its own HOME (its ``~/.claude``), and git told that the
    project root, owned by the daemon's user, is safe to use."""
    out = dict(env)
    out.update(HOME=str(account.home), USER=account.name, LOGNAME=account.name)
    out.pop("CLAUDE_CONFIG_DIR", None)
    if "GIT_CONFIG_COUNT" not in out:
        out.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="safe.directory",
            GIT_CONFIG_VALUE_0=str(project),
        )
    return out


async def share_transcript(path: Path, account: AgentAccount) -> None:
    """Make one transcript readable by the daemon's group (``/context`` reads it).

    The CLI creates transcripts 0600 whatever the umask; only their owner, the agent, may
    change that, so a ``chmod`` runs as the agent. A failure is harmless (``/context``
    then says it found no transcript).
    """
    proc = await asyncio.create_subprocess_exec(
        *agent_argv(["/bin/chmod", "0640", "--", str(path)], account),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.wait()


def share_state_dirs(paths: ProjectPaths) -> None:
    """Give the agent (the daemon's group) the access it needs and no more (blocking I/O).

    Only directories we own are changed; a directory owned by someone else is an error.
    """
    _chmod_owned(paths.root, ROOT_MODE)
    for relative, mode in SHARED_DIRS:
        path = paths.root / relative
        path.mkdir(mode=0o700, exist_ok=True)
        _chmod_owned(path, mode)


def share_inbox_file(path: Path, inbox_root: Path) -> None:
    """Make a downloaded attachment (and its directories up to the inbox) readable by the
    agent (blocking I/O)."""
    os.chmod(path, INBOX_FILE_MODE)
    directory = path.parent
    while directory != inbox_root.parent and inbox_root in (directory, *directory.parents):
        _chmod_owned(directory, INBOX_DIR_MODE)
        directory = directory.parent


def _chmod_owned(path: Path, mode: int) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StateError(f"{path} is not a directory (or is a symlink); remove it and retry")
    if info.st_uid != os.getuid():
        raise StateError(
            f"{path} belongs to uid {info.st_uid}, not to the daemon (uid {os.getuid()}); "
            f"fix its ownership (chown {os.getuid()} {path})"
        )
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
