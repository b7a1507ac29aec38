"""cron.py: standard cron semantics (dom OR dow, names, macros), DST, month ends, leap day."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from claudeclaw.cron import CronError, CronSchedule, settings_zone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def _runs(expr: str, start: datetime, n: int, tz: object = UTC) -> list[datetime]:
    schedule = CronSchedule.parse(expr)
    out = []
    moment = start
    for _ in range(n):
        moment = schedule.next_after(moment, tz)  # type: ignore[arg-type]
        out.append(moment)
    return out


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # the 13th of each month OR every Friday (the original ANDed them: Friday the 13th only)
    runs = _runs("0 0 13 * fri", datetime(2026, 1, 1, tzinfo=UTC), 4)
    assert [r.date().isoformat() for r in runs] == [
        "2026-01-02",
        "2026-01-09",
        "2026-01-13",
        "2026-01-16",
    ]


def test_star_day_of_month_means_day_of_week_alone() -> None:
    runs = _runs("30 8 * * mon-fri", datetime(2026, 1, 2, 9, tzinfo=UTC), 3)  # a Friday
    assert [r.strftime("%a %H:%M") for r in runs] == ["Mon 08:30", "Tue 08:30", "Wed 08:30"]
    assert all(r.tzinfo == UTC for r in runs)


def test_month_and_weekday_names_and_macros() -> None:
    assert _runs("0 9 1 jan *", datetime(2026, 6, 1, tzinfo=UTC), 1)[0] == datetime(
        2027, 1, 1, 9, tzinfo=UTC
    )
    assert _runs("@hourly", datetime(2026, 1, 1, 5, 30, tzinfo=UTC), 2) == [
        datetime(2026, 1, 1, 6, tzinfo=UTC),
        datetime(2026, 1, 1, 7, tzinfo=UTC),
    ]
    assert _runs("@daily", datetime(2026, 1, 1, 5, tzinfo=UTC), 1)[0] == datetime(
        2026, 1, 2, tzinfo=UTC
    )
    assert _runs("@weekly", datetime(2026, 1, 1, tzinfo=UTC), 1)[0].strftime("%a") == "Sun"
    assert len(_runs("0 * * * *", datetime(2026, 1, 1, tzinfo=UTC), 3)) == 3
    assert CronSchedule.parse("@DAILY").fields == "0 0 * * *"


def test_month_ends_skip_months_without_the_day() -> None:
    runs = _runs("0 12 31 * *", datetime(2026, 1, 31, 13, tzinfo=UTC), 3)
    assert [r.date().isoformat() for r in runs] == ["2026-03-31", "2026-05-31", "2026-07-31"]


def test_leap_day_runs_only_in_leap_years() -> None:
    runs = _runs("0 0 29 2 *", datetime(2026, 1, 1, tzinfo=UTC), 2)
    assert [r.date().isoformat() for r in runs] == ["2028-02-29", "2032-02-29"]


def test_dst_spring_forward_runs_the_skipped_time_once_right_after_the_gap() -> None:
    # Berlin 2026-03-29: 02:00 -> 03:00; a 02:30 job runs at 03:00 that day, once
    runs = _runs("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=BERLIN), 3, BERLIN)
    assert [r.astimezone(BERLIN).isoformat() for r in runs] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_dst_fall_back_runs_a_daily_job_once_and_an_hourly_job_in_both_hours() -> None:
    # Berlin 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice
    daily = _runs("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2, BERLIN)
    assert [r.astimezone(BERLIN).isoformat() for r in daily] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    hourly = _runs("0 * * * *", datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN), 3, BERLIN)
    gaps = {b - a for a, b in itertools.pairwise(hourly)}
    assert gaps == {timedelta(hours=1)}  # real hours: nothing doubled, nothing skipped


def test_evaluated_in_the_zone_not_in_utc() -> None:
    run = _runs("0 9 * * *", datetime(2026, 7, 1, 0, tzinfo=UTC), 1, NEW_YORK)[0]
    assert run.astimezone(UTC) == datetime(2026, 7, 1, 13, tzinfo=UTC)  # EDT, UTC-4


def test_latest_at_or_before_includes_the_exact_time() -> None:
    schedule = CronSchedule.parse("0 * * * *")
    exact = datetime(2026, 1, 1, 5, 0, tzinfo=UTC)
    assert schedule.latest_at_or_before(exact, UTC) == exact
    assert schedule.latest_at_or_before(exact + timedelta(minutes=59), UTC) == exact
    assert schedule.latest_at_or_before(exact - timedelta(seconds=1), UTC) == exact - timedelta(
        hours=1
    )


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("", "empty"),
        ("61 * * * *", "invalid cron expression '61 * * * *'"),
        ("* * *", "five fields"),
        ("0 0 30 2 *", "invalid cron expression"),
        ("@reboot", "@reboot is not supported"),
    ],
)
def test_bad_schedules_say_what_and_how(expr: str, needle: str) -> None:
    with pytest.raises(CronError) as info:
        CronSchedule.parse(expr)
    assert needle in str(info.value)


def test_settings_zone() -> None:
    assert settings_zone("Europe/Berlin", 60) == BERLIN
    assert settings_zone("UTC", 0) == UTC
    assert settings_zone("UTC+2", 120) == timezone(timedelta(hours=2))
    assert settings_zone("Not/AZone", -300) == timezone(timedelta(hours=-5))
