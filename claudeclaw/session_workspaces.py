"""Where each session key's runs happen, decided by the daemon (``threads.workspace``).

``workspace.py`` knows git: create, inspect and remove one worktree. This module knows the
daemon's side: the worktree each key has (loaded from the registry, recorded with its
session), made before a thread's first message is queued, the directory handed to its
worker, removed only after that worker (and its ``claude``) is gone, and the worktrees no
session owns reported at start. Workers never run git.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

from claudeclaw.config import Settings
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    GLOBAL_KEY,
    SessionKey,
    Workspace,
    WorkspaceDiff,
    WorkspaceStatus,
    session_key,
)
from claudeclaw.paths import ProjectPaths
from claudeclaw.sessions import Change
from claudeclaw.workspace import Orphan, Workspaces, repo_problem

log = get_logger()

STATUS_WITHIN = 2.0  # seconds /status waits for a worktree's git numbers


class SessionWorkspaces:
    """The worktree of each session key that has one (see the module docstring)."""

    def __init__(self, paths: ProjectPaths) -> None:
        self.paths = paths
        self.git = Workspaces(paths)
        self.of: dict[SessionKey, Workspace] = {}  # fixed with the key's session
        self.orphans: list[Orphan] = []  # found at start, kept on disk

    async def problem(self, settings: Settings) -> str:
        """Why ``threads.workspace`` cannot work here ("" when it can)."""
        if settings.threads.workspace != "worktree":
            return ""
        return await repo_problem(self.paths.root) or ""

    async def report_orphans(self, sessions: Mapping[SessionKey, str | None]) -> list[Orphan]:
        """Log the worktrees under the state directory that no session owns (never
        deleting them: they may hold work)."""
        live: dict[SessionKey, Workspace | None] = {
            key: self.of.get(key) for key, sid in sessions.items() if sid
        }
        self.orphans = await self.git.report_orphans(live)
        return self.orphans

    async def prepare(
        self, key: SessionKey, label: str, settings: Settings, *, has_session: bool
    ) -> None:
        """Before ``key``'s first message is queued: the worktree it runs in, when
        ``threads.workspace`` is "worktree". A session keeps the directory it started in
        (Claude files its transcript under it), whatever the setting says later."""
        if key == GLOBAL_KEY:
            return
        recorded = self.of.get(key)
        if recorded is not None:
            # deleted by hand: recreated on its branch; not this key's own: refused (ensure)
            if not self.git.is_own(key, recorded) or not await asyncio.to_thread(
                os.path.isdir, recorded.path
            ):
                self.of[key] = await self.git.ensure(key, label, recorded)
            return
        if has_session or settings.threads.workspace != "worktree":
            return
        self.of[key] = await self.git.ensure(key, label)

    async def remove(self, key: SessionKey, handle: Any, wait: float) -> str:
        """Forget ``key``'s worktree and remove it once its worker (``handle``, if any) and
        its claude are gone, waiting up to ``wait`` s; the words for the reply (kept
        branch, saved patch; "" when it had none)."""
        workspace = self.of.pop(key, None)
        if workspace is None:
            return ""
        if handle is not None:
            try:
                await asyncio.wait_for(handle.exited.wait(), wait)
            except TimeoutError:
                log.warning("workspace.kept_busy", session_key=key, path=workspace.path)
                return (
                    f"The worktree {workspace.path} was kept: its run did not stop in time "
                    "(it is reported at the next start)."
                )
        removal = await self.git.remove(key, workspace)
        return removal.summary()

    async def diff(self, key: SessionKey) -> WorkspaceDiff | None:
        workspace = self.of.get(session_key(key))
        if workspace is None:
            return None
        return await self.git.diff(workspace)

    async def status(self, key: SessionKey) -> WorkspaceStatus | None:
        """The status of ``key``'s worktree (None: it has none), within the time a Discord
        interaction may wait for its answer."""
        workspace = self.of.get(key)
        if workspace is None:
            return None
        try:
            return await asyncio.wait_for(self.git.status(workspace), STATUS_WITHIN)
        except TimeoutError:
            return WorkspaceStatus(
                workspace.path,
                workspace.branch,
                workspace.base,
                0,
                0,
                0,
                problem=f"git took longer than {STATUS_WITHIN:.0f} s to count the changes",
            )

    def cwd(self, key: SessionKey) -> str | None:
        """The directory ``key``'s worker runs claude in (None: the project's)."""
        workspace = self.of.get(key)
        return workspace.cwd if workspace is not None else None

    def change(self, key: SessionKey) -> Change:
        """The registry change that records ``key``'s worktree with its session."""
        return ("workspace", key, json.dumps(self.of[key].to_json()))
