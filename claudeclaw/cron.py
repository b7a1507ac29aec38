"""Cron expressions and the settings' time zone, on top of ``cronsim``.

The original ClaudeClaw parsed cron itself and got it wrong in ways users notice: it ANDed
day-of-month and day-of-week (standard cron ORs them when both are restricted), had no
month or weekday names and no ``@daily``-style macros. ``cronsim`` (the parser behind
Healthchecks.io) does the standard thing, including DST: a wall-clock time skipped by a
spring-forward runs at the first instant after the gap, and a time repeated by a
fall-back runs once (an hourly job runs in both repeated hours, as it should). Only the
``@`` macros are ours: cronsim does not accept them, and they are a fixed table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EPSILON = timedelta(seconds=1)


class CronError(ValueError):
    """A schedule that cannot be used; the message says what is wrong and how to fix it."""


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A validated five-field cron expression (or macro), evaluated in a time zone."""

    expr: str  # as written (macros kept, so messages show what the user typed)
    fields: str  # the five fields cronsim evaluates

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        expr = " ".join(text.split())
        if not expr:
            raise CronError("the schedule is empty; write five cron fields, e.g. '0 9 * * 1-5'")
        fields = MACROS.get(expr.lower(), expr)
        if fields.startswith("@"):
            raise CronError(
                f"unknown schedule macro {expr!r}; use one of {', '.join(sorted(MACROS))} "
                "or five cron fields (@reboot is not supported: use catchUp)"
            )
        try:
            CronSim(fields, datetime(2000, 1, 1, tzinfo=UTC_ZONE))
        except CronSimError as exc:
            raise CronError(
                f"invalid cron expression {expr!r}: {exc}; expected five fields "
                "'minute hour day-of-month month day-of-week', e.g. '30 8 * * mon-fri'"
            ) from None
        return cls(expr, fields)

    # Results are in UTC: Python compares and subtracts two datetimes that share a tzinfo
    # by wall clock, ignoring DST folds, which would confuse the repeated hour.

    def next_after(self, moment: datetime, tz: tzinfo) -> datetime:
        """The first run time strictly after ``moment`` (aware), evaluated in ``tz``."""
        return next(CronSim(self.fields, moment.astimezone(tz))).astimezone(UTC_ZONE)

    def latest_at_or_before(self, moment: datetime, tz: tzinfo) -> datetime:
        """The last run time at or before ``moment`` (aware), evaluated in ``tz``."""
        start = (moment + _EPSILON).astimezone(tz)
        return next(CronSim(self.fields, start, reverse=True)).astimezone(UTC_ZONE)


UTC_ZONE = timezone.utc  # noqa: UP017 - the tzinfo object, named for readability


def settings_zone(name: str, offset_minutes: int) -> tzinfo:
    """The zone schedules are evaluated in: the IANA zone named by ``timezone`` (DST-aware),
    else the fixed ``timezoneOffsetMinutes`` (what ``UTC+2``-style names resolve to)."""
    text = name.strip()
    if text and text.upper() not in {"UTC", "GMT", "Z"}:
        try:
            return ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if offset_minutes == 0:
        return UTC_ZONE
    return timezone(timedelta(minutes=offset_minutes))
