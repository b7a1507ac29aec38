"""The routing API: what a frontend (Discord, the control socket) may ask of the daemon.

``SessionDispatcher`` in ``dispatch.py`` implements :class:`Dispatcher` (the supervisor
is one); frontends depend only on this protocol, so they can be tested against a fake and
never reach into the worker pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from claudeclaw.model import (
    ApprovalOutcome,
    PendingMessage,
    Remembered,
    ReplyTo,
    ResetOutcome,
    RunEvent,
    SessionInfo,
    SessionKey,
    WorkspaceDiff,
)


class Dispatcher(Protocol):
    def submit(
        self,
        key: SessionKey,
        prompt: str,
        *,
        origin: str = "discord",
        reply_to: ReplyTo | None = None,
        label: str = "",
    ) -> AsyncIterator[RunEvent]:
        """Queue ``prompt`` for ``key``; yields queued, started, progress…, then done or failed.

        With ``reply_to`` the message is kept across a restart of the daemon until the
        frontend reports its answer posted (:meth:`delivered`; see :meth:`take_pending`).
        ``label`` (a thread's name) only names the branch of a new thread worktree.
        """
        ...

    def take_pending(self) -> list[PendingMessage]:
        """Messages a previous run of the daemon accepted but whose answer was not posted,
        in order (once: the caller posts their stored ``answer``, resubmits them, or tells
        their authors, and reports each :meth:`delivered`)."""
        ...

    def delivered(self, msg_id: str) -> None:
        """The answer (or a note) of ``msg_id`` is in the frontend (or can never be: the
        message is gone); it is not kept for a restart any longer."""
        ...

    async def cancel(self, key: SessionKey) -> bool:
        """Kill the running ``claude`` of ``key`` (its process group); the queue goes on."""
        ...

    async def reset(self, key: SessionKey) -> bool:
        """Forget the Claude session of ``key`` and stop its worker; True if there was one."""
        ...

    async def reset_session(self, key: SessionKey) -> ResetOutcome:
        """:meth:`reset`, and say what became of the session's worktree (removed; its
        branch kept when it has commits; uncommitted changes saved as a patch)."""
        ...

    async def workspace_diff(self, key: SessionKey) -> WorkspaceDiff | None:
        """Everything ``key``'s worktree changed since its base; None: it has none."""
        ...

    async def session_info(self, key: SessionKey) -> SessionInfo:
        """The stored session and live state (running, queue, worker pid) of ``key``."""
        ...

    def has_session(self, key: SessionKey) -> bool:
        """``key`` has a session, a live worker or work waiting, from what the daemon
        knows (no file read: asked for messages that may or may not be for us)."""
        ...

    async def list_sessions(self) -> list[SessionInfo]:
        """Every thread session (not the global one), with live state."""
        ...

    async def list_jobs(self) -> list[dict[str, Any]]:
        """Every job file and the heartbeat: schedule, next/last run (ISO 8601), outcome,
        error (the rows of ``claudeclaw jobs list --json``)."""
        ...

    def decide_approval(
        self,
        request_id: str,
        outcome: ApprovalOutcome,
        by: str,
        *,
        question: int = -1,
        option: int = -1,
    ) -> str:
        """A person's answer to a ``RunApproval`` (allow, allow_session, deny; or, for
        ``AskUserQuestion``, ``answered`` with a question's option). "" when taken, else
        why not ("not waiting": answered, timed out, or the daemon restarted)."""
        ...

    def remembered_approvals(self, key: SessionKey) -> list[Remembered]:
        """Tools allowed for the rest of ``key``'s current session."""
        ...

    def revoke_approval(self, key: SessionKey, tool: str) -> bool:
        """Forget one remembered approval (``/permissions``); False if there was none."""
        ...
