"""The heartbeat: a periodic prompt in the global session, quiet in ``excludeWindows``.

Pure functions (no I/O except reading the prompt files): when the next beat is due, whether
a moment is quiet, and the prompt text. Like the original, the prompt is a built-in
template (or the project's ``.claude/claudeclaw/prompts/HEARTBEAT.md``, which replaces it)
followed by ``heartbeat.prompt``, inline or read from a file at every beat; a reply that is
just ``HEARTBEAT_OK`` means "nothing to report" and is not posted.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from claudeclaw.config import HeartbeatSettings, QuietWindow
from claudeclaw.jobfiles import names_prompt_file

OK_REPLY = "HEARTBEAT_OK"
MAX_SKIPPED_BEATS = 7 * 24 * 60  # a week of one-minute beats: every window ends before
DEFAULT_TEMPLATE = """\
This is a scheduled heartbeat check from claudeclaw, not a message from a person.
Look at what you are keeping an eye on for this project (your notes, CLAUDE.md, open
tasks) and decide whether anything needs the user's attention now.
If something does, reply with a short message for the user; it is posted to Discord.
If nothing needs attention, reply with exactly HEARTBEAT_OK and nothing else."""


def _day(moment: datetime) -> int:
    """0 = Sunday .. 6 = Saturday, the original's (JavaScript's) numbering."""
    return (moment.weekday() + 1) % 7


def in_window(window: QuietWindow, local: datetime) -> bool:
    """Is the local time ``local`` inside ``window``? A window crossing midnight belongs to
    the day it starts on: ``22:00-07:00`` with ``days: [5]`` is Friday night to Saturday 7:00."""
    minute = local.hour * 60 + local.minute
    start, end = window.start_minute, window.end_minute
    days = window.days
    if start == end:  # the whole day
        return not days or _day(local) in days
    if start < end:
        return start <= minute < end and (not days or _day(local) in days)
    if minute >= start:  # the evening part: today's window
        return not days or _day(local) in days
    if minute < end:  # the morning part: yesterday's window
        return not days or _day(local - timedelta(days=1)) in days
    return False


def is_quiet(settings: HeartbeatSettings, moment: datetime, tz: tzinfo) -> bool:
    local = moment.astimezone(tz)
    return any(in_window(w, local) for w in settings.exclude_windows)


def next_beat(
    settings: HeartbeatSettings, last: datetime, now: datetime, tz: tzinfo
) -> datetime | None:
    """When the next beat runs: ``interval`` after the last one (or at once if that passed),
    skipping beats that fall in a quiet window. None when every beat for a week is quiet."""
    step = timedelta(minutes=settings.interval_minutes)
    due = max(last + step, now)
    for _ in range(MAX_SKIPPED_BEATS):
        if not is_quiet(settings, due, tz):
            return due
        due += step
    return None


def build_prompt(settings: HeartbeatSettings, root: Path, override: Path) -> str:
    """The heartbeat prompt, read now (the template override and a prompt file may change
    between beats). Blocking file I/O."""
    try:
        template = override.read_text(encoding="utf-8").strip() or DEFAULT_TEMPLATE
    except FileNotFoundError:
        template = DEFAULT_TEMPLATE
    custom = settings.prompt.strip()
    if names_prompt_file(custom):
        custom = (root / custom).read_text(encoding="utf-8").strip()
    if not custom:
        return template
    return f"{template}\n\nUser custom heartbeat prompt:\n{custom}"


def is_ok_reply(reply: str) -> bool:
    """``HEARTBEAT_OK`` alone (formatting around it tolerated): nothing to post."""
    return reply.strip().strip("`*_ \n.").upper() == OK_REPLY
