"""The daemon: one asyncio loop wiring the frontends, the worker pool and the registry.

Its life is three phases (``startup``, ``serve``, ``shutdown``):

* **startup**: take the project's single-instance lock, end processes a dead predecessor
  left behind, load the session registry, open the worker and control sockets, start the
  Discord frontend when there is a token, and tell systemd ``READY=1`` only when all of
  that can really serve;
* **serve**: react to signals (TERM/INT stop, HUP reloads), control requests and run
  events; keep ``STATUS=`` current; ping the systemd watchdog only while the event loop
  and the worker pool prove alive;
* **shutdown**: ``STOPPING=1``, take no new work, give running runs the grace period,
  kill what remains (whole process groups), close Discord after the last replies.

It is the :class:`~claudeclaw.api.Dispatcher` every frontend talks to, and the only
process that writes the session files and ``pending.json`` (kept by ``ledger.py``) while
it runs; ``control_requests.py`` answers its control socket. It never touches ``claude``
itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import IO, Any

import claudeclaw
from claudeclaw import __version__
from claudeclaw.approvals import ApprovalBroker
from claudeclaw.config import Settings, load_settings
from claudeclaw.control import ControlServer
from claudeclaw.control_requests import ControlRequests
from claudeclaw.errors import ClaudeclawError, ConfigError, StateError
from claudeclaw.ledger import PendingLedger
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    GLOBAL_KEY,
    ApprovalOutcome,
    PendingMessage,
    Remembered,
    ReplyTo,
    RunDone,
    RunEvent,
    RunFailed,
    RunSession,
    SessionInfo,
    SessionKey,
    SessionRecord,
    session_key,
)
from claudeclaw.notify import Notifier, child_env
from claudeclaw.paths import (
    ProjectPaths,
    ensure_private_dir,
    ensure_runtime_dir,
    write_private_text,
)
from claudeclaw.pool import WorkerPool
from claudeclaw.procs import OWNER_ENV, StatsCache, owner_value, project_tag, sweep_orphans
from claudeclaw.sessions import SessionRegistry, utc_now_iso
from claudeclaw.tasks import TaskSet

log = get_logger()

TEST_HOOKS_ENV = "CLAUDECLAW_TEST_HOOKS"  # set by test harnesses only: see testhooks.py
SECRET_ENV = ("DISCORD_TOKEN", "CREDENTIALS_DIRECTORY", TEST_HOOKS_ENV)
# Where this claudeclaw is imported from: its workers import the same code.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(claudeclaw.__file__)))


class Supervisor:
    """See the module docstring. ``run()`` is the whole daemon."""

    def __init__(
        self,
        paths: ProjectPaths,
        settings: Settings,
        *,
        log_mode: str = "auto",
        log_level: str = "info",
        frontend_options: dict[str, Any] | None = None,
    ) -> None:
        self.paths = paths
        self.frontend_options = frontend_options  # discord.Client options (tests)
        self.log_level = log_level
        self.settings = settings
        self.log_mode = log_mode
        self.registry = SessionRegistry(paths)
        self.notifier = Notifier()
        self.stop_requested = asyncio.Event()
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self.sessions: dict[SessionKey, str | None] = {}  # what workers resume
        self.last_error: dict[SessionKey, str] = {}
        self.closing = False
        self.forced = False
        self.frontend: Any = None
        self.pool: WorkerPool | None = None
        self.control: ControlServer | None = None
        self.stats = StatsCache()
        self._lock_file: IO[str] | None = None
        self._writes: asyncio.Queue[tuple[str, SessionKey, str]] = asyncio.Queue()
        self._tasks = TaskSet("daemon")
        self._status_dirty = False
        self._reload_lock = asyncio.Lock()
        # a stop lets the frontend post its last answers this long; what it could not post
        # stays in the pending ledger and is posted after the restart
        self.drain_seconds = 10.0
        # messages from a frontend, kept until answered (pending.json)
        self.ledger = PendingLedger(
            paths.pending_file, lambda: self._writes.put_nowait(("ledger", GLOBAL_KEY, ""))
        )
        self.approvals: ApprovalBroker | None = None  # security.approvals; made with the pool
        self.requests = ControlRequests(self)
        if os.environ.get(TEST_HOOKS_ENV) == "1":
            from claudeclaw import testhooks  # test-only requests, never imported otherwise

            testhooks.install(self.requests)

    # ---- the three phases ---------------------------------------------------------------

    async def run(self) -> int:
        """Start, serve until told to stop, stop. Returns the process exit code."""
        try:
            await self.startup()
        except ClaudeclawError:
            await self.shutdown()
            raise
        try:
            await self.serve()
        finally:
            await self.shutdown()
        return 0

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        ensure_private_dir(self.paths.state_dir)
        self._take_instance_lock()
        self._log_settings_warnings(self.settings)
        runtime = ensure_runtime_dir(self.paths)
        tag = project_tag(str(self.paths.root))
        ended = await asyncio.to_thread(sweep_orphans, tag)
        if ended:
            log.warning("daemon.orphans_ended", pids=ended, count=len(ended))
        for record in await asyncio.to_thread(self.registry.list):
            self.sessions[record.key] = record.session_id
        global_record = await asyncio.to_thread(self.registry.get, GLOBAL_KEY)
        self.sessions[GLOBAL_KEY] = global_record.session_id if global_record else None
        recovered = await asyncio.to_thread(self.ledger.read)
        if recovered:
            log.info("daemon.pending_recovered", count=len(recovered))

        env = child_env(dict(os.environ))
        for name in SECRET_ENV:
            env.pop(name, None)
        token = self.settings.discord.token
        if token:
            env = {k: v for k, v in env.items() if v != token}
        env[OWNER_ENV] = owner_value(tag)
        # workers and the fork server import exactly the code this supervisor runs, whatever
        # else is installed (claude's own environment drops PYTHONPATH again)
        env["PYTHONPATH"] = os.pathsep.join(
            [PACKAGE_ROOT, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
        )
        self.pool = WorkerPool(
            self.paths,
            self.settings,
            runtime / "workers.sock",
            session_lookup=self._session_lookup,
            on_event=self._on_run_event,
            child_env=env,
            log_mode=self.log_mode,
            log_level=self.log_level,
        )
        pool = self.pool
        self.approvals = ApprovalBroker(
            self.paths.approvals_file,
            timeout=lambda: self.settings.security.approval_timeout_seconds,
            answer=pool.send_to_worker,
            push=pool.push_event,
        )
        await self.approvals.load()
        pool.approvals = self.approvals
        await self.pool.start()
        self.control = ControlServer(runtime / "control.sock", self.requests.handle)
        await self.control.start()
        self._tasks.start(self._registry_writer(), "registry-writer")

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._tasks.start(self.reload(), "reload"))

        if self.settings.discord.token:
            await self._start_frontend()
        else:
            log.warning(
                "daemon.local_only",
                hint="no Discord token: serving the local control socket only; set "
                "discord.token, DISCORD_TOKEN or the discord-token credential to connect",
            )
        await asyncio.to_thread(self._write_daemon_info, runtime)
        self.notifier.ready(self.status_line())
        self._tasks.start(self._watchdog_loop(), "watchdog")
        log.info(
            "daemon.ready",
            project=str(self.paths.root),
            version=__version__,
            max_concurrent_runs=self.settings.limits.max_concurrent_runs,
            discord=bool(self.frontend),
        )

    def _on_stop_signal(self) -> None:
        """First TERM/INT: stop gracefully. A second one while stopping: stop now (the
        running claude process groups are killed without waiting for the grace period)."""
        if not self.stop_requested.is_set():
            self.stop_requested.set()
            return
        if self.pool is not None and not self.forced:
            self.forced = True
            log.warning("daemon.forced_stop", hint="second stop signal: not waiting any longer")
            self.pool.kill_all("forced stop")

    async def serve(self) -> None:
        """Until SIGTERM/SIGINT, or until the Discord client stops for good (re-raised, so
        the exit code tells systemd whether a restart can help)."""
        stop = asyncio.ensure_future(self.stop_requested.wait())
        try:
            while not self.stop_requested.is_set():
                waiters: set[asyncio.Future[Any]] = {stop}
                frontend = self.frontend
                if frontend is not None:
                    waiters.add(asyncio.ensure_future(frontend.wait_closed()))
                done, rest = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for fut in rest - {stop}:
                    fut.cancel()
                for fut in done - {stop}:
                    if self.frontend is not frontend:
                        continue  # replaced by a reload: keep serving with the new one
                    error = fut.exception()
                    log.error("daemon.frontend_stopped", error=str(error) if error else "closed")
                    if error is not None:
                        raise error
                    raise ConnectionError("the Discord client stopped")
        finally:
            stop.cancel()
        log.info("daemon.stopping")

    async def shutdown(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.notifier.stopping()
        grace = self.settings.limits.shutdown_grace_seconds
        if self.approvals is not None:  # nobody can answer a stopping daemon: denied now
            self.approvals.deny_all("claudeclaw is restarting")
        if self.pool is not None:
            await self.pool.shutdown(grace)
        if self.frontend is not None:
            with contextlib.suppress(Exception):
                await self.frontend.drain(within=self.drain_seconds)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.frontend.close(), 15)
        if self.control is not None:
            await self.control.close()
        await self._writes.join()  # let queued registry changes land before we go
        if self.approvals is not None:
            await self.approvals.flush()
        await self._tasks.cancel_all()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(sig)
        with contextlib.suppress(FileNotFoundError):
            self.paths.daemon_file.unlink()
        if self._lock_file is not None:
            self._lock_file.close()
        log.info("daemon.stopped")

    # ---- pieces of startup --------------------------------------------------------------

    @staticmethod
    def _log_settings_warnings(settings: Settings) -> None:
        for warning in settings.warnings:
            log.warning("settings.warning", detail=warning, file=str(settings.source or ""))

    def _take_instance_lock(self) -> None:
        path = self.paths.state_dir / "daemon.lock"
        handle = open(path, "a+", encoding="utf-8")  # held for our lifetime
        os.chmod(path, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StateError(
                f"another claudeclaw daemon is already running for {self.paths.root}; "
                "stop it first (systemctl stop claudeclaw) or use another project directory"
            ) from None
        self._lock_file = handle

    def _write_daemon_info(self, runtime: Any) -> None:
        info = {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "control_socket": str(runtime / "control.sock"),
        }
        write_private_text(self.paths.daemon_file, json.dumps(info, indent=2) + "\n")

    async def _start_frontend(self) -> None:
        from claudeclaw.frontend.bot import DiscordFrontend  # discord.py only when needed

        frontend = DiscordFrontend(
            self.settings, self, self.paths, client_options=self.frontend_options
        )
        await frontend.start()
        try:
            await frontend.wait_ready()
        except BaseException:
            await frontend.close()
            raise
        self.frontend = frontend
        await frontend.resume(self.take_pending())

    # ---- sessions -----------------------------------------------------------------------

    def _session_lookup(self, key: SessionKey) -> str | None:
        return self.sessions.get(key)

    def _on_run_event(self, key: SessionKey, event: RunEvent) -> None:
        """Record session ids as soon as the CLI reports them (even if the run then fails)."""
        self.ledger.note_event(event)
        if isinstance(event, RunSession | RunDone) and event.session_id:
            if self.sessions.get(key) != event.session_id:
                self.sessions[key] = event.session_id
                self._writes.put_nowait(("record", key, event.session_id))
                if self.approvals is not None:  # approvals belong to the session they were for
                    self.approvals.session_changed(key, event.session_id)
        if isinstance(event, RunDone):
            if not event.merged_into:  # one turn per run, not per message it answered
                self._writes.put_nowait(("touch", key, event.session_id))
            self.last_error.pop(key, None)
        elif isinstance(event, RunFailed):
            self.last_error[key] = f"{event.reason}: {event.message}"[:300]
        self._mark_status_dirty()

    async def _registry_writer(self) -> None:
        """Apply registry changes in order, off the event loop, everything queued at once;
        ``ledger`` entries write the current pending.json snapshot once per batch."""
        resync = False
        while True:
            batch = [await self._writes.get()]
            while not self._writes.empty():
                batch.append(self._writes.get_nowait())
            changes = [change for change in batch if change[0] != "ledger"]
            if resync:  # an earlier write failed: write what we know, all of it, first
                changes = [
                    ("record", key, sid) if sid else ("remove", key, "")
                    for key, sid in self.sessions.items()
                ] + changes
            snapshot = self.ledger.snapshot() if len(changes) < len(batch) else None
            try:
                if changes:
                    await asyncio.to_thread(self.registry.apply, changes)
                resync = False
                if snapshot is not None:
                    await asyncio.to_thread(self.ledger.write, snapshot)
            except Exception as exc:  # a full disk must not stop replies (they wait on us)
                log.error("sessions.write_failed", changes=len(batch), error=str(exc))
                resync = True
            finally:
                for _ in batch:
                    self._writes.task_done()

    def take_pending(self) -> list[PendingMessage]:
        """Messages the previous run accepted but did not answer (handed out once)."""
        return self.ledger.take_recovered()

    def delivered(self, msg_id: str) -> None:
        """The frontend posted the answer (or a note) of ``msg_id``: the ledger lets it go."""
        self.ledger.delivered(msg_id)

    @property
    def rate_limited_until(self) -> datetime | None:
        """When Claude's usage limit resets, while it holds (the pool pauses the runs)."""
        return self.pool.limit_until if self.pool is not None else None

    def rate_limit_holds(self) -> datetime | None:
        """The reset time while Claude's usage limit holds, else None."""
        return self.pool.limit_holds() if self.pool is not None else None

    # ---- the routing API (Dispatcher) ---------------------------------------------------

    async def submit(
        self,
        key: SessionKey,
        prompt: str,
        *,
        origin: str = "discord",
        reply_to: ReplyTo | None = None,
    ) -> AsyncIterator[RunEvent]:
        """Queue ``prompt`` for ``key``; yield its events until done or failed."""
        key = session_key(key)
        if self.pool is None or self.closing:
            yield RunFailed("", "shutdown", "claudeclaw is stopping; send it again later.")
            return
        ticket = self.pool.enqueue(key, prompt, origin)
        if reply_to is not None and not ticket.finished:
            self.ledger.accept(
                PendingMessage(
                    ticket.msg_id, key, prompt, origin, reply_to, accepted_at=utc_now_iso()
                )
            )
        log.info(
            "message.submitted",
            session_key=key,
            msg_id=ticket.msg_id,
            origin=origin,
            prompt_chars=len(prompt),
        )
        self._mark_status_dirty()
        while True:
            event = await ticket.events.get()
            if isinstance(event, RunDone | RunFailed):
                event = self.ledger.settle(event)
                await self._writes.join()  # the reply is seen only once its session is on disk
                yield event
                return
            yield event

    async def cancel(self, key: SessionKey) -> bool:
        assert self.pool is not None
        return await self.pool.cancel(session_key(key))

    async def reset(self, key: SessionKey) -> bool:
        key = session_key(key)
        assert self.pool is not None
        had = self.sessions.get(key) is not None
        self.sessions[key] = None
        if self.approvals is not None:
            self.approvals.forget(key, "reset")
            self.approvals.drop(key, note="the session was reset")
        await self.pool.reset(key)
        self._writes.put_nowait(("remove", key, ""))
        await self._writes.join()
        log.info("session.reset", session_key=key, had_session=had)
        return had

    async def session_info(self, key: SessionKey) -> SessionInfo:
        key = session_key(key)
        await self._writes.join()
        record = await asyncio.to_thread(self.registry.get, key)
        return self._info(key, record)

    async def list_sessions(self) -> list[SessionInfo]:
        await self._writes.join()
        records = await asyncio.to_thread(self.registry.list)
        return [self._info(r.key, r) for r in records]

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

    # ---- approvals (security.approvals) --------------------------------------------------

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

    # ---- reload, status, watchdog -------------------------------------------------------

    async def reload(self) -> tuple[bool, str]:
        """Re-read settings.json and apply it; returns (applied, message)."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                settings = await asyncio.to_thread(load_settings, self.paths.settings_file)
            except ConfigError as exc:
                log.error("daemon.reload_failed", error=str(exc))
                self.notifier.ready(self.status_line())
                return False, str(exc)
            self._log_settings_warnings(settings)
            token_changed = settings.discord.token != self.settings.discord.token
            self.settings = settings
            assert self.pool is not None
            self.pool.apply_settings(settings)
            if self.frontend is not None and not token_changed:
                self.frontend.apply_settings(settings)
            elif token_changed:
                if self.frontend is not None:
                    await self.frontend.close()
                    self.frontend = None
                if settings.discord.token:
                    try:
                        await self._start_frontend()
                    except ClaudeclawError as exc:
                        log.error("daemon.reload_frontend_failed", error=str(exc))
                        self.notifier.ready(self.status_line())
                        return False, str(exc)
            log.info(
                "daemon.reloaded",
                max_concurrent_runs=settings.limits.max_concurrent_runs,
                max_workers=settings.limits.max_workers,
            )
            self.notifier.ready(self.status_line())
            return True, "settings reloaded"

    def status_line(self) -> str:
        """One ASCII-clean line for systemd's STATUS=."""
        counts = self.pool.counts() if self.pool else {"workers": 0, "running": 0, "queued": 0}
        discord = "local only"
        if self.frontend is not None:
            summary = self.frontend.summary()
            discord = "discord connected" if summary.get("connected") else "discord reconnecting"
        limit = ""
        until = self.rate_limit_holds()
        if until is not None:
            limit = f"; usage limit until {until:%H:%M} UTC"
        return (
            f"{counts['workers']} sessions active, {counts['running']} running, "
            f"{counts['queued']} queued; {discord}{limit}"
        )

    def _mark_status_dirty(self) -> None:
        if self._status_dirty or self.closing:
            return
        self._status_dirty = True
        asyncio.get_running_loop().call_later(0.5, self._flush_status)

    def _flush_status(self) -> None:
        self._status_dirty = False
        if not self.closing:
            self.notifier.status(self.status_line())

    async def _watchdog_loop(self) -> None:
        """WATCHDOG=1 only while the loop runs and the pool's health checks keep happening."""
        interval = self.notifier.watchdog_interval()
        if not interval:
            return
        assert self.pool is not None
        while True:
            await asyncio.sleep(interval)
            pool_age = time.monotonic() - self.pool.last_health_check
            if pool_age > 4 * 5.0 + interval:
                log.error("daemon.pool_stalled", seconds=round(pool_age, 1))
                continue
            self.notifier.watchdog()
            self.notifier.status(self.status_line())


def run_daemon(
    paths: ProjectPaths, settings: Settings, log_mode: str = "auto", log_level: str = "info"
) -> int:
    """Entry point of ``claudeclaw run``."""
    if sys.version_info < (3, 12):
        # one pidfd per child instead of one waiting thread per child (3.12 does this itself)
        with contextlib.suppress(Exception):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                asyncio.set_child_watcher(asyncio.PidfdChildWatcher())

    async def main() -> int:
        supervisor = Supervisor(paths, settings, log_mode=log_mode, log_level=log_level)
        return await supervisor.run()

    return asyncio.run(main())
