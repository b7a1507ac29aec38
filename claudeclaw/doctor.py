"""``claudeclaw doctor``: check a project before (or while) running it, each with its fix.

Every check says what it found and, when something is wrong, the exact command or edit
that fixes it. Secrets are never printed: the token check names only where it came from.
Checks never block the event loop (``claude --version`` runs as an asyncio subprocess).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from claudeclaw.agent import AGENT_USER_ENV, agent_account
from claudeclaw.config import Settings, load_settings
from claudeclaw.errors import EXIT_FAILURE, EXIT_OK, ConfigError, StateError
from claudeclaw.jsonstore import backup_path
from claudeclaw.paths import PRIVATE_DIR_MODE, ProjectPaths

CheckStatus = Literal["ok", "warn", "fail"]
VERSION_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Check:
    """One finding. ``fix`` is empty when there is nothing to do."""

    name: str
    status: CheckStatus
    detail: str
    fix: str = ""


def _euid() -> int:
    """The effective uid (a function so tests can pretend to be root)."""
    return os.geteuid()


def _check_settings(
    paths: ProjectPaths, env: Mapping[str, str]
) -> tuple[list[Check], Settings | None]:
    path = paths.settings_file
    try:
        settings = load_settings(path, env)
    except ConfigError as exc:
        return [
            Check(
                "settings",
                "fail",
                str(exc),
                f"edit {path} and fix the keys listed (or `claudeclaw init --force` "
                "to start again from the defaults)",
            )
        ], None
    checks: list[Check] = []
    if settings.source is None:
        checks.append(
            Check(
                "settings",
                "warn",
                f"no settings file ({path}); using the defaults",
                "run `claudeclaw init` to create one, then fill in discord.allowedUserIds",
            )
        )
    else:
        checks.append(Check("settings", "ok", f"{path} is valid"))
    if settings.warnings:
        checks.append(
            Check(
                "settings warnings",
                "warn",
                "\n".join(settings.warnings),
                f"edit {path}: remove or rename the keys named above",
            )
        )
    return checks, settings


def resolve_claude(claude_path: str, root: Path, env: Mapping[str, str]) -> Path | None:
    """Where ``runner.claudePath`` points: a path (relative to the project) or a PATH name."""
    if os.sep in claude_path:
        candidate = Path(claude_path).expanduser()
        if not candidate.is_absolute():
            candidate = root / candidate
        return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None
    found = shutil.which(claude_path, path=env.get("PATH", os.defpath))
    return Path(found) if found else None


async def _check_claude(
    settings: Settings | None, paths: ProjectPaths, env: Mapping[str, str]
) -> Check:
    claude_path = settings.runner.claude_path if settings else "claude"
    exe = await asyncio.to_thread(resolve_claude, claude_path, paths.root, env)
    cwd = paths.root if await asyncio.to_thread(paths.root.is_dir) else None
    if exe is None:
        return Check(
            "claude",
            "fail",
            f"{claude_path!r} not found"
            + ("" if os.sep in claude_path else " on PATH")
            + " (or not executable)",
            "install Claude Code (https://docs.anthropic.com/en/docs/claude-code) and log in "
            "with `claude`, or set runner.claudePath to the full path of the executable",
        )
    try:
        proc = await asyncio.create_subprocess_exec(
            str(exe),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in env.items() if k != "DISCORD_TOKEN"},
            cwd=cwd,
        )
    except OSError as exc:
        return Check(
            "claude",
            "fail",
            f"{exe} could not be started: {exc.strerror}",
            f"check that {exe} is a working executable (try `{exe} --version`)",
        )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), VERSION_TIMEOUT_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Check(
            "claude",
            "fail",
            f"`{exe} --version` did not answer within {VERSION_TIMEOUT_SECONDS:g} s",
            f"run `{exe} --version` by hand and fix what it waits for",
        )
    text = (out or err).decode("utf-8", "replace").strip()
    first = text.splitlines()[0] if text else ""
    if proc.returncode != 0:
        return Check(
            "claude",
            "fail",
            f"`{exe} --version` exited with {proc.returncode}: {first or '(no output)'}",
            f"run `{exe} --version` by hand and fix the error it shows",
        )
    return Check("claude", "ok", f"{exe}: {first or '(no version printed)'}")


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return None


def _check_state_dir(paths: ProjectPaths) -> list[Check]:
    state = paths.state_dir
    try:
        info = state.lstat()
    except FileNotFoundError:
        return [
            Check(
                "state directory",
                "warn",
                f"{state} does not exist yet",
                "run `claudeclaw init` (it is created with mode 0700)",
            )
        ]
    if not stat.S_ISDIR(info.st_mode):
        return [Check("state directory", "fail", f"{state} is not a directory", f"remove {state}")]
    checks: list[Check] = []
    if info.st_uid != os.getuid():
        checks.append(
            Check(
                "state directory",
                "fail",
                f"{state} belongs to uid {info.st_uid}, not to us (uid {os.getuid()})",
                f"chown -R {os.getuid()} {shlex.quote(str(state))}  (or run as its owner)",
            )
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode not in (PRIVATE_DIR_MODE, 0o710):  # 0710: two-user mode, agent passes through
        checks.append(
            Check(
                "state directory",
                "fail",
                f"{state} has mode {mode:04o}; others can read sessions and settings",
                f"chmod 700 {shlex.quote(str(state))}",
            )
        )
    elif not checks:
        checks.append(Check("state directory", "ok", f"{state} (mode {mode:04o})"))

    files = [paths.settings_file, paths.global_session_file, paths.thread_sessions_file]
    files += [backup_path(f) for f in files]
    loose = [(f, m) for f in files if (m := _mode(f)) is not None and m & 0o077]
    if loose:
        listed = ", ".join(f"{f.name} ({m:04o})" for f, m in loose)
        checks.append(
            Check(
                "state files",
                "fail",
                f"readable by others: {listed}",
                "chmod 600 " + " ".join(shlex.quote(str(f)) for f, _ in loose),
            )
        )
    else:
        checks.append(Check("state files", "ok", "settings and session files are private"))
    return checks


def _check_token(settings: Settings) -> Check:
    d = settings.discord
    if not d.token:
        return Check(
            "discord token",
            "fail",
            "no Discord bot token",
            "set DISCORD_TOKEN in the environment, or LoadCredential=discord-token:<file> in "
            "the systemd unit, or discord.token in settings.json",
        )
    where = {
        "credential": "the systemd credential discord-token",
        "env": "the DISCORD_TOKEN environment variable",
        "settings": "discord.token in settings.json",
    }.get(d.token_source, d.token_source)
    return Check("discord token", "ok", f"set (from {where}; not shown)")


def _check_allowlist(settings: Settings) -> Check:
    d = settings.discord
    fix = 'put your Discord user id in discord.allowedUserIds, e.g. ["123456789012345678"]'
    if d.allow_everyone:
        return Check(
            "allowlist",
            "warn",
            'discord.allowedUserIds is "*": open to everyone who can message the bot, '
            f"with security level {settings.security.level!r}",
            'list the user ids that may use the bot instead of "*"',
        )
    if not d.allowed_user_ids:
        return Check(
            "allowlist", "warn", "discord.allowedUserIds is empty: the bot will answer nobody", fix
        )
    count = len(d.allowed_user_ids)
    return Check("allowlist", "ok", f"{count} allowed user{'s' if count != 1 else ''}")


def _check_root(settings: Settings | None, env: Mapping[str, str]) -> Check:
    if _euid() != 0:
        return Check("user", "ok", "not running as root")
    level = settings.security.level if settings else "moderate"
    if env.get("IS_SANDBOX") == "1":
        return Check("user", "ok", "running as root with IS_SANDBOX=1 (a sandbox)")
    return Check(
        "user",
        "fail",
        f"running as root: claude refuses --dangerously-skip-permissions as root, and every "
        f"security level (here {level!r}) passes it",
        "run claudeclaw as a dedicated unprivileged user (e.g. `useradd -m claudeclaw`; "
        "User=claudeclaw in the systemd unit); only inside a throw-away sandbox set IS_SANDBOX=1",
    )


def _running_agent_user(paths: ProjectPaths) -> str:
    """The agent user of the daemon running this project (daemon.json), or "" (blocking)."""
    try:
        info = json.loads(paths.daemon_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    user = info.get("agent_user") if isinstance(info, dict) else None
    return user if isinstance(user, str) else ""


def _check_isolation(
    settings: Settings | None, env: Mapping[str, str], running_agent: str = ""
) -> Check:
    """Who runs claude, and so what its tools can reach (README "Safe by default").

    doctor run by hand lacks the unit's environment: the running daemon's choice (from
    daemon.json) counts then."""
    if not env.get(AGENT_USER_ENV) and running_agent:
        env = {**env, AGENT_USER_ENV: running_agent}
    try:
        account = agent_account(env)
    except StateError as exc:
        return Check("isolation", "fail", str(exc), f"unset {AGENT_USER_ENV}, or create the user")
    if account is not None:
        return Check(
            "isolation",
            "ok",
            f"two users: claude runs as {account.name} (uid {account.uid}), without "
            "capabilities: its tools cannot write .claude/claudeclaw/, read the daemon's "
            "credentials or environment, or signal it",
        )
    level = settings.security.level if settings else "moderate"
    two_users = (
        "run the packaged service (two users, docs/OPERATIONS.md), or set security.level "
        'to "strict" (no Bash)'
    )
    reach = (
        "the daemon's settings (allowlist, security level: used from the next reload or "
        "restart), its sessions, a Discord token in settings.json, DISCORD_TOKEN's file or "
        "the systemd credential, and it can signal the daemon"
    )
    if level == "unrestricted":
        return Check(
            "isolation",
            "warn",
            f"one user (uid {os.getuid()}) and security level 'unrestricted': claude and its "
            f"tools can do all this user can, including changing {reach}",
            two_users,
        )
    if level == "moderate":
        return Check(
            "isolation",
            "warn",
            f"one user (uid {os.getuid()}): claude's Bash tool runs as you and can reach "
            f"{reach}. The CLI's deny rules keep only its file tools (Write, Edit, Read) out "
            "of .claude/claudeclaw/ and the CLI's settings",
            two_users,
        )
    return Check(
        "isolation",
        "ok",
        f"one user (uid {os.getuid()}), security level {level!r}: no Bash; the CLI's deny "
        "rules keep Claude's file tools out of .claude/claudeclaw/ and the CLI's settings "
        "(enforced by the CLI, not the OS)",
    )


async def run_checks(paths: ProjectPaths, environ: Mapping[str, str] | None = None) -> list[Check]:
    """All checks, in the order a user should fix them."""
    env = os.environ if environ is None else environ
    # File reads go to a thread: doctor may run inside a live daemon's loop.
    checks, settings = await asyncio.to_thread(_check_settings, paths, env)
    checks.append(await _check_claude(settings, paths, env))
    checks.extend(await asyncio.to_thread(_check_state_dir, paths))
    if settings is not None:
        checks.append(_check_token(settings))
        checks.append(_check_allowlist(settings))
    checks.append(_check_root(settings, env))
    running_agent = await asyncio.to_thread(_running_agent_user, paths)
    checks.append(_check_isolation(settings, env, running_agent))
    return checks


_LABEL = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def format_checks(checks: Sequence[Check]) -> str:
    """One line per check; multi-line details and the fix are indented below it."""
    lines: list[str] = []
    for check in checks:
        first, *rest = check.detail.splitlines() or [""]
        lines.append(f"[{_LABEL[check.status]}] {check.name}: {first}")
        lines.extend(f"         {line}" for line in rest)
        if check.status != "ok" and check.fix:
            lines.append(f"         fix: {check.fix}")
    return "\n".join(lines)


def exit_code(checks: Sequence[Check]) -> int:
    """Non-zero when any check failed (warnings alone pass)."""
    return EXIT_FAILURE if any(c.status == "fail" for c in checks) else EXIT_OK
