"""``/context``: how full a session's context window is, read from its transcript.

Claude Code keeps each session's transcript at
``<config dir>/projects/<cwd with every non-alphanumeric character replaced by "-">/<id>.jsonl``
where the config dir is ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``. The last assistant line's
``message.usage`` tells how many tokens the model saw on its last turn: input plus cache
creation plus cache read. The original used only ``/`` -> ``-`` (wrong for paths with dots)
and the daemon's cwd (wrong for threads); we sanitize like the CLI and, when the expected
file is missing, look for ``<id>.jsonl`` in every project directory.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from claudeclaw.agent import agent_account

# (substring of the model id, context window in tokens); the first match wins.
CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("opus-5", 1_000_000),
    ("[1m]", 1_000_000),
)
DEFAULT_CONTEXT_WINDOW = 200_000
BAR_WIDTH = 20


def context_window(model: str) -> int:
    """The context window of ``model`` (1,000,000 for opus-5 models, else 200,000)."""
    lowered = model.lower()
    for needle, size in CONTEXT_WINDOWS:
        if needle in lowered:
            return size
    return DEFAULT_CONTEXT_WINDOW


def claude_config_dir(env: dict[str, str] | None = None) -> Path:
    """The CLI's state directory: the agent's ``~/.claude`` in two-user mode (agent.py;
    group-readable for us), else ``$CLAUDE_CONFIG_DIR`` or our own ``~/.claude``."""
    environ = os.environ if env is None else env
    account = agent_account(environ)
    if account is not None:
        return account.home / ".claude"
    given = environ.get("CLAUDE_CONFIG_DIR", "")
    return Path(given).expanduser() if given else Path.home() / ".claude"


def project_dir_name(cwd: Path | str) -> str:
    """How Claude Code names a cwd's project directory: non-alphanumerics become ``-``."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


def transcript_path(session_id: str, cwd: Path, config_dir: Path) -> Path:
    return config_dir / "projects" / project_dir_name(cwd) / f"{session_id}.jsonl"


def find_transcript(session_id: str, cwd: Path, config_dir: Path) -> Path | None:
    """The expected path if it exists, else any ``projects/*/<id>.jsonl`` (blocking I/O)."""
    if not re.fullmatch(r"[A-Za-z0-9-]{1,100}", session_id):
        return None
    # The directory belongs to claude (two users: another account): a link out of it
    # could make us read one of our own files as a transcript.
    inside = config_dir.resolve()
    expected = transcript_path(session_id, cwd, config_dir)
    if expected.is_file() and expected.resolve().is_relative_to(inside):
        return expected
    projects = config_dir / "projects"
    if projects.is_dir():
        for candidate in sorted(projects.glob(f"*/{session_id}.jsonl")):
            if candidate.is_file() and candidate.resolve().is_relative_to(inside):
                return candidate
    return None


@dataclass(frozen=True, slots=True)
class ContextUsage:
    input_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    output_tokens_total: int  # summed over every assistant line
    assistant_turns: int
    model: str

    @property
    def used(self) -> int:
        return self.input_tokens + self.cache_creation_tokens + self.cache_read_tokens


def _int(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def read_context_usage(path: Path) -> ContextUsage | None:
    """Scan a transcript (blocking I/O: call through ``asyncio.to_thread``)."""
    last: dict[str, object] | None = None
    model = ""
    output_total = 0
    turns = 0
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("type") != "assistant":
                continue
            message = entry.get("message")
            if not isinstance(message, dict):
                continue
            usage = message.get("usage")
            if not isinstance(usage, dict):
                continue
            last = usage
            turns += 1
            output_total += _int(usage.get("output_tokens"))
            if isinstance(message.get("model"), str):
                model = str(message["model"])
    if last is None:
        return None
    return ContextUsage(
        input_tokens=_int(last.get("input_tokens")),
        cache_creation_tokens=_int(last.get("cache_creation_input_tokens")),
        cache_read_tokens=_int(last.get("cache_read_input_tokens")),
        output_tokens_total=output_total,
        assistant_turns=turns,
        model=model,
    )


def usage_bar(used: int, window: int, width: int = BAR_WIDTH) -> str:
    share = 0.0 if window <= 0 else min(1.0, used / window)
    filled = round(share * width)
    return "█" * filled + "░" * (width - filled)


def format_context(usage: ContextUsage, *, session_id: str, fallback_model: str) -> str:
    model = usage.model or fallback_model
    window = context_window(model)
    percent = 100.0 * usage.used / window if window else 0.0
    return "\n".join(
        [
            f"🧠 **Context** (session `{session_id[:8]}`)",
            f"`{usage_bar(usage.used, window)}` {percent:.1f}%",
            f"{usage.used:,} / {window:,} tokens ({model or 'default model'})",
            f"Input {usage.input_tokens:,} · cache write {usage.cache_creation_tokens:,}"
            f" · cache read {usage.cache_read_tokens:,}",
            f"Output so far: {usage.output_tokens_total:,} tokens over"
            f" {usage.assistant_turns} assistant messages",
        ]
    )
