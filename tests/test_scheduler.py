"""scheduler.py with an injectable clock: catch-up, clock jumps, no overlap, one-shot jobs,
the usage-limit hold, the heartbeat and its quiet windows. Nothing here sleeps."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from claudeclaw import heartbeat as hb
from claudeclaw.config import HeartbeatSettings, QuietWindow, Settings
from claudeclaw.jobfiles import Job
from claudeclaw.paths import ProjectPaths
from claudeclaw.scheduler import HEARTBEAT, Outcome, Scheduler

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


class Runs:
    """Records job runs; a run can be held open with a gate."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.gate: asyncio.Event | None = None
        self.results: list[Outcome] = []

    async def job(self, job: Job, prompt: str, trigger: str) -> Outcome:
        self.calls.append((job.name, prompt, trigger))
        if self.gate is not None:
            await self.gate.wait()
        return self.results.pop(0) if self.results else Outcome(True, f"done {job.name}")

    async def beat(self, prompt: str, trigger: str) -> Outcome:
        self.calls.append((HEARTBEAT, prompt, trigger))
        return Outcome(True, "HEARTBEAT_OK")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def _write_job(paths: ProjectPaths, name: str, front: str, body: str = "do it") -> None:
    paths.jobs_dir.mkdir(parents=True, exist_ok=True)
    (paths.jobs_dir / f"{name}.md").write_text(f"---\n{front}\n---\n{body}\n")


async def _scheduler(
    paths: ProjectPaths,
    clock: Clock,
    runs: Runs,
    settings: Settings | None = None,
    **kw: Any,
) -> Scheduler:
    sched = Scheduler(
        paths,
        settings or Settings(),
        run_job=runs.job,
        run_heartbeat=runs.beat,
        clock=clock,
        **kw,
    )
    await sched.load()
    return sched


async def _tick(sched: Scheduler, clock: Clock) -> list[str]:
    started = await sched.tick(clock())
    await sched.idle()
    return started


@pytest.fixture
def paths(tmp_path: Path) -> ProjectPaths:
    return ProjectPaths(tmp_path)


async def test_recurring_job_runs_at_each_time_and_sleeps_until_the_next(
    paths: ProjectPaths,
) -> None:
    _write_job(paths, "hourly", "schedule: 0 * * * *\nrecurring: true")
    clock, runs = Clock(T0 + timedelta(minutes=10)), Runs()
    sched = await _scheduler(paths, clock, runs)
    assert await _tick(sched, clock) == []  # 08:00 passed before it was first seen
    assert sched.next_wake(clock()) == T0 + timedelta(hours=1)
    clock.now = T0 + timedelta(hours=1)
    assert await _tick(sched, clock) == ["hourly"]
    assert await _tick(sched, clock) == []  # the same time never runs twice
    clock.advance(minutes=59, seconds=59)
    assert await _tick(sched, clock) == []
    clock.advance(seconds=1)
    assert await _tick(sched, clock) == ["hourly"]
    assert runs.calls[0] == ("hourly", "do it", "schedule")


async def test_missed_runs_are_caught_up_once_at_start(paths: ProjectPaths) -> None:
    _write_job(paths, "hourly", "schedule: 0 * * * *\nrecurring: true")
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs)
    clock.now = T0 + timedelta(hours=1)
    assert await _tick(sched, clock) == ["hourly"]
    await sched.close()
    # the daemon is down for five hours, then starts again
    clock.now = T0 + timedelta(hours=6, minutes=20)
    runs2 = Runs()
    again = await _scheduler(paths, clock, runs2)
    assert await _tick(again, clock) == ["hourly"]
    assert runs2.calls == [("hourly", "do it", "catch-up")]
    assert await _tick(again, clock) == []  # once, not once per missed hour
    assert again.next_wake(clock()) == T0 + timedelta(hours=7)


async def test_catch_up_false_skips_what_was_missed_while_down(paths: ProjectPaths) -> None:
    _write_job(paths, "hourly", "schedule: 0 * * * *\nrecurring: true\ncatchUp: false")
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs)
    clock.now = T0 + timedelta(hours=1)
    assert await _tick(sched, clock) == ["hourly"]
    clock.now = T0 + timedelta(hours=6, minutes=20)
    again = await _scheduler(paths, clock, Runs())
    assert await _tick(again, clock) == []
    assert again.next_wake(clock()) == T0 + timedelta(hours=7)


async def test_clock_jumping_forward_runs_once_and_back_does_not_repeat(
    paths: ProjectPaths,
) -> None:
    _write_job(paths, "q", "schedule: */15 * * * *\nrecurring: true")
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs)
    clock.now = T0 + timedelta(minutes=15)
    assert await _tick(sched, clock) == ["q"]
    clock.now = T0 + timedelta(hours=3, minutes=1)  # NTP jumps three hours ahead
    assert await _tick(sched, clock) == ["q"]  # one run for the jump, not twelve
    clock.now = T0 + timedelta(minutes=16)  # and back again
    assert await _tick(sched, clock) == []
    clock.now = T0 + timedelta(hours=3, minutes=14)
    assert await _tick(sched, clock) == []
    clock.now = T0 + timedelta(hours=3, minutes=15)
    assert await _tick(sched, clock) == ["q"]
    assert len(runs.calls) == 3


async def test_a_job_never_overlaps_itself(paths: ProjectPaths) -> None:
    _write_job(paths, "slow", "schedule: * * * * *\nrecurring: true")
    clock, runs = Clock(T0), Runs()
    runs.gate = asyncio.Event()
    sched = await _scheduler(paths, clock, runs)
    clock.advance(minutes=1)
    assert await sched.tick(clock()) == ["slow"]
    for _ in range(3):
        clock.advance(minutes=1)
        assert await sched.tick(clock()) == []  # still running: not started again
    assert (await sched.run_now("slow")).reason == "busy"
    runs.gate.set()
    await sched.idle()
    # the times that passed while it ran are dropped, not run back to back
    assert await sched.tick(clock()) == []
    assert runs.names() == ["slow"]
    clock.advance(minutes=1)
    assert await _tick(sched, clock) == ["slow"]


async def test_one_shot_runs_once_and_is_recorded_as_done(paths: ProjectPaths) -> None:
    _write_job(paths, "once", "schedule: 30 8 * * *")
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs)
    clock.now = T0 + timedelta(minutes=30)
    assert await _tick(sched, clock) == ["once"]
    clock.advance(days=1)
    assert await _tick(sched, clock) == []
    state = json.loads(paths.schedule_file.read_text())
    assert state["jobs"]["once"]["done"] is True
    assert state["jobs"]["once"]["last_outcome"] == "ok"
    # a restart does not run it again
    again = await _scheduler(paths, clock, runs)
    clock.advance(days=1)
    assert await _tick(again, clock) == []
    assert (paths.jobs_dir / "once.md").read_text().startswith("---\nschedule: 30 8")
    # editing it arms it again: it runs at its next time
    _write_job(paths, "once", "schedule: 30 8 * * *", body="do it again")
    await again.rescan(force=True)
    clock.now = clock.now.replace(hour=8, minute=30) + timedelta(days=1)
    assert await _tick(again, clock) == ["once"]
    assert runs.calls[-1][1] == "do it again"


async def test_usage_limit_holds_due_jobs_until_the_reset(paths: ProjectPaths) -> None:
    _write_job(paths, "hourly", "schedule: 0 * * * *\nrecurring: true")
    clock, runs = Clock(T0), Runs()
    reset = T0 + timedelta(hours=2, minutes=30)
    limit: list[datetime | None] = [reset]
    sched = await _scheduler(paths, clock, runs, limit_holds=lambda: limit[0])
    clock.now = T0 + timedelta(hours=1)
    assert await _tick(sched, clock) == []
    assert sched.next_wake(clock()) == reset
    row = sched.listing(clock())[0]
    assert row["next_run"] == reset.isoformat()
    clock.now = T0 + timedelta(hours=2)
    assert await _tick(sched, clock) == []
    limit[0] = None  # the limit reset
    clock.now = reset
    assert await _tick(sched, clock) == ["hourly"]  # once for the two held hours
    assert await _tick(sched, clock) == []


async def test_failed_runs_are_retried_and_recorded(paths: ProjectPaths) -> None:
    _write_job(paths, "flaky", "schedule: 0 * * * *\nrecurring: true\nretry: 1\nretry_delay: 5")
    clock, runs = Clock(T0), Runs()
    delays: list[float] = []

    async def no_sleep(seconds: float) -> None:
        delays.append(seconds)

    runs.results = [Outcome(False, "API error", "error"), Outcome(False, "again", "timeout")]
    sched = await _scheduler(paths, clock, runs, sleep=no_sleep)
    clock.now = T0 + timedelta(hours=1)
    await _tick(sched, clock)
    assert runs.names() == ["flaky", "flaky"]
    assert delays == [5.0]
    row = sched.listing(clock())[0]
    assert row["last_outcome"] == "timeout"
    assert row["error"] == "again"
    assert row["last_run"] == clock().isoformat()


async def test_files_are_reread_when_they_change(paths: ProjectPaths) -> None:
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs)
    assert sched.jobs == {}
    _write_job(paths, "new", "schedule: 5 8 * * *\nrecurring: true")
    assert await sched.rescan() is True
    assert await sched.rescan() is False  # nothing changed: not read again
    clock.now = T0 + timedelta(minutes=5)
    assert await _tick(sched, clock) == ["new"]
    _write_job(paths, "new", "schedule: this is wrong\nrecurring: true")
    assert await sched.rescan() is True
    assert sched.jobs == {}
    rows = sched.listing(clock())
    assert rows[0]["name"] == "new" and rows[0]["last_outcome"] == "invalid"
    assert "invalid cron expression" in rows[0]["error"]
    (paths.jobs_dir / "new.md").unlink()
    await sched.rescan()
    assert sched.listing(clock()) == []
    assert json.loads(paths.schedule_file.read_text())["jobs"] == {}


async def test_listing_times_are_iso_with_the_zone_offset(paths: ProjectPaths) -> None:
    _write_job(paths, "r", "schedule: 0 9 * * *\nrecurring: true")
    settings = Settings(timezone="Europe/Berlin")
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs, settings)
    row = sched.listing(clock())[0]
    assert row["next_run"] == "2026-03-03T09:00:00+01:00"  # 09:00 Berlin passed at 08:00 UTC
    assert sched.next_due(clock()) == ("r", datetime(2026, 3, 3, 8, tzinfo=UTC))


async def test_heartbeat_runs_every_interval_and_not_in_quiet_windows(
    paths: ProjectPaths,
) -> None:
    quiet = QuietWindow(start_minute=9 * 60, end_minute=10 * 60)
    settings = Settings(
        heartbeat=HeartbeatSettings(enabled=True, interval_minutes=30, exclude_windows=(quiet,))
    )
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs, settings)
    assert await _tick(sched, clock) == []
    clock.advance(minutes=30)
    assert await _tick(sched, clock) == [HEARTBEAT]
    assert hb.DEFAULT_TEMPLATE in runs.calls[0][1]
    clock.advance(minutes=30)  # 09:00: quiet
    assert await _tick(sched, clock) == []
    assert sched.next_wake(clock()) == T0 + timedelta(hours=2)
    clock.now = T0 + timedelta(hours=2)
    assert await _tick(sched, clock) == [HEARTBEAT]


async def test_heartbeat_prompt_file_and_override_are_read_each_beat(
    paths: ProjectPaths,
) -> None:
    settings = Settings(heartbeat=HeartbeatSettings(enabled=True, prompt="notes/hb.md"))
    (paths.root / "notes").mkdir()
    (paths.root / "notes" / "hb.md").write_text("check the build")
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs, settings)
    clock.advance(minutes=15)
    await _tick(sched, clock)
    assert runs.calls[-1][1].endswith("User custom heartbeat prompt:\ncheck the build")
    paths.heartbeat_prompt_override.parent.mkdir(parents=True)
    paths.heartbeat_prompt_override.write_text("MY TEMPLATE")
    (paths.root / "notes" / "hb.md").write_text("check the deploy")
    clock.advance(minutes=15)
    await _tick(sched, clock)
    assert runs.calls[-1][1] == "MY TEMPLATE\n\nUser custom heartbeat prompt:\ncheck the deploy"


def test_quiet_windows_crossing_midnight_and_days() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    night = QuietWindow(22 * 60, 7 * 60, days=(5,))  # Friday 22:00 to Saturday 07:00
    fri_late = datetime(2026, 3, 6, 23, 0, tzinfo=berlin)
    sat_early = datetime(2026, 3, 7, 6, 59, tzinfo=berlin)
    sat_seven = datetime(2026, 3, 7, 7, 0, tzinfo=berlin)
    thu_late = datetime(2026, 3, 5, 23, 0, tzinfo=berlin)
    sat_late = datetime(2026, 3, 7, 23, 0, tzinfo=berlin)
    assert hb.in_window(night, fri_late)
    assert hb.in_window(night, sat_early)
    assert not hb.in_window(night, sat_seven)
    assert not hb.in_window(night, thu_late)
    assert not hb.in_window(night, sat_late)
    whole_day = QuietWindow(0, 0, days=(0,))
    assert hb.in_window(whole_day, datetime(2026, 3, 8, 12, tzinfo=berlin))  # Sunday
    assert not hb.in_window(whole_day, datetime(2026, 3, 9, 12, tzinfo=berlin))
    settings = HeartbeatSettings(enabled=True, exclude_windows=(QuietWindow(0, 0),))
    assert hb.next_beat(settings, fri_late, fri_late, berlin) is None  # always quiet


def test_ok_reply_detection() -> None:
    assert hb.is_ok_reply("HEARTBEAT_OK")
    assert hb.is_ok_reply("  `HEARTBEAT_OK`\n")
    assert not hb.is_ok_reply("HEARTBEAT_OK but the build is red")


async def test_unknown_job_and_state_survives_a_corrupt_file(paths: ProjectPaths) -> None:
    clock, runs = Clock(T0), Runs()
    paths.state_dir.mkdir(parents=True)
    paths.schedule_file.write_text("{not json")
    sched = await _scheduler(paths, clock, runs)  # logged, not fatal
    assert (paths.state_dir / "schedule.json.corrupt").read_text() == "{not json"
    assert json.loads(paths.schedule_file.read_text())["jobs"] == {}
    outcome = await sched.run_now("nope")
    assert not outcome.ok and "no job named 'nope'" in outcome.text


async def test_manual_run_uses_the_trigger_manual(paths: ProjectPaths) -> None:
    _write_job(paths, "m", "schedule: 0 0 1 1 *\nrecurring: true")
    clock, runs = Clock(T0), Runs()
    sched = await _scheduler(paths, clock, runs, replace(Settings()))
    outcome = await sched.run_now("m")
    assert outcome.ok and outcome.text == "done m"
    assert runs.calls == [("m", "do it", "manual")]
    beat = await sched.run_now(HEARTBEAT)
    assert beat.text == "HEARTBEAT_OK"


async def test_dst_changes_in_the_settings_zone_neither_skip_nor_double(
    paths: ProjectPaths,
) -> None:
    _write_job(paths, "night", "schedule: 30 2 * * *\nrecurring: true")
    _write_job(paths, "hourly", "schedule: 0 * * * *\nrecurring: true")
    settings = Settings(timezone="Europe/Berlin")
    clock, runs = Clock(datetime(2026, 10, 24, 12, tzinfo=UTC)), Runs()
    sched = await _scheduler(paths, clock, runs, settings)
    # walk through the autumn change (2026-10-25, 03:00 CEST -> 02:00 CET) minute by minute
    while clock.now < datetime(2026, 10, 25, 6, tzinfo=UTC):
        clock.advance(minutes=1)
        await _tick(sched, clock)
    assert runs.names().count("night") == 1  # 02:30 came twice; the job ran once
    hourly = runs.names().count("hourly")
    assert hourly == 18  # 12:00..05:00 UTC: one run per real hour, the repeated one too
    # and the spring change (2026-03-29, 02:00 CET -> 03:00 CEST): 02:30 does not exist
    spring = ProjectPaths(paths.root / "spring")
    _write_job(spring, "night", "schedule: 30 2 * * *\nrecurring: true")
    clock.now = datetime(2026, 3, 28, 12, tzinfo=UTC)
    started: list[datetime] = []
    sched = await _scheduler(spring, clock, runs, settings)
    while clock.now < datetime(2026, 3, 29, 6, tzinfo=UTC):
        clock.advance(minutes=1)
        if await _tick(sched, clock):
            started.append(clock.now)
    # ran once, at 03:00 CEST (01:00 UTC), right after the gap
    assert started == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]


async def test_a_one_shot_missed_while_down_with_catch_up_false_is_marked_missed(
    paths: ProjectPaths,
) -> None:
    _write_job(paths, "once", "schedule: 30 8 * * *\ncatchUp: false")
    clock, runs = Clock(T0), Runs()
    await _scheduler(paths, clock, runs)  # first seen at 08:00
    clock.now = T0 + timedelta(hours=5)  # down over 08:30
    again = await _scheduler(paths, clock, runs)
    assert await _tick(again, clock) == []
    row = again.listing(clock())[0]
    assert row["last_outcome"] == "missed" and row["done"] and row["next_run"] == ""
    # with catch-up (the default) the same one-shot runs at start
    _write_job(paths, "once2", "schedule: 30 8 * * *")
    clock.now = T0
    await _scheduler(paths, clock, runs)
    clock.now = T0 + timedelta(hours=5)
    third = await _scheduler(paths, clock, runs)
    assert await _tick(third, clock) == ["once2"]
    assert runs.calls[-1][2] == "catch-up"
