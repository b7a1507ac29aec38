"""What the daemon answers on its control socket (``claudeclaw status/send/sessions/…``).

One request per connection (see ``control.py`` for the socket itself): each request type
maps to a call into the supervisor's routing API or its status, answered with ``result``,
``error`` or a stream of ``event`` frames. Test-only requests are added with
:meth:`ControlRequests.add` (see ``testhooks.py``); production has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

from claudeclaw import __version__, ipc
from claudeclaw.errors import IpcError
from claudeclaw.logs import get_logger
from claudeclaw.model import GLOBAL_KEY, ApprovalOutcome, event_to_dict, info_to_dict, session_key
from claudeclaw.scheduler import HEARTBEAT

if TYPE_CHECKING:
    from claudeclaw.supervisor import Supervisor

log = get_logger()

Handler = Callable[[ipc.Message, ipc.Channel], Awaitable[None]]


class ControlRequests:
    """Answers control requests for ``supervisor``."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self._handlers: dict[str, Handler] = {
            "ping": self._ping,
            "status": self._status,
            "send": self._send,
            "cancel": self._cancel,
            "sessions.list": self._sessions_list,
            "sessions.show": self._sessions_show,
            "sessions.rm": self._sessions_rm,
            "reload": self._reload,
            "jobs.list": self._jobs_list,
            "jobs.run": self._jobs_run,
            "heartbeat.run": self._heartbeat_run,
        }

    def add(self, kind: str, handler: Handler) -> None:
        """Answer requests of type ``kind`` with ``handler`` (test hooks)."""
        self._handlers[kind] = handler

    async def handle(self, request: ipc.Message, channel: ipc.Channel) -> None:
        kind = request["type"]
        handler = self._handlers.get(kind)
        if handler is None:
            await channel.send({"type": "error", "message": f"unknown request {kind!r}"})
            return
        await handler(request, channel)

    async def _ping(self, request: ipc.Message, channel: ipc.Channel) -> None:
        await channel.send({"type": "result", "pid": os.getpid()})

    async def _status(self, request: ipc.Message, channel: ipc.Channel) -> None:
        await channel.send({"type": "result", **(await self.status_report())})

    async def _send(self, request: ipc.Message, channel: ipc.Channel) -> None:
        """Run a prompt, streaming its events; the client may answer ``approval`` events on
        the same connection (``approval.answer`` frames: ``claudeclaw send`` asks y/n)."""
        key = session_key(request.get("key") or GLOBAL_KEY)
        answers = asyncio.get_running_loop().create_task(self._approval_answers(channel))
        try:
            async for event in self.sup.submit(key, str(request["prompt"]), origin="cli"):
                await channel.send({"type": "event", "event": event_to_dict(event)})
        finally:
            answers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answers

    async def _approval_answers(self, channel: ipc.Channel) -> None:
        with contextlib.suppress(IpcError, ConnectionError):
            while (frame := await channel.recv()) is not None:
                if frame["type"] != "approval.answer":
                    continue
                request_id = str(frame.get("request_id") or "")
                try:
                    question = int(frame.get("question", -1))
                    option = int(frame.get("option", -1))
                except (TypeError, ValueError):  # a bad frame must not end the answers
                    log.warning(
                        "control.bad_approval_answer",
                        request_id=request_id,
                        hint="question and option must be whole numbers; the request waits",
                    )
                    continue
                chosen = str(frame.get("outcome") or "deny")
                outcome: ApprovalOutcome = "deny"
                if chosen in ("allow", "allow_session", "answered"):
                    outcome = cast(ApprovalOutcome, chosen)
                self.sup.decide_approval(
                    request_id, outcome, f"cli:{os.getuid()}", question=question, option=option
                )

    async def _cancel(self, request: ipc.Message, channel: ipc.Channel) -> None:
        cancelled = await self.sup.cancel(session_key(request.get("key") or GLOBAL_KEY))
        await channel.send({"type": "result", "cancelled": cancelled})

    async def _sessions_list(self, request: ipc.Message, channel: ipc.Channel) -> None:
        infos = await self.sup.list_sessions()
        await channel.send({"type": "result", "sessions": [info_to_dict(i) for i in infos]})

    async def _sessions_show(self, request: ipc.Message, channel: ipc.Channel) -> None:
        info = await self.sup.session_info(session_key(request["key"]))
        await channel.send({"type": "result", "session": info_to_dict(info)})

    async def _sessions_rm(self, request: ipc.Message, channel: ipc.Channel) -> None:
        outcome = await self.sup.reset_session(session_key(request["key"]))
        await channel.send(
            {"type": "result", "removed": outcome.had_session, "workspace": outcome.workspace_note}
        )

    async def _reload(self, request: ipc.Message, channel: ipc.Channel) -> None:
        applied, message = await self.sup.reload()
        await channel.send({"type": "result" if applied else "error", "message": message})

    async def _jobs_list(self, request: ipc.Message, channel: ipc.Channel) -> None:
        await channel.send({"type": "result", "jobs": await self.sup.list_jobs()})

    async def _jobs_run(self, request: ipc.Message, channel: ipc.Channel) -> None:
        await self._run_now(str(request.get("name", "")), channel)

    async def _heartbeat_run(self, request: ipc.Message, channel: ipc.Channel) -> None:
        await self._run_now(HEARTBEAT, channel)

    async def _run_now(self, name: str, channel: ipc.Channel) -> None:
        jobs = self.sup.jobs
        if jobs is None:
            await channel.send({"type": "error", "message": "the scheduler is not running"})
            return
        outcome = await jobs.run_now(name)
        await channel.send(
            {"type": "result", "ok": outcome.ok, "text": outcome.text, "reason": outcome.reason}
        )

    async def status_report(self) -> dict[str, Any]:
        """The daemon, its limits and every worker, sampled now (``claudeclaw status``)."""
        sup = self.sup
        pool = sup.pool
        assert pool is not None
        await pool.refresh_stats()
        workers = pool.status()
        pids = {w.pid for w in workers if w.pid}
        samples = await asyncio.to_thread(lambda: {pid: sup.stats.sample(pid) for pid in pids})
        sup.stats.forget_missing(pids)
        own_rss, own_cpu = await asyncio.to_thread(sup.stats.sample, os.getpid())
        rows = []
        for worker in workers:
            worker.rss_bytes, worker.cpu_percent = samples.get(worker.pid, (0, 0.0))
            row = asdict(worker)
            row.pop("extra", None)
            rows.append(row)
        limits = sup.settings.limits
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "project": str(sup.paths.root),
                "uptime_s": round(time.monotonic() - sup.started_monotonic, 1),
                "rss_bytes": own_rss,
                "cpu_percent": own_cpu,
                "discord": sup.frontend.summary() if sup.frontend is not None else None,
                "limits": {
                    "max_concurrent_runs": limits.max_concurrent_runs,
                    "max_workers": limits.max_workers,
                    "worker_idle_seconds": limits.worker_idle_seconds,
                },
                "status": sup.status_line(),
                **pool.counts(),
                "pending_messages": len(sup.ledger.accepted),
                "recovered_messages": len(sup.ledger.recovered),
                "spawned_total": pool.spawn_count,
                "crashes_total": pool.crash_count,
                "next_job": self._next_job(),
                "orphan_worktrees": [o.path for o in sup.orphan_worktrees],
            },
            "workers": rows,
        }

    def _next_job(self) -> dict[str, str] | None:
        """The next job (or heartbeat) to run: ``{"name", "at"}`` (ISO 8601), or None."""
        jobs = self.sup.jobs
        due = jobs.next_due() if jobs is not None else None
        if jobs is None or due is None:
            return None
        name, when = due
        return {"name": name, "at": when.astimezone(jobs.scheduler.tz).isoformat()}
