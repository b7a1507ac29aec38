"""A warm ``claude``: one duplex stream-json process that answers many turns.

``claude -p --input-format stream-json --output-format stream-json --verbose`` reads user
messages and control requests as JSON lines on stdin and stays alive until stdin closes
(docs/CLAUDE_RUNNER.md, "Warm sessions"). One :class:`LiveClaude` owns one such process:

* it starts in its own process group with the same argv and environment rules as a cold run
  (``argv.build_live_argv``, ``argv.build_env``), and is greeted with ``initialize``;
* a turn is one user line; its stream is translated into the usual run events
  (``stream.translate``) and ends at its ``result`` line;
* a user line written while a turn runs (a *steer*) reaches the model at its next step. The
  CLI echoes each user line when a turn takes it in (``--replay-user-messages``); a steer
  that missed the running turn stays queued in the CLI, which only starts it on the next
  stdin line: we poke it with a no-op control request and the turn continues through that
  second ``result``, so the reply answers both;
* ``interrupt`` ends the running turn and keeps the process; not honoured within
  ``INTERRUPT_GRACE_SECONDS``, the group is killed;
* the CLI's own control requests go to a callback: ``can_use_tool`` to the host's
  :data:`CanUseTool` (no callback: deny), anything else is answered with an error, so the
  CLI never waits on us;
* idle and hard timeouts apply per turn; a process that dies, or does not answer a turn at
  all within ``ACK_SECONDS``, ends the turn as :class:`LiveDied` so the caller can resume
  the session cold.

Nothing here decides *whether* to keep a process warm: that is ``session_runner``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claudeclaw import surrogates
from claudeclaw.claude.argv import build_live_argv, is_session_id
from claudeclaw.claude.runner import (
    PIPE_CLOSE_SECONDS,
    CappedText,
    TimeoutKind,
    drain_into,
    read_lines,
    run_to_completion,
    start_claude,
    terminate_group,
    timeout_message,
    wait_exit,
)
from claudeclaw.claude.stream import (
    Garbage,
    ResultMessage,
    StreamState,
    needs_new_session,
    parse_line,
    translate,
    verdict,
)
from claudeclaw.config import Settings
from claudeclaw.logs import context_without
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunStarted

__all__ = [
    "ACK_SECONDS",
    "INTERRUPT_GRACE_SECONDS",
    "Allow",
    "CanUseTool",
    "Deny",
    "LiveClaude",
    "LiveDied",
    "PermissionResult",
]

INTERRUPT_GRACE_SECONDS = 5.0  # interrupt sent; no result by then: kill the group
START_TIMEOUT_SECONDS = 60.0  # spawn to the ``initialize`` answer
ACK_SECONDS = 30.0  # a turn's first stdout line; none by then: the process is hung
FOLLOWUP_SECONDS = 10.0  # poked for a queued steer; no new turn by then: it was not queued
CLOSE_SECONDS = 5.0  # stdin closed; the CLI must exit by then, or its group is ended

NO_APPROVER_MESSAGE = (
    "claudeclaw has no way to ask for permission here, so this tool use is denied. Ask the "
    "operator to allow the tool in settings.json (security.allowedTools) if it is needed."
)


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the tool run; ``updated_input`` replaces its input (None: as requested)."""

    updated_input: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse the tool; Claude gets ``message`` as the tool's error. ``interrupt`` also ends
    the turn."""

    message: str
    interrupt: bool = False


PermissionResult = Allow | Deny
# (tool_name, tool input, the CLI's permission_suggestions) -> the decision
CanUseTool = Callable[[str, dict[str, Any], list[Any]], Awaitable[PermissionResult]]


@dataclass(frozen=True, slots=True)
class LiveDied:
    """The warm process died or hung before the turn's ``result``: nothing was answered,
    so the caller may run the same message again, cold (``--resume``)."""

    detail: str
    stale_session: bool = False  # the resumed session is gone: a cold run resets it


class _Dead(Exception):
    """The process's stdin is closed or its stdout hit EOF."""


@dataclass(slots=True)
class _Turn:
    msg_id: str
    prompt: str
    emit: Callable[[RunEvent], None]
    done: asyncio.Future[None]
    log: Any  # the message's logger (the process outlives the message it was started for)
    state: StreamState = field(default_factory=StreamState)
    # Steers written but not yet echoed (taken in). The prompt is not tracked: the CLI does
    # not echo a slash command (``/compact``), and only steers can be left queued.
    unechoed: deque[str] = field(default_factory=deque)
    prompt_echoed: bool = False
    replies: list[str] = field(default_factory=list)  # results before a steered follow-up
    before_followup: StreamState | None = None  # the state at the result that was poked
    followup_since: float = 0.0  # when poked; 0: not waiting for a follow-up turn
    rethink: asyncio.Event = field(default_factory=asyncio.Event)  # a new deadline (poked)
    last_output: float = field(default_factory=time.monotonic)
    acked: asyncio.Event = field(default_factory=asyncio.Event)  # the turn's first line
    interrupted: bool = False  # by the caller (stop)
    timed_out: TimeoutKind = ""


def _now_utc() -> datetime:
    return datetime.now(UTC)


class LiveClaude:
    """One warm duplex ``claude`` process. Use :meth:`start`, then :meth:`run_turn` one turn
    at a time; :meth:`steer` and :meth:`interrupt` act on the running turn; :meth:`close`."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        settings: Settings,
        *,
        session_id: str,
        can_use_tool: CanUseTool | None,
        log: Any,
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.settings = settings
        self.session_id = session_id  # the resumed one; then what system/init says
        self.resumed = bool(session_id)
        self.can_use_tool = can_use_tool
        self.process_log = log  # between turns; a turn logs with its message's (_log)
        self.stderr = CappedText()
        self.turns = 0
        self.broken = ""  # why this process must not take another turn
        self.frozen = False  # SIGSTOPped between turns (see freeze)
        self._cost_seen = 0.0  # result.total_cost_usd is cumulative over the process
        self._turn: _Turn | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._answering: dict[str, asyncio.Task[None]] = {}
        self._write_lock = asyncio.Lock()
        self._eof = asyncio.Event()
        # they outlive the message this process was started for: not in its log context
        context = context_without("msg_id")
        self._reader = asyncio.create_task(
            self._read_stdout(), name=f"claude-live-{proc.pid}", context=context
        )
        self._drainer = asyncio.create_task(
            drain_into(proc.stderr, self.stderr), name=f"claude-err-{proc.pid}", context=context
        )

    # ---- start / state ------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        session_id: str | None,
        cwd: Path,
        env: Mapping[str, str],
        log: Any,
        process_log: Any,
        can_use_tool: CanUseTool | None = None,
        scope: Path | None = None,
    ) -> LiveClaude | str:
        """Spawn and greet a warm ``claude`` (resuming ``session_id``); a message if that
        failed (the caller falls back to a cold run, which reports it properly). ``log``:
        the logger of the message it is started for; ``process_log``: the one for what it
        logs between turns (each turn is given its message's)."""
        resume = session_id if is_session_id(session_id) else None
        argv = build_live_argv(
            settings, resume, cwd=cwd, scope=scope, permission_prompts=can_use_tool is not None
        )
        proc = await start_claude(argv, cwd, dict(env), duplex=True)
        if isinstance(proc, str):
            return proc
        live = cls(
            proc,
            settings,
            session_id=resume or "",
            can_use_tool=can_use_tool,
            log=process_log,
        )
        try:
            await asyncio.wait_for(live.control({"subtype": "initialize"}), START_TIMEOUT_SECONDS)
        except (TimeoutError, _Dead, RuntimeError) as err:
            await live.close("it did not answer initialize")
            detail = live.stderr.text().strip()[-500:] or repr(err)
            return f"the warm claude did not start: {detail}"
        except asyncio.CancelledError:  # (a spare's start, cut short by a shutdown)
            await run_to_completion(live.kill())
            raise
        log.info("claude.live_started", pid=proc.pid, resumed=bool(resume), session_id=resume)
        return live

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self._eof.is_set() and not self.broken

    @property
    def busy(self) -> bool:
        return self._turn is not None

    # ---- writing ------------------------------------------------------------------------

    async def _write(self, obj: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing() or self._eof.is_set():
            raise _Dead("stdin closed")
        # ASCII escapes: any str can be written, a lone surrogate too (claude reads JSON)
        data = (json.dumps(obj) + "\n").encode("ascii")
        async with self._write_lock:
            try:
                stdin.write(data)
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError) as err:
                raise _Dead(repr(err)) from err

    async def _write_user(self, text: str) -> None:
        # half a surrogate pair is sent as U+FFFD: the model's API takes only whole characters
        content = surrogates.mend_text(text)
        await self._write({"type": "user", "message": {"role": "user", "content": content}})

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one control request; its ``response`` payload. ``RuntimeError`` when the
        CLI answers with an error, ``_Dead`` when the process goes away first."""
        request_id = "cc-" + uuid.uuid4().hex[:16]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._write(
                {"type": "control_request", "request_id": request_id, "request": request}
            )
            return await future
        finally:
            self._pending.pop(request_id, None)

    def _poke(self) -> None:
        """Any stdin line makes the CLI start a queued user message: send a harmless one
        (an unknown control request, answered with an error we ignore)."""
        task = asyncio.get_running_loop().create_task(self._quiet_control({"subtype": "noop"}))
        self._answering[f"poke-{id(task)}"] = task
        task.add_done_callback(lambda t: self._answering.pop(f"poke-{id(t)}", None))

    async def _quiet_control(self, request: dict[str, Any]) -> None:
        with contextlib.suppress(_Dead, RuntimeError):
            await self.control(request)

    # ---- reading ------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        try:
            await read_lines(stream, self._on_line, self._line_too_long)
        finally:
            self._eof.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(_Dead("claude exited"))
            turn = self._turn
            if turn is not None and not turn.done.done():
                turn.done.set_result(None)

    def _log(self) -> Any:
        """The logger for what happens now: the running turn's until its ``result`` was
        read (``run_turn`` may not have returned yet), else the process's."""
        turn = self._turn
        return turn.log if turn is not None and not turn.done.done() else self.process_log

    def _line_too_long(self, length: int) -> None:
        self._log().warning("claude.line_too_long", length=length)

    def _on_line(self, line: bytes) -> None:
        turn = self._turn
        if turn is not None:
            turn.last_output = time.monotonic()
            turn.acked.set()
        head = line[:48]
        if b'"control_' in head or b'"user"' in head:
            try:
                data = surrogates.loads(line)
            except ValueError:
                data = None
            if isinstance(data, dict):
                kind = data.get("type")
                if kind == "control_response":
                    self._on_control_response(data.get("response"))
                    return
                if kind == "control_request":
                    self._on_control_request(data)
                    return
                if kind == "control_cancel_request":
                    task = self._answering.get(str(data.get("request_id")))
                    if task is not None:
                        task.cancel()
                    return
                if kind == "user" and turn is not None:
                    self._on_user_echo(turn, data)
        message = parse_line(line)
        if message is None:
            return
        if turn is not None:
            turn.followup_since = 0.0  # the CLI started the follow-up turn
        if isinstance(message, Garbage):
            self._log().warning("claude.garbage_line", length=message.length)
        if turn is None:
            return  # between turns: nothing to report to (the CLI says little there)
        for event in translate(message, turn.state, turn.msg_id):
            turn.emit(event)
        if turn.state.session_id:
            self.session_id = turn.state.session_id
        if isinstance(message, ResultMessage):
            self._on_result(turn, message)

    def _on_user_echo(self, turn: _Turn, data: dict[str, Any]) -> None:
        """A user line the turn took in (ours, echoed), or a tool result (not ours)."""
        message = data.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
                return
            content = "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        if not isinstance(content, str):
            return
        if not turn.prompt_echoed and content == turn.prompt:
            turn.prompt_echoed = True
        elif content in turn.unechoed:
            turn.unechoed.remove(content)

    def _on_result(self, turn: _Turn, result: ResultMessage) -> None:
        if turn.unechoed and not turn.interrupted and not turn.timed_out and not result.is_error:
            # A steer came too late for this turn: the CLI holds it as the next turn, which
            # starts on the next stdin line. Answer it as part of this one.
            turn.replies.append(result.result or "")
            turn.before_followup = turn.state
            turn.state = dataclasses.replace(
                StreamState(), session_id=turn.state.session_id, session_announced=True
            )
            turn.followup_since = time.monotonic()
            turn.rethink.set()  # the supervisor is asleep until the idle deadline
            self._log().info("claude.live_steer_followup", pid=self.pid, queued=len(turn.unechoed))
            self._poke()
            return
        if not turn.done.done():
            turn.done.set_result(None)

    def _on_control_response(self, response: Any) -> None:
        if not isinstance(response, dict):
            return
        future = self._pending.get(str(response.get("request_id")))
        if future is None or future.done():
            return
        if response.get("subtype") == "success":
            payload = response.get("response")
            future.set_result(payload if isinstance(payload, dict) else {})
        else:
            future.set_exception(RuntimeError(str(response.get("error") or "error")))

    def _on_control_request(self, data: dict[str, Any]) -> None:
        request_id = str(data.get("request_id") or "")
        request = data.get("request")
        task = asyncio.get_running_loop().create_task(
            self._answer(request_id, request if isinstance(request, dict) else {})
        )
        self._answering[request_id] = task
        task.add_done_callback(lambda _t: self._answering.pop(request_id, None))

    async def _answer(self, request_id: str, request: dict[str, Any]) -> None:
        """Answer one control request of the CLI; never leave it waiting."""
        subtype = str(request.get("subtype") or "")
        try:
            if subtype == "can_use_tool":
                payload = await self._decide(request)
                response: dict[str, Any] = {
                    "subtype": "success",
                    "request_id": request_id,
                    "response": payload,
                }
            else:
                self._log().warning("claude.control_request_unsupported", subtype=subtype[:40])
                response = {
                    "subtype": "error",
                    "request_id": request_id,
                    "error": f"Unsupported control request subtype: {subtype}",
                }
            await self._write({"type": "control_response", "response": response})
        except _Dead:
            pass
        finally:
            if self._turn is not None:  # the wait for an answer is not the CLI being idle
                self._turn.last_output = time.monotonic()

    async def _decide(self, request: dict[str, Any]) -> dict[str, Any]:
        tool = str(request.get("tool_name") or "")
        tool_input = request.get("input")
        tool_input = tool_input if isinstance(tool_input, dict) else {}
        suggestions = request.get("permission_suggestions")
        decision: PermissionResult = Deny(NO_APPROVER_MESSAGE)
        if self.can_use_tool is not None:
            try:
                decision = await self.can_use_tool(
                    tool, tool_input, suggestions if isinstance(suggestions, list) else []
                )
            except Exception as err:  # fail closed
                self._log().error("claude.can_use_tool_failed", tool=tool, error=repr(err))
                decision = Deny(f"claudeclaw could not ask for permission ({err}); denied.")
        self._log().info("claude.permission", tool=tool, allowed=isinstance(decision, Allow))
        if isinstance(decision, Allow):
            updated = decision.updated_input if decision.updated_input is not None else tool_input
            return {"behavior": "allow", "updatedInput": updated}
        payload: dict[str, Any] = {"behavior": "deny", "message": decision.message}
        if decision.interrupt:
            payload["interrupt"] = True
        return payload

    # ---- a turn -------------------------------------------------------------------------

    async def run_turn(
        self,
        prompt: str,
        *,
        msg_id: str,
        run_id: str,
        emit: Callable[[RunEvent], None],
        log: Any,
    ) -> RunDone | RunFailed | LiveDied:
        """One user message through to its ``result`` (or death, timeout, interrupt);
        ``log``: the message's logger, for what is logged during the turn (the process
        outlives the message it was started for)."""
        if self._turn is not None:
            raise RuntimeError("a turn is already running")
        loop = asyncio.get_running_loop()
        turn = _Turn(msg_id=msg_id, prompt=prompt, emit=emit, done=loop.create_future(), log=log)
        self._turn = turn
        started = time.monotonic()
        hard_deadline = started + self.settings.runner.hard_timeout_seconds
        emit(
            RunStarted(
                msg_id=msg_id,
                run_id=run_id,
                pid=self.pid,
                resumed=self.resumed or self.turns > 0,
            )
        )
        try:
            try:
                await self._write_user(prompt)
            except _Dead as err:
                return LiveDied(f"the warm claude is gone ({err})")
            await self._supervise(turn, hard_deadline)
            return await self._judge(turn)
        except BaseException:
            # Cancelled (shutdown) or a bug: this process is in an unknown state; end it.
            self.broken = "cancelled"
            await run_to_completion(self.kill())
            raise
        finally:
            self._turn = None
            self.turns += 1
            log.info(
                "claude.live_turn",
                pid=self.pid,
                turn=self.turns,
                duration_ms=int((time.monotonic() - started) * 1000),
                session_id=self.session_id,
            )

    async def _supervise(self, turn: _Turn, hard_deadline: float) -> None:
        idle = self.settings.runner.idle_timeout_seconds
        while not turn.done.done():
            turn.rethink.clear()
            now = time.monotonic()
            limit = idle if turn.acked.is_set() else min(idle, ACK_SECONDS)
            if self._answering:
                limit = max(limit, now - turn.last_output + 1.0)  # a prompt waits on a human
            deadline = min(turn.last_output + limit, hard_deadline)
            if turn.followup_since:
                if now >= turn.followup_since + FOLLOWUP_SECONDS:
                    # The steer was not queued after all (its echo was missed): the turn
                    # ended at the result that was poked.
                    turn.log.warning("claude.live_no_followup", pid=self.pid)
                    assert turn.before_followup is not None
                    turn.state, turn.unechoed = turn.before_followup, deque()
                    turn.replies.pop()
                    return
                deadline = min(deadline, turn.followup_since + FOLLOWUP_SECONDS)
            if now >= deadline:
                if not turn.acked.is_set() and now < hard_deadline and limit < idle:
                    turn.log.warning("claude.live_hung", pid=self.pid, waited_s=limit)
                    self.broken = "hung"
                    await self.kill()
                    return
                turn.timed_out = "hard" if now >= hard_deadline else "idle"
                turn.log.warning("claude.timed_out", kind=turn.timed_out, pgid=self.pid)
                await self._interrupt_turn(turn)
                return
            rethink = asyncio.ensure_future(turn.rethink.wait())
            either: set[asyncio.Future[Any]] = {turn.done, rethink}
            try:
                await asyncio.wait(
                    either, timeout=deadline - now, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                rethink.cancel()

    async def _judge(self, turn: _Turn) -> RunDone | RunFailed | LiveDied:
        state = turn.state
        result = state.result
        session_id = state.session_id or self.session_id
        if turn.timed_out:
            return RunFailed(
                msg_id=turn.msg_id,
                reason="timeout",
                message=timeout_message(self.settings, turn.timed_out),
                session_id=session_id,
            )
        if turn.interrupted:
            return RunFailed(turn.msg_id, "cancelled", "Stopped.", session_id=session_id)
        if result is None:  # the stdout hit EOF (done is only set by a result or EOF)
            self.broken = "died"
            await self.kill()
            rc = self.proc.returncode
            detail = self.stderr.text().strip()[-500:] or f"claude exited (rc {rc}) mid-turn"
            return LiveDied(detail)
        if result.is_error and needs_new_session(state, 1, self.stderr.text()):
            self.broken = "stale session"
            return LiveDied(result.result or "stale session", stale_session=True)
        final = verdict(
            state,
            0,
            "",
            msg_id=turn.msg_id,
            now=_now_utc(),
            default_tz=self.settings.timezone or "UTC",
        )
        cost = max(0.0, result.total_cost_usd - self._cost_seen)
        self._cost_seen = max(self._cost_seen, result.total_cost_usd)
        if isinstance(final, RunDone):
            reply = "\n\n".join([*(r for r in turn.replies if r.strip()), final.reply])
            final = dataclasses.replace(final, reply=reply, cost_usd=cost)
        return final

    # ---- steer / interrupt / close ------------------------------------------------------

    async def steer(self, text: str) -> bool:
        """Write ``text`` into the running turn; False when no turn runs (or it is ending)."""
        turn = self._turn
        if turn is None or turn.done.done() or turn.interrupted or turn.timed_out:
            return False
        turn.unechoed.append(text)
        try:
            await self._write_user(text)
        except _Dead:
            turn.unechoed.pop()
            return False
        self._log().info("claude.live_steered", pid=self.pid, chars=len(text))
        return True

    async def interrupt(self) -> bool:
        """End the running turn (it reports "Stopped."); the process stays warm unless the
        CLI ignores the interrupt for ``INTERRUPT_GRACE_SECONDS``. False: nothing ran."""
        turn = self._turn
        if turn is None or turn.done.done():
            return False
        turn.interrupted = True
        await self._interrupt_turn(turn)
        return True

    async def _interrupt_turn(self, turn: _Turn) -> None:
        deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        try:
            # The CLI never answers an interrupt that arrives before it started the turn
            # (checked with 2.1.330): wait for the turn's first line (system/init) first.
            await asyncio.wait_for(turn.acked.wait(), INTERRUPT_GRACE_SECONDS)
            response = await asyncio.wait_for(
                self.control({"subtype": "interrupt"}), max(0.0, deadline - time.monotonic())
            )
            if response.get("still_queued"):
                self.broken = "queued input after interrupt"
            await asyncio.wait_for(asyncio.shield(turn.done), max(0.0, deadline - time.monotonic()))
            turn.unechoed.clear()
        except (TimeoutError, _Dead, RuntimeError) as err:
            turn.log.warning("claude.interrupt_ignored", pid=self.pid, error=repr(err))
            self.broken = "interrupt ignored"
            await self.kill()

    def freeze(self) -> bool:
        """Stop the idle CLI (SIGSTOP to it alone): between turns it still polls its config
        file and memory every second (~0.4 s of CPU a minute). Only call it when the CLI
        has no child processes (a background tool must keep running). True if frozen."""
        if self.frozen or self.busy or not self.alive:
            return False
        try:
            os.kill(self.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return False
        self.frozen = True
        return True

    def thaw(self) -> None:
        """Let a frozen CLI run again (before writing to it or ending it)."""
        if self.frozen:
            self.frozen = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    async def kill(self) -> None:
        """End the whole process group now (SIGTERM, grace, SIGKILL) and reap it."""
        self.thaw()  # a stopped process would hold SIGTERM until the grace ran out
        await terminate_group(self.proc, self.settings.runner.kill_grace_seconds, self._log())
        await self._settle()

    async def close(self, why: str) -> None:
        """Close stdin (the CLI exits at end of input), then make sure the group is gone;
        one ``claude.live_closed`` line says why and how it ended."""
        self.thaw()
        if self.proc.returncode is None:
            stdin = self.proc.stdin
            if stdin is not None and not stdin.is_closing():
                stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait_exit(self.proc), CLOSE_SECONDS)
        await self.kill()  # also after a clean exit: no tool child may outlive it
        self._log().info("claude.live_closed", pid=self.pid, why=why, rc=self.proc.returncode)

    async def _settle(self) -> None:
        readers = {self._reader, self._drainer}
        _done, pending = await asyncio.wait(readers, timeout=PIPE_CLOSE_SECONDS)
        for task in pending:
            task.cancel()
        for task in list(self._answering.values()):
            task.cancel()
        await asyncio.gather(*readers, *self._answering.values(), return_exceptions=True)
