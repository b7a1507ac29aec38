"""The ``claude`` argv and environment, as the original ClaudeClaw builds them.

The argv matches upstream (``src/runner.ts``) with two deliberate differences: the prompt
always goes after ``--`` (so a message starting with ``-`` reaches Claude as text, not as a
flag), and the project ``CLAUDE.md`` is not copied into ``--append-system-prompt`` (the CLI
loads it itself; upstream sends it twice). The environment drops everything that would leak
a secret or confuse the child: the Discord token under any name, a frozen OAuth token
inherited from a parent Claude Code, and the systemd variables meant for the daemon only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from claudeclaw.config import Settings
from claudeclaw.logs import get_logger
from claudeclaw.redaction import is_secret_env

__all__ = [
    "DROPPED_ENV",
    "SCOPE_PREAMBLE",
    "build_argv",
    "build_env",
    "build_live_argv",
    "build_system_prompt",
    "is_session_id",
    "prompt_via_stdin",
    "protected_path_rules",
]

SCOPE_PREAMBLE = "You are running inside ClaudeClaw."

_SCOPE_PARAGRAPH = (
    "CRITICAL SECURITY CONSTRAINT: you are scoped to the directory {cwd}. You MUST NOT read, "
    "write, edit or execute anything outside this directory or its subdirectories (no parent "
    "directories, no home directory, no system files). If a request needs anything outside "
    "it, refuse and explain why."
)

# A thread in its own git worktree (threads.workspace "worktree"): the scope above is the
# project (the worktree, the inbox and the outbox are all under it), the work goes here.
_WORKTREE_PARAGRAPH = (
    "Your working directory {cwd} is a git worktree of its own for this conversation, on its "
    "own branch: make your changes there, not in the project's main checkout at {root} or in "
    "other worktrees (other conversations work in those)."
)

DROPPED_ENV = frozenset(
    {
        # A daemon started from inside Claude Code inherits these; the OAuth token is frozen
        # and expires after ~8 h (silent 401s). Without it the CLI uses its own credentials.
        "CLAUDECODE",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CLAUDE_CODE_PROVIDER_MANAGED_BY_HOST",
        # Ours: the bot token must never reach a tool run by Claude.
        "DISCORD_TOKEN",
        # systemd's, for the daemon only: a child must not notify or claim sockets for us.
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "CREDENTIALS_DIRECTORY",
        # The daemon's own (the .deb points Python at its bundled libraries): a Python
        # script run by one of Claude's tools must see the user's Python, not ours.
        "PYTHONPATH",
        "PYTHONNOUSERSITE",
        # Our process tags and test hooks are not the tools' business.
        "CLAUDECLAW_TEST_HOOKS",
        "CLAUDECLAW_AGENT_USER",
        "CLAUDECLAW_AGENT_HOME",
    }
)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Upstream's z.ai path: the model "glm" is not a Claude model name; it switches the endpoint.
_GLM_MODEL = "glm"
_GLM_BASE_URL = "https://api.z.ai/api/anthropic"


def is_session_id(value: str | None) -> bool:
    """True when ``value`` is a UUID, the only kind of id the CLI hands out."""
    return bool(value) and _UUID.fullmatch(value or "") is not None


def build_system_prompt(settings: Settings, cwd: Path, scope: Path | None = None) -> str:
    """The ``--append-system-prompt`` text, rebuilt on every call (it does not persist).

    ``scope`` is the directory the security paragraph confines Claude to (default ``cwd``);
    a thread in its own worktree runs below the project and is scoped to the project."""
    parts = [SCOPE_PREAMBLE]
    if settings.security.level != "unrestricted":
        parts.append(_SCOPE_PARAGRAPH.format(cwd=scope or cwd))
    if scope is not None and scope != cwd:
        parts.append(_WORKTREE_PARAGRAPH.format(cwd=cwd, root=scope))
    extra = settings.runner.append_system_prompt.strip()
    if extra:
        parts.append(extra)
    return "\n\n".join(parts)


def protected_path_rules(cwd: Path) -> list[str]:
    """CLI deny rules for the daemon's files and the CLI's own auto-run configuration.

    The daemon's state (``.claude/claudeclaw/``: settings with the allowlist, sessions,
    pending messages) may be neither written nor read; the outbox and inbox next to it stay
    usable. The CLI settings files (hooks run commands) and ``.mcp.json`` (servers are
    commands) may not be written: that would be Bash by another name. ``Edit(...)`` rules
    cover every file-writing tool (Write, Edit, NotebookEdit); ``//`` starts an absolute
    path. A second line of defence only: a Bash tool is not bound by them (README).
    """
    root = cwd.resolve()
    state = f"/{root}/.claude/claudeclaw"
    rules = [f"Edit({state}/{name})" for name in _STATE_FILE_PATTERNS]
    rules += [f"Read({state}/{name})" for name in _STATE_FILE_PATTERNS]
    rules += [
        f"Edit(/{root}/.claude/settings.json)",
        f"Edit(/{root}/.claude/settings.local.json)",
        f"Edit(/{root}/.mcp.json)",
        "Edit(~/.claude/settings.json)",
        "Edit(~/.claude/settings.local.json)",
    ]
    return rules


# settings.json, session(s).json, sessions.changes.jsonl, pending.jsonl, daemon.json and
# their .bak/.corrupt-* copies, the lock files, and replies saved for later delivery.
_STATE_FILE_PATTERNS = ("*.json*", "*.bak", "*.lock", "undelivered/**")


def _security_args(settings: Settings, cwd: Path, *, permission_prompts: bool = False) -> list[str]:
    security = settings.security
    # Headless, nobody can answer a prompt: skip them. A duplex run with a host that answers
    # (``can_use_tool``) gets the CLI's prompts on its control channel instead. With
    # ``security.approvals`` a run that cannot ask (cold) skips nothing: the CLI denies what
    # it would have asked about (fail closed).
    args: list[str] = []
    if permission_prompts:
        args = ["--permission-prompt-tool", "stdio"]
    elif not security.approvals:
        args = ["--dangerously-skip-permissions"]
    if security.level == "locked":
        args += ["--tools", "Read,Grep,Glob"]
    elif security.level == "strict":
        args += ["--disallowedTools", "Bash,WebSearch,WebFetch"]
    if security.level != "unrestricted":
        args += ["--disallowedTools", " ".join(protected_path_rules(cwd))]
    if security.allowed_tools:
        args += ["--allowedTools", " ".join(security.allowed_tools)]
    if security.disallowed_tools:
        args += ["--disallowedTools", " ".join(security.disallowed_tools)]
    return args


def build_argv(
    settings: Settings,
    prompt: str,
    session_id: str | None,
    *,
    cwd: Path | None = None,
    scope: Path | None = None,
) -> list[str]:
    """The full argv for one run.

    A ``session_id`` that is not a UUID never reaches ``--resume`` (it could be a flag or a
    session *title*, which the CLI would happily match): it is logged and dropped, so the
    run starts a new session. ``cwd`` is the run's directory (default: the current one),
    ``scope`` the one named in the scope paragraph (default: ``cwd``).
    """
    argv = _common_argv(settings, session_id, cwd=cwd, scope=scope, duplex=False)
    if not prompt_via_stdin(prompt):
        argv += ["--", prompt]
    return argv


def build_live_argv(
    settings: Settings,
    session_id: str | None,
    *,
    cwd: Path | None = None,
    scope: Path | None = None,
    permission_prompts: bool = False,
) -> list[str]:
    """The argv of a warm duplex ``claude``: user turns and control requests arrive as
    stream-json lines on stdin (no prompt in argv). ``--replay-user-messages`` echoes each
    user line when a turn takes it in: that is how a steered message is known to have
    reached the running turn (see docs/CLAUDE_RUNNER.md)."""
    return _common_argv(
        settings,
        session_id,
        cwd=cwd,
        scope=scope,
        duplex=True,
        permission_prompts=permission_prompts,
    )


def _common_argv(
    settings: Settings,
    session_id: str | None,
    *,
    cwd: Path | None,
    duplex: bool,
    scope: Path | None = None,
    permission_prompts: bool = False,
) -> list[str]:
    if session_id is not None and not is_session_id(session_id):
        get_logger().warning("claude.session_id_invalid", session_id=session_id[:80])
        session_id = None
    argv = [settings.runner.claude_path, "-p", "--output-format", "stream-json", "--verbose"]
    if duplex:
        argv += ["--input-format", "stream-json", "--replay-user-messages"]
    argv += _security_args(settings, cwd or Path.cwd(), permission_prompts=permission_prompts)
    if session_id:
        argv += ["--resume", session_id]
    argv += ["--append-system-prompt", build_system_prompt(settings, cwd or Path.cwd(), scope)]
    model = settings.model.strip()
    if model and model.lower() != _GLM_MODEL:
        argv += ["--model", model]
    return argv


# Linux caps one argv string at 128 KiB (MAX_ARG_STRLEN); a prompt with inlined text files
# can be larger. Those go to the CLI's stdin instead, which it reads verbatim.
ARGV_PROMPT_LIMIT_BYTES = 100_000


def prompt_via_stdin(prompt: str) -> bool:
    """True when ``prompt`` is too large for an argv element and is written to stdin."""
    return len(prompt.encode("utf-8")) > ARGV_PROMPT_LIMIT_BYTES


def build_env(base: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The child's environment: ``base`` minus secrets and daemon-only variables.

    Variables named like a credential (``GITHUB_TOKEN``, ``OPENAI_API_KEY``, …) are dropped
    too: claude gets its model provider's credentials and nothing else (README).
    """
    token = settings.discord.token
    env = {
        name: value
        for name, value in base.items()
        if name not in DROPPED_ENV and not is_secret_env(name) and not (token and value == token)
    }
    if settings.api:
        env["ANTHROPIC_AUTH_TOKEN"] = settings.api
    if settings.model.strip().lower() == _GLM_MODEL:
        env["ANTHROPIC_BASE_URL"] = _GLM_BASE_URL
        env["API_TIMEOUT_MS"] = "3000000"
    return env
