"""The life of Discord threads as sessions: delete, archive, unarchive, create, rejoin.

Deleting a thread resets its session; archiving keeps it (unless
``discord.removeSessionOnArchive``); after every (re)connect the bot rejoins the threads
whose sessions were used in the last ``REJOIN_WITHIN_DAYS`` (Discord archives a thread
after at most a week without messages, and an archived thread is rejoined when it is
unarchived), so a reconnect costs a few REST calls, not one per session ever made.
Sessions not used for ``PRUNE_AFTER_DAYS``, and those whose thread Discord says is gone,
are removed on the same pass (Claude's transcript stays on disk). Threads created under
listen channels (or in listen guilds) are joined.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import discord

from claudeclaw.api import Dispatcher
from claudeclaw.config import Settings
from claudeclaw.logs import get_logger
from claudeclaw.model import parse_time, session_key

log = get_logger(component="discord")

REJOIN_WITHIN_DAYS = 8.0  # a week of auto-archive, and a day of slack
PRUNE_AFTER_DAYS = 90.0  # a thread session unused this long is forgotten


def _age_days(stamp: str, now: dt.datetime) -> float | None:
    """Days since an ISO time (``…Z`` too); None when it cannot be read."""
    moment = parse_time(stamp)
    return None if moment is None else (now - moment).total_seconds() / 86400


class ThreadKeeper:
    """Thread events → session calls; ``settings`` is swapped on reload."""

    def __init__(self, client: discord.Client, dispatcher: Dispatcher, settings: Settings) -> None:
        self.client = client
        self.dispatcher = dispatcher
        self.settings = settings
        self._rejoin_lock = asyncio.Lock()

    async def on_deleted(self, thread_id: int) -> None:
        key = session_key(thread_id)
        had = await self.dispatcher.reset(key)
        log.info("discord.thread_deleted", session_key=key, session_reset=had)

    async def on_updated(self, payload: discord.RawThreadUpdateEvent) -> None:
        metadata = payload.data.get("thread_metadata") or {}
        key = session_key(payload.thread_id)
        if metadata.get("archived"):
            if self.settings.discord.remove_session_on_archive:
                had = await self.dispatcher.reset(key)
                log.info("discord.thread_archived", session_key=key, session_reset=had)
            else:
                log.info("discord.thread_archived", session_key=key, session_kept=True)
            return
        # An unarchived thread we had dropped from the cache is only cached after this
        # raw event was created, so look it up again.
        thread = payload.thread or self.client.get_channel(payload.thread_id)
        if isinstance(thread, discord.Thread) and thread.me is None and not thread.archived:
            info = await self.dispatcher.session_info(key)
            if info.record is not None:
                await self._join(thread, "unarchived")

    def listened(self, thread: discord.Thread) -> bool:
        """A thread under a listen channel or in a listen guild: all its messages are for us."""
        discord_settings = self.settings.discord
        return str(thread.parent_id) in discord_settings.listen_channels or (
            str(thread.guild.id) in discord_settings.listen_guilds
        )

    def active_listened_threads(self, since: dt.datetime) -> list[int]:
        """Listened threads with a message since ``since``, from the gateway's list of the
        active threads (sent at connect, kept up to date): catch-up reads them without a
        note on disk, including one created and written in while the bot was away."""
        found: list[int] = []
        for guild in self.client.guilds:
            for thread in guild.threads:
                last = thread.last_message_id
                if last and self.listened(thread) and discord.utils.snowflake_time(last) >= since:
                    found.append(thread.id)
        return found

    async def on_created(self, thread: discord.Thread) -> None:
        if self.listened(thread) and thread.me is None:
            await self._join(thread, "created")

    async def _join(self, thread: discord.Thread, why: str) -> None:
        try:
            await thread.join()
        except discord.HTTPException as exc:
            log.warning(
                "discord.thread_join_failed", thread_id=thread.id, why=why, status=exc.status
            )
        else:
            log.info("discord.thread_joined", thread_id=thread.id, why=why)

    async def recent_channels(self) -> list[int]:
        """The channel ids of sessions used in the last REJOIN_WITHIN_DAYS (catch-up)."""
        now = dt.datetime.now(dt.UTC)
        found: list[int] = []
        for info in await self.dispatcher.list_sessions():
            if not info.key.isdigit() or info.record is None:
                continue
            age = _age_days(info.record.last_used_at, now)
            if age is None or age <= REJOIN_WITHIN_DAYS:
                found.append(int(info.key))
        return found

    async def rejoin(self) -> None:
        """Join the threads with recently used sessions, so their messages keep reaching
        us; forget sessions unused for PRUNE_AFTER_DAYS or whose thread is gone."""
        async with self._rejoin_lock:
            sessions = await self.dispatcher.list_sessions()
            now = dt.datetime.now(dt.UTC)
            skipped = 0
            for info in sessions:
                if not info.key.isdigit() or info.record is None:
                    continue
                age = _age_days(info.record.last_used_at, now)
                if age is not None and age > PRUNE_AFTER_DAYS and not info.running:
                    await self.dispatcher.reset(info.key)
                    log.info("discord.session_pruned", key=info.key, idle_days=round(age))
                    continue
                if age is not None and age > REJOIN_WITHIN_DAYS:
                    skipped += 1  # archived by now; rejoined if it is unarchived
                    continue
                try:
                    channel = await self.client.fetch_channel(int(info.key))
                except discord.NotFound:
                    await self.dispatcher.reset(info.key)
                    log.info("discord.session_pruned", key=info.key, reason="channel gone")
                    continue
                except discord.HTTPException as exc:
                    log.warning("discord.rejoin_fetch_failed", key=info.key, status=exc.status)
                    continue
                if isinstance(channel, discord.Thread) and not channel.archived:
                    await self._join(channel, "rejoin")
            if skipped:
                log.info("discord.rejoin_skipped_idle", sessions=skipped)
