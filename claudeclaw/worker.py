"""One session key's worker process: its FIFO queue and its ``claude`` runs, one at a time.

Forked by the fork server (``forkserver.py``: a clean, single-threaded process that has
imported this module; never a fork of the supervisor's threaded event loop), or, with
``limits.workerStartMethod: "exec"``, started as ``python -m claudeclaw.worker``. Either
way :func:`main` runs; it connects back over the supervisor's worker socket, says
``hello``, takes the supervisor's settings from the ``configure`` frame (it never reads
``settings.json``), and then:

* queues ``run`` requests in arrival order and runs them one at a time, asking the
  supervisor for a run slot (``acquire`` → ``grant``) before each, so the global cap on
  concurrent ``claude`` processes holds and threads take turns; a run refused by Claude's
  usage limit goes back to the head of the queue (``limited``) to run at the reset;
* streams every run event back (``event`` frames) and remembers the session id the CLI
  reported, so the next message of the key resumes it;
* answers ``ping`` with its live state, obeys ``cancel`` (an interrupt: the session stays
  warm), ``reset``/``shutdown``, and takes new settings from a ``reload`` frame;
* runs Claude through one :class:`ClaudeSessionRunner` (a warm ``claude`` between messages
  when ``runner.warmSessions``), tells the supervisor when it holds a warm one (``warm``) and
  closes it when told (``close_warm``: the pool keeps ``limits.maxWarmSessions``);
* with ``runner.busyPolicy: "steer"`` writes a message that arrives while a warm turn runs
  into that turn (slash commands never);
* with ``security.approvals`` turns each of the CLI's ``can_use_tool`` questions into an
  ``approval`` frame and waits for the supervisor's ``approval_answer`` (one at a time, in
  order; the supervisor owns the timeout, the remembered approvals and the people);
* exits when the supervisor goes away (end of stream), killing its run's process group.

It never imports discord.py (tests pin that) and stays small: its only job is the queue.
:meth:`Worker._run` is the one place that starts ``claude``.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import signal
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claudeclaw import ipc
from claudeclaw.approvals import questions_of, summarize
from claudeclaw.claude.live import Allow, Deny, PermissionResult
from claudeclaw.claude.session_runner import ClaudeSessionRunner
from claudeclaw.config import Settings
from claudeclaw.errors import EXIT_OK, EXIT_WORKER_BOOT_FAILED, ClaudeclawError, IpcError
from claudeclaw.logs import bind, configure_logging, get_logger, unbind
from claudeclaw.model import (
    RunDone,
    RunEvent,
    RunFailed,
    RunProgress,
    RunQueued,
    RunSession,
    RunStarted,
    SessionKey,
    event_to_dict,
    session_key,
)
from claudeclaw.paths import ProjectPaths, ensure_private_dir, write_private_text
from claudeclaw.progress_sampler import ProgressSampler
from claudeclaw.redaction import scrub_outbound
from claudeclaw.settings_wire import settings_from_wire
from claudeclaw.tasks import TaskSet

log = get_logger()

# Failures an operator must see (journalctl -p warning / -p err); the rest is routine.
_ROUTINE_FAILURES = frozenset({"cancelled", "shutdown", "kept"})
_WARNING_FAILURES = frozenset({"rate_limited", "timeout"})


def _log_failure(final: RunFailed) -> None:
    """One entry per failed run, with its reason and text (secrets scrubbed by the log
    pipeline; key-shaped text too, since the CLI may echo what it read)."""
    fields = {"reason": final.reason, "error": scrub_outbound(final.message)[:1000]}
    if final.reason in _ROUTINE_FAILURES:
        log.info("worker.run_failed", **fields)
    elif final.reason in _WARNING_FAILURES:
        log.warning("worker.run_failed", **fields)
    else:
        log.error("worker.run_failed", **fields)


MAX_LIMIT_RETRIES = 3  # a run refused by Claude's usage limit waits for its reset this often
# The supervisor answers every approval request (a timeout is its deny); if it never does,
# the worker denies this long after the timeout itself.
APPROVAL_SAFETY_SECONDS = 30.0


@dataclass(slots=True)
class _Queued:
    msg_id: str
    prompt: str
    origin: str
    model: str = ""  # a job's own model ("": the settings')
    timeout_s: float = 0.0  # a job's own hard timeout (0: the settings')
    limit_retries: int = 0  # put back to wait for Claude's usage limit to reset


# Text an event may carry over IPC (frames are capped at ipc.MAX_FRAME_BYTES; JSON can
# grow a character to 6 bytes). A longer reply is cut with a note; it would be thousands of
# Discord messages anyway.
MAX_INLINE_REPLY_BYTES = 1024 * 1024  # a larger reply travels as a file (``reply_file``)
REPLY_HEAD_CHARS = 4_000  # the start kept in the frame of a reply sent as a file
MAX_PROGRESS_CHARS = 4_000


def _fit_in_a_frame(event: RunEvent) -> RunEvent:
    if isinstance(event, RunDone) and ipc.json_size(event.reply) > MAX_INLINE_REPLY_BYTES:
        # only when it could not be written to a file: cut it to what a frame holds
        keep = len(event.reply)
        while keep and ipc.json_size(event.reply[:keep]) > MAX_INLINE_REPLY_BYTES:
            keep = keep * 3 // 4
        cut = len(event.reply) - keep
        note = f"\n\n[claudeclaw: the reply was {cut:,} characters longer; cut here]"
        return replace(event, reply=event.reply[:keep] + note)
    if isinstance(event, RunProgress) and len(event.text) > MAX_PROGRESS_CHARS:
        return replace(event, text=event.text[:MAX_PROGRESS_CHARS])
    if isinstance(event, RunFailed) and len(event.message) > MAX_PROGRESS_CHARS:
        return replace(event, message=event.message[:MAX_PROGRESS_CHARS] + "…")
    return event


def _write_reply(path: Any, text: str) -> None:
    ensure_private_dir(path.parent)
    write_private_text(path, text)


def is_command(prompt: str) -> bool:
    """A slash command for the CLI (``/compact``…), as the slash commands submit them:
    never merged with or steered into other messages."""
    return prompt.lstrip().startswith("/")


def _passed(iso_time: str) -> bool:
    """True if ``iso_time`` (a usage limit's reset) is not in the future."""
    if not iso_time:
        return False
    try:
        when = datetime.fromisoformat(iso_time)
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when <= datetime.now(UTC)


class Worker:
    """The queue and run loop of one key; talks to the supervisor through ``channel``."""

    def __init__(
        self, paths: ProjectPaths, key: SessionKey, channel: ipc.Channel, settings: Settings
    ) -> None:
        self.paths = paths
        self.key = key
        self.channel = channel
        self.settings = settings
        self.session_id: str | None = None
        self.cwd = paths.root  # where claude runs (configure may name a thread's worktree)
        self.queue: deque[_Queued] = deque()
        self.current: _Queued | None = None
        self.current_task: asyncio.Task[RunDone | RunFailed] | None = None
        self.run_started = 0.0
        self.waiting_grant: tuple[str, asyncio.Future[None]] | None = None
        self.granted_early: set[str] = set()  # runs whose slot came with them
        self.work_ready = asyncio.Event()
        self.stopping = False
        self.finished = asyncio.Event()
        self.recycled = False  # it ended to serve as the spare (``recycle``), not to exit
        self.cancel_reason = ""
        self.riders: list[_Queued] = []  # merged into the current run (coalescing)
        self.steered: list[_Queued] = []  # written into the current run (busyPolicy steer)
        self.run_task: asyncio.Task[None] | None = None  # run_loop(), set by serve()
        self.tasks = TaskSet("worker")
        self.claude = ClaudeSessionRunner(
            paths.root, on_warm_changed=self._report_warm, can_use_tool=self._can_use_tool
        )
        self.approvals: dict[str, asyncio.Future[ipc.Message]] = {}  # request id -> answer
        self.progress = ProgressSampler(self._send_event)
        self._approval_turn = asyncio.Lock()  # several requests of a turn: one at a time
        self.started_event: RunStarted | None = None  # the current run's (steered ones echo it)

    # ---- outbound -----------------------------------------------------------------------

    def _send(self, message: ipc.Message) -> None:
        try:
            self.channel.send_nowait(message)
        except (ConnectionError, IpcError) as exc:
            log.warning("worker.send_failed", error=str(exc), type=message.get("type"))

    def _emit(self, event: RunEvent) -> None:
        event = _fit_in_a_frame(event)
        if isinstance(event, RunProgress):
            self.progress.offer(event)  # the latest once a second (progress_sampler)
            return
        if isinstance(event, RunSession) and event.session_id:
            if event.session_id == self.session_id:
                return  # the supervisor knows it (a warm claude repeats it every turn)
            self.session_id = event.session_id
        elif isinstance(event, RunStarted):
            self.started_event = event
            self.progress.run_started()
            for rider in self.riders:  # messages answered by this run see it start too
                self._send_event(replace(event, msg_id=rider.msg_id))
        elif isinstance(event, RunDone | RunFailed):
            if event.session_id:
                self.session_id = event.session_id
            if self.current is None or event.msg_id == self.current.msg_id:
                self.progress.run_ended()
        self._send_event(event)

    def _send_event(self, event: RunEvent) -> None:
        self._send({"type": "event", "event": event_to_dict(event)})

    def _state(self, *, rss: bool = True) -> dict[str, Any]:
        claude = self.claude.status(rss=rss)
        if self.current is not None:
            state = "running"
        elif self.stopping:
            state = "stopping"
        elif self.queue:
            state = "waiting"
        else:
            state = "idle"
        return {
            "state": state,
            "queue_length": len(self.queue),
            "running_msg_id": self.current.msg_id if self.current else "",
            "run_elapsed_s": round(time.monotonic() - self.run_started, 3) if self.current else 0.0,
            "session_id": self.session_id or "",
            "claude_pid": claude.claude_pid,
            "claude_mode": claude.mode,
            "claude_rss_bytes": claude.rss_bytes,
        }

    # ---- inbound ------------------------------------------------------------------------

    async def read_loop(self) -> None:
        """Dispatch supervisor frames until the supervisor closes the connection."""
        try:
            while True:
                message = await self.channel.recv()
                if message is None:
                    break
                self.handle(message)
                if message["type"] == "recycle":
                    return  # the frames that follow are for the spare it becomes (serve)
        except (IpcError, ConnectionError) as exc:
            log.error("worker.protocol_error", error=str(exc))
        if not self.stopping:
            log.warning("worker.supervisor_gone")
        await self.abort("the supervisor went away")

    def handle(self, message: ipc.Message) -> None:
        kind = message["type"]
        handler = getattr(self, "handle_" + kind.replace(".", "_"), None)
        if handler is None:
            log.warning("worker.unknown_frame", type=kind)
            return
        handler(message)

    def handle_configure(self, message: ipc.Message, *, parsed: bool = False) -> None:
        """The session, cwd and (unless ``parsed`` already, or unchanged) settings."""
        session_id = message.get("session_id")
        self.session_id = str(session_id) if session_id else None
        if "settings" in message and not parsed:
            self.settings = settings_from_wire(message["settings"])
        cwd = message.get("cwd")  # the thread's own worktree; none: the project directory
        self.cwd = Path(str(cwd)) if cwd else self.paths.root
        self.claude.cwd = self.cwd
        self.claude.scope = self.paths.root  # a thread's worktree lies below it

    def handle_run(self, message: ipc.Message) -> None:
        item = _Queued(
            str(message["msg_id"]),
            str(message["prompt"]),
            str(message.get("origin")),
            model=str(message.get("model") or ""),
            timeout_s=float(message.get("timeout_s") or 0.0),
        )
        if message.get("granted"):  # its slot came with it (nothing was ahead of it)
            self.granted_early.add(item.msg_id)
        if self.stopping:
            self._emit(RunFailed(item.msg_id, "shutdown", "claudeclaw is stopping; send it again."))
            return
        if self._may_steer(item):
            self.tasks.start(self._steer(item), "steer")  # the run loop waits for these
            return
        self._enqueue(item)

    def _enqueue(self, item: _Queued) -> None:
        """Put ``item`` at the back of the queue and tell its sender how many are ahead."""
        self.queue.append(item)
        ahead = len(self.queue) - 1 + (1 if self.current else 0)
        if ahead:  # (with nothing ahead the supervisor knows it is next: no frame for that)
            self._emit(RunQueued(item.msg_id, ahead))
        self.work_ready.set()

    def handle_grant(self, message: ipc.Message) -> None:
        if self.waiting_grant and self.waiting_grant[0] == message.get("msg_id"):
            future = self.waiting_grant[1]
            if not future.done():
                future.set_result(None)

    def handle_ping(self, message: ipc.Message) -> None:
        state = self._state(rss=bool(message.get("stats")))  # a health check needs no RSS
        self._send({"type": "pong", "seq": message.get("seq", 0), **state})

    def handle_cancel(self, message: ipc.Message) -> None:
        """Stop the current run with an interrupt (the session stays, warm), or the head
        message still waiting for a slot."""
        self._end_approvals("Stopped by the user.")
        if self.current_task is not None and not self.current_task.done():
            self.tasks.start(self._interrupt(), "interrupt")
        else:
            self._cancel_current("cancelled")

    # ---- approvals (security.approvals) -------------------------------------------------

    async def _can_use_tool(
        self, tool: str, tool_input: dict[str, Any], suggestions: list[Any]
    ) -> PermissionResult:
        """The CLI asks before ``tool``: ask the supervisor (who asks a person) and wait."""
        async with self._approval_turn:  # FIFO: asked one at a time, in the CLI's order
            head = self.current
            if self.stopping or head is None:
                return Deny("Denied: claudeclaw is stopping.", interrupt=True)
            request_id = uuid.uuid4().hex[:16]
            answer: asyncio.Future[ipc.Message] = asyncio.get_running_loop().create_future()
            self.approvals[request_id] = answer
            questions = questions_of(tool, tool_input)
            self._send(
                {
                    "type": "approval",
                    "request_id": request_id,
                    "msg_id": head.msg_id,
                    "session_id": self.session_id or "",
                    "tool": tool,
                    "summary": summarize(tool, tool_input),
                    "questions": [[q.question, q.header, list(q.options)] for q in questions],
                }
            )
            timeout = self.settings.security.approval_timeout_seconds + APPROVAL_SAFETY_SECONDS
            try:
                reply = await asyncio.wait_for(asyncio.shield(answer), timeout)
            except TimeoutError:
                log.error("worker.approval_unanswered", tool=tool, request_id=request_id)
                self._send({"type": "approval_cancel", "request_id": request_id})
                return Deny(f"Denied: nobody answered within {timeout:g} s.")
            except asyncio.CancelledError:  # the CLI withdrew it, or the run ended
                self._send({"type": "approval_cancel", "request_id": request_id})
                raise
            finally:
                self.approvals.pop(request_id, None)
        if reply.get("allow"):
            answers = reply.get("answers")
            if isinstance(answers, dict) and answers:
                return Allow({**tool_input, "answers": answers})
            return Allow()
        return Deny(str(reply.get("message") or "Denied."), interrupt=bool(reply.get("interrupt")))

    def handle_approval_answer(self, message: ipc.Message) -> None:
        answer = self.approvals.get(str(message.get("request_id")))
        if answer is None or answer.done():
            return  # no longer waited for (the run was stopped meanwhile)
        answer.set_result(message)
        if message.get("interrupt") and not message.get("allow"):
            # denied because the daemon stops: end the run now (interrupted, told so)
            self._cancel_current("shutdown")

    def _end_approvals(self, why: str) -> None:
        """Deny what waits on a person (the run is being stopped)."""
        for request_id, answer in list(self.approvals.items()):
            if not answer.done():
                answer.set_result({"allow": False, "message": why, "interrupt": True})
            self._send({"type": "approval_cancel", "request_id": request_id})

    async def _interrupt(self) -> None:
        if not await self.claude.interrupt():
            self._cancel_current("cancelled")

    def handle_close_warm(self, message: ipc.Message) -> None:
        """The pool is over ``limits.maxWarmSessions``: close ours if it is idle."""
        self.tasks.start(self.claude.close_warm("over limits.maxWarmSessions"), "close_warm")

    def _report_warm(self) -> None:
        self._send({"type": "warm", "claude_pid": self.claude.warm_pid})

    def _may_steer(self, item: _Queued) -> bool:
        return (
            self.settings.runner.busy_policy == "steer"
            and self.current is not None
            and not self.queue
            and not is_command(item.prompt)
            and not is_command(self.current.prompt)
            and self.claude.warm
        )

    async def _steer(self, item: _Queued) -> None:
        """Write ``item`` into the running turn; it is answered with that turn. If the turn
        is already ending (or ran cold), it queues like any other message."""
        head = self.current
        # True: the running turn has it (a turn cannot end before taking in what it was
        # given), so it is answered with that turn; the run loop waits for this to finish.
        if head is not None and await self.claude.steer(item.prompt):
            log.info("worker.steered", msg_id=item.msg_id, into=head.msg_id)
            self.steered.append(item)
            started = self.started_event
            if started is not None:  # (not _emit: the running turn's own start stays as it is)
                self._send_event(replace(started, msg_id=item.msg_id, steered=True))
            return
        self._enqueue(item)

    def handle_reset(self, message: ipc.Message) -> None:
        """Forget the session: cancel what runs, drop what waits, start fresh next time."""
        self._cancel_current("reset")
        for item in self._drain_queue():
            self._emit(RunFailed(item.msg_id, "cancelled", "The session was reset; send it again."))
        self.session_id = None
        self.tasks.start(self.claude.close_warm("reset"), "close_warm")

    def handle_reload(self, message: ipc.Message) -> None:
        """The supervisor reloaded: run on its new settings from the next run on."""
        try:
            self.settings = settings_from_wire(message["settings"])
        except (IpcError, KeyError) as exc:
            log.error("worker.reload_failed", error=str(exc))
            return
        log.info("worker.reloaded")

    def handle_shutdown(self, message: ipc.Message) -> None:
        grace = float(message.get("grace", 0.0))
        self.tasks.start(self.shutdown(grace), "shutdown")

    def handle_recycle(self, _message: ipc.Message) -> None:
        """The supervisor has an idle worker too many and no spare: this one closes its
        key's ``claude`` and serves as the spare, instead of exiting while another is
        forked (no fork, no exit, none of a new process's page faults). It holds no
        message: the supervisor recycles only workers that hold none."""
        self.tasks.start(self.shutdown(0.0, recycle=True), "recycle")

    # ---- the run loop -------------------------------------------------------------------

    def _drain_queue(self) -> list[_Queued]:
        items = list(self.queue)
        self.queue.clear()
        if self.waiting_grant is not None:
            self.waiting_grant[1].cancel()
        return items

    def _cancel_current(self, reason: str) -> bool:
        if self.current_task is not None and not self.current_task.done():
            self.cancel_reason = reason
            self.current_task.cancel()
            return True
        if self.waiting_grant is not None and self.queue:
            self.cancel_reason = reason
            self.waiting_grant[1].cancel()
            return True
        return False

    async def run_loop(self) -> None:
        """Run queued messages in order, one ``claude`` at a time, each with a granted slot."""
        while not self.stopping:
            if not self.queue:
                self.granted_early.clear()  # (for messages that left the queue unrun)
                self.work_ready.clear()
                await self.work_ready.wait()
                continue
            head = self.queue[0]
            if not await self._wait_for_slot(head):
                continue
            # with coalescing, what piled up while the last run was busy rides along (up to
            # a slash command, which always runs on its own)
            coalesce = self.settings.runner.busy_policy == "coalesce"
            batch = self._coalescible(head) if coalesce else [head]
            for item in batch:
                self.queue.remove(item)
            final = await self._run(batch)
            if steering := self.tasks.named("steer"):  # steers still being written
                await asyncio.wait(steering)
            batch += self.steered
            self.steered = []
            if not self._wait_for_limit_reset(batch, final):
                self._answer(batch, final)

    def _coalescible(self, head: _Queued) -> list[_Queued]:
        """``head`` and the queued messages right behind it, up to the first command. A
        command (``/compact``…) is never merged: joined with other text it would not run
        as a command, yet report that it did."""
        batch = [head]
        if is_command(head.prompt):
            return batch
        for item in list(self.queue)[1:]:
            if is_command(item.prompt):
                break
            batch.append(item)
        return batch

    async def _wait_for_slot(self, head: _Queued) -> bool:
        """Ask the supervisor for a run slot for ``head`` (``acquire``) and wait for its
        ``grant``; False if ``head`` was cancelled (or reset) before it started. The slot is
        the supervisor's again with the message's final event."""
        if head.msg_id in self.granted_early:
            self.granted_early.discard(head.msg_id)
            return True
        grant: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting_grant = (head.msg_id, grant)
        self._send({"type": "acquire", "msg_id": head.msg_id})
        try:
            await grant
        except asyncio.CancelledError:
            if self.stopping or not self.cancel_reason:
                raise
            self.cancel_reason = ""
            if head in self.queue:
                self.queue.remove(head)
                self._emit(RunFailed(head.msg_id, "cancelled", "Stopped before it started."))
            return False
        finally:
            self.waiting_grant = None
        return True

    def _settings_for(self, item: _Queued) -> Settings:
        """The settings, with a job's own model and hard timeout when it names them."""
        settings = self.settings
        if item.model:
            settings = replace(settings, model=item.model)
        if item.timeout_s > 0:
            runner = replace(
                settings.runner,
                hard_timeout_seconds=item.timeout_s,
                idle_timeout_seconds=min(settings.runner.idle_timeout_seconds, item.timeout_s),
            )
            settings = replace(settings, runner=runner)
        return settings

    async def _run(self, batch: list[_Queued]) -> RunDone | RunFailed:
        """One ``claude`` run answering ``batch``: the only place the worker runs Claude.

        The first message carries the run (its msg_id, its reply); the others ("riders",
        with coalescing) see it start and are answered by :meth:`_answer`.
        """
        head, riders = batch[0], batch[1:]
        if riders:
            log.info("worker.coalesced", msg_id=head.msg_id, messages=len(batch))
        prompt = "\n\n".join(item.prompt for item in batch)
        self.current = head
        self.riders = riders
        self.run_started = time.monotonic()
        bind(msg_id=head.msg_id)
        task = asyncio.get_running_loop().create_task(
            self.claude.run(
                self._settings_for(head),
                prompt,
                session_id=self.session_id,
                msg_id=head.msg_id,
                on_event=self._emit,
            )
        )
        self.current_task = task
        await asyncio.wait({task})
        final: RunDone | RunFailed
        if task.cancelled():
            if self.cancel_reason == "shutdown":
                final = RunFailed(
                    head.msg_id,
                    "shutdown",
                    "claudeclaw stopped before Claude finished; send it again.",
                    session_id=self.session_id or "",
                )
            else:
                final = RunFailed(
                    head.msg_id, "cancelled", "Stopped.", session_id=self.session_id or ""
                )
        elif task.exception() is not None:
            exc = task.exception()
            log.error("worker.run_crashed", error=repr(exc), exc_info=exc)
            final = RunFailed(head.msg_id, "error", f"Internal error while running Claude: {exc}")
        else:
            final = task.result()
        if isinstance(final, RunFailed):
            _log_failure(final)
        self.cancel_reason = ""
        self.current_task = None
        self.current = None
        self.riders = []
        self.started_event = None
        if self.claude.warm:
            self._report_warm()  # also its place in the pool's least-recently-used order
        return await self._spill(final)

    async def _spill(self, final: RunDone | RunFailed) -> RunDone | RunFailed:
        """A reply too large for one frame goes to ``replies/<msg_id>.md`` (0600); the
        frame carries its start and the path, and the bot posts the whole as a file."""
        if not isinstance(final, RunDone) or (ipc.json_size(final.reply) <= MAX_INLINE_REPLY_BYTES):
            return final
        path = self.paths.replies_dir / f"{final.msg_id}.md"
        try:
            await asyncio.to_thread(_write_reply, path, final.reply)
        except (OSError, ClaudeclawError) as exc:
            log.error("worker.reply_spill_failed", error=str(exc), chars=len(final.reply))
            return final  # cut to fit by _emit
        log.info("worker.reply_spilled", chars=len(final.reply), path=str(path))
        return replace(final, reply=final.reply[:REPLY_HEAD_CHARS], reply_file=str(path))

    def _answer(self, batch: list[_Queued], final: RunDone | RunFailed) -> None:
        """The final event of each message of the run: the head's own, and for riders (merged
        or steered in) the same outcome (``merged_into`` the head when it succeeded, no reply
        of their own)."""
        head, riders = batch[0], batch[1:]
        self._emit(final)
        for rider in riders:
            if isinstance(final, RunDone):
                self._emit(
                    RunDone(
                        rider.msg_id, reply="", session_id=final.session_id, merged_into=head.msg_id
                    )
                )
            else:
                self._emit(RunFailed(rider.msg_id, final.reason, final.message, final.session_id))

    def _wait_for_limit_reset(self, batch: list[_Queued], final: RunDone | RunFailed) -> bool:
        """A run refused by Claude's usage limit goes back to the head of the queue (with its
        riders) to run when the limit resets, instead of failing (a few times at most). The
        supervisor is told (``limited``): it frees the slot and holds every start until then."""
        head = batch[0]
        if not isinstance(final, RunFailed) or final.reason != "rate_limited":
            return False
        if self.stopping or head.limit_retries >= MAX_LIMIT_RETRIES or _passed(final.retry_at):
            return False
        head.limit_retries += 1
        self.queue.extendleft(reversed(batch))
        self._send({"type": "limited", "msg_id": head.msg_id, "retry_at": final.retry_at})
        return True

    # ---- lifecycle ----------------------------------------------------------------------

    async def shutdown(self, grace: float, *, recycle: bool = False) -> None:
        """Take no more work; let the current run finish within ``grace`` s; then exit, or
        (``recycle``) say ``recycled`` and let :func:`serve` make the process the spare."""
        if self.stopping:
            return
        self.stopping = True
        self.work_ready.set()
        for item in self._drain_queue():
            self._emit(RunFailed(item.msg_id, "shutdown", "claudeclaw is stopping; send it again."))
        task = self.current_task
        if task is not None and not task.done() and self.approvals:
            # waiting on a person, who cannot answer a stopping daemon: interrupted now
            self._end_approvals("Denied: claudeclaw is restarting.")
            self.cancel_reason = "shutdown"
            task.cancel()
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                self.cancel_reason = "shutdown"
                task.cancel()
        await self._run_loop_ended()  # it reports the run's end, then sees `stopping`
        await self.claude.close()
        self.recycled = recycle
        self._send({"type": "recycled"} if recycle else {"type": "bye", "reason": "shutdown"})
        self.channel.flush()
        try:
            await self.channel.writer.drain()
        except ConnectionError:
            pass
        self.finished.set()

    async def _run_loop_ended(self) -> None:
        if self.run_task is not None and self.run_task is not asyncio.current_task():
            await asyncio.wait({self.run_task})

    async def abort(self, why: str, *, farewell: bool = False) -> None:
        """Kill the run (its whole process group) and exit: the supervisor is gone, or
        (``farewell``) this process was told to end (SIGTERM) while the supervisor still
        listens, which is then told ``bye`` so it waits for the exit instead of killing."""
        if self.finished.is_set():
            return
        self.stopping = True
        self.work_ready.set()
        self.queue.clear()
        task = self.current_task
        if task is not None and not task.done():
            self.cancel_reason = "shutdown"
            task.cancel()
        await self._run_loop_ended()
        await self.claude.close()
        log.info("worker.aborted", why=why)
        if farewell:
            self._send({"type": "bye", "reason": "aborted"})
            self.channel.flush()
        self.finished.set()


def _bind_key(key: SessionKey) -> None:
    """Every log line of this worker names its session key (and Discord thread)."""
    bind(session_key=key)
    if key.isdigit():
        bind(thread_id=key)  # (job:<name> keys get job_name from the log processor)


class _HungUp(Exception):
    """The supervisor closed the connection before configuring this worker."""


# What a spare answers while it waits for its key: the pool closing the ``claude`` it
# started ahead (over maxWarmSessions), and ``status`` asking what it holds.
SPARE_FRAMES = frozenset({"close_warm", "ping"})


async def _configured(channel: ipc.Channel, spare: Worker | None = None) -> ipc.Message:
    """The next ``configure`` frame; before it, a ``spare`` handles :data:`SPARE_FRAMES`.
    Anything else is a protocol error."""
    while True:
        message = await channel.recv()
        if message is None:
            raise _HungUp
        if message["type"] == "configure":
            return message
        if spare is None or message["type"] not in SPARE_FRAMES:
            raise IpcError("the first frame must be configure")
        spare.handle(message)


async def serve(paths: ProjectPaths, key: SessionKey | None, socket_path: str) -> int:
    """Connect, say hello, take the ``configure`` frame, then serve the key's queue.

    ``key`` None: a spare, forked ahead of need. Its first ``configure`` (empty key) brings
    the settings, so it parses them and builds its worker while nobody waits; a second one
    names the key it serves (with settings again only if they changed meanwhile)."""
    _wait_for_children_by_pidfd()
    try:
        channel = await ipc.Channel.connect(socket_path)
    except OSError as exc:
        log.error("worker.connect_failed", socket=socket_path, error=str(exc))
        return EXIT_WORKER_BOOT_FAILED
    await channel.send({"type": "hello", "key": key or "", "pid": os.getpid()})
    settings: Settings | None = None
    loop = asyncio.get_running_loop()
    serving: list[Worker] = []  # the worker SIGTERM aborts: one handler for the process
    # (adding one checks valid_signals(), ~50 µs: not again for each key a spare serves)
    loop.add_signal_handler(signal.SIGTERM, _on_sigterm, serving)
    while True:
        worker = await _configure_worker(channel, paths, key, settings, serving)
        if isinstance(worker, int):
            await channel.close()
            return worker
        serving[:] = [worker]
        worker.run_task = loop.create_task(worker.run_loop())
        tasks = [loop.create_task(worker.read_loop()), worker.run_task]
        await worker.finished.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not worker.recycled:
            break
        # a spare again: it waits for its next key, with the settings it has
        await worker.tasks.cancel_all()
        serving.clear()
        unbind("session_key", "thread_id")
        key, settings = None, worker.settings
    await channel.close()
    return EXIT_OK


def _wait_for_children_by_pidfd() -> None:
    """Learn of each ``claude``'s exit from a pidfd on the event loop, as Python 3.12+ does
    by default: 3.11's default watcher starts a thread per child process (its start, its
    blocking ``waitpid`` and the hand-back cost every run's start CPU). Kept where pidfds
    are missing (Linux < 5.3, a seccomp filter)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


def _on_sigterm(serving: list[Worker]) -> None:
    """A worker aborts its runs; a spare between keys dies of it, as without a handler,
    once it has closed the ``claude`` it started ahead (if any)."""
    if serving and serving[0].key:
        serving[0].tasks.start(serving[0].abort("SIGTERM received", farewell=True), "abort")
    elif serving:
        serving[0].tasks.start(_close_then_die(serving[0]), "abort")
    else:
        _die_of_sigterm()


async def _close_then_die(spare: Worker) -> None:
    await spare.claude.close()
    _die_of_sigterm()


def _die_of_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


async def _configure_worker(
    channel: ipc.Channel,
    paths: ProjectPaths,
    key: SessionKey | None,
    settings: Settings | None,
    serving: list[Worker],
) -> Worker | int:
    """The worker its ``configure`` frames describe (a spare's first names no key and the
    next one does); else the exit code: the supervisor hung up first (a spare it no longer
    needs) or sent nonsense (logged). A spare told to ``prestart`` starts a new session's
    ``claude`` while it waits (``runner.prestartClaude``); it is in ``serving`` meanwhile,
    so a SIGTERM closes that ``claude`` before the process dies."""
    worker: Worker | None = None
    try:
        # the supervisor's settings, never settings.json: one truth for every worker
        first = await _configured(channel)
        if "settings" in first or settings is None:
            settings = settings_from_wire(first["settings"])
        worker = Worker(paths, key or SessionKey(""), channel, settings)
        parsed = True
        if key is None and not first.get("key"):  # a spare, configured ahead of its key:
            serving[:] = [worker]
            # the next one names it (and has the settings again only if they changed);
            # one without a key brings reloaded settings
            while not first.get("key"):
                worker.handle_configure(first, parsed=parsed)
                if first.get("prestart"):  # (one started on older settings is replaced)
                    worker.claude.prestart(worker.settings)
                elif worker.claude.warm:
                    worker.tasks.start(worker.claude.close_warm("not wanted ahead"), "close")
                first, parsed = await _configured(channel, worker), False
        if key is None:
            key = worker.key = session_key(str(first["key"]))
            _bind_key(key)
    except (_HungUp, IpcError, ConnectionError, KeyError, ValueError) as exc:
        if worker is not None:
            await worker.claude.close()  # one a spare started ahead
        hung_up = isinstance(exc, _HungUp)
        if hung_up and key is None:
            return EXIT_OK  # a spare the supervisor no longer needs
        error = "the supervisor hung up before configure" if hung_up else str(exc)
        log.error("worker.configure_failed", error=error)
        return EXIT_WORKER_BOOT_FAILED
    worker.handle_configure(first, parsed=parsed)
    return worker


_PARSER: argparse.ArgumentParser | None = None


def build_parser() -> argparse.ArgumentParser:
    """The worker's argument parser, built once: the fork server builds it before forking
    (building one costs ~1.5 ms of a new thread's first message in every forked worker)."""
    global _PARSER
    if _PARSER is None:
        parser = argparse.ArgumentParser(prog="claudeclaw-worker")
        parser.add_argument("--project", required=True)
        parser.add_argument("--key", help="the session key; none: a spare (see configure)")
        parser.add_argument("--socket", required=True)
        parser.add_argument("--log-mode", default="auto")
        parser.add_argument("--log-level", default="info")
        parser.add_argument("--nice", type=int, default=0)
        _PARSER = parser
    return _PARSER


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the supervisor to handle
    # a hung worker gets this signal before it is killed: its stacks go to the log (stderr),
    # written by the interpreter even while the event loop is stuck
    faulthandler.register(ipc.DUMP_STACKS_SIGNAL, file=sys.stderr, all_threads=True, chain=False)
    current = os.nice(0)
    if args.nice > current:
        # under CPU contention the supervisor (Discord heartbeats, progress, control) goes
        # first; claude processes inherit this (a forked worker has it from the fork server)
        os.nice(args.nice - current)
    key = session_key(args.key) if args.key is not None else None
    configure_logging(level=args.log_level, mode=args.log_mode, process="worker")
    bind(worker_pid=os.getpid())
    if key is not None:
        _bind_key(key)
    paths = ProjectPaths.for_project(args.project)
    return asyncio.run(serve(paths, key, args.socket))


if __name__ == "__main__":
    sys.exit(main())
