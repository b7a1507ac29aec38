"""Catching up on messages sent while the bot was not connected.

The gateway replays what was missed only on a RESUME. After a fresh connect (the daemon
started, or a reconnect Discord could not resume) the bot reads back the recent history
of the channels it serves: the threads and channels with recently used sessions, the
listen channels, the active threads under them with a recent message (the gateway lists
the active threads at connect), and the other channels (DMs included) where it took a
message lately (:class:`ChannelMemory`). Bounded: the last ``CATCH_UP_SECONDS`` and at
most ``CATCH_UP_LIMIT`` messages per channel, oldest first.

A message counts as handled, and is skipped, when the bot replied to it or put a status
reaction past 👀 on it (an earlier run of the daemon queued it: the pending ledger answers
for it), or when this process has already seen its id (the ledger's messages are marked
seen before catch-up starts). Whatever is left goes through the ordinary
intake (routing decides whether it is for the bot), in order.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from pathlib import Path

import discord

from claudeclaw import jsonstore
from claudeclaw.errors import ClaudeclawError
from claudeclaw.frontend.follow import DONE, FAILED, KEPT, RUNNING
from claudeclaw.logs import get_logger

log = get_logger(component="discord")

PAST_ACCEPTED = frozenset({RUNNING, DONE, FAILED, KEPT})
CATCH_UP_SECONDS = 3600.0
CATCH_UP_LIMIT = 50
REMEMBER_CHANNEL_DAYS = 8.0  # a channel the bot answered in is caught up this long
NOTE_EVERY_SECONDS = 600.0  # a channel's "last answered here" is rewritten this often


class ChannelMemory:
    """The channels (DMs and ordinary channels too, not only session threads) where the
    bot took a message lately, kept in ``discord-channels.json``: a DM has no session key
    of its own, so this is how the bot knows where to catch up after a stop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamps: dict[str, float] | None = None
        self._lock = threading.Lock()  # notes come from several worker threads at once

    def _load(self) -> dict[str, float]:
        if self._stamps is None:
            try:
                data = jsonstore.read_json(self.path)
            except (ClaudeclawError, OSError) as exc:
                log.warning("discord.channel_memory_unreadable", error=str(exc))
                data = None
            stamps = data if isinstance(data, dict) else {}
            self._stamps = {
                k: float(v)
                for k, v in stamps.items()
                if k.isdigit() and isinstance(v, int | float) and not isinstance(v, bool)
            }
        return self._stamps

    def fresh(self, channel_id: int, now: float) -> bool:
        """True when the channel was noted lately (no write due): a dict lookup, so the
        event loop can skip the thread hop of :meth:`note` for most messages."""
        stamps = self._stamps
        return stamps is not None and now - stamps.get(str(channel_id), 0.0) < NOTE_EVERY_SECONDS

    def note(self, channel_id: int, now: float) -> bool:
        """Remember the channel (blocking: a thread); True if the file was written."""
        with self._lock:
            return self._note(channel_id, now)

    def _note(self, channel_id: int, now: float) -> bool:
        stamps = self._load()
        key = str(channel_id)
        if now - stamps.get(key, 0.0) < NOTE_EVERY_SECONDS:
            return False
        stamps[key] = now
        cutoff = now - REMEMBER_CHANNEL_DAYS * 86400
        for old in [k for k, v in stamps.items() if v < cutoff]:
            del stamps[old]
        jsonstore.write_json(self.path, stamps)
        return True

    def recent(self, now: float) -> list[int]:
        """The channels noted in the last REMEMBER_CHANNEL_DAYS (blocking)."""
        cutoff = now - REMEMBER_CHANNEL_DAYS * 86400
        with self._lock:
            return [int(k) for k, v in self._load().items() if v >= cutoff]


def _handled_ids(history: list[discord.Message], bot_id: int) -> set[int]:
    """Ids of messages the bot answered (a reply references them) or that carry one of its
    status reactions past 👀 (⚙️ ran, ✅ ❌ ended, ⏸️ kept: the ledger answers for those).
    A message with only 👀 was accepted by a daemon that stopped before it was queued:
    it is caught up (if the ledger has it after all, the ledger hands it over first)."""
    handled: set[int] = set()
    for message in history:
        if message.author.id == bot_id:
            ref = message.reference
            if ref is not None and ref.message_id is not None:
                handled.add(ref.message_id)
        elif any(r.me and str(r.emoji) in PAST_ACCEPTED for r in message.reactions):
            handled.add(message.id)
    return handled


async def missed_messages(
    client: discord.Client,
    channel_ids: Iterable[int],
    *,
    now: dt.datetime | None = None,
    seconds: float = CATCH_UP_SECONDS,
    limit: int = CATCH_UP_LIMIT,
) -> list[discord.Message]:
    """Messages of other users in ``channel_ids`` from the last ``seconds`` (at most
    ``limit`` per channel) that the bot neither answered nor reacted to, oldest first
    within each channel. A channel that cannot be read is logged and skipped."""
    user = client.user
    if user is None:
        return []
    since = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
    missed: list[discord.Message] = []
    for channel_id in dict.fromkeys(channel_ids):
        try:
            channel = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                continue
            history = [
                message
                async for message in channel.history(limit=limit, after=since, oldest_first=True)
            ]
        except discord.HTTPException as exc:
            log.warning("discord.catch_up_failed", channel_id=channel_id, status=exc.status)
            continue
        handled = _handled_ids(history, user.id)
        missed.extend(
            message
            for message in history
            if message.author.id != user.id and message.id not in handled
        )
    return missed
