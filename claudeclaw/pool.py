"""The supervisor's workers: one process per active session key, and the limits on them.

The pool starts a worker (forked by the fork server, or ``python -m claudeclaw.worker`` by
exec with ``limits.workerStartMethod: "exec"``) the first time a key gets a message, hands
it messages over the worker socket, and routes the worker's run events back to whoever
enqueued them (each message's :class:`Ticket`). It owns:

* **which worker holds each unfinished message** (``tickets``): a message stays there until
  its final event, so a worker that dies (even SIGKILL) loses nothing: the message it was
  running is retried once on a new worker, the ones queued behind it are re-sent in order.
  The order of a key's queue and which message runs now are the worker's (it is asked,
  through its pongs, for status); a key's messages run in the order they came, so the
  pool's order of tickets is the queue's order too;
* **the run slots**: ``limits.maxConcurrentRuns`` caps ``claude`` processes across all
  workers. A worker asks for a slot for its queue's head (``acquire``), runs when it gets
  it (``grant``), and the slot is free again with that message's final event (or when the
  worker puts it back for the usage limit, ``limited``, or dies). Slots are granted in
  request order and a key asks again only after its run ended, so when slots are scarce
  busy threads take turns instead of starving the others;
* **the usage-limit pause**: no slot is granted until Claude's usage limit resets;
* **limits on workers**: ``limits.maxWorkers`` live processes (the idlest is retired to make
  room), ``limits.workerIdleSeconds`` before an idle worker is retired, and at most
  ``limits.maxIdleWorkers`` idle ones (the least recently used beyond that exits within a
  second: not beside the reply that made one idle);
* **health**: a ping every few seconds answered by the worker's event loop; a worker that
  stops answering is killed (and its ``claude`` process group with it) and replaced.

It knows nothing about Discord, the session files or the ``claude`` CLI: the supervisor
passes ``session_lookup`` (which session a new worker resumes) and ``on_event`` (to record
session ids) in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from claudeclaw import ipc
from claudeclaw.approvals import ApprovalBroker
from claudeclaw.config import Settings
from claudeclaw.errors import IpcError
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    RunDone,
    RunEvent,
    RunFailed,
    RunQueued,
    RunStarted,
    SessionKey,
    WorkerStatus,
    event_from_dict,
    is_final,
    parse_time,
)
from claudeclaw.paths import ProjectPaths
from claudeclaw.procs import ProcessIdentity
from claudeclaw.settings_wire import settings_to_wire
from claudeclaw.spawn import ExecSpawner, ForkServerSpawner, Spawner, WorkerProcess
from claudeclaw.tasks import TaskSet

log = get_logger()

PING_INTERVAL_S = 5.0
PING_TIMEOUT_S = 20.0  # a health ping unanswered this long: the worker is hung
IDLE_PING_INTERVAL_S = 30.0  # a worker that holds no message is checked this often
HELLO_TIMEOUT_S = 15.0
MAX_BOOT_FAILURES = 3
# the next spare is made this long after one is taken: not while the taken one starts its
# claude (on a 2-core server a fork beside that start delays the first answer by ~2 ms), yet
# soon enough for new threads 0.3 s apart (at 0.5 s, 16 of 41 such threads forked a worker
# and 11 idle ones exited instead of being recycled; at 0.2 s, 2 forked and none exited)
SPARE_REFILL_DELAY_S = 0.2
# beyond runner.killGraceSeconds: a worker closing its claude to become the spare is killed
RECYCLE_TIMEOUT_S = 10.0
# over limits.maxIdleWorkers, the least recently used idle worker exits this long after a
# worker went idle: its exit is not beside the reply that made it idle (~1 ms of it here)
IDLE_CAP_DELAY_S = 1.0
EXIT_AFTER_BYE_S = 5.0  # a worker that closed its connection to exit has this long
DUMP_WAIT_S = 1.0  # a hung worker writes its stacks to the log in this time, then dies
MAX_ATTEMPTS = 2  # a message whose worker crashed while running it is retried once
RATE_LIMIT_DEFAULT_PAUSE = timedelta(minutes=5)  # when the CLI names no reset time


@dataclass(eq=False)
class Ticket:
    """One message on its way through a worker; its events arrive on ``events``."""

    msg_id: str
    key: SessionKey
    prompt: str
    origin: str
    events: asyncio.Queue[RunEvent] = field(default_factory=asyncio.Queue)
    worker: WorkerHandle | None = None  # the worker process that holds it
    attempts: int = 0  # how many times it was handed to a worker
    claude: ProcessIdentity | None = None  # its running claude (set when it started)
    finished: bool = False
    limit_retries: int = 0  # its worker put it back to wait for Claude's usage limit
    starts_at_once: bool = False  # handed to its worker with its slot when it came
    overrides: dict[str, Any] = field(default_factory=dict)  # a job's model / timeout_s

    def push(self, event: RunEvent) -> None:
        if self.finished:
            return
        if is_final(event):
            self.finished = True
        self.events.put_nowait(event)


@dataclass(eq=False)
class WorkerHandle:
    """The supervisor's view of one worker process."""

    key: SessionKey
    state: str = "starting"  # starting → ready → stopping; "blocked": waits for maxWorkers
    process: WorkerProcess | None = None
    channel: ipc.Channel | None = None
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    stats: dict[str, Any] = field(default_factory=dict)
    last_pong: float = field(default_factory=time.monotonic)
    pinged_at: float = 0.0  # when its oldest unanswered health ping went out; 0: none
    last_activity: float = field(default_factory=time.monotonic)
    idle_timer: asyncio.TimerHandle | None = None
    hung: bool = False  # told to dump its stacks; killed after DUMP_WAIT_S
    retire_when_idle: bool = False  # reset: exit as soon as nothing is in flight
    pong: asyncio.Event = field(default_factory=asyncio.Event)  # set by every pong
    spawned_at: float = field(default_factory=time.monotonic)
    ready_at: float = 0.0
    warm_pid: int = 0  # its warm claude (``warm`` frames); 0: none
    warm: ProcessIdentity | None = None  # the same, to end it if the worker dies
    warm_used: float = 0.0  # when it last reported it: the least recently used closes first
    born_spare: bool = False  # forked before its key was known (its hello names no key)
    settings_sent: dict[str, Any] | None = None  # the settings wire its configure carried

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0


class SlotScheduler:
    """At most ``capacity`` concurrent runs; waiting requests are granted first come first."""

    def __init__(self, capacity: int, grant: Callable[[WorkerHandle, str], None]) -> None:
        self.capacity = capacity
        self._grant = grant
        self.active: dict[str, WorkerHandle] = {}
        self.waiting: deque[tuple[WorkerHandle, str]] = deque()

    def acquire(self, handle: WorkerHandle, msg_id: str) -> int:
        """Request a slot; returns 0 if granted now, else the place in line (1 = next)."""
        if msg_id in self.active or self.take_if_free(handle, msg_id):
            self._grant(handle, msg_id)
            return 0
        self.waiting.append((handle, msg_id))
        return len(self.waiting)

    def take_if_free(self, handle: WorkerHandle, msg_id: str) -> bool:
        """Take a slot for ``msg_id`` before it is asked for, if one is free and nobody
        waits for one (the caller tells the worker, with its run)."""
        if len(self.active) < self.capacity and not self.waiting and not self.paused:
            self.active[msg_id] = handle
            return True
        return False

    def release(self, msg_id: str) -> None:
        self.active.pop(msg_id, None)
        self.waiting = deque((h, m) for h, m in self.waiting if m != msg_id)
        self._fill()

    def forget(self, handle: WorkerHandle) -> None:
        """A worker went away: free its slot and its place in line."""
        for msg_id in [m for m, h in self.active.items() if h is handle]:
            del self.active[msg_id]
        self.waiting = deque((h, m) for h, m in self.waiting if h is not handle)
        self._fill()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._fill()

    paused = False  # Claude's usage limit: nothing new starts until resume()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._fill()

    def _fill(self) -> None:
        while self.waiting and len(self.active) < self.capacity and not self.paused:
            handle, msg_id = self.waiting.popleft()
            self.active[msg_id] = handle
            self._grant(handle, msg_id)


class WorkerPool:
    """Spawns, feeds, watches and retires the workers; see the module docstring."""

    def __init__(
        self,
        paths: ProjectPaths,
        settings: Settings,
        socket_path: Path,
        *,
        session_lookup: Callable[[SessionKey], str | None],
        cwd_lookup: Callable[[SessionKey], str | None] = lambda key: None,
        on_event: Callable[[SessionKey, RunEvent], None],
        child_env: Mapping[str, str],
        log_mode: str = "auto",
        log_level: str = "info",
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.settings_wire = settings_to_wire(settings)  # what workers run on
        self.socket_path = socket_path
        self.session_lookup = session_lookup
        self.cwd_lookup = cwd_lookup  # a thread's own worktree (None: the project directory)
        self.on_event = on_event
        self.child_env = dict(child_env)
        self.log_mode = log_mode
        self.log_level = log_level
        self.workers: dict[SessionKey, WorkerHandle] = {}  # the current worker of each key
        # every message not finished yet, in the order it came: which worker holds it, and
        # what a new worker needs if that one dies (the worker owns the queue order)
        self.tickets: dict[str, Ticket] = {}
        self.leaving: set[WorkerHandle] = set()  # retired or dying, not yet exited
        self.blocked: deque[WorkerHandle] = deque()  # waiting for room under maxWorkers
        self.by_pid: dict[int, WorkerHandle] = {}
        # a forked worker can say hello before _start_worker() has resumed to register its pid
        self._pid_waiters: dict[int, asyncio.Future[WorkerHandle]] = {}
        self.boot_failures: dict[SessionKey, int] = {}
        # a worker forked, connected and greeted before any key needs it: a new key's first
        # message takes it instead of waiting for a fork (see _refill_spare)
        self.spare: WorkerHandle | None = None
        self.spare_failures = 0  # spares that died unused in a row; at MAX_BOOT_FAILURES: none
        self.keep_spare = True  # False: no spares (tests of the plain fork path)
        self._refill_timer: asyncio.TimerHandle | None = None
        self.recycling: WorkerHandle | None = None  # an idle worker becoming the spare
        self._idle_cap_timer: asyncio.TimerHandle | None = None
        self.slots = SlotScheduler(settings.limits.max_concurrent_runs, self._send_grant)
        self.closing = False
        self.last_health_check = time.monotonic()
        self._server: asyncio.AbstractServer | None = None
        self._tasks = TaskSet("pool")
        self._msg_ids = itertools.count(1)
        self.spawn_count = 0
        self.crash_count = 0
        # Claude's usage limit: while it holds no run starts (see note_rate_limit)
        self.limit_until: datetime | None = None
        self.resets_at = ""  # the same, as ISO text for RunQueued events
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._resume_timer: asyncio.TimerHandle | None = None
        self.approvals: ApprovalBroker | None = None  # set by the supervisor
        self.spawner: Spawner = (
            ForkServerSpawner(paths.root, nice=settings.limits.worker_nice)
            if settings.limits.worker_start_method == "forkserver"
            else ExecSpawner(paths.root)
        )

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the worker socket (0600) and start the health checks."""
        self._server = await ipc.listen(self.socket_path, self._on_connect)
        try:
            await self.spawner.start(self.child_env)
        except OSError as exc:
            log.error("forkserver.start_failed", error=str(exc), hint="starting workers by exec")
            self.spawner = ExecSpawner(self.paths.root)
        self._tasks.start(self._health_loop(), "health")
        self._refill_spare()

    def live_handles(self) -> list[WorkerHandle]:
        return [*self.workers.values(), *self.leaving]

    def _listening(self) -> list[WorkerHandle]:
        """The live workers that read frames now: not one becoming the spare (it reads its
        next ``configure`` only once it said ``recycled``)."""
        return [h for h in self.live_handles() if h.channel is not None and h.state != "recycling"]

    def apply_settings(self, settings: Settings) -> None:
        """Reload: new limits take effect now; every worker gets the new settings."""
        self.settings = settings
        self.settings_wire = settings_to_wire(settings)
        self.slots.resize(settings.limits.max_concurrent_runs)
        if self.spare is not None and self._processes() > settings.limits.max_workers:
            self._drop_spare("limits.maxWorkers was lowered")
        elif self.spare is not None and self.spare.channel is not None:
            self._configure(self.spare)  # the new settings; a claude started ahead on them
        for handle in self.live_handles():
            if handle.channel is not None and handle.state == "ready":
                handle.channel.send_nowait({"type": "reload", "settings": self.settings_wire})
            if not self.holds(handle) and handle.state == "ready":
                self._arm_idle_timer(handle)
        self._unblock()

    async def shutdown(self, grace: float) -> None:
        """Stop taking work; running runs get ``grace`` s to finish; then nothing of ours runs."""
        self.closing = True
        spare = self._stop_spare()
        spares = [spare] if spare is not None else []
        for handle in list(self.blocked):
            self._fail_all(handle, "shutdown", "claudeclaw is stopping; send it again.")
        self.blocked.clear()
        handles = self.live_handles()
        for handle in handles:
            if handle.idle_timer:
                handle.idle_timer.cancel()
            if handle.state == "recycling":
                pass  # it exits once recycled: its channel is closed then (_on_recycled)
            elif handle.channel is not None:
                handle.channel.send_nowait({"type": "shutdown", "grace": grace})
            elif handle.process is not None:
                self._kill(handle, "stopping before it said hello")
            handle.state = "stopping"
        waits = [h.exited.wait() for h in [*handles, *spares] if h.process is not None]
        kill_grace = self.settings.runner.kill_grace_seconds
        if waits:
            _done, late = await asyncio.wait(
                [asyncio.ensure_future(w) for w in waits], timeout=grace + kill_grace + 5
            )
            for fut in late:
                fut.cancel()
        stopping = [*self.live_handles(), *spares]
        for handle in stopping:
            if handle.process is not None and handle.process.returncode is None:
                self._kill(handle, "did not stop within the grace period")
        leftovers = [h.exited.wait() for h in stopping if h.process is not None]
        if leftovers:
            await asyncio.wait([asyncio.ensure_future(w) for w in leftovers], timeout=5)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.spawner.close()
        await self._tasks.cancel_all()
        # a worker whose start the cancel above cut short (no watcher of its exit is left
        # either): what it holds ends now ("shutdown": kept for the restart if not started)
        for handle in self.live_handles():
            self._fail_all(handle, "shutdown", "claudeclaw is stopping; send it again.")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    # ---- submissions --------------------------------------------------------------------

    def new_msg_id(self) -> str:
        return f"m{next(self._msg_ids)}-{uuid.uuid4().hex[:8]}"

    def enqueue(
        self,
        key: SessionKey,
        prompt: str,
        origin: str,
        overrides: dict[str, Any] | None = None,
    ) -> Ticket:
        """Queue ``prompt`` for ``key`` on its worker (spawning one if needed).
        ``overrides`` (``model``, ``timeout_s``) apply to this run only (a job's own)."""
        ticket = Ticket(self.new_msg_id(), key, prompt, origin, overrides=dict(overrides or {}))
        if self.closing:
            ticket.push(RunFailed(ticket.msg_id, "shutdown", "claudeclaw is stopping; try later."))
            return ticket
        self._place(ticket)
        return ticket

    def running_on(self, handle: WorkerHandle) -> Ticket | None:
        """The message whose claude runs on ``handle`` now, if one started."""
        return next((t for t in self.held_by(handle) if t.claude is not None), None)

    def held_by(self, handle: WorkerHandle) -> list[Ticket]:
        """The unfinished messages ``handle`` holds, in the order they came."""
        return [t for t in self.tickets.values() if t.worker is handle]

    def holds(self, handle: WorkerHandle) -> bool:
        return any(t.worker is handle for t in self.tickets.values())

    def _place(self, ticket: Ticket) -> None:
        handle = self.workers.get(ticket.key)
        if handle is None:
            handle = self._new_worker(ticket.key)
        ticket.worker = handle
        self.tickets.pop(ticket.msg_id, None)  # a retry: after the ones that came before it
        self.tickets[ticket.msg_id] = ticket
        handle.last_activity = time.monotonic()
        if handle.idle_timer is not None:
            handle.idle_timer.cancel()
            handle.idle_timer = None
        if handle.state == "ready":
            # nothing ahead of it on its worker: its slot comes with it, not after an
            # acquire round trip (~0.5 ms of every message's way to claude)
            alone = all(t is ticket for t in self.held_by(handle))
            self._send_run(handle, ticket, granted=alone)
        elif handle.state == "blocked":
            ahead = len(self.held_by(handle)) - 1
            ticket.push(RunQueued(ticket.msg_id, ahead, waiting_for_slot=True))

    def _send_run(self, handle: WorkerHandle, ticket: Ticket, *, granted: bool = False) -> None:
        """Hand ``ticket`` to its worker; ``granted``: it will be the worker's next run, so
        it takes its slot now if one is free (the worker need not ``acquire`` it)."""
        assert handle.channel is not None
        ticket.attempts += 1
        ticket.claude = None
        frame: ipc.Message = {
            "type": "run",
            "msg_id": ticket.msg_id,
            "prompt": ticket.prompt,
            "origin": ticket.origin,
            **ticket.overrides,
        }
        if granted and self.slots.take_if_free(handle, ticket.msg_id):
            frame["granted"] = True
            ticket.starts_at_once = ticket.attempts == 1
        handle.channel.send_nowait(frame)

    def find(self, key: SessionKey) -> WorkerHandle | None:
        return self.workers.get(key)

    async def cancel(self, key: SessionKey) -> bool:
        """Ask the key's worker to kill its current run; True if something was running."""
        handle = self.workers.get(key)
        held = self.held_by(handle) if handle is not None else []
        if handle is None or not held:
            return False
        if handle.channel is not None:
            await handle.channel.send({"type": "cancel"})
            return True
        self._finish(held[0], RunFailed(held[0].msg_id, "cancelled", "Stopped before it started."))
        return True

    async def reset(self, key: SessionKey) -> None:
        """Tell the key's worker to forget its session, drop what waits, and exit."""
        handle = self.workers.get(key)
        if handle is None:
            return
        handle.retire_when_idle = True
        if handle.channel is not None:
            await handle.channel.send({"type": "reset"})
            if not self.holds(handle) and handle.state == "ready":
                self._retire(handle)
        else:
            self._fail_all(handle, "cancelled", "The session was reset; send it again.")

    # ---- Claude's usage limit -----------------------------------------------------------

    def note_rate_limit(self, retry_at: str) -> None:
        """A run was refused by Claude's usage limit: start nothing until it resets (the
        time the CLI named, else a few minutes from now); messages wait, queued."""
        until = parse_time(retry_at)  # aware: one without a zone is UTC
        if until is None:
            if retry_at:
                log.warning("pool.rate_limit_unparsed", retry_at=retry_at)
            until = self.now() + RATE_LIMIT_DEFAULT_PAUSE
        if until <= self.now():
            return
        self.limit_until = until
        self.resets_at = until.isoformat()
        self.slots.pause()
        if self._resume_timer is not None:
            self._resume_timer.cancel()
        delay = (until - self.now()).total_seconds()
        self._resume_timer = asyncio.get_running_loop().call_later(delay, self.resume_runs)
        log.warning("pool.runs_paused", until=self.resets_at)

    def limit_holds(self) -> datetime | None:
        """The reset time while Claude's usage limit holds (resuming once it passed)."""
        if self.limit_until is not None and self.limit_until <= self.now():
            self.resume_runs()
        return self.limit_until

    def resume_runs(self) -> None:
        """The limit reset (or a run succeeded): waiting messages start, in order."""
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        if self.slots.paused:
            log.info("pool.runs_resumed", waiting=len(self.slots.waiting))
        self.limit_until = None
        self.resets_at = ""
        self.slots.resume()

    def _on_limited(self, handle: WorkerHandle, msg_id: str, retry_at: str) -> None:
        """The worker put a run refused by the usage limit back at the head of its queue:
        free its slot, hold every start until the reset, and tell its author once."""
        self.note_rate_limit(retry_at)
        self.slots.release(msg_id)
        ticket = self.tickets.get(msg_id)
        if ticket is None:
            return
        ticket.claude = None
        ticket.limit_retries += 1
        event = RunQueued(msg_id, 0, waiting_for_slot=True, resets_at=self.resets_at)
        self._record(handle, event)
        ticket.push(event)
        log.info("message.waits_for_limit_reset", session_key=handle.key, msg_id=msg_id)

    # ---- spawning -----------------------------------------------------------------------

    def _processes(self) -> int:
        """Worker processes that count against ``limits.maxWorkers``: the keys' (not those
        still waiting for room), the leaving ones and the spare."""
        keyed = sum(1 for h in self.workers.values() if h.state != "blocked")
        return keyed + len(self.leaving) + (1 if self.spare is not None else 0)

    def _new_worker(self, key: SessionKey) -> WorkerHandle:
        spare = self.spare
        if (
            spare is not None
            and spare.state == "spare"
            and (spare.process is None or spare.process.returncode is None)
        ):
            return self._adopt_spare(spare, key)
        full = self._processes() >= self.settings.limits.max_workers  # before it counts
        handle = WorkerHandle(key)
        self.workers[key] = handle
        if full and not self._evict_idlest(exclude=handle):
            handle.state = "blocked"
            self.blocked.append(handle)
            log.info(
                "worker.blocked", session_key=key, max_workers=self.settings.limits.max_workers
            )
            return handle
        self._tasks.start(self._start_worker(handle), "start-worker")
        return handle

    def _adopt_spare(self, handle: WorkerHandle, key: SessionKey) -> WorkerHandle:
        """Give the spare its key: it is configured now (or on its hello, if that is still
        to come) instead of a worker being forked; the next spare is forked behind it. It was
        one process already, so maxWorkers still holds."""
        self.spare = None
        self.spare_failures = 0
        handle.key = key
        handle.last_activity = handle.last_pong = time.monotonic()  # pinged from now on
        handle.pinged_at = 0.0
        self.spawn_count += 1
        self.workers[key] = handle
        if handle.channel is not None:
            handle.state = "ready"
            self._configure(handle)
        else:
            handle.state = "starting"
        log.debug("worker.spare_used", session_key=key, worker_pid=handle.pid)
        self._refill_spare_soon()
        return handle

    def _refill_spare_soon(self) -> None:
        """Fork the next spare a little later: not while a message is on its way."""
        if (
            self._refill_timer is None
            and self.spare is None
            and self.recycling is None
            and not self.closing
        ):
            self._refill_timer = asyncio.get_running_loop().call_later(
                SPARE_REFILL_DELAY_S, self._refill_spare
            )

    def _refill_spare(self) -> None:
        """Fork the next spare if there is room for it under ``limits.maxWorkers`` and
        nothing waits for that room. Only through the fork server: by exec a spare would
        cost a whole interpreter (~17 MB) to save ~120 ms once."""
        if self._refill_timer is not None:
            self._refill_timer.cancel()
            self._refill_timer = None
        if not self._spare_wanted():
            return
        idle = self._idle_workers()
        keyed = sum(1 for h in self.workers.values() if h.state == "ready")
        if idle and keyed > self.settings.limits.max_idle_workers:
            # once idle, more workers than are kept (so the least recently used would exit
            # and another be forked): that one becomes the spare, nothing is forked
            self._recycle(idle[0])
            return
        if self._processes() >= self.settings.limits.max_workers:
            return
        handle = WorkerHandle(SessionKey(""), state="spare", born_spare=True)
        self.spare = handle
        self._tasks.start(self._start_worker(handle), "start-spare")

    def _spare_wanted(self) -> bool:
        """A spare would be used: spares are on and work, there is none (nor one on its
        way) and no key waits for room under ``limits.maxWorkers``."""
        return not (
            self.closing
            or not self.keep_spare
            or self.spare is not None
            or self.recycling is not None
            or self.blocked
            or not isinstance(self.spawner, ForkServerSpawner)
            or self.spawner.broken
            or self.spare_failures >= MAX_BOOT_FAILURES
        )

    def _recycle(self, handle: WorkerHandle) -> None:
        """Make an idle worker the spare instead of retiring it and forking a new one: it
        closes its ``claude`` and says ``recycled``. No fork, no exit and none of a new
        process's page faults (~10 ms of CPU per new thread once ``maxIdleWorkers`` workers
        are idle). Its key's next message starts a worker (or takes the spare) as after a
        retirement."""
        log.debug("worker.recycled", session_key=handle.key, worker_pid=handle.pid)
        self._leave_key(handle, "recycling")
        self.recycling = handle
        assert handle.channel is not None
        handle.channel.send_nowait({"type": "recycle"})
        handle.idle_timer = asyncio.get_running_loop().call_later(
            self.settings.runner.kill_grace_seconds + RECYCLE_TIMEOUT_S,
            self._recycle_overdue,
            handle,
        )

    def _recycle_overdue(self, handle: WorkerHandle) -> None:
        handle.idle_timer = None
        if handle.state == "recycling":
            self._kill(handle, "it did not close its claude to become the spare in time")

    def _on_recycled(self, handle: WorkerHandle) -> None:
        """The recycled worker closed its ``claude``: it is the spare now (unless the pool
        stops, or has one already, or a key waits for room: then it exits)."""
        if self.recycling is handle:
            self.recycling = None
        if handle.idle_timer:
            handle.idle_timer.cancel()
            handle.idle_timer = None
        handle.warm, handle.warm_pid, handle.stats = None, 0, {}
        if handle.state != "recycling" or not self._spare_wanted():
            handle.state = "stopping"  # leaving still, until it exits
            if handle.channel is not None:  # a spare that is hung up on exits (rc 0)
                self._tasks.start(handle.channel.close(), "close-channel")
            self._unblock()
            return
        self.leaving.discard(handle)
        handle.key = SessionKey("")
        handle.state = "spare"
        handle.retire_when_idle = False
        self.spare = handle
        self._configure(handle)  # no key yet; the settings only if they changed

    def _detach_spare(self) -> WorkerHandle | None:
        """The spare, no longer the pool's (and no next one due); the caller ends it."""
        if self._refill_timer is not None:
            self._refill_timer.cancel()
            self._refill_timer = None
        spare, self.spare = self.spare, None
        if spare is not None:
            spare.state = "stopping"
        return spare

    def _stop_spare(self) -> WorkerHandle | None:
        """End the spare gently (a stop): it holds nothing, and on SIGTERM it closes the
        ``claude`` it started ahead and exits, so a normal stop logs no warning and kills no
        ``claude``. Returns it so a caller can await its exit (and kill it past a grace)."""
        spare = self._detach_spare()
        if spare is not None and spare.process is not None and spare.process.returncode is None:
            log.info("worker.spare_stopped", worker_pid=spare.pid)
            with contextlib.suppress(ProcessLookupError):
                spare.process.send_signal(signal.SIGTERM)
        return spare

    def _drop_spare(self, why: str) -> WorkerHandle | None:
        """End the spare (it holds nothing) at once; returns it so a caller can await its
        exit."""
        spare = self._detach_spare()
        if spare is not None and spare.process is not None:
            self._kill(spare, why)
        return spare

    def _idle_workers(self) -> list[WorkerHandle]:
        """The ready workers that hold no message, least recently used first."""
        idle = [h for h in self.workers.values() if h.state == "ready" and not self.holds(h)]
        return sorted(idle, key=lambda h: h.last_activity)

    def _evict_idlest(self, exclude: WorkerHandle) -> bool:
        victim = next((h for h in self._idle_workers() if h is not exclude), None)
        if victim is None:
            return False
        log.info("worker.evicted", session_key=victim.key, pid=victim.pid)
        self._retire(victim)
        return True

    def _unblock(self) -> None:
        while self.blocked:
            handle = self.blocked[0]
            full = self._processes() >= self.settings.limits.max_workers
            if full and not self._evict_idlest(handle):
                return
            self.blocked.popleft()
            if self.workers.get(handle.key) is not handle:
                continue
            handle.state = "starting"
            self._tasks.start(self._start_worker(handle), "start-worker")
        self._refill_spare_soon()

    async def _start_worker(self, handle: WorkerHandle) -> None:
        args = [
            "--project",
            str(self.paths.root),
            *([] if handle.born_spare else ["--key", handle.key]),
            "--socket",
            str(self.socket_path),
            "--log-mode",
            self.log_mode,
            "--log-level",
            self.log_level,
            "--nice",
            str(self.settings.limits.worker_nice),
        ]
        handle.spawned_at = time.monotonic()
        try:
            try:
                process = await self.spawner.spawn(args, self.child_env)
            except (OSError, TimeoutError) as exc:
                if isinstance(self.spawner, ExecSpawner):
                    raise
                log.error("forkserver.spawn_failed", error=str(exc), hint="using exec from now on")
                await self.spawner.close()
                self.spawner = ExecSpawner(self.paths.root)
                process = await self.spawner.spawn(args, self.child_env)
        except OSError as exc:
            log.error("worker.spawn_failed", session_key=handle.key, error=str(exc))
            if self.spare is handle:
                self.spare = None
                return
            if self.workers.get(handle.key) is handle:
                del self.workers[handle.key]
            self._fail_all(handle, "spawn", f"Could not start a worker: {exc}")
            return
        handle.process = process
        self.by_pid[process.pid] = handle
        if handle.state == "stopping" and handle.born_spare and not handle.key:
            self._kill(handle, "a spare no longer wanted")  # dropped while it was forked
        waiter = self._pid_waiters.pop(process.pid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(handle)
        if not handle.born_spare:  # a spare counts when it takes a key
            self.spawn_count += 1
        # a spare's fork is routine (one per new thread): at info only once it is used
        (log.info if handle.key else log.debug)(
            "worker.spawned",
            session_key=handle.key,
            worker_pid=process.pid,
            method=self.spawner.method,
        )
        self._tasks.start(self._watch_exit(handle), "watch-exit")
        try:
            await asyncio.wait_for(handle.hello.wait(), HELLO_TIMEOUT_S)
        except TimeoutError:
            if process.returncode is None:
                self._kill_hung(handle, "no hello within the start timeout")

    def kill_all(self, why: str) -> None:
        """SIGKILL every worker and the claude process group each is running."""
        self._drop_spare(why)
        for handle in self.live_handles():
            if handle.process is not None and handle.process.returncode is None:
                self._kill(handle, why)

    def _kill(self, handle: WorkerHandle, why: str) -> None:
        """SIGKILL a worker and the claude process group it was running."""
        log.warning("worker.killed", session_key=handle.key, worker_pid=handle.pid, why=why)
        if handle.process is not None and handle.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                handle.process.send_signal(signal.SIGKILL)
        for ticket in self.held_by(handle):
            if ticket.claude is not None:
                ticket.claude.kill_group()
        if handle.warm is not None:
            handle.warm.kill_group()

    def _kill_hung(self, handle: WorkerHandle, why: str) -> None:
        """A worker that stopped answering: first the signal that makes its faulthandler
        write every thread's stack to the log (so a freeze leaves a trace), then the kill."""
        if handle.hung or handle.process is None or handle.process.returncode is not None:
            return
        handle.hung = True
        log.warning(
            "worker.hung",
            session_key=handle.key,
            worker_pid=handle.pid,
            why=why,
            hint="its stacks follow in the log (faulthandler), then it is killed",
        )
        with contextlib.suppress(ProcessLookupError):
            handle.process.send_signal(ipc.DUMP_STACKS_SIGNAL)
        self._tasks.start(self._kill_unless_exited(handle, DUMP_WAIT_S, why), "kill-hung")

    async def _kill_unless_exited(self, handle: WorkerHandle, seconds: float, why: str) -> None:
        """Give ``handle``'s process ``seconds`` to exit by itself, then kill it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handle.exited.wait(), seconds)
        if not handle.exited.is_set():
            self._kill(handle, why)

    async def _watch_exit(self, handle: WorkerHandle) -> None:
        assert handle.process is not None
        rc = await handle.process.wait()
        self._on_exit(handle, rc)

    def _on_exit(self, handle: WorkerHandle, rc: int) -> None:
        self.by_pid.pop(handle.pid, None)
        if self.recycling is handle:  # died while becoming the spare: fork one instead
            self.recycling = None
            self._refill_spare_soon()
        if self.spare is handle:  # died unused: replaced (unless spares keep dying)
            self.spare = None
            self.spare_failures += 1
            log.warning("worker.spare_exited", worker_pid=handle.pid, rc=rc)
        self.leaving.discard(handle)
        if self.workers.get(handle.key) is handle:
            del self.workers[handle.key]
        if handle.idle_timer:
            handle.idle_timer.cancel()
        running = {m for m, h in self.slots.active.items() if h is handle}  # had its slot
        self.slots.forget(handle)
        held = self.held_by(handle)
        for ticket in held:
            if ticket.claude is not None and ticket.claude.kill_group():
                log.warning("claude.group_killed", session_key=handle.key, pgid=ticket.claude.pid)
            ticket.claude = None
        # its warm claude: gone with a clean exit; a dead worker's may be frozen (SIGSTOP),
        # and would not see its stdin close
        if handle.warm is not None and handle.warm.kill_group():
            log.warning("claude.warm_killed", session_key=handle.key, pgid=handle.warm.pid)
        handle.warm = None
        handle.warm_pid = 0
        handle.exited.set()
        if self.approvals is not None:
            self.approvals.drop(handle.key, note="the worker stopped", owner=handle)
        if handle.channel is not None:
            self._tasks.start(handle.channel.close(), "close-channel")
        if not held:
            log.info("worker.exited", session_key=handle.key, worker_pid=handle.pid, rc=rc)
            self._unblock()
            return
        # it died with work in hand: a crash (or a kill after it stopped answering)
        self.crash_count += 1
        log.error(
            "worker.crashed",
            session_key=handle.key,
            worker_pid=handle.pid,
            rc=rc,
            held=len(held),
        )
        if not handle.hello.is_set():
            self.boot_failures[handle.key] = self.boot_failures.get(handle.key, 0) + 1
        if self.closing:
            self._fail_all(handle, "shutdown", "claudeclaw stopped before Claude finished.")
            return
        if self.boot_failures.get(handle.key, 0) >= MAX_BOOT_FAILURES:
            self._fail_all(
                handle, "spawn", "The worker for this session cannot start; see the daemon log."
            )
            return
        for ticket in held:  # in the order they came: the new worker keeps it
            if ticket.msg_id in running and ticket.attempts >= MAX_ATTEMPTS:
                self._finish(
                    ticket,
                    RunFailed(
                        ticket.msg_id,
                        "crashed",
                        "The worker running this message crashed twice; it was not retried.",
                    ),
                )
            else:
                self._place(ticket)
        self._unblock()

    def _fail_all(self, handle: WorkerHandle, reason: Any, message: str) -> None:
        for ticket in self.held_by(handle):
            self._finish(ticket, RunFailed(ticket.msg_id, reason, message))

    def _finish(self, ticket: Ticket, event: RunEvent) -> None:
        """A message's final event: its author gets it and the pool forgets the message."""
        self.tickets.pop(ticket.msg_id, None)
        self.slots.release(ticket.msg_id)
        ticket.worker = None
        ticket.claude = None
        ticket.push(event)

    # ---- the worker connections ---------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = ipc.Channel(reader, writer)
        handle: WorkerHandle | None = None
        try:
            pid, uid, _gid = channel.peer_credentials()
            first = await asyncio.wait_for(channel.recv(), HELLO_TIMEOUT_S)
            if first is None or first["type"] != "hello":
                raise IpcError("the first frame must be hello")
            handle = await self._handle_for_pid(pid) if uid == os.getuid() else None
            if handle is None or first.get("key") != ("" if handle.born_spare else handle.key):
                raise IpcError(f"unexpected peer pid={pid} uid={uid} key={first.get('key')!r}")
            self._on_hello(handle, channel)
            while True:
                message = await channel.recv()
                if message is None:
                    break
                self._on_frame(handle, message)
        except (IpcError, TimeoutError, ConnectionError, KeyError, ValueError, TypeError) as exc:
            log.error(
                "ipc.connection_dropped",
                session_key=handle.key if handle else "",
                error=str(exc) or type(exc).__name__,
            )
        finally:
            if handle is not None and handle.process is not None:
                if handle.process.returncode is None:
                    if handle.state != "stopping":
                        # a worker without its connection is useless: replace it
                        self._kill(handle, "its connection closed")
                    else:  # it said bye (or was told to stop): it exits by itself, soon
                        why = "it did not exit after closing its connection"
                        lingering = self._kill_unless_exited(handle, EXIT_AFTER_BYE_S, why)
                        self._tasks.start(lingering, "exit-after-bye")
            await channel.close()

    async def _handle_for_pid(self, pid: int) -> WorkerHandle | None:
        """The handle of a worker we started, waiting briefly if its spawn is still being
        registered; None for a process we did not start."""
        handle = self.by_pid.get(pid)
        if handle is not None:
            return handle
        waiter = self._pid_waiters.setdefault(pid, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), HELLO_TIMEOUT_S)
        except TimeoutError:
            return None
        finally:
            if self._pid_waiters.get(pid) is waiter and not waiter.done():
                del self._pid_waiters[pid]

    def _on_hello(self, handle: WorkerHandle, channel: ipc.Channel) -> None:
        handle.channel = channel
        handle.ready_at = time.monotonic()
        handle.last_pong = time.monotonic()
        handle.hello.set()
        if not handle.key:  # a spare: it waits for a key (and is not pinged until then)
            log.debug(
                "worker.spare_ready",
                worker_pid=handle.pid,
                spawn_ms=round((handle.ready_at - handle.spawned_at) * 1000, 1),
            )
            self._configure(handle)  # the settings now: it parses them while nobody waits
            return
        self.boot_failures.pop(handle.key, None)
        if handle.state == "starting":
            handle.state = "ready"
        log.info(
            "worker.ready",
            session_key=handle.key,
            worker_pid=handle.pid,
            spawn_ms=round((handle.ready_at - handle.spawned_at) * 1000, 1),
        )
        self._configure(handle)
        if handle.state == "stopping":
            channel.send_nowait({"type": "shutdown", "grace": 0})
            return
        held = self.held_by(handle)
        for i, ticket in enumerate(held):  # the first runs first on a new worker
            self._send_run(handle, ticket, granted=i == 0)
        if not held:
            self._arm_idle_timer(handle)

    def _configure(self, handle: WorkerHandle) -> None:
        """The worker's first frame after its hello: its key, session, settings and cwd.
        A spare gets one without a key at its hello (and at a reload), and one with its key
        when taken; the settings only if they changed in between. A keyless one says
        whether to start a ``claude`` ahead (``prestart``)."""
        assert handle.channel is not None
        frame: ipc.Message = {"type": "configure", "key": handle.key}
        if handle.key:
            frame["session_id"] = self.session_lookup(handle.key)
            frame["cwd"] = self.cwd_lookup(handle.key)
        elif self._prestart_wanted(handle):
            frame["prestart"] = True
        if handle.settings_sent is not self.settings_wire:
            frame["settings"] = handle.settings_sent = self.settings_wire
        handle.channel.send_nowait(frame)

    def _prestart_wanted(self, spare: WorkerHandle) -> bool:
        """Should ``spare`` start a new session's ``claude`` ahead of need
        (``runner.prestartClaude``)? Only with room under ``limits.maxWarmSessions`` beside
        the others' and when new threads run in the project directory, where it would run."""
        settings = self.settings
        if not (settings.runner.prestart_claude and settings.runner.warm_sessions):
            return False
        if settings.threads.workspace != "shared":
            return False
        others = [h for h in self._warm_handles() if h is not spare]
        return len(others) < settings.limits.max_warm_sessions

    def _spare_listening(self) -> list[WorkerHandle]:
        """The spare, once connected: it takes ``close_warm`` and ``ping`` while it waits
        for its key (``worker.SPARE_FRAMES``)."""
        spare = self.spare
        return [spare] if spare is not None and spare.channel is not None else []

    def _warm_handles(self) -> list[WorkerHandle]:
        """The workers holding a warm ``claude`` that can be told to close it: the keys'
        and the spare's (started ahead)."""
        return [h for h in [*self._listening(), *self._spare_listening()] if h.warm_pid]

    def _on_frame(self, handle: WorkerHandle, message: ipc.Message) -> None:
        kind = message["type"]
        if kind == "event":
            self._on_event(handle, event_from_dict(message["event"]))
        elif kind == "acquire":
            msg_id = str(message["msg_id"])
            place = self.slots.acquire(handle, msg_id)
            ticket = self.tickets.get(msg_id)
            if place and ticket is not None and not ticket.limit_retries:
                ticket.push(
                    RunQueued(msg_id, place - 1, waiting_for_slot=True, resets_at=self.resets_at)
                )
        elif kind == "warm":
            handle.warm_pid = int(message.get("claude_pid", 0))
            handle.warm = ProcessIdentity.of(handle.warm_pid) if handle.warm_pid else None
            handle.warm_used = time.monotonic()
            if handle.warm_pid:
                self._enforce_warm_cap(handle)
        elif kind == "approval":
            if self.approvals is not None:
                self.approvals.ask(handle.key, message, owner=handle)
            else:  # nobody to ask (fail closed)
                rid = message.get("request_id")
                self.send_to_worker(handle.key, {"type": "approval_answer", "request_id": rid})
        elif kind == "approval_cancel":
            if self.approvals is not None:
                self.approvals.withdraw(str(message.get("request_id") or ""))
        elif kind == "limited":
            self._on_limited(handle, str(message["msg_id"]), str(message.get("retry_at", "")))
        elif kind == "pong":
            handle.last_pong = time.monotonic()
            handle.pinged_at = 0.0
            stats = {k: v for k, v in message.items() if k not in ("v", "type")}
            if not message.get("claude_rss_bytes") and handle.stats.get("claude_pid") == stats.get(
                "claude_pid"
            ):  # a health check's pong: the RSS of the last status ping stands
                stats["claude_rss_bytes"] = handle.stats.get("claude_rss_bytes", 0)
            handle.stats = stats
            handle.pong.set()
        elif kind == "bye":
            handle.state = "stopping"
        elif kind == "recycled":
            self._on_recycled(handle)
        else:
            log.warning("ipc.unknown_frame", type=kind, session_key=handle.key)

    def _enforce_warm_cap(self, keep: WorkerHandle) -> None:
        """Over ``limits.maxWarmSessions``: ask the least recently used other workers to close
        their warm ``claude`` (a busy one keeps it and is asked again after its next run)."""
        warm = self._warm_handles()
        excess = len(warm) - self.settings.limits.max_warm_sessions
        # the spare's (started ahead, for no session yet) goes first, then the least
        # recently used
        closable = [h for h in warm if h is not keep or h.state == "spare"]
        for handle in sorted(closable, key=lambda h: (h.state != "spare", h.warm_used)):
            if excess <= 0:
                break
            assert handle.channel is not None
            handle.channel.send_nowait({"type": "close_warm"})
            excess -= 1

    def send_to_worker(self, key: SessionKey, frame: ipc.Message) -> bool:
        """A frame for ``key``'s worker (an approval's answer); False when it is gone."""
        handle = self.workers.get(key)
        if handle is None or handle.channel is None:
            return False
        handle.channel.send_nowait(frame)
        return True

    def push_event(self, msg_id: str, event: RunEvent) -> bool:
        """An event into a message's stream (its frontend sees it); False when it is over."""
        ticket = self.tickets.get(msg_id)
        if ticket is None or ticket.finished:
            return False
        ticket.push(event)
        return True

    def _send_grant(self, handle: WorkerHandle, msg_id: str) -> None:
        if handle.channel is not None:
            handle.channel.send_nowait({"type": "grant", "msg_id": msg_id})

    def _record(self, handle: WorkerHandle, event: RunEvent) -> None:
        try:
            self.on_event(handle.key, event)
        except Exception:  # the recorder must never break the event stream
            log.exception("pool.on_event_failed", session_key=handle.key)

    def _on_event(self, handle: WorkerHandle, event: RunEvent) -> None:
        handle.last_activity = time.monotonic()
        ticket = self.tickets.get(event.msg_id)
        if ticket is not None and ticket.worker is not handle:
            ticket = None  # a late event of a worker that no longer holds it
        if isinstance(event, RunStarted) and ticket is not None:
            ticket.claude = ProcessIdentity.of(event.pid)
        self._record(handle, event)
        if ticket is None:
            return
        if isinstance(event, RunQueued) and ticket.attempts > 1:
            return  # a retry after a crash: the user saw it queued
        if isinstance(event, RunFailed) and event.reason == "rate_limited":
            self.note_rate_limit(event.retry_at)
        elif isinstance(event, RunDone) and self.limit_until is not None:
            log.info("pool.rate_limit_lifted", session_key=handle.key)  # a run got through
            self.resume_runs()
        if not is_final(event):
            ticket.push(event)
            return
        self._finish(ticket, event)
        if not self.holds(handle):
            self._arm_idle_timer(handle)
            self._unblock()

    # ---- idle retirement and health -----------------------------------------------------

    def _arm_idle_timer(self, handle: WorkerHandle) -> None:
        if handle.idle_timer is not None:
            handle.idle_timer.cancel()
        if handle.retire_when_idle and handle.state == "ready":
            self._retire(handle)
            return
        loop = asyncio.get_running_loop()
        handle.idle_timer = loop.call_later(
            self.settings.limits.worker_idle_seconds, self._retire_if_idle, handle
        )
        if self._idle_cap_timer is None:  # not now: the answer that made it idle is on its way
            self._idle_cap_timer = loop.call_later(IDLE_CAP_DELAY_S, self._enforce_idle_cap)

    def _enforce_idle_cap(self) -> None:
        """Over ``limits.maxIdleWorkers`` idle workers: the least recently used ones exit
        (with their warm ``claude``). An idle worker costs ~8 MB and its warm ``claude``
        ~200 MB; a thread whose worker left starts cold, which is all it loses."""
        self._idle_cap_timer = None
        if self.closing:
            return
        idle = self._idle_workers()
        excess = len(idle) - self.settings.limits.max_idle_workers
        for handle in idle[: max(0, excess)]:
            if self._spare_wanted():  # the first becomes the spare (none is on its way)
                self._recycle(handle)
                continue
            log.info("worker.idle_exit", session_key=handle.key, worker_pid=handle.pid, lru=True)
            self._retire(handle)

    def _retire_if_idle(self, handle: WorkerHandle) -> None:
        handle.idle_timer = None
        if not self.holds(handle) and handle.state == "ready":
            log.info("worker.idle_exit", session_key=handle.key, worker_pid=handle.pid)
            self._retire(handle)

    def _retire(self, handle: WorkerHandle) -> None:
        """Ask a worker with nothing to do to exit; the key's next message starts a new one."""
        self._leave_key(handle, "stopping")
        if handle.channel is not None:
            handle.channel.send_nowait({"type": "shutdown", "grace": 0})

    def _leave_key(self, handle: WorkerHandle, state: str) -> None:
        """``handle`` no longer serves its key; a process still (counted under maxWorkers,
        ended with the others) until it exits or becomes the spare."""
        handle.state = state
        if handle.idle_timer:
            handle.idle_timer.cancel()
            handle.idle_timer = None
        if self.workers.get(handle.key) is handle:
            del self.workers[handle.key]
        self.leaving.add(handle)

    async def _health_loop(self) -> None:
        seq = 0
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            self.last_health_check = time.monotonic()
            seq += 1
            now = time.monotonic()
            for handle in self._listening():
                if handle.channel is None or handle.process is None:
                    continue
                if handle.pinged_at and now - handle.pinged_at > PING_TIMEOUT_S:
                    self._kill_hung(handle, f"no answer to pings for {PING_TIMEOUT_S:.0f} s")
                    continue
                if not self.holds(handle) and now - handle.last_pong < IDLE_PING_INTERVAL_S:
                    continue  # idle: a hang costs nobody a message; checked less often
                if not handle.pinged_at:
                    handle.pinged_at = now
                handle.channel.send_nowait({"type": "ping", "seq": seq})

    async def refresh_stats(self, within: float = 2.0) -> None:
        """Ping every worker now and wait (at most ``within`` s) for the answers, so that
        ``status`` reports what is true now, not at the last health check."""
        handles = [*self._listening(), *self._spare_listening()]
        if not handles:
            return
        for handle in handles:
            assert handle.channel is not None
            handle.pong.clear()
            handle.channel.send_nowait({"type": "ping", "seq": 0, "stats": True})
        answers = [asyncio.ensure_future(h.pong.wait()) for h in handles]
        _done, late = await asyncio.wait(answers, timeout=within)
        for fut in late:
            fut.cancel()

    def status(self) -> list[WorkerStatus]:
        """One entry per live worker and the spare (with the ``claude`` it may have
        started ahead), from its last pong (call ``refresh_stats`` first)."""
        result = []
        for handle in [*self.live_handles(), *self._spare_listening()]:
            stats = handle.stats
            result.append(
                WorkerStatus(
                    key=handle.key,
                    pid=handle.pid,
                    state=handle.state
                    if handle.state != "ready"
                    else str(stats.get("state", "idle")),
                    # the worker's own count; before its first pong, what it was given
                    queue_length=int(stats.get("queue_length", len(self.held_by(handle)))),
                    running_msg_id=str(stats.get("running_msg_id", "")),
                    run_elapsed_s=float(stats.get("run_elapsed_s", 0.0)),
                    session_id=str(stats.get("session_id", "")),
                    claude_pid=int(stats.get("claude_pid", 0)),
                    claude_mode=str(stats.get("claude_mode", "")),
                    claude_rss_bytes=int(stats.get("claude_rss_bytes", 0)),
                )
            )
        return result

    def counts(self) -> dict[str, int]:
        """Numbers for the systemd STATUS line."""
        running = len(self.slots.active)
        queued = len(self.tickets) - running
        return {
            "workers": len([h for h in self.live_handles() if h.process is not None]),
            "running": running,
            "queued": max(0, queued),
        }
