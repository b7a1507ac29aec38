"""Pure: the prompt text for one Discord message, built the way the original builds it.

```
[2026-05-02 14:03:07 UTC+1]
[Discord Channel: <channelNames[id] or id>]      (or: [Discord DM])
[Discord from <username>]
Message: <text without bot mentions>
Image path: /abs/path/inbox/discord/<key>/<id>-photo.png
...
```
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def clock_prefix(now: dt.datetime, offset_minutes: int) -> str:
    """``[YYYY-MM-DD HH:MM:SS UTC+H]`` (``UTC+5:30``, ``UTC-3``) in the configured offset."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    local = now.astimezone(dt.timezone(dt.timedelta(minutes=offset_minutes)))
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    zone = f"UTC{sign}{hours}" + (f":{minutes:02d}" if minutes else "")
    return f"[{local:%Y-%m-%d %H:%M:%S} {zone}]"


def channel_label(
    *, is_dm: bool, channel_id: str, channel_names: Mapping[str, str], thread_parent_id: str | None
) -> str:
    """``[Discord DM]`` or ``[Discord Channel: <name or id>]`` (a thread: its own name first,
    then its parent's)."""
    if is_dm:
        return "[Discord DM]"
    name = channel_names.get(channel_id)
    if name is None and thread_parent_id is not None:
        name = channel_names.get(thread_parent_id)
    return f"[Discord Channel: {name or channel_id}]"


@dataclass(frozen=True, slots=True)
class PromptParts:
    now: dt.datetime
    offset_minutes: int
    is_dm: bool
    channel_id: str
    username: str
    text: str  # already stripped of bot mentions
    channel_names: Mapping[str, str] = field(default_factory=dict)
    thread_parent_id: str | None = None
    attachment_lines: Sequence[str] = ()


def build_prompt(parts: PromptParts) -> str:
    """The full prompt: clock prefix, channel, author, message and attachment lines."""
    lines = [
        clock_prefix(parts.now, parts.offset_minutes),
        channel_label(
            is_dm=parts.is_dm,
            channel_id=parts.channel_id,
            channel_names=parts.channel_names,
            thread_parent_id=parts.thread_parent_id,
        ),
        f"[Discord from {parts.username}]",
    ]
    if parts.text:
        lines.append(f"Message: {parts.text}")
    lines.extend(parts.attachment_lines)
    return "\n".join(lines).replace("\x00", "")  # a NUL cannot pass through argv
