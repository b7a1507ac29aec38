"""One ``claude`` run: spawn in its own process group, stream its events, judge the result.

The child runs with ``start_new_session=True``, so it leads a process group that holds every
tool it starts (Bash, MCP servers, their children). Whatever ends the run (exit, idle or
hard timeout, cancellation of the awaiting task), the group is emptied before we return:
SIGTERM, ``kill_grace_seconds``, SIGKILL, and the leader is always reaped. stdout and
stderr are drained concurrently (a chatty stderr must never stall the child).

Recovery (as upstream): a resumed run that fails with ``No conversation found with session
ID`` or ``Invalid signature in thinking block`` is run once more as a new session and the
result carries ``context_reset=True``. A run the API refused with a plain 429 (or 529)
after the CLI's own retries is tried again after ``API_RETRY_DELAYS`` (within the hard
timeout, and only if no tool ran yet): that is this run's business alone, unlike Claude's
usage limit, which pauses every run (the pool's job).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from claudeclaw import surrogates
from claudeclaw.agent import (
    AGENT_UMASK,
    agent_account,
    agent_argv,
    agent_env,
    share_transcript,
)
from claudeclaw.claude import transcript_path
from claudeclaw.claude.argv import build_argv, build_env, is_session_id, prompt_via_stdin
from claudeclaw.claude.stream import (
    Garbage,
    StreamState,
    is_api_throttled,
    needs_new_session,
    parse_line,
    translate,
    verdict,
)
from claudeclaw.config import Settings
from claudeclaw.errors import StateError
from claudeclaw.logs import get_logger
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunStarted
from claudeclaw.procs import stat_fields
from claudeclaw.tasks import TaskSet

__all__ = ["run_claude", "terminate_group"]

READ_CHUNK = 64 * 1024
MAX_LINE_BYTES = 32 * 1024 * 1024  # a longer stdout line is dropped as garbage
STDERR_KEEP_BYTES = 64 * 1024  # first and last 32 KiB of stderr are kept
EXIT_LINGER_SECONDS = 2.0  # claude exited but its pipe stays open (a leftover child holds it)
PIPE_CLOSE_SECONDS = 2.0  # after the group is dead, the pipes must hit EOF within this
GROUP_POLL_SECONDS = 0.05
REAP_POLL_SECONDS = 0.005

API_RETRY_DELAYS: tuple[float, ...] = (30.0, 120.0)  # after an API 429/529, then again

TimeoutKind = Literal["", "idle", "hard"]


async def read_lines(
    stream: asyncio.StreamReader,
    on_line: Callable[[bytes], None],
    on_too_long: Callable[[int], None],
    on_chunk: Callable[[], None] | None = None,
) -> None:
    """Hand each stdout line (without its newline) to ``on_line`` until EOF. A line longer
    than ``MAX_LINE_BYTES`` is not buffered without bound: it is dropped and ``on_too_long``
    gets the length of its tail. ``on_chunk`` hears of every read (output is flowing)."""
    buf = bytearray()
    discarding = False  # inside an over-long line: skip to its end
    while chunk := await stream.read(READ_CHUNK):
        if on_chunk is not None:
            on_chunk()
        search_from = len(buf)
        buf += chunk
        while (end := buf.find(b"\n", search_from)) >= 0:
            if discarding:
                discarding = False
                on_too_long(end)
            else:
                on_line(bytes(buf[:end]))
            del buf[: end + 1]
            search_from = 0
        if len(buf) > MAX_LINE_BYTES:
            discarding = True
            buf.clear()
    if buf and not discarding:
        on_line(bytes(buf))


async def drain_into(stream: asyncio.StreamReader | None, sink: CappedText) -> None:
    """Read ``stream`` (a child's stderr) to EOF into ``sink``: a chatty stderr that nobody
    reads would fill its pipe and stall the child."""
    assert stream is not None
    while chunk := await stream.read(READ_CHUNK):
        sink.add(chunk)


def _now_utc() -> datetime:
    return datetime.now(UTC)


class CappedText:
    """Keeps the first and last ``limit / 2`` bytes of a stream; counts the rest."""

    def __init__(self, limit: int = STDERR_KEEP_BYTES) -> None:
        self._half = limit // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._half - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > self._half:
                del self._tail[: len(self._tail) - self._half]

    def text(self) -> str:
        dropped = self.total - len(self._head) - len(self._tail)
        middle = f"\n[... {dropped} bytes of stderr dropped ...]\n".encode() if dropped else b""
        return (bytes(self._head) + middle + bytes(self._tail)).decode("utf-8", "replace")


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal the whole group; False when it has no member left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a member changed uid; nothing we may do
        return False
    return True


def _group_has_live_members(pgid: int) -> bool:
    """Any member of ``pgid`` that is not a zombie? (/proc scan; blocking, use a thread.)

    Zombies count for ``killpg(pgid, 0)``, and a grandchild orphaned by the kill is reaped
    by whoever adopts it (PID 1 or a subreaper), possibly late: not ours to wait for.
    """
    if not _signal_group(pgid, 0):
        return False
    if agent_account() is not None:
        # the agent's processes are invisible to us in /proc (ProtectProc=invisible): a
        # group that still answers is taken as alive (zombies only cost the grace period)
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - no procfs: trust killpg
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = stat_fields(entry)  # state, ppid, pgrp, …
        if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def wait_exit(proc: asyncio.subprocess.Process) -> None:
    """Until the process has exited and been reaped (``returncode`` set).

    Unlike ``proc.wait()`` this does not also wait for the pipes to close, which a leftover
    child may hold open. A Linux pidfd says when the process exits; the child watcher then
    reaps it and sets ``returncode`` a moment later (from its thread), hence the short poll.
    """
    if proc.returncode is not None:
        return
    with contextlib.suppress(AttributeError, OSError):  # no pidfd, or already reaped
        fd = os.pidfd_open(proc.pid)
        loop = asyncio.get_running_loop()
        exited = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    while proc.returncode is None:  # noqa: ASYNC110 - nothing to wait on but the watcher
        await asyncio.sleep(REAP_POLL_SECONDS)


async def terminate_group(proc: asyncio.subprocess.Process, grace: float, log: Any) -> None:
    """SIGTERM ``proc``'s process group (it leads it), wait ``grace`` s, SIGKILL what is
    left; reap the leader. Shared by cold runs and warm duplex processes (``live``)."""
    pgid = proc.pid
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while proc.returncode is None or await asyncio.to_thread(_group_has_live_members, pgid):
            if time.monotonic() >= deadline:
                if _signal_group(pgid, signal.SIGKILL):
                    log.warning("claude.group_killed", pgid=pgid, grace_s=grace)
                break
            await asyncio.sleep(GROUP_POLL_SECONDS)
    await wait_exit(proc)


async def run_to_completion(awaitable: Awaitable[Any]) -> None:
    """Await ``awaitable`` to the end even if we are cancelled meanwhile (cleanup code)."""
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    task.result()


class _Attempt:
    """One ``claude`` process from spawn to reaped, plus what its output said."""

    def __init__(
        self,
        *,
        settings: Settings,
        proc: asyncio.subprocess.Process,
        run_id: str,
        msg_id: str,
        emit: Callable[[RunEvent], None],
        hard_deadline: float,
        log: Any,
    ) -> None:
        self.settings = settings
        self.proc = proc
        self.pgid = proc.pid  # start_new_session: the leader's pid is the group id
        self.run_id = run_id
        self.msg_id = msg_id
        self.emit = emit
        self.hard_deadline = hard_deadline
        self.log = log
        self.state = StreamState()
        self.stderr = CappedText()
        self.last_output = time.monotonic()
        self.timed_out: TimeoutKind = ""

    # -- output ----------------------------------------------------------------------------

    def _handle_line(self, line: bytes) -> None:
        message = parse_line(line)
        if message is None:
            return
        if isinstance(message, Garbage):
            self.log.warning("claude.garbage_line", length=message.length)
        for event in translate(message, self.state, self.msg_id):
            self.emit(event)

    async def _pump_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        await read_lines(stream, self._handle_line, self._line_too_long, self._saw_output)

    def _saw_output(self) -> None:
        self.last_output = time.monotonic()

    def _line_too_long(self, length: int) -> None:
        self.state.feed(Garbage(length))
        self.log.warning("claude.line_too_long", length=length)

    # -- lifetime --------------------------------------------------------------------------

    async def terminate_group(self) -> None:
        """SIGTERM the group, wait ``kill_grace_seconds``, SIGKILL what is left; reap."""
        await terminate_group(self.proc, self.settings.runner.kill_grace_seconds, self.log)

    async def supervise(self) -> None:
        """Read until EOF and exit, enforcing the idle and hard timeouts; empty the group."""
        idle = self.settings.runner.idle_timeout_seconds
        pump = asyncio.create_task(self._pump_stdout(), name=f"claude-stdout-{self.run_id}")
        drain = asyncio.create_task(
            drain_into(self.proc.stderr, self.stderr), name=f"claude-stderr-{self.run_id}"
        )
        waiter = asyncio.create_task(wait_exit(self.proc), name=f"claude-wait-{self.run_id}")
        try:
            exited_at: float | None = None
            while not (pump.done() and waiter.done()):
                now = time.monotonic()
                if waiter.done() and exited_at is None:
                    exited_at = now
                deadline = min(self.last_output + idle, self.hard_deadline)
                if exited_at is not None:
                    deadline = min(deadline, exited_at + EXIT_LINGER_SECONDS)
                if now >= deadline:
                    if exited_at is None:
                        self.timed_out = "hard" if now >= self.hard_deadline else "idle"
                    break  # else: exited, but a leftover child holds the pipe open
                pending = {t for t in (pump, waiter) if not t.done()}
                await asyncio.wait(
                    pending, timeout=deadline - now, return_when=asyncio.FIRST_COMPLETED
                )
            if self.timed_out:
                self.log.warning("claude.timed_out", kind=self.timed_out, pgid=self.pgid)
            # Also after a normal exit: no child of this run may outlive it.
            await self.terminate_group()
            await self._settle(pump, drain)
        finally:
            for task in (pump, drain, waiter):
                if not task.done():
                    task.cancel()
            await asyncio.gather(pump, drain, waiter, return_exceptions=True)

    async def _settle(self, *readers: asyncio.Task[None]) -> None:
        """The group is dead, so the pipes hit EOF now, unless a process that left the group
        (setsid) still holds them: give up on those after a moment."""
        _done, pending = await asyncio.wait(readers, timeout=PIPE_CLOSE_SECONDS)
        if pending:
            self.log.warning("claude.pipe_held_open", pgid=self.pgid)
        for task in readers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.log.warning("claude.read_failed", error=repr(task.exception()))


async def start_claude(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    stdin_text: str | None = None,
    *,
    duplex: bool = False,
) -> asyncio.subprocess.Process | str:
    """Start ``claude``; a user-facing message instead when it cannot be started.

    ``stdin_text`` (a prompt too large for argv) is written to its stdin in the background
    and the pipe closed; otherwise stdin is /dev/null (an open empty pipe makes the CLI wait),
    unless ``duplex``: then stdin stays an open pipe for the caller (``live``).
    """
    claude = argv[0]
    if not cwd.is_dir():  # noqa: ASYNC240 - one stat, cheaper than a thread hop
        return f"the working directory {cwd} does not exist"
    try:
        # two-user mode: run as the agent account, without our capabilities (agent.py)
        account = agent_account()
        if account is not None:  # setpriv would start; a missing claude must still say so
            found = shutil.which(claude, path=env.get("PATH", os.defpath))
            if found is None:
                raise FileNotFoundError(claude)
            argv, env = agent_argv([found, *argv[1:]], account), agent_env(env, account, cwd)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE
            if stdin_text is not None or duplex
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            umask=AGENT_UMASK if account is not None else -1,
        )
    except FileNotFoundError:
        return (
            f"claude executable not found at {claude}: install @anthropic-ai/claude-code "
            "or set runner.claudePath"
        )
    except PermissionError:
        return f"claude at {claude} cannot be executed (permission denied): check runner.claudePath"
    except StateError as err:
        return str(err)
    except OSError as err:
        return f"claude at {claude} could not be started: {err.strerror or err}"
    if stdin_text is not None and proc.stdin is not None:
        _feed_tasks.start(_feed(proc, stdin_text), "feed")
    return proc


_feed_tasks = TaskSet("claude-stdin")  # prompts too long for argv, being written


async def _feed(proc: asyncio.subprocess.Process, text: str) -> None:
    """Write the prompt to claude's stdin and close it (it reads until end of input)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(text.encode("utf-8"))
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # claude exited early; its output says why
    finally:
        proc.stdin.close()


def timeout_message(settings: Settings, kind: TimeoutKind) -> str:
    if kind == "idle":
        return (
            f"Claude produced no output for {settings.runner.idle_timeout_seconds:g} s and was "
            "stopped. Try again, or ask for a smaller step."
        )
    return (
        f"Claude was still working after {settings.runner.hard_timeout_seconds:g} s, the limit "
        "for one run, and was stopped. Try again, or ask for a smaller step."
    )


async def run_claude(
    settings: Settings,
    prompt: str,
    *,
    session_id: str | None,
    msg_id: str,
    cwd: Path,
    on_event: Callable[[RunEvent], None],
    env: Mapping[str, str] | None = None,
    scope: Path | None = None,
) -> RunDone | RunFailed:
    """Run ``claude`` once for ``prompt`` (resuming ``session_id`` if given) in ``cwd``.
    ``scope``: the directory Claude is told to stay in (default ``cwd``; a thread's
    worktree is scoped to its project).

    Emits ``RunStarted``, ``RunSession`` (as soon as ``system/init`` names the session) and
    ``RunProgress`` through ``on_event`` and returns the final ``RunDone`` or ``RunFailed``.
    A dead resumed session is retried once as a new one (a second ``RunStarted`` and
    ``RunSession`` follow; ``RunDone.context_reset`` is True). Cancelling the awaiting task
    kills the process group, then re-raises ``CancelledError``.
    """
    run_id = uuid.uuid4().hex[:12]
    log = get_logger(run_id=run_id, msg_id=msg_id)

    def emit(event: RunEvent) -> None:
        try:
            on_event(event)
        except Exception as err:  # a broken listener must not leave a run behind
            log.error("claude.on_event_failed", event_kind=event.kind, error=repr(err))

    resume: str | None = session_id if is_session_id(session_id) else None
    if session_id and resume is None:
        log.warning("claude.session_id_invalid", session_id=session_id[:80])
    child_env = build_env(os.environ if env is None else env, settings)
    hard_deadline = time.monotonic() + settings.runner.hard_timeout_seconds
    context_reset = False
    throttled = 0
    # neither a NUL nor half a surrogate pair can pass through argv (or stdin text)
    prompt = surrogates.mend_text(prompt.replace("\x00", ""))

    while True:
        outcome = await _run_attempt(
            settings,
            prompt,
            resume=resume,
            run_id=run_id,
            msg_id=msg_id,
            cwd=cwd,
            scope=scope,
            env=child_env,
            emit=emit,
            hard_deadline=hard_deadline,
            log=log,
        )
        if isinstance(outcome, _Attempt):
            if resume and needs_new_session(
                outcome.state, outcome.proc.returncode, outcome.stderr.text()
            ):
                log.warning("claude.session_reset", session_id=resume)
                resume, context_reset = None, True
                continue
            if (
                is_api_throttled(outcome.state)
                and outcome.state.tools_used == 0  # nothing acted yet: safe to ask again
                and throttled < len(API_RETRY_DELAYS)
                and time.monotonic() + API_RETRY_DELAYS[throttled] < hard_deadline
            ):
                delay = API_RETRY_DELAYS[throttled]
                throttled += 1
                log.warning(
                    "claude.api_throttled",
                    status=outcome.state.result.api_error_status if outcome.state.result else 0,
                    retry_in_s=delay,
                    attempt=throttled,
                )
                await asyncio.sleep(delay)
                continue
            final = _judge(settings, outcome, msg_id)
        else:
            final = outcome
        if context_reset and isinstance(final, RunDone):
            final = dataclasses.replace(final, context_reset=True)
        await share_transcript_if_agent(cwd, final.session_id)
        return final


async def share_transcript_if_agent(cwd: Path, session_id: str) -> None:
    """In two-user mode, make the session's transcript readable by the daemon
    (``/context``); the CLI writes it 0600 as the agent. Nothing in one-user mode."""
    account = agent_account()
    if account is not None and is_session_id(session_id):
        transcript = transcript_path(cwd, session_id, agent_env({}, account, cwd))
        await share_transcript(transcript, account)


def _judge(settings: Settings, attempt: _Attempt, msg_id: str) -> RunDone | RunFailed:
    if attempt.timed_out:
        return RunFailed(
            msg_id=msg_id,
            reason="timeout",
            message=timeout_message(settings, attempt.timed_out),
            session_id=attempt.state.session_id,
        )
    return verdict(
        attempt.state,
        attempt.proc.returncode,
        attempt.stderr.text(),
        msg_id=msg_id,
        now=_now_utc(),
        default_tz=settings.timezone or "UTC",
    )


async def _run_attempt(
    settings: Settings,
    prompt: str,
    *,
    resume: str | None,
    run_id: str,
    msg_id: str,
    cwd: Path,
    scope: Path | None,
    env: dict[str, str],
    emit: Callable[[RunEvent], None],
    hard_deadline: float,
    log: Any,
) -> _Attempt | RunFailed:
    argv = build_argv(settings, prompt, resume, cwd=cwd, scope=scope)
    started = time.monotonic()
    proc = await start_claude(argv, cwd, env, prompt if prompt_via_stdin(prompt) else None)
    if isinstance(proc, str):
        log.error("claude.spawn_failed", claude_path=argv[0], error=proc)
        return RunFailed(msg_id=msg_id, reason="spawn", message=proc, session_id=resume or "")
    attempt = _Attempt(
        settings=settings,
        proc=proc,
        run_id=run_id,
        msg_id=msg_id,
        emit=emit,
        hard_deadline=hard_deadline,
        log=log,
    )
    log.info(
        "claude.started",
        pid=proc.pid,
        resumed=resume is not None,
        session_id=resume or "",
        prompt_chars=len(prompt),
        cwd=str(cwd),
    )
    emit(RunStarted(msg_id=msg_id, run_id=run_id, pid=proc.pid, resumed=resume is not None))
    try:
        await attempt.supervise()
    except BaseException:
        # Cancelled (or a bug): the group must not outlive us. Then propagate.
        await run_to_completion(attempt.terminate_group())
        log.info(
            "claude.exited",
            pid=proc.pid,
            rc=proc.returncode,
            duration_ms=int((time.monotonic() - started) * 1000),
            cancelled=True,
        )
        raise
    state = attempt.state
    log.info(
        "claude.exited",
        pid=proc.pid,
        rc=proc.returncode,
        duration_ms=int((time.monotonic() - started) * 1000),
        timed_out=attempt.timed_out,
        session_id=state.session_id,
        is_error=state.result.is_error if state.result else None,
        garbage_lines=state.garbage_lines,
        stderr_bytes=attempt.stderr.total,
    )
    return attempt
