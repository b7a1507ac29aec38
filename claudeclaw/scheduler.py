"""When jobs and the heartbeat run: next times computed, last runs remembered on disk.

The original matched every job against the clock once a minute with no memory, so a late
timer skipped a minute, an early one ran it twice, and downtime lost runs. Here each job's
*last slot* (the schedule time it last ran for) is written atomically to ``schedule.json``
when the run starts. A job is due when the schedule's first time after that slot has come:

* it runs once for all the slots that passed (after downtime: the catch-up, like systemd's
  ``Persistent=true``; ``catchUp: false`` makes a start skip what was missed), and its
  last slot becomes the latest passed one, so a clock that jumps forward never skips a
  run and one that jumps back never repeats it;
* a job never overlaps itself: slots that pass while it runs are dropped (and logged);
* while Claude's usage limit holds nothing starts; due runs start once it resets;
* a one-shot job (``recurring`` not set) runs at its first time after it was first seen
  and is then marked ``done`` in ``schedule.json``: the file is never rewritten. Editing
  its schedule or prompt arms it again; deleting the file forgets it.

Between decisions the loop sleeps until the next due time, but at most ``MAX_SLEEP_S`` so
that wall-clock changes and edited job files are noticed (re-read when the directory's
names, sizes or mtimes change, and on every reload). Everything time-related goes through
an injectable clock, so tests never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from claudeclaw import heartbeat as hb
from claudeclaw import jsonstore
from claudeclaw.config import Settings
from claudeclaw.cron import settings_zone
from claudeclaw.errors import ClaudeclawError
from claudeclaw.jobfiles import Job, JobFileError, directory_stamp, load_jobs
from claudeclaw.logs import get_logger
from claudeclaw.model import parse_time
from claudeclaw.paths import ProjectPaths

log = get_logger()

MAX_SLEEP_S = 60.0
LATE = timedelta(minutes=1)  # a run this late (downtime, clock jump) is a catch-up
HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended. ``text`` is the reply, or a message safe to show on failure."""

    ok: bool
    text: str
    reason: str = ""  # failure reason (RunFailed.reason), "" when ok


RunJob = Callable[[Job, str, str], Awaitable[Outcome]]
"""``run_job(job, prompt, trigger)``; trigger is "schedule", "catch-up" or "manual"."""
RunHeartbeat = Callable[[str, str], Awaitable[Outcome]]
"""``run_heartbeat(prompt, trigger)``."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def jobs_directory(paths: ProjectPaths, settings: Settings) -> Path:
    """``jobsDir`` (relative to the project) or ``.claude/claudeclaw/jobs``."""
    if not settings.jobs_dir:
        return paths.jobs_dir
    given = Path(settings.jobs_dir).expanduser()
    return given if given.is_absolute() else paths.root / given


def _iso(moment: datetime | None, tz: tzinfo) -> str:
    return moment.astimezone(tz).isoformat(timespec="seconds") if moment else ""


def _record(entry: dict[str, Any], outcome: Outcome, when: datetime) -> None:
    """Note how a run ended in its ``schedule.json`` entry (a job's or the heartbeat's)."""
    entry["last_run"] = when.isoformat()
    entry["last_outcome"] = "ok" if outcome.ok else (outcome.reason or "error")
    entry["error"] = "" if outcome.ok else outcome.text[:500]


def _row(name: str, **fields: Any) -> dict[str, Any]:
    """A ``listing`` row: every key, in this order, whatever the row is about."""
    return {
        "name": name,
        "schedule": "",
        "recurring": False,
        "enabled": False,
        "running": False,
        "next_run": "",
        "last_run": "",
        "last_outcome": "",
        "done": False,
        "error": "",
        "warnings": [],
        **fields,
    }


class Scheduler:
    """Owns the job list, ``schedule.json`` and the tasks running jobs (see module doc)."""

    def __init__(
        self,
        paths: ProjectPaths,
        settings: Settings,
        *,
        run_job: RunJob,
        run_heartbeat: RunHeartbeat,
        clock: Callable[[], datetime] = utc_now,
        limit_holds: Callable[[], datetime | None] = lambda: None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.run_job = run_job
        self.run_heartbeat = run_heartbeat
        self.clock = clock
        self.limit_holds = limit_holds
        self.sleep = sleep
        self.jobs: dict[str, Job] = {}
        self.file_errors: list[JobFileError] = []
        self.state: dict[str, Any] = {"version": 1, "jobs": {}, "heartbeat": {}}
        self.running: dict[str, asyncio.Task[Outcome]] = {}
        self.started_at = clock()
        self.heartbeat_last = self.started_at
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._reported: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._save_lock = asyncio.Lock()
        self._rescan_lock = asyncio.Lock()

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def tz(self) -> tzinfo:
        return settings_zone(self.settings.timezone, self.settings.timezone_offset_minutes)

    async def load(self) -> None:
        """Read ``schedule.json`` and the job files; apply the start-up catch-up rule."""
        try:
            data = await asyncio.to_thread(
                jsonstore.read_json, self.paths.schedule_file, validate=jsonstore.is_object
            )
        except ClaudeclawError as exc:
            # keep the bad file for a look, start again: this is run history, not work
            aside = self.paths.schedule_file.with_name("schedule.json.corrupt")
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.paths.schedule_file.replace, aside)
            log.error("scheduler.state_unreadable", error=str(exc), moved_to=str(aside))
            data = None
        if isinstance(data, dict):
            self.state["jobs"] = data.get("jobs") if isinstance(data.get("jobs"), dict) else {}
            beat = data.get("heartbeat")
            self.state["heartbeat"] = beat if isinstance(beat, dict) else {}
        await self.rescan(force=True)
        now = self.clock()
        for job in self.jobs.values():
            entry = self._entry(job.name)
            if not job.catch_up and job.schedule is not None and job.enabled:
                # a start skips what was missed while the daemon was down
                slot = parse_time(entry.get("last_slot"))
                if self._due(job, entry) is not None:
                    entry["last_slot"] = job.schedule.latest_at_or_before(now, self.tz).isoformat()
                    if not job.recurring:
                        entry["done"] = True
                        entry["last_outcome"] = "missed"
                    log.info("job.missed_not_caught_up", job_name=job.name, last_slot=str(slot))
        await self.save()

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        self._stamp = None  # re-read the job files (jobsDir may have changed)
        self.wake()

    def wake(self) -> None:
        """Decide again now (settings, files or the usage limit changed)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # a wake() from here on is not lost
            try:
                await self.rescan()
                now = self.clock()
                await self.tick(now)
                wake = self.next_wake(now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad decision must not end scheduling
                log.error("scheduler.error", error=repr(exc), exc_info=exc)
                wake = None
            now = self.clock()
            delay = MAX_SLEEP_S if wake is None else (wake - now).total_seconds()
            delay = min(MAX_SLEEP_S, max(0.05, delay))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # ---- job files ----------------------------------------------------------------------

    async def rescan(self, *, force: bool = False) -> bool:
        """Re-read the job files if the directory changed (or ``force``); True if read.
        One at a time: a caller never sees the new stamp with the old jobs."""
        async with self._rescan_lock:
            directory = jobs_directory(self.paths, self.settings)
            stamp = await asyncio.to_thread(directory_stamp, directory)
            if not force and stamp == self._stamp:
                return False
            jobs, errors = await asyncio.to_thread(load_jobs, directory)
            self._stamp = stamp
            await self._take(jobs, errors)
            return True

    async def _take(self, jobs: list[Job], errors: list[JobFileError]) -> None:
        """Make freshly read job files current: log what changed, arm new schedules."""
        now = self.clock()
        old = self.jobs
        self.jobs = {job.name: job for job in jobs}
        self.file_errors = errors
        for error in errors:
            if (error.name, error.message) not in self._reported:
                self._reported.add((error.name, error.message))
                log.error(
                    "job.file_invalid",
                    job_name=error.name,
                    file=str(error.path),
                    error=error.message,
                )
        for job in jobs:
            for warning in job.warnings:
                if (job.name, warning) not in self._reported:
                    self._reported.add((job.name, warning))
                    log.warning(
                        "job.file_warning", job_name=job.name, file=str(job.path), detail=warning
                    )
            self._arm(job, now)
        for name in old.keys() - self.jobs.keys():
            log.info("job.removed", job_name=name)
        for name in self.jobs.keys() - old.keys():
            log.info("job.loaded", job_name=name, schedule=self._schedule_text(self.jobs[name]))
        await self.save()

    def _entry(self, name: str) -> dict[str, Any]:
        jobs: dict[str, Any] = self.state["jobs"]
        entry = jobs.get(name)
        if not isinstance(entry, dict):
            entry = jobs[name] = {}
        return entry

    def _arm(self, job: Job, now: datetime) -> None:
        """First sight of a job (or of a new schedule/prompt, or of it enabled again):
        its schedule counts from now, so past times are not run for it."""
        entry = self._entry(job.name)
        schedule = self._schedule_text(job)
        changed = (
            entry.get("schedule") != schedule
            or (not job.recurring and entry.get("fingerprint") != job.fingerprint)
            or bool(entry.get("disabled")) != (not job.enabled)
        )
        if "armed_at" in entry and not changed:
            return
        if "armed_at" in entry:
            log.info("job.rearmed", job_name=job.name, schedule=schedule)
        entry["armed_at"] = now.isoformat()
        entry["schedule"] = schedule
        entry["fingerprint"] = job.fingerprint
        entry["disabled"] = not job.enabled
        entry["done"] = False

    @staticmethod
    def _schedule_text(job: Job) -> str:
        return job.schedule.expr if job.schedule else ""

    # ---- decisions ----------------------------------------------------------------------

    def _due(self, job: Job, entry: dict[str, Any]) -> datetime | None:
        """The next time ``job`` should run (may be in the past: then it is due)."""
        if job.schedule is None or not job.enabled or entry.get("done"):
            return None
        armed = parse_time(entry.get("armed_at")) or self.started_at
        slot = parse_time(entry.get("last_slot"))
        base = max(armed, slot) if slot is not None else armed
        return job.schedule.next_after(base, self.tz)

    def _heartbeat_due(self, now: datetime) -> datetime | None:
        settings = self.settings.heartbeat
        if not settings.enabled:
            return None
        return hb.next_beat(settings, self.heartbeat_last, now, self.tz)

    def next_wake(self, now: datetime) -> datetime | None:
        """The earliest time something may become due (None: nothing is scheduled)."""
        times = [
            due
            for job in self.jobs.values()
            if job.name not in self.running
            and (due := self._due(job, self._entry(job.name))) is not None
        ]
        if HEARTBEAT not in self.running and (beat := self._heartbeat_due(now)) is not None:
            times.append(beat)
        until = self.limit_holds()
        if until is not None:
            times = [max(t, until) for t in times]
        return min(times) if times else None

    def next_due(self, now: datetime) -> tuple[str, datetime] | None:
        """The next job (or heartbeat) to run and when: for ``status`` and systemd STATUS."""
        best: tuple[str, datetime] | None = None
        for job in self.jobs.values():
            due = self._due(job, self._entry(job.name))
            if due is not None and (best is None or due < best[1]):
                best = (job.name, max(due, now))
        beat = self._heartbeat_due(now)
        if beat is not None and (best is None or beat < best[1]):
            best = (HEARTBEAT, beat)
        return best

    async def tick(self, now: datetime) -> list[str]:
        """Start everything due at ``now``; returns what was started."""
        if self.limit_holds() is not None:
            return []
        started: list[str] = []
        for job in list(self.jobs.values()):
            entry = self._entry(job.name)
            due = self._due(job, entry)
            if due is None or due > now or job.name in self.running:
                continue
            assert job.schedule is not None
            slot = job.schedule.latest_at_or_before(now, self.tz)
            missed = job.schedule.next_after(due, self.tz) <= now
            entry["last_slot"] = slot.isoformat()
            if not job.recurring:
                entry["done"] = True
            trigger = "catch-up" if missed or now - due > LATE else "schedule"
            started.append(job.name)
            self._launch(job.name, self._run_job(job, trigger, slot))
        if (
            HEARTBEAT not in self.running
            and (beat := self._heartbeat_due(now)) is not None
            and beat <= now
        ):
            self.heartbeat_last = now
            started.append(HEARTBEAT)
            self._launch(HEARTBEAT, self._run_heartbeat("schedule"))
        if started:
            await self.save()
        return started

    def _launch(self, name: str, coro: Awaitable[Outcome]) -> asyncio.Task[Outcome]:
        task: asyncio.Task[Outcome] = asyncio.ensure_future(coro)
        self.running[name] = task

        def done(_: asyncio.Task[Outcome]) -> None:
            if self.running.get(name) is task:
                del self.running[name]
            self.wake()

        task.add_done_callback(done)
        return task

    async def idle(self) -> None:
        """Until no job or heartbeat is running (tests)."""
        while self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)

    # ---- running ------------------------------------------------------------------------

    async def _run_job(self, job: Job, trigger: str, slot: datetime | None) -> Outcome:
        log.info("job.started", job_name=job.name, trigger=trigger)
        outcome = Outcome(False, "not run", "error")
        attempts = 1 + job.retry
        for attempt in range(1, attempts + 1):
            try:
                prompt = await asyncio.to_thread(job.read_prompt, self.paths.root)
            except (OSError, UnicodeDecodeError) as exc:
                outcome = Outcome(
                    False, f"cannot read the prompt file {job.prompt}: {exc}", "error"
                )
                break
            outcome = await self.run_job(job, prompt, trigger)
            if outcome.ok or outcome.reason in ("shutdown", "kept", "cancelled"):
                break
            if attempt < attempts:
                log.warning(
                    "job.retry",
                    job_name=job.name,
                    attempt=attempt,
                    delay_s=job.retry_delay_s,
                    reason=outcome.reason,
                )
                await self.sleep(job.retry_delay_s)
        entry = self._entry(job.name)
        _record(entry, outcome, self.clock())
        if slot is not None and job.schedule is not None:
            now = self.clock()
            latest = job.schedule.latest_at_or_before(now, self.tz)
            if latest > slot:  # times that came while it ran: dropped, never piled up
                entry["last_slot"] = latest.isoformat()
                log.warning("job.overlap_skipped", job_name=job.name, until=latest.isoformat())
        log.info(
            "job.finished",
            job_name=job.name,
            ok=outcome.ok,
            reason=outcome.reason,
            trigger=trigger,
        )
        await self.save()
        return outcome

    async def _run_heartbeat(self, trigger: str) -> Outcome:
        try:
            prompt = await asyncio.to_thread(
                hb.build_prompt,
                self.settings.heartbeat,
                self.paths.root,
                self.paths.heartbeat_prompt_override,
            )
        except (OSError, UnicodeDecodeError) as exc:
            outcome = Outcome(False, f"cannot read the heartbeat prompt file: {exc}", "error")
        else:
            outcome = await self.run_heartbeat(prompt, trigger)
        _record(self.state["heartbeat"], outcome, self.clock())
        await self.save()
        return outcome

    async def run_now(self, name: str) -> Outcome:
        """``claudeclaw jobs run NAME`` / ``heartbeat run``: now, whatever the schedule."""
        if name in self.running:
            return Outcome(False, f"{name} is running already; try again when it is done.", "busy")
        if name == HEARTBEAT:
            task = self._launch(HEARTBEAT, self._run_heartbeat("manual"))
        else:
            await self.rescan()
            job = self.jobs.get(name)
            if job is None:
                known = ", ".join(sorted(self.jobs)) or "none"
                bad = [e for e in self.file_errors if e.name == name]
                why = f" (its file has an error: {bad[0].message})" if bad else ""
                return Outcome(False, f"no job named {name!r}{why}; jobs: {known}", "unknown")
            task = self._launch(name, self._run_job(job, "manual", None))
        return await asyncio.shield(task)

    # ---- state --------------------------------------------------------------------------

    async def save(self) -> None:
        """Write ``schedule.json`` atomically (forgetting files that are gone)."""
        async with self._save_lock:
            known = self.jobs.keys() | {e.name for e in self.file_errors}
            jobs = {k: v for k, v in self.state["jobs"].items() if k in known}
            self.state["jobs"] = jobs
            document = {"version": 1, "jobs": jobs, "heartbeat": self.state["heartbeat"]}
            try:
                await asyncio.to_thread(jsonstore.write_json, self.paths.schedule_file, document)
            except (OSError, ClaudeclawError) as exc:
                log.error("scheduler.state_write_failed", error=str(exc))

    def listing(self, now: datetime) -> list[dict[str, Any]]:
        """One row per job file (and the heartbeat), for ``jobs list`` and ``/jobs``."""
        tz = self.tz
        rows: list[dict[str, Any]] = []
        hold = self.limit_holds()
        for job in sorted(self.jobs.values(), key=lambda j: j.name):
            entry = self._entry(job.name)
            due = self._due(job, entry)
            if due is not None and hold is not None:
                due = max(due, hold)
            rows.append(
                _row(
                    job.name,
                    schedule=self._schedule_text(job),
                    recurring=job.recurring,
                    enabled=job.enabled,
                    running=job.name in self.running,
                    next_run=_iso(max(due, now) if due else None, tz),
                    last_run=_iso(parse_time(entry.get("last_run")), tz),
                    last_outcome=str(entry.get("last_outcome", "")),
                    done=bool(entry.get("done")),
                    error=str(entry.get("error", "")),
                    warnings=list(job.warnings),
                )
            )
        for error in self.file_errors:
            rows.append(
                _row(
                    error.name,
                    last_outcome="invalid",
                    error=f"{error.path.name}: {error.message}",
                )
            )
        if self.settings.heartbeat.enabled or self.state["heartbeat"]:
            beat = self.state["heartbeat"]
            enabled = self.settings.heartbeat.enabled
            rows.append(
                _row(
                    HEARTBEAT,
                    schedule=f"every {self.settings.heartbeat.interval_minutes:g} min"
                    if enabled
                    else "disabled",
                    recurring=True,
                    enabled=enabled,
                    running=HEARTBEAT in self.running,
                    next_run=_iso(self._heartbeat_due(now), tz),
                    last_run=_iso(parse_time(beat.get("last_run")), tz),
                    last_outcome=str(beat.get("last_outcome", "")),
                    error=str(beat.get("error", "")),
                )
            )
        return rows
