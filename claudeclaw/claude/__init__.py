"""Running the ``claude`` CLI: argv and env (``argv``), stream parsing (``stream``), one run
(``runner``). Import :func:`claudeclaw.claude.runner.run_claude` from its module; this
package module stays light (no asyncio) so pure callers can use :func:`transcript_path`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["claude_config_dir", "project_slug", "transcript_path"]

_NOT_ALNUM = re.compile(r"[^a-zA-Z0-9]")


def claude_config_dir(env: Mapping[str, str]) -> Path:
    """Where the CLI keeps its state: ``$CLAUDE_CONFIG_DIR``, else ``$HOME/.claude``."""
    configured = env.get("CLAUDE_CONFIG_DIR", "")
    if configured:
        return Path(configured)
    home = env.get("HOME", "")
    return (Path(home) if home else Path.home()) / ".claude"


def project_slug(cwd: Path) -> str:
    """The CLI's directory name for ``cwd``: every non-alphanumeric character becomes ``-``
    (``/tmp/x/a.b_c d`` → ``-tmp-x-a-b-c-d``)."""
    return _NOT_ALNUM.sub("-", str(cwd))


def transcript_path(cwd: Path, session_id: str, env: Mapping[str, str]) -> Path:
    """Where the CLI keeps the transcript of ``session_id`` started in ``cwd``.

    That is ``<config dir>/projects/<slug of cwd>/<session_id>.jsonl``.

    ``cwd`` must be the directory the session was *created* in (a resume from elsewhere keeps
    writing the original file). Very long paths may be shortened by the CLI; not handled.
    """
    return claude_config_dir(env) / "projects" / project_slug(cwd) / f"{session_id}.jsonl"
