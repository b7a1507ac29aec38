"""Jobs and the heartbeat inside the daemon: run them through the queue, post the results.

The supervisor owns one :class:`JobService`. The :class:`~claudeclaw.scheduler.Scheduler`
decides *when*; this module decides *how*: a job is submitted as its own session key
``job:<name>`` (its own worker, so it runs in parallel with chats within
``limits.maxConcurrentRuns`` and never twice at once), the heartbeat in the ``global``
session as in the original. Results become notices (``notices.py``) that the bot posts to
``discord.notifyChannelId`` or, by default, as DMs to every allowlisted user; a reply of
``HEARTBEAT_OK`` is not posted, and ``notify: error`` posts failures only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Protocol

from claudeclaw import __version__
from claudeclaw import heartbeat as hb
from claudeclaw.config import Settings
from claudeclaw.frontend.prompt import clock_prefix
from claudeclaw.frontend.render import failure_text
from claudeclaw.jobfiles import Job
from claudeclaw.logs import get_logger
from claudeclaw.model import GLOBAL_KEY, RunDone, RunEvent, RunFailed, SessionKey, job_key
from claudeclaw.notices import Notice, NoticeOutbox, NoticeSink
from claudeclaw.paths import ProjectPaths
from claudeclaw.scheduler import HEARTBEAT, Outcome, Scheduler, utc_now
from claudeclaw.tasks import TaskSet

log = get_logger()

MAX_NOTICE_CHARS = 100_000  # longer results are cut (the sink attaches long ones as a file)


class JobHost(Protocol):
    """What the service needs from the daemon (the supervisor)."""

    def submit(
        self,
        key: SessionKey,
        prompt: str,
        *,
        origin: str = ...,
        overrides: dict[str, Any] | None = ...,
    ) -> AsyncIterator[RunEvent]: ...

    def rate_limit_holds(self) -> datetime | None: ...


class JobService:
    """Scheduler + outbox, wired to the daemon's queue (see the module docstring)."""

    def __init__(
        self,
        host: JobHost,
        paths: ProjectPaths,
        settings: Settings,
        *,
        sink: Callable[[], NoticeSink | None],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.host = host
        self.paths = paths
        self.settings = settings
        self.clock = clock
        self.outbox = NoticeOutbox(paths.outbox_notices_file, sink)
        self.scheduler = Scheduler(
            paths,
            settings,
            run_job=self._run_job,
            run_heartbeat=self._run_heartbeat,
            clock=clock,
            limit_holds=host.rate_limit_holds,
        )
        self._limit_noticed: datetime | None = None
        self._tasks = TaskSet("jobs")

    async def start(self) -> None:
        await self.outbox.load()
        await self.scheduler.load()
        self.outbox.start()
        self.outbox.kick()  # what an earlier run of the daemon could not post
        self.scheduler.start()
        if self.settings.discord.notify_channel_id:
            await self.outbox.add(Notice("lifecycle", f"▶️ claudeclaw {__version__} started."))

    async def stop_notice(self) -> None:
        """Say goodbye in the notify channel (only there: DMs on every restart are noise)."""
        if self.settings.discord.notify_channel_id:
            await self.outbox.add(Notice("lifecycle", "⏹️ claudeclaw is stopping."))
            await asyncio.wait_for(self.outbox.flush(), 10)

    async def close(self) -> None:
        await self.scheduler.close()
        await self._tasks.cancel_all()
        await self.outbox.close()

    async def apply_settings(self, settings: Settings) -> None:
        """New settings (reload): the job files are read again before this returns."""
        self.settings = settings
        self.scheduler.apply_settings(settings)
        await self.scheduler.rescan(force=True)

    # ---- what the daemon reports --------------------------------------------------------

    async def fresh_listing(self) -> list[dict[str, Any]]:
        """The rows after a cheap check that no job file changed since the last read."""
        await self.scheduler.rescan()
        return self.listing()

    def listing(self) -> list[dict[str, Any]]:
        return self.scheduler.listing(self.clock())

    def next_due(self) -> tuple[str, datetime] | None:
        return self.scheduler.next_due(self.clock())

    async def run_now(self, name: str) -> Outcome:
        return await self.scheduler.run_now(name)

    def note_usage_limit(self, until: datetime | None) -> None:
        """Claude's usage limit was hit: one notice per pause (the original's)."""
        if until is None or until == self._limit_noticed:
            return
        self._limit_noticed = until
        local = until.astimezone(self.scheduler.tz)
        text = (
            f"🚦 Claude's usage limit was reached. Messages, jobs and the heartbeat wait until "
            f"{local:%Y-%m-%d %H:%M} ({local:%Z}) and then run."
        )
        self._tasks.start(self._notify(Notice("limit", text)), "limit-notice")
        self.scheduler.wake()

    # ---- running ------------------------------------------------------------------------

    def _prompt(self, text: str) -> str:
        """The clock line first, like the original's job and heartbeat prompts."""
        prefix = clock_prefix(self.clock(), self.settings.timezone_offset_minutes)
        return f"{prefix}\n{text}"

    async def _submit(
        self, key: SessionKey, prompt: str, origin: str, overrides: dict[str, Any] | None = None
    ) -> Outcome:
        final: RunDone | RunFailed | None = None
        stream = self.host.submit(key, self._prompt(prompt), origin=origin, overrides=overrides)
        async for event in stream:
            if isinstance(event, RunDone | RunFailed):
                final = event
        if isinstance(final, RunDone):
            return Outcome(True, final.reply)
        if isinstance(final, RunFailed):
            return Outcome(False, failure_text(final), final.reason)
        return Outcome(False, "the run ended without a result", "error")

    async def _notify(self, notice: Notice) -> None:
        """Keep ``notice`` for the bot; without a Discord token there is no bot: log only."""
        if not self.settings.discord.token:
            log.info(
                "notice.not_posted",
                kind=notice.kind,
                job_name=notice.job_name,
                why="no Discord token (local only)",
            )
            return
        await self.outbox.add(notice)

    async def _run_job(self, job: Job, prompt: str, trigger: str) -> Outcome:
        overrides: dict[str, Any] = {}
        if job.model:
            overrides["model"] = job.model
        if job.timeout_s:
            overrides["timeout_s"] = job.timeout_s
        outcome = await self._submit(job_key(job.name), prompt, "job", overrides)
        if outcome.reason in ("shutdown", "kept"):
            return outcome  # the daemon is stopping: nothing to tell
        post = job.notify == "always" or (job.notify == "error" and not outcome.ok)
        if post:
            title = f"🗓️ **Job `{job.name}`**" + (f" ({job.label})" if job.label else "")
            if trigger == "catch-up":
                title += " · catch-up run"
            if not outcome.ok:
                title += " failed"
            text = f"{title}\n{outcome.text}"[:MAX_NOTICE_CHARS]
            await self._notify(Notice("job", text, job_name=job.name))
        return outcome

    async def _run_heartbeat(self, prompt: str, trigger: str) -> Outcome:
        outcome = await self._submit(GLOBAL_KEY, prompt, "heartbeat")
        if outcome.reason in ("shutdown", "kept"):
            return outcome
        if outcome.ok and hb.is_ok_reply(outcome.text):
            log.info("heartbeat.ok", trigger=trigger)
            return outcome
        title = "💓 **Heartbeat**" + ("" if outcome.ok else " failed")
        await self._notify(Notice("heartbeat", f"{title}\n{outcome.text}"[:MAX_NOTICE_CHARS]))
        return outcome


def next_due_text(service: JobService | None) -> str:
    """``next job: name at HH:MM`` for STATUS= (ASCII), or ""."""
    if service is None:
        return ""
    due = service.next_due()
    if due is None:
        return ""
    name, when = due
    local = when.astimezone(service.scheduler.tz)
    label = "heartbeat" if name == HEARTBEAT else f"job {name}"
    return f"next {label} at {local:%Y-%m-%d %H:%M}"
