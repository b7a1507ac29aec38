"""The routing API (:class:`~claudeclaw.api.Dispatcher`): what frontends and the control
socket ask of the daemon, and what each run's events change in it.

``submit`` is where a frontend's message enters the daemon: refused when too large (or
kept for after a restart while the daemon stops), its thread's worktree made first
(``session_workspaces.py``), queued on the key's worker (``pool.py``), kept in the pending
ledger until its answer is posted, and its final event handed back only once its session
is on disk (``statewriter.py``). An answer whose follower went away is adopted and posted
by the next frontend. The :class:`~claudeclaw.supervisor.Supervisor` is a
:class:`SessionDispatcher` with a life (start, serve, reload, stop): it makes the pool,
the approval broker, the job service and the frontend this class routes to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from claudeclaw import ipc
from claudeclaw.approvals import ApprovalBroker
from claudeclaw.config import Settings
from claudeclaw.errors import WorkspaceError
from claudeclaw.jobservice import JobService
from claudeclaw.journal import Journal
from claudeclaw.ledger import KEPT_TEXT, PendingLedger
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    ApprovalOutcome,
    PendingMessage,
    Remembered,
    ReplyTo,
    ResetOutcome,
    RunDone,
    RunEvent,
    RunFailed,
    RunQueued,
    RunSession,
    SessionInfo,
    SessionKey,
    SessionRecord,
    Workspace,
    WorkspaceDiff,
    session_key,
)
from claudeclaw.paths import ProjectPaths
from claudeclaw.pool import Ticket, WorkerPool
from claudeclaw.session_workspaces import SessionWorkspaces
from claudeclaw.sessions import Change, SessionRegistry, utc_now_iso
from claudeclaw.statewriter import StateWriter
from claudeclaw.tasks import TaskSet
from claudeclaw.workspace import Orphan

log = get_logger()


def too_large_text(size: int) -> str:
    """Why a prompt is refused, and what to do instead."""
    return (
        f"This message is too large for claudeclaw ({size / 2**20:.1f} MB as sent to a "
        f"session; the limit is {ipc.MAX_PROMPT_BYTES / 2**20:.1f} MB, and non-ASCII text "
        "counts up to 6 bytes a character). Send the text as a file attachment, or split it."
    )


class SessionDispatcher:
    """The routing API over the daemon's parts (see the module docstring). The pool, the
    approval broker, the job service and the frontend are the supervisor's to make: None
    until it has made them."""

    def __init__(self, paths: ProjectPaths, settings: Settings) -> None:
        self.paths = paths
        self.settings = settings
        self.registry = SessionRegistry(paths)
        self.sessions: dict[SessionKey, str | None] = {}  # what workers resume
        # where each thread's runs happen, fixed with its session (threads.workspace)
        self.worktrees = SessionWorkspaces(paths)
        self._intake_locks: dict[SessionKey, asyncio.Lock] = {}
        self.last_error: dict[SessionKey, str] = {}
        self.closing = False  # stopping: no new work, frontend messages kept for after
        self.frontend: Any = None  # the connected frontend, which posts adopted answers
        self.pool: WorkerPool | None = None
        self.jobs: JobService | None = None  # scheduled jobs, heartbeat, bot-started posts
        self.approvals: ApprovalBroker | None = None  # security.approvals; made with the pool
        self._tasks = TaskSet("daemon")
        self._orphans: list[str] = []  # answers whose follower went away, for the next frontend
        # messages from a frontend, kept until answered (pending.jsonl)
        self.ledger = PendingLedger(paths.pending_file, lambda: self._writes.ledger_changed())
        # the one writer of the session files and the pending journal
        self._writes = StateWriter(
            self.registry, self.ledger, self._known_state, Journal(paths.session_changes_file)
        )

    def _mark_status_dirty(self) -> None:
        """The daemon's status line may have changed (the supervisor tells systemd)."""

    # ---- the routing API (Dispatcher) ---------------------------------------------------

    async def submit(
        self,
        key: SessionKey,
        prompt: str,
        *,
        origin: str = "discord",
        reply_to: ReplyTo | None = None,
        overrides: dict[str, Any] | None = None,
        label: str = "",
    ) -> AsyncIterator[RunEvent]:
        """Queue ``prompt`` for ``key``; yield its events until done or failed.
        ``overrides`` (``model``, ``timeout_s``): this run only (a job's frontmatter)."""
        key = session_key(key)
        if self.pool is None or self.closing:
            if reply_to is not None:  # a frontend message: keep it, it runs after the restart
                item = PendingMessage(
                    uuid.uuid4().hex[:12], key, prompt, origin, reply_to, accepted_at=utc_now_iso()
                )
                self.ledger.accept(item)  # (in place of the earlier run's entry, if it is one)
                log.info("message.kept_for_restart", session_key=key, msg_id=item.msg_id)
                yield RunFailed(item.msg_id, "kept", KEPT_TEXT)
                return
            yield RunFailed("", "shutdown", "claudeclaw is stopping; send it again later.")
            return
        size = ipc.json_size(prompt)
        if size > ipc.MAX_PROMPT_BYTES:  # it could never reach a worker: refuse it here
            log.warning("message.too_large", session_key=key, origin=origin, bytes=size)
            yield RunFailed("", "error", too_large_text(size))
            return
        async with self._intake_lock(key):  # no await inside unless a worktree is made
            try:
                await self.worktrees.prepare(
                    key, label, self.settings, has_session=self.sessions.get(key) is not None
                )
            except WorkspaceError as exc:
                problem = str(exc)
            else:
                problem = ""
                ticket = self.pool.enqueue(key, prompt, origin, overrides)
        if problem:
            log.error("workspace.unavailable", session_key=key, error=problem)
            yield RunFailed("", "error", f"This thread's git worktree is not available: {problem}")
            return
        if reply_to is not None and not ticket.finished:
            self.ledger.accept(
                PendingMessage(
                    ticket.msg_id, key, prompt, origin, reply_to, accepted_at=utc_now_iso()
                ),
                starts_at_once=ticket.starts_at_once,
            )
        log.info(
            "message.submitted",
            session_key=key,
            msg_id=ticket.msg_id,
            origin=origin,
            prompt_chars=len(prompt),
        )
        self._mark_status_dirty()
        settled: RunDone | RunFailed | None = None
        handed = False
        try:
            if not ticket.finished:
                # in its queue, in order; its worker sends `queued` only when others are ahead
                yield RunQueued(ticket.msg_id, 0)
            while True:
                event = await ticket.events.get()
                if isinstance(event, RunDone | RunFailed):
                    settled = self.ledger.settle(event)
                    await self._writes.join()  # the reply is seen once its session is on disk
                    handed = True
                    yield settled
                    return
                yield event
        finally:
            if not handed and reply_to is not None:  # its follower went away (a frontend
                # closed for a new token): the answer is stored and the next frontend posts it
                self._tasks.start(self._answer_orphan(ticket, settled), "orphan")

    async def attach_frontend(self, frontend: Any) -> None:
        """``frontend`` is connected: it posts what waited for one (the previous run's
        unanswered messages, answers adopted since)."""
        self.frontend = frontend
        # what this run of the daemon holds already is not caught up again (a new token)
        frontend.mark_seen(p.reply_to.message_id for p in self.ledger.accepted.values())
        await frontend.resume(self.take_pending())
        await self._hand_orphans()

    async def _answer_orphan(self, ticket: Ticket, settled: RunDone | RunFailed | None) -> None:
        """Wait for the final event of a message nobody follows any more, store it in the
        ledger, and hand it to the frontend (now, or when one connects) to post."""
        if settled is None:
            while not isinstance(event := await ticket.events.get(), RunDone | RunFailed):
                pass
            settled = self.ledger.settle(event)
            await self._writes.join()
        log.info("message.answer_adopted", msg_id=ticket.msg_id, outcome=settled.kind)
        self._orphans.append(ticket.msg_id)
        await self._hand_orphans()

    async def _hand_orphans(self) -> None:
        """Give the frontend the adopted answers to post (they stay in the ledger until it
        reports them posted; while stopping they are posted after the restart)."""
        frontend = self.frontend
        if frontend is None or self.closing or not self._orphans:
            return
        items = [self.ledger.accepted[m] for m in self._orphans if m in self.ledger.accepted]
        self._orphans.clear()
        if items:
            await frontend.resume(items)

    async def cancel(self, key: SessionKey) -> bool:
        assert self.pool is not None
        return await self.pool.cancel(session_key(key))

    async def reset(self, key: SessionKey) -> bool:
        return (await self.reset_session(key)).had_session

    async def reset_session(self, key: SessionKey) -> ResetOutcome:
        key = session_key(key)
        assert self.pool is not None
        async with self._intake_lock(key):
            had = self.sessions.get(key) is not None
            self.sessions[key] = None
            if self.approvals is not None:
                self.approvals.forget(key, "reset")
                self.approvals.drop(key, note="the session was reset")
            handle = self.pool.find(key)
            await self.pool.reset(key)
            self._writes.put_nowait(("remove", key, ""))
            await self._writes.join()
            wait = self.settings.runner.kill_grace_seconds + 10.0
            note = await self.worktrees.remove(key, handle, wait)
        log.info("session.reset", session_key=key, had_session=had, workspace=note)
        return ResetOutcome(had, note)

    async def session_info(self, key: SessionKey) -> SessionInfo:
        key = session_key(key)
        await self._writes.flush()
        record = await asyncio.to_thread(self.registry.get, key)
        info = self._info(key, record)
        status = await self.worktrees.status(key)
        if status is not None:
            info = dataclasses.replace(info, workspace=status)
        return info

    def has_session(self, key: SessionKey) -> bool:
        key = session_key(key)
        return bool(self.sessions.get(key)) or (
            self.pool is not None and self.pool.find(key) is not None
        )

    async def list_sessions(self) -> list[SessionInfo]:
        await self._writes.flush()
        records = await asyncio.to_thread(self.registry.list)
        return [self._info(r.key, r) for r in records]

    async def list_jobs(self) -> list[dict[str, Any]]:
        return await self.jobs.fresh_listing() if self.jobs is not None else []

    def _info(self, key: SessionKey, record: SessionRecord | None) -> SessionInfo:
        assert self.pool is not None
        handle = self.pool.find(key)
        running = False
        queue = 0
        pid = 0
        elapsed = 0.0
        if handle is not None:
            running = self.pool.running_on(handle) is not None
            queue = max(0, len(self.pool.held_by(handle)) - (1 if running else 0))
            pid = handle.pid
            elapsed = float(handle.stats.get("run_elapsed_s", 0.0))
        return SessionInfo(
            key=key,
            record=record,
            running=running,
            queue_length=queue,
            worker_pid=pid,
            run_elapsed_s=elapsed,
            last_error=self.last_error.get(key, ""),
        )

    def take_pending(self) -> list[PendingMessage]:
        """Messages the previous run accepted but did not answer (handed out once)."""
        return self.ledger.take_recovered()

    def delivered(self, msg_id: str) -> None:
        """The frontend posted the answer (or a note) of ``msg_id``: the ledger lets it go."""
        self.ledger.delivered(msg_id)

    # ---- approvals (security.approvals) -------------------------------------------------

    def decide_approval(
        self,
        request_id: str,
        outcome: ApprovalOutcome,
        by: str,
        *,
        question: int = -1,
        option: int = -1,
    ) -> str:
        if self.approvals is None:
            return "not waiting"
        return self.approvals.decide(request_id, outcome, by, question=question, option=option)

    def remembered_approvals(self, key: SessionKey) -> list[Remembered]:
        if self.approvals is None:
            return []
        key = session_key(key)
        return self.approvals.remembered(key, self.sessions.get(key) or "")

    def revoke_approval(self, key: SessionKey, tool: str) -> bool:
        return self.approvals is not None and self.approvals.revoke(session_key(key), tool)

    # ---- thread workspaces (session_workspaces.py) --------------------------------------

    @property
    def workspace_of(self) -> dict[SessionKey, Workspace]:
        """The worktree of each key that has one."""
        return self.worktrees.of

    @property
    def orphan_worktrees(self) -> list[Orphan]:
        """The worktrees no session owned at start (kept on disk)."""
        return self.worktrees.orphans

    def _intake_lock(self, key: SessionKey) -> asyncio.Lock:
        """Per key: messages reach the pool in order even when one waits for its worktree,
        and a reset (which removes the worktree) never overlaps a new first message."""
        return self._intake_locks.setdefault(key, asyncio.Lock())

    async def workspace_diff(self, key: SessionKey) -> WorkspaceDiff | None:
        return await self.worktrees.diff(key)

    # ---- what run events change (the pool's callback) -----------------------------------

    def _session_lookup(self, key: SessionKey) -> str | None:
        return self.sessions.get(key)

    def _on_run_event(self, key: SessionKey, event: RunEvent) -> None:
        """Record session ids as soon as the CLI reports them (even if the run then fails)."""
        self.ledger.note_event(event)
        if isinstance(event, RunSession | RunDone) and event.session_id:
            if self.sessions.get(key) != event.session_id:
                self.sessions[key] = event.session_id
                self._writes.put_nowait(("record", key, event.session_id))
                if key in self.workspace_of:  # its worktree belongs with the session now
                    self._writes.put_nowait(self.worktrees.change(key))
                if self.approvals is not None:  # approvals belong to the session they were for
                    self.approvals.session_changed(key, event.session_id)
        if isinstance(event, RunDone):
            if not event.merged_into:  # one turn per run, not per message it answered
                self._writes.put_nowait(("touch", key, event.session_id))
            self.last_error.pop(key, None)
        elif isinstance(event, RunFailed):
            self.last_error[key] = f"{event.reason}: {event.message}"[:300]
            if event.reason == "rate_limited" and self.jobs is not None:
                # the pool pauses right after this callback: tell the notice channel then
                jobs = self.jobs
                asyncio.get_running_loop().call_soon(
                    lambda: jobs.note_usage_limit(self.rate_limit_holds())
                )
        self._mark_status_dirty()

    def _known_state(self) -> list[Change]:
        """Every session and worktree the daemon knows, as changes (rewritten after a
        failed write)."""
        return [
            ("record", key, sid) if sid else ("remove", key, "")
            for key, sid in self.sessions.items()
        ] + [self.worktrees.change(key) for key in self.workspace_of]

    @property
    def rate_limited_until(self) -> datetime | None:
        """When Claude's usage limit resets, while it holds (the pool pauses the runs)."""
        return self.pool.limit_until if self.pool is not None else None

    def rate_limit_holds(self) -> datetime | None:
        """The reset time while Claude's usage limit holds, else None."""
        return self.pool.limit_holds() if self.pool is not None else None
