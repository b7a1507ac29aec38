"""The daemon: one asyncio loop wiring the frontends, the worker pool and the registry.

Its life is three phases (``startup``, ``serve``, ``shutdown``):

* **startup**: take the project's single-instance lock, end processes a dead predecessor
  left behind, load the session registry, open the worker and control sockets, start
  keeping Discord connected when there is a token (``discord_link.py`` with
  ``frontend/keeper.py``: a bounded wait for the first attempt; an unreachable Discord
  is retried in the background, only its refusal of the token or an intent ends the
  daemon), and tell systemd ``READY=1`` once the local side can really serve;
* **serve**: react to signals (TERM/INT stop, HUP reloads), control requests and run
  events; keep ``STATUS=`` current; ping the systemd watchdog only while the event loop
  and the worker pool prove alive;
* **shutdown**: ``STOPPING=1``, take no new work, give running runs the grace period,
  kill what remains (whole process groups), close Discord after the last replies.

It is the :class:`~claudeclaw.api.Dispatcher` every frontend talks to (the routing API
itself is ``dispatch.py``, which this class extends with its life), and the only process
that writes the session files and ``pending.jsonl`` (``statewriter.py``) while it runs;
``control_requests.py`` answers its control socket. It never touches ``claude`` itself.
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
from typing import IO, Any

from claudeclaw import __version__
from claudeclaw.agent import agent_account, share_state_dirs
from claudeclaw.approvals import ApprovalBroker
from claudeclaw.config import Settings, load_settings
from claudeclaw.control import ControlServer
from claudeclaw.control_requests import ControlRequests
from claudeclaw.discord_link import DiscordLink
from claudeclaw.dispatch import SessionDispatcher
from claudeclaw.errors import ClaudeclawError, ConfigError, DiscordLoginRejected, StateError
from claudeclaw.jobservice import JobService, next_due_text
from claudeclaw.logs import get_logger
from claudeclaw.model import GLOBAL_KEY
from claudeclaw.notify import Notifier
from claudeclaw.paths import (
    ProjectPaths,
    ensure_private_dir,
    ensure_runtime_dir,
    write_private_text,
)
from claudeclaw.pool import WorkerPool
from claudeclaw.procs import StatsCache, project_tag, sweep_orphans
from claudeclaw.secretenv import erase_initial_environ
from claudeclaw.workerenv import TEST_HOOKS_ENV, worker_env

log = get_logger()


# How long start-up (and a reload with a new token) waits for Discord before saying READY
# anyway: Discord being slow or down must not keep the local control socket from serving.
DISCORD_START_WAIT_SECONDS = 30.0


def _euid() -> int:
    """The effective uid (a function so tests can pretend to be root)."""
    return os.geteuid()


class Supervisor(SessionDispatcher):
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
        super().__init__(paths, settings)
        self.log_level = log_level
        self.log_mode = log_mode
        self.notifier = Notifier()
        self.stop_requested = asyncio.Event()
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self.forced = False
        self.discord = DiscordLink(
            self,
            client_options=frontend_options,
            on_connected=self._on_frontend_connected,
            on_fatal=self._on_discord_refused,
            on_change=self._flush_status,
        )
        self.discord_retry: dict[str, float] = {}  # the keeper's backoff (first_retry, max_retry)
        self._fatal: DiscordLoginRejected | None = None
        self.control: ControlServer | None = None
        self.stats = StatsCache()
        self._lock_file: IO[str] | None = None
        self._status_dirty = False
        self._reload_lock = asyncio.Lock()
        # a stop lets the frontend post its last answers this long; what it could not post
        # stays in the pending ledger and is posted after the restart
        self.drain_seconds = 10.0
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
        # the token stays in os.environ; /proc/<our pid>/environ no longer shows it
        erase_initial_environ(["DISCORD_TOKEN"])
        account = agent_account()
        if account is not None:  # two-user mode: open what the agent needs (agent.py)
            await asyncio.to_thread(share_state_dirs, self.paths)
            log.info("daemon.agent_user", user=account.name, uid=account.uid)
        self._log_settings_warnings(self.settings)
        self._warn_if_root()
        for inert in self.settings.inert_keys:
            log.warning("settings.upstream_key_inert", detail=inert)
        problem = await self.worktrees.problem(self.settings)
        if problem:
            raise ConfigError(problem)
        runtime = ensure_runtime_dir(self.paths)
        tag = project_tag(str(self.paths.root))
        ended = await asyncio.to_thread(sweep_orphans, tag)
        if ended:
            log.warning("daemon.orphans_ended", pids=ended, count=len(ended))
        # what a killed daemon journaled but had not written into the session files yet
        await asyncio.to_thread(self.registry.fold_changes)
        await asyncio.to_thread(self.registry.validate)  # names (and skips) unusable entries
        for record in await asyncio.to_thread(self.registry.list):
            self.sessions[record.key] = record.session_id
            if record.workspace is not None:
                self.workspace_of[record.key] = record.workspace
        await self.worktrees.report_orphans(self.sessions)
        global_record = await asyncio.to_thread(self.registry.get, GLOBAL_KEY)
        self.sessions[GLOBAL_KEY] = global_record.session_id if global_record else None
        recovered = await asyncio.to_thread(self.ledger.read)
        if recovered:
            log.info("daemon.pending_recovered", count=len(recovered))

        env = worker_env(os.environ, token=self.settings.discord.token, tag=tag)
        self.pool = WorkerPool(
            self.paths,
            self.settings,
            runtime / "workers.sock",
            session_lookup=self._session_lookup,
            cwd_lookup=self.worktrees.cwd,
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
        self._tasks.start(self._writes.run(), "registry-writer")

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._tasks.start(self.reload(), "reload"))

        if self.settings.discord.token:
            await self.discord.begin(DISCORD_START_WAIT_SECONDS, **self.discord_retry)
        else:
            log.warning(
                "daemon.local_only",
                hint="no Discord token: serving the local control socket only; set "
                "discord.token, DISCORD_TOKEN or the discord-token credential to connect",
            )
        self.jobs = JobService(self, self.paths, self.settings, sink=self.discord.notices)
        await self.jobs.start()
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
        """Until SIGTERM/SIGINT, or until Discord refuses the token or an intent (re-raised:
        exit code 5, which the unit does not restart). An unreachable Discord is not an
        end: the keeper retries for as long as it takes."""
        await self.stop_requested.wait()
        if self._fatal is not None:
            log.error("daemon.discord_refused", error=str(self._fatal))
            raise self._fatal
        log.info("daemon.stopping")

    async def shutdown(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.notifier.stopping()
        await self.discord.stop_keeping()  # no new connection while we stop
        if self.jobs is not None:  # no new job starts while the runs wind down
            with contextlib.suppress(Exception):
                await self.jobs.stop_notice()
            await self.jobs.close()
        grace = self.settings.limits.shutdown_grace_seconds
        if self.approvals is not None:  # nobody can answer a stopping daemon: denied now
            self.approvals.deny_all("claudeclaw is restarting")
        if self.pool is not None:
            await self.pool.shutdown(grace)
        await self.discord.close(self.drain_seconds)
        if self.control is not None:
            await self.control.close()
        await self._writes.close()  # let queued state changes land before we go
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

    @staticmethod
    def _warn_if_root() -> None:
        """claude refuses --dangerously-skip-permissions as root: say so now, not per run."""
        if _euid() == 0 and os.environ.get("IS_SANDBOX") != "1":
            log.warning(
                "daemon.running_as_root",
                hint="claude refuses to run as root, so every message will fail: run "
                "claudeclaw as an unprivileged user (the packaged unit uses User=claudeclaw); "
                "only inside a throw-away sandbox set IS_SANDBOX=1",
            )

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
        account = agent_account()
        info = {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "control_socket": str(runtime / "control.sock"),
            # doctor reports them, and looks for claude's login in the agent's HOME
            "agent_user": account.name if account else "",
            "agent_home": str(account.home) if account else "",
        }
        write_private_text(self.paths.daemon_file, json.dumps(info, indent=2) + "\n")

    def _on_frontend_connected(self) -> None:
        if self.jobs is not None:
            self.jobs.outbox.kick()  # post what waited while Discord was away

    def _on_discord_refused(self, exc: DiscordLoginRejected) -> None:
        """Discord refused the token or an intent after start: the daemon ends (serve)."""
        self._fatal = exc
        self.stop_requested.set()

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
            problem = await self.worktrees.problem(settings)
            if problem:
                log.error("daemon.reload_failed", error=problem)
                self.notifier.ready(self.status_line())
                return False, problem
            token_changed = settings.discord.token != self.settings.discord.token
            self.settings = settings
            assert self.pool is not None
            self.pool.apply_settings(settings)
            if self.jobs is not None:
                await self.jobs.apply_settings(settings)  # and re-read the job files
            if self.frontend is not None and not token_changed:
                self.frontend.apply_settings(settings)
            elif token_changed:
                await self.discord.end()
                if settings.discord.token:
                    try:
                        await self.discord.begin(DISCORD_START_WAIT_SECONDS, **self.discord_retry)
                        await self._hand_orphans()
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
        discord = self.discord.status()
        limit = ""
        until = self.rate_limit_holds()
        if until is not None:
            limit = f"; usage limit until {until:%H:%M} UTC"
        due = next_due_text(self.jobs)
        return (
            f"{counts['workers']} sessions active, {counts['running']} running, "
            f"{counts['queued']} queued; {discord}{limit}" + (f"; {due}" if due else "")
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
