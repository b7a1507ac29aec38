"""The one object a worker runs ``claude`` through: warm when it can, cold when it must.

:class:`ClaudeSessionRunner` keeps one warm duplex ``claude`` (``live.LiveClaude``) for its
worker's session while ``runner.warmSessions`` is true, and otherwise runs each message the
cold way (``runner.run_claude``: one ``claude -p --resume`` per message). Its rules:

* a warm process is (re)started when there is none, when the argv-relevant settings changed
  (model, security, system prompt, tools, claude path, API key), or when the caller's session
  id is not the one the process holds (``/reset``, a session switched elsewhere);
* a warm process that dies or hangs before the turn's ``result`` is replaced by a cold run
  of the same message resuming the same session: retried once, answered once;
* a warm process unused for ``limits.warmIdleSeconds`` is closed (the next message starts
  one again); :meth:`close_warm` lets the pool close the least recently used one first;
* :meth:`interrupt` ends the running turn (warm: the CLI's ``interrupt``, killed only if not
  honoured; cold: the process group is ended) and the run returns ``RunFailed("cancelled")``;
  :meth:`steer` writes a message into the running warm turn; :meth:`status` says warm or
  cold, the ``claude`` pid and its RSS;
* with ``security.approvals`` (and a ``can_use_tool`` callback) every message runs warm, with
  ``--permission-prompt-tool stdio``, even when ``runner.warmSessions`` is off (then the
  process is closed after the message): only a duplex process can ask. The cold fallback
  (the warm one did not start, or died mid-turn) runs without
  ``--dangerously-skip-permissions``, so what would need a person is denied by the CLI.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from claudeclaw.claude.argv import build_env, build_live_argv
from claudeclaw.claude.live import CanUseTool, LiveClaude, LiveDied
from claudeclaw.claude.runner import run_claude, run_to_completion, share_transcript_if_agent
from claudeclaw.claude.stream import is_session_gone
from claudeclaw.config import Settings
from claudeclaw.logs import get_logger
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunStarted
from claudeclaw.procs import stat_fields

__all__ = ["FREEZE_AFTER_SECONDS", "ClaudeSessionRunner", "RunnerStatus"]

FREEZE_AFTER_SECONDS = 2.0  # an idle warm claude is SIGSTOPped this long after its turn
WARM_RETRY_SECONDS = 300.0  # a warm start failed: run cold this long before trying again

Mode = Literal["", "warm", "cold"]


@dataclass(frozen=True, slots=True)
class RunnerStatus:
    """What ``claudeclaw status`` shows for a worker's ``claude``."""

    mode: Mode  # "warm": a live process (running or idle); "cold": a one-shot run; "": none
    claude_pid: int = 0
    rss_bytes: int = 0
    running: bool = False
    frozen: bool = False  # the idle warm process is stopped (no CPU) until the next message


def warm_key(
    settings: Settings, cwd: Path, scope: Path | None = None, *, asks: bool = False
) -> tuple[Any, ...]:
    """Everything a warm process was started with: a change needs a new process."""
    argv = build_live_argv(settings, None, cwd=cwd, scope=scope, permission_prompts=asks)
    return (tuple(argv), settings.api, settings.model.strip().lower())


def _has_children(pid: int) -> bool:
    """Does ``pid`` have a live child (a tool, an MCP server)? Blocking: a /proc scan."""
    try:
        return any(c.status() != psutil.STATUS_ZOMBIE for c in psutil.Process(pid).children())
    except psutil.Error:
        return True  # unsure: do not freeze


def _has_children_fast(pid: int) -> bool | None:
    """:func:`_has_children` from ``/proc/<pid>/task/*/children`` (a few tiny reads, cheap
    enough for the event loop, where the full /proc scan costs milliseconds of CPU per
    message); None where the kernel does not offer those files."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # gone or unreadable: unsure, do not freeze
    children: list[bytes] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                children += fh.read().split()
        except FileNotFoundError:
            if tid == str(pid):
                return None  # no CONFIG_PROC_CHILDREN: the slow way
        except OSError:
            return True
    for child in children:
        fields = stat_fields(child.decode())  # None: reaped meanwhile
        if fields and fields[0] != b"Z":
            return True
    return False


def _rss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return 0


class ClaudeSessionRunner:
    """Runs one session's messages, one at a time (the worker's queue serialises them)."""

    def __init__(
        self,
        cwd: Path,
        *,
        env: Mapping[str, str] | None = None,
        can_use_tool: CanUseTool | None = None,
        on_warm_changed: Callable[[], None] | None = None,
    ) -> None:
        self.cwd = cwd  # the worker sets it (and ``scope``) from its configure frame
        self.scope: Path | None = None  # the directory Claude is told to stay in (default cwd)
        self.env = env  # None: os.environ at each start
        self.can_use_tool = can_use_tool
        self.on_warm_changed = on_warm_changed  # one was closed, or started ahead
        self.log = get_logger()
        self._live: LiveClaude | None = None
        self._live_key: tuple[Any, ...] = ()
        self._key_memo: tuple[Settings, tuple[Any, ...], tuple[Any, ...]] | None = None
        self._cold_task: asyncio.Task[RunDone | RunFailed] | None = None
        self._cold_pid = 0
        self._stop_requested = False
        self._in_run = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._freeze_timer: asyncio.TimerHandle | None = None
        self._cold_until = 0.0  # after a failed warm start (monotonic)
        self._closing: set[asyncio.Task[Any]] = set()
        self._starting: asyncio.Task[None] | None = None  # prestart(): the process, starting

    # ---- running ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return (self._live is not None and self._live.busy) or self._cold_task is not None

    @property
    def warm(self) -> bool:
        return self._live is not None and self._live.alive

    @property
    def warm_pid(self) -> int:
        """The warm ``claude``'s pid, 0 if none (cheap: :meth:`status` reads its RSS too)."""
        live = self._live
        return live.pid if live is not None and live.alive else 0

    async def run(
        self,
        settings: Settings,
        prompt: str,
        *,
        session_id: str | None,
        msg_id: str,
        on_event: Callable[[RunEvent], None],
    ) -> RunDone | RunFailed:
        """Answer ``prompt`` in ``session_id`` (None: a new session); events via ``on_event``."""
        self._stop_requested = False
        self._in_run = True
        self._cancel_idle_timer()
        log = self.log.bind(msg_id=msg_id)

        def emit(event: RunEvent) -> None:
            try:
                on_event(event)
            except Exception as err:  # a broken listener must not leave a run behind
                log.error("claude.on_event_failed", event_kind=event.kind, error=repr(err))

        asks = self._asks(settings)
        try:
            warm = settings.runner.warm_sessions and settings.limits.max_warm_sessions > 0
            if (warm or asks) and time.monotonic() >= self._cold_until:
                final = await self._run_warm(settings, prompt, session_id, msg_id, emit, log)
                if not warm and self._live is not None:  # only for asking: not kept warm
                    await self.close_warm("warm sessions are off")
                if final is not None:
                    return final
            elif self._live is not None:
                await self.close_warm("warm sessions are off")
            return await self._run_cold(settings, prompt, session_id, msg_id, emit)
        finally:
            self._in_run = False
            self._arm_idle_timer(settings)

    async def _run_warm(
        self,
        settings: Settings,
        prompt: str,
        session_id: str | None,
        msg_id: str,
        emit: Callable[[RunEvent], None],
        log: Any,
    ) -> RunDone | RunFailed | None:
        """A warm turn; None when the message must run cold instead (the retry)."""
        if (starting := self._starting) is not None:  # started ahead, still starting
            await asyncio.wait({starting})
        key = self._warm_key(settings)
        live = self._live
        if live is not None:
            why = ""
            if not live.alive:
                why = live.broken or "exited"
            elif key != self._live_key:
                why = "settings changed"
            elif (session_id or "") != live.session_id:
                why = "another session"
            if why:
                await self.close_warm(why)
                live = None
        if live is None:
            live = await self._start_live(settings, session_id, key, log)
            if live is None:
                return None
        if self._stop_requested:
            return RunFailed(msg_id, "cancelled", "Stopped.", session_id=session_id or "")
        live.thaw()
        outcome = await live.run_turn(
            prompt, msg_id=msg_id, run_id=uuid.uuid4().hex[:12], emit=emit, log=log
        )
        if not isinstance(outcome, LiveDied):
            if not live.alive:
                await self.close_warm(live.broken or "exited")
            await share_transcript_if_agent(self.cwd, outcome.session_id)
            return outcome
        log.warning(
            "claude.live_died",
            pid=live.pid,
            detail=outcome.detail[:300],
            stale_session=outcome.stale_session,
        )
        # The caller's session: a new one that died in its first turn starts afresh (its
        # half-written transcript would show the message twice).
        resume = session_id
        await self.close_warm("died mid-turn")
        if self._stop_requested:
            return RunFailed(msg_id, "cancelled", "Stopped.", session_id=resume or "")
        # Once, cold: the same message, the same session (a gone one is reset by run_claude).
        final = await self._run_cold(settings, prompt, resume, msg_id, emit)
        return final

    def _warm_key(self, settings: Settings) -> tuple[Any, ...]:
        asks = self._asks(settings)
        memo = self._key_memo
        if memo is None or memo[0] is not settings or memo[1] != (self.cwd, self.scope, asks):
            # building the argv is a good part of a warm message's CPU in the worker; the
            # settings object is replaced (never changed in place) when settings change
            key = warm_key(settings, self.cwd, self.scope, asks=asks)
            self._key_memo = memo = (settings, (self.cwd, self.scope, asks), key)
        return memo[2]

    async def _start_live(
        self, settings: Settings, session_id: str | None, key: tuple[Any, ...], log: Any
    ) -> LiveClaude | None:
        """Start the warm process (``key``: :meth:`_warm_key`); None if it did not start
        (logged; a failure that is not about this session sends runs cold for a while)."""
        env = build_env(os.environ if self.env is None else self.env, settings)
        started = await LiveClaude.start(
            settings,
            session_id=session_id,
            cwd=self.cwd,
            scope=self.scope,
            env=env,
            log=log,
            process_log=self.log,
            can_use_tool=self.can_use_tool if self._asks(settings) else None,
        )
        if isinstance(started, str):
            log.warning("claude.live_start_failed", error=started[:500])
            if not is_session_gone(started):  # not just this session: for a while
                self._cold_until = time.monotonic() + WARM_RETRY_SECONDS
            return None
        self._live, self._live_key = started, key
        return started

    def prestart(self, settings: Settings) -> None:
        """Start a new session's warm ``claude`` now, before its first message (the spare
        worker's, ``runner.prestartClaude``): that message then skips the CLI's start. It is
        frozen until used and not closed for idleness: the pool counts it against
        ``limits.maxWarmSessions`` and closes it first when over. A message for another
        session, or on other settings, closes it and starts its own (the warm rules)."""
        if self._starting is not None or self._in_run or time.monotonic() < self._cold_until:
            return
        live = self._live
        if live is not None:
            if live.busy or self._warm_key(settings) == self._live_key:
                return
            self._live = None  # started on other settings (a reload): closed beside
            self._cancel_idle_timer()
            self._in_background(live.close("settings reloaded"))
        self._starting = asyncio.get_running_loop().create_task(self._start_ahead(settings))

    async def _start_ahead(self, settings: Settings) -> None:
        try:
            live = await self._start_live(settings, None, self._warm_key(settings), self.log)
        finally:
            self._starting = None
        if live is None:
            return
        if not self._in_run:  # (a message waiting for it thaws it anyway)
            self._freeze_timer = asyncio.get_running_loop().call_later(
                FREEZE_AFTER_SECONDS, self._freeze_in_background
            )
        if self.on_warm_changed is not None:
            self.on_warm_changed()

    def _asks(self, settings: Settings) -> bool:
        """Ask a person before tools (``security.approvals``), if there is someone to ask."""
        return settings.security.approvals and self.can_use_tool is not None

    async def _run_cold(
        self,
        settings: Settings,
        prompt: str,
        session_id: str | None,
        msg_id: str,
        emit: Callable[[RunEvent], None],
    ) -> RunDone | RunFailed:
        def watch(event: RunEvent) -> None:
            if isinstance(event, RunStarted):
                self._cold_pid = event.pid
            emit(event)

        task = asyncio.get_running_loop().create_task(
            run_claude(
                settings,
                prompt,
                session_id=session_id,
                msg_id=msg_id,
                cwd=self.cwd,
                scope=self.scope,
                on_event=watch,
                env=self.env,
            )
        )
        self._cold_task = task
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            await run_to_completion(asyncio.wait({task}))
            raise
        finally:
            self._cold_task = None
            self._cold_pid = 0
        if task.cancelled():  # our interrupt(): the group is gone
            return RunFailed(msg_id, "cancelled", "Stopped.", session_id=session_id or "")
        return task.result()

    # ---- acting on the running turn -----------------------------------------------------

    async def interrupt(self) -> bool:
        """Stop the running turn; False when nothing runs. The run returns "Stopped."."""
        self._stop_requested = True
        if self._live is not None and self._live.busy:
            return await self._live.interrupt()
        if self._cold_task is not None and not self._cold_task.done():
            self._cold_task.cancel()
            return True
        return self._in_run  # between steps (starting, retrying): the run sees the flag

    async def steer(self, text: str) -> bool:
        """Pass ``text`` into the running warm turn; False (do nothing) otherwise."""
        if self._live is None or not self._live.busy:
            return False
        return await self._live.steer(text)

    def status(self, *, rss: bool = True) -> RunnerStatus:
        """What runs now; ``rss``: with the ``claude``'s RSS (a /proc read: ``status``
        wants it, the pool's health pings do not)."""
        live = self._live
        if live is not None and live.alive:
            return RunnerStatus(
                mode="warm",
                claude_pid=live.pid,
                rss_bytes=_rss(live.pid) if rss else 0,
                running=live.busy,
                frozen=live.frozen,
            )
        if self._cold_task is not None and self._cold_pid:
            return RunnerStatus(
                mode="cold",
                claude_pid=self._cold_pid,
                rss_bytes=_rss(self._cold_pid) if rss else 0,
                running=True,
            )
        return RunnerStatus(mode="", running=self._cold_task is not None)

    # ---- closing ------------------------------------------------------------------------

    async def close_warm(self, why: str = "closed") -> bool:
        """Close the warm process if it is idle (or already dead); True when one was closed."""
        live = self._live
        if live is None or (live.busy and live.alive):
            return False
        self._live = None
        self._cancel_idle_timer()
        await live.close(why)
        if self.on_warm_changed is not None:
            self.on_warm_changed()
        return True

    async def close(self) -> None:
        """End everything: the running turn is interrupted first, then the process closed."""
        self._cancel_idle_timer()
        if (starting := self._starting) is not None:  # started ahead: it kills what it spawned
            starting.cancel()
            await asyncio.wait({starting})
        if self.running:
            await self.interrupt()
        live = self._live
        if live is not None:
            self._live = None
            if live.busy:
                await live.kill()
            else:
                await live.close("the worker stops or serves another thread")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _arm_idle_timer(self, settings: Settings) -> None:
        self._cancel_idle_timer()
        if self._live is None:
            return
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(
            settings.limits.warm_idle_seconds, self._close_in_background, "idle"
        )
        self._freeze_timer = loop.call_later(FREEZE_AFTER_SECONDS, self._freeze_in_background)

    def _cancel_idle_timer(self) -> None:
        for timer in (self._idle_timer, self._freeze_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._freeze_timer = None

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` as a task that :meth:`close` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _freeze_in_background(self) -> None:
        self._freeze_timer = None
        self._in_background(self._freeze())

    async def _freeze(self) -> bool:
        live = self._live
        if live is None or self._in_run or live.busy:
            return False
        busy = _has_children_fast(live.pid)
        if busy is None:
            busy = await asyncio.to_thread(_has_children, live.pid)
        if busy:
            return False
        if live is not self._live or self._in_run:  # a message came meanwhile
            return False
        return live.freeze()

    def _close_in_background(self, why: str) -> None:
        self._idle_timer = None
        self._in_background(self.close_warm(why))
