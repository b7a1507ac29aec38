"""The life of Discord threads as sessions: delete, archive, unarchive, create, rejoin.

Deleting a thread resets its session; archiving keeps it (unless
``discord.removeSessionOnArchive``); after every (re)connect the bot rejoins threads that
have sessions so their messages keep arriving; threads created under listen channels
(or in listen guilds) are joined.
"""

from __future__ import annotations

import asyncio

import discord

from claudeclaw.api import Dispatcher
from claudeclaw.config import Settings
from claudeclaw.logs import get_logger
from claudeclaw.model import session_key

log = get_logger(component="discord")


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

    async def on_created(self, thread: discord.Thread) -> None:
        discord_settings = self.settings.discord
        listened = str(thread.parent_id) in discord_settings.listen_channels or (
            str(thread.guild.id) in discord_settings.listen_guilds
        )
        if listened and thread.me is None:
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

    async def rejoin(self) -> None:
        """Join every thread that has a session, so its messages keep reaching us."""
        async with self._rejoin_lock:
            sessions = await self.dispatcher.list_sessions()
            for info in sessions:
                if not info.key.isdigit():
                    continue
                try:
                    channel = await self.client.fetch_channel(int(info.key))
                except discord.NotFound:
                    log.info("discord.rejoin_channel_gone", key=info.key)
                    continue
                except discord.HTTPException as exc:
                    log.warning("discord.rejoin_fetch_failed", key=info.key, status=exc.status)
                    continue
                if isinstance(channel, discord.Thread) and not channel.archived:
                    await self._join(channel, "rejoin")
