"""Posting the messages the bot starts itself (job and heartbeat results, notices).

Where: ``discord.notifyChannelId`` (a channel or a thread) when set, else a DM to every
allowlisted user, as the original does. How: like replies (split at 2000 characters, a
very long one as its start plus a file), redacted, and never pinging anyone. A transient
failure (Discord unreachable, 5xx, not connected yet) leaves the notice in the outbox to
be posted later; a permanent one (unknown channel, no access, DMs closed) is logged and
the text saved under ``undelivered/``, so it is never lost and never retried forever.
"""

from __future__ import annotations

import asyncio
import io

import aiohttp
import discord

from claudeclaw.config import Settings
from claudeclaw.frontend.delivery import (
    MAX_REPLY_MESSAGES,
    NO_MENTIONS,
    REPLY_FILE_NAME,
    retryable,
)
from claudeclaw.frontend.render import DISCORD_LIMIT, split_message, truncate_utf16, utf16_len
from claudeclaw.logs import get_logger
from claudeclaw.notices import Notice
from claudeclaw.paths import ProjectPaths, write_private_text
from claudeclaw.redaction import scrub_outbound

log = get_logger(component="discord.notices")

TRANSIENT = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class _Permanent(Exception):
    """Discord will never take this notice at that target (the message says why)."""


class NoticePoster:
    """Implements :class:`claudeclaw.notices.NoticeSink` for the Discord frontend."""

    def __init__(self, client: discord.Client, settings: Settings, paths: ProjectPaths) -> None:
        self.client = client
        self.settings = settings
        self.paths = paths

    def connected(self) -> bool:
        return self.client.is_ready() and not self.client.is_closed()

    async def post_notice(self, notice: Notice) -> bool:
        if not self.connected():
            return False
        text = scrub_outbound(notice.text)
        channel_id = self.settings.discord.notify_channel_id
        try:
            if channel_id:
                channel = await self._channel(channel_id)
                await self._send(channel, text)
                return True
            users = self.settings.discord.allowed_user_ids
            if not users:
                raise _Permanent(
                    "no discord.notifyChannelId and no allowlisted user to send a DM to"
                )
            for user_id in users:
                if user_id in notice.delivered_to:
                    continue
                try:
                    await self._send(await self._dm(user_id), text)
                except _Permanent as exc:
                    log.error("notice.dm_failed", user_id=user_id, why=str(exc))
                notice.delivered_to.append(user_id)
            return True
        except _Permanent as exc:
            await self._save_undeliverable(notice, text, str(exc))
            return True
        except discord.HTTPException as exc:
            log.warning("notice.post_retry_later", notice_id=notice.id, status=exc.status)
            return False
        except TRANSIENT as exc:
            log.warning("notice.post_retry_later", notice_id=notice.id, error=type(exc).__name__)
            return False

    async def _channel(self, channel_id: str) -> discord.abc.Messageable:
        found = self.client.get_channel(int(channel_id))
        if found is None:
            try:
                found = await self.client.fetch_channel(int(channel_id))
            except (discord.NotFound, discord.Forbidden) as exc:
                raise _Permanent(
                    f"discord.notifyChannelId {channel_id}: {exc.text or exc.status}; check the "
                    "id and that the bot can see and write in that channel"
                ) from None
        if not isinstance(found, discord.abc.Messageable):
            raise _Permanent(f"discord.notifyChannelId {channel_id} is not a text channel")
        return found

    async def _dm(self, user_id: str) -> discord.abc.Messageable:
        user = self.client.get_user(int(user_id))
        try:
            if user is None:
                user = await self.client.fetch_user(int(user_id))
            return user.dm_channel or await user.create_dm()
        except (discord.NotFound, discord.Forbidden) as exc:
            raise _Permanent(f"user {user_id}: {exc.text or exc.status}") from None

    async def _send(self, channel: discord.abc.Messageable, text: str) -> None:
        chunks = split_message(text) or ["(empty)"]
        try:
            if len(chunks) > MAX_REPLY_MESSAGES:
                note = f"\n\n-# The whole text ({len(text):,} characters) is attached."
                head = truncate_utf16(chunks[0], DISCORD_LIMIT - utf16_len(note)) + note
                await channel.send(
                    head,
                    file=discord.File(io.BytesIO(text.encode("utf-8")), filename=REPLY_FILE_NAME),
                    allowed_mentions=NO_MENTIONS,
                )
                return
            for chunk in chunks:
                await channel.send(chunk, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            if retryable(exc):
                raise
            # a 4xx fails the same way every time: retried, it would hold every later notice
            raise _Permanent(f"{exc.status}: {exc.text}") from None

    async def _save_undeliverable(self, notice: Notice, text: str, why: str) -> None:
        directory = self.paths.undelivered_dir
        path = directory / f"notice-{notice.id}.md"

        def write() -> None:
            write_private_text(path, f"<!-- claudeclaw notice not posted: {why} -->\n\n{text}\n")

        try:
            await asyncio.to_thread(write)
        except Exception as exc:
            log.error("notice.lost", notice_id=notice.id, error=type(exc).__name__)
            return
        log.error("notice.undeliverable", notice_id=notice.id, why=why, path=str(path))
